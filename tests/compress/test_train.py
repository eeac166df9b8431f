"""The shared training loop: files per epoch, hooks, exact resume after an interruption."""
import csv
import json

import pytest
import torch

from compress.checkpoint import load_checkpoint, load_model
from compress.data import get_data
from compress.models import build_model
from compress.train import Hook, TrainConfig, evaluate, fit
from shiftq.errors import UserError


def _run(out, epochs=3, hooks=(), resume=False, data="digits"):
    torch.manual_seed(0)
    m = build_model("digitnet")
    d = get_data(data, m, batch_size=128)
    cfg = TrainConfig(epochs=epochs, lr=0.05, quiet=True)
    return m, fit(m, d, cfg, out_dir=out, hooks=list(hooks), resume=resume)


class Interrupt(Hook):
    def __init__(self, epoch, batch):
        self.at = (epoch, batch)

    def on_batch_end(self, s):
        if (s.epoch, s.batch) == self.at:
            raise KeyboardInterrupt


def test_writes_checkpoint_csv_and_report_each_epoch(tmp_path):
    m, s = _run(tmp_path, epochs=2)
    rows = list(csv.DictReader(open(tmp_path / "log.csv")))
    assert [r["epoch"] for r in rows] == ["1", "2"]
    rep = json.loads((tmp_path / "report.json").read_text())
    assert rep["finished"] and rep["epochs_done"] == 2
    assert rep["final_test_acc"] == pytest.approx(s.history[-1]["test_acc"])
    ck = load_checkpoint(tmp_path / "checkpoint.pt")
    assert ck["epoch"] == 2 and ck["kind"] == "fp32" and ck["optimizer"] is not None
    m2 = load_model(tmp_path / "checkpoint.pt")
    d = get_data("digits", m2)
    assert evaluate(m2, d.test)["acc"] == pytest.approx(rep["final_test_acc"])
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".tmp")]


def test_resume_after_interruption_equals_an_uninterrupted_run(tmp_path):
    _, full = _run(tmp_path / "full", epochs=3)
    with pytest.raises(KeyboardInterrupt):
        _run(tmp_path / "cut", epochs=3, hooks=[Interrupt(epoch=2, batch=4)])
    assert load_checkpoint(tmp_path / "cut" / "checkpoint.pt")["epoch"] == 1
    rows = list(csv.DictReader(open(tmp_path / "cut" / "log.csv")))
    assert len(rows) == 1
    _, resumed = _run(tmp_path / "cut", epochs=3, resume=True)
    a = load_checkpoint(tmp_path / "full" / "checkpoint.pt")
    b = load_checkpoint(tmp_path / "cut" / "checkpoint.pt")
    for k in a["state_dict"]:
        assert torch.equal(a["state_dict"][k], b["state_dict"][k]), k
    assert [r["test_acc"] for r in full.history] == [r["test_acc"] for r in resumed.history]
    assert torch.equal(a["optimizer"]["state"][0]["momentum_buffer"], b["optimizer"]["state"][0]["momentum_buffer"])


def test_hooks_are_called_and_their_state_is_saved(tmp_path):
    class Count(Hook):
        name = "count"

        def __init__(self):
            self.calls = {"after_backward": 0, "on_batch_end": 0, "on_epoch_end": 0, "on_eval_end": 0}

        def after_backward(self, s):
            assert all(p.grad is not None for p in s.model.parameters() if p.requires_grad)
            self.calls["after_backward"] += 1

        def on_batch_end(self, s):
            self.calls["on_batch_end"] += 1

        def on_epoch_end(self, s):
            self.calls["on_epoch_end"] += 1

        def on_eval_end(self, s):
            s.row["extra"] = 1.5
            self.calls["on_eval_end"] += 1

        def state_dict(self):
            return dict(self.calls)

        def load_state_dict(self, st):
            self.calls = dict(st)

    h = Count()
    _run(tmp_path, epochs=2, hooks=[h])
    assert h.calls["on_epoch_end"] == 2 and h.calls["after_backward"] == h.calls["on_batch_end"] == 2 * 12
    ck = load_checkpoint(tmp_path / "checkpoint.pt")
    assert ck["trainer"]["hooks"]["count"] == h.calls
    assert "extra" in open(tmp_path / "log.csv").readline()
    h2 = Count()
    _run(tmp_path, epochs=2, hooks=[h2], resume=True)  # finished: state restored, nothing run
    assert h2.calls == h.calls


def test_resume_with_another_model_is_refused(tmp_path):
    _run(tmp_path, epochs=1)
    torch.manual_seed(0)
    m = build_model("digitnet", widths={"stem.conv": 8})
    with pytest.raises(UserError, match="other settings"):
        fit(m, get_data("digits", m), TrainConfig(epochs=2, quiet=True), out_dir=tmp_path, resume=True)


def test_quantization_aware_training_runs_and_checkpoints_compressed(tmp_path, run_cli):
    code, out, err = run_cli("train", "--model", "digitnet", "--data", "synthetic", "--quant", "apot",
                             "--epochs", "1", "--out", tmp_path / "q", "--quiet")
    assert code == 0, err
    assert load_checkpoint(tmp_path / "q" / "checkpoint.pt")["kind"] == "compressed"
    load_model(tmp_path / "q" / "checkpoint.pt")


def test_cli_train_and_resume(tmp_path, run_cli):
    out = tmp_path / "run"
    code, _, err = run_cli("train", "--model", "digitnet", "--data", "digits", "--epochs", "1",
                           "--out", out, "--quiet")
    assert code == 0, err
    code, _, err = run_cli("train", "--model", "digitnet", "--data", "digits", "--epochs", "1", "--out", out)
    assert code == 2 and "--resume" in err
    code, _, err = run_cli("train", "--model", "digitnet", "--data", "digits", "--epochs", "2",
                           "--out", out, "--resume", "--quiet")
    assert code == 0, err
    assert json.loads((out / "report.json").read_text())["epochs_done"] == 2


@pytest.mark.slow
def test_digitnet_reaches_97_percent_on_digits(tmp_path, run_cli):
    code, out, err = run_cli("train", "--model", "digitnet", "--data", "digits", "--out", tmp_path, "--quiet")
    assert code == 0, err
    rep = json.loads((tmp_path / "report.json").read_text())
    assert rep["final_test_acc"] >= 97.0
