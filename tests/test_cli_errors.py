"""Bad input: one line naming the problem, exit code 2, no traceback, no partial output."""
import subprocess
import sys

import pytest
import torch

from compress.checkpoint import save_checkpoint
from compress.models import build_model


@pytest.fixture(scope="module")
def ckpts(tmp_path_factory):
    d = tmp_path_factory.mktemp("ckpts")
    good = d / "good.pt"
    save_checkpoint(good, build_model("digitnet"))
    (d / "corrupt.pt").write_bytes(good.read_bytes()[:500])
    ck = torch.load(good, weights_only=True)
    sd = dict(ck["state_dict"])
    sd["units.head.linear.weight"] = torch.zeros(10, 7)
    torch.save({**ck, "state_dict": sd}, d / "mismatch.pt")
    torch.save({**ck, "version": 2}, d / "future.pt")
    return d


BAD = {
    "unknown model": ["metrics", "--model", "resnet21"],
    "unknown scheme": ["levels", "--scheme", "log", "--bits", "4"],
    "bits outside apot": ["levels", "--scheme", "apot", "--bits", "8", "--signed"],
    "bits outside uniform": ["levels", "--scheme", "uniform", "--bits", "1"],
    "metrics bits outside scheme": ["metrics", "--model", "resnet20", "--wbits", "9"],
    "metrics unknown quant": ["metrics", "--model", "resnet20", "--quant", "log"],
    "prune 1": ["metrics", "--model", "resnet20", "--prune", "1.0"],
    "prune negative": ["metrics", "--model", "resnet20", "--prune", "-0.1"],
    "missing flag": ["metrics"],
    "not a number": ["metrics", "--model", "resnet20", "--prune", "lots"],
    "corrupt checkpoint": ["metrics", "--ckpt", "{d}/corrupt.pt"],
    "missing checkpoint": ["metrics", "--ckpt", "{d}/absent.pt"],
    "mismatched checkpoint": ["metrics", "--ckpt", "{d}/mismatch.pt"],
    "future checkpoint": ["metrics", "--ckpt", "{d}/future.pt"],
}

BAD_TRAIN = {
    "unknown model": ["--model", "resnet21", "--data", "digits"],
    "unknown data": ["--model", "digitnet", "--data", "mnist"],
    "model/data shapes": ["--model", "resnet20", "--data", "digits"],
    "no cifar files": ["--model", "resnet20", "--data", "cifar10", "--data-dir", "{d}/nodata"],
    "bits outside scheme": ["--model", "digitnet", "--data", "digits", "--quant", "apot", "--wbits", "9"],
    "unknown quant": ["--model", "digitnet", "--data", "digits", "--quant", "log"],
    "zero epochs": ["--model", "digitnet", "--data", "digits", "--epochs", "0"],
    "bad schedule": ["--model", "digitnet", "--data", "digits", "--schedule", "wavy"],
    "corrupt init": ["--model", "digitnet", "--data", "digits", "--init", "{d}/corrupt.pt"],
    "mismatched init": ["--model", "digitnet", "--data", "digits", "--init", "{d}/mismatch.pt"],
    "resume corrupt": ["--model", "digitnet", "--data", "digits", "--resume"],
    "zero threads": ["--model", "digitnet", "--data", "digits", "--threads", "0"],
}


def _check(code, out, err):
    assert code == 2, err
    assert out == ""
    lines = err.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in err, err
    assert "error" in lines[0]


@pytest.mark.parametrize("case", sorted(BAD))
def test_bad_input_one_line_exit_2(case, run_cli, ckpts):
    args = [a.format(d=ckpts) for a in BAD[case]]
    _check(*run_cli(*args))


@pytest.mark.parametrize("case", sorted(BAD_TRAIN))
def test_bad_train_input_writes_nothing(case, run_cli, ckpts, tmp_path):
    out = tmp_path / "run"
    if case == "resume corrupt":  # a run directory whose checkpoint was cut short
        out.mkdir()
        (out / "checkpoint.pt").write_bytes((ckpts / "corrupt.pt").read_bytes())
    args = [a.format(d=ckpts) for a in BAD_TRAIN[case]]
    if "--epochs" not in args:
        args += ["--epochs", "1"]
    _check(*run_cli("train", *args, "--out", out, "--quiet"))
    left = sorted(p.name for p in out.iterdir()) if out.exists() else []
    assert left == (["checkpoint.pt"] if case == "resume corrupt" else [])


def test_real_process_exit_code_and_no_traceback(ckpts):
    r = subprocess.run([sys.executable, "-m", "shiftq.cli", "metrics", "--ckpt", str(ckpts / "corrupt.pt")],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 2 and r.stdout == ""
    assert r.stderr.count("\n") == 1 and "Traceback" not in r.stderr
