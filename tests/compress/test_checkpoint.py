"""Checkpoints: round trips (FP32 and fake-quantized) and every way a file can be wrong."""
import collections

import pytest
import torch

from compress.checkpoint import load_checkpoint, load_model, save_checkpoint
from compress.models import build_model
from compress.quant import default_qconfig, wrap
from shiftq.errors import UserError


def test_fp32_round_trip_with_pruned_widths(tmp_path):
    torch.manual_seed(0)
    m = build_model("resnet20", widths={"stem.conv": 12, "s3b1.conv1": 40}).eval()
    save_checkpoint(tmp_path / "c.pt", m, epoch=7, meta={"note": "x"})
    ck = load_checkpoint(tmp_path / "c.pt")
    assert ck["kind"] == "fp32" and ck["epoch"] == 7 and ck["qconfig"] is None
    m2 = load_model(tmp_path / "c.pt")
    x = torch.randn(2, 3, 32, 32)
    assert torch.equal(m(x), m2(x))


def test_compressed_round_trip_keeps_quantizer_parameters(tmp_path):
    torch.manual_seed(0)
    m = build_model("digitnet")
    wrap(m, default_qconfig(m))
    with torch.no_grad():
        m.units.b1.act.alpha.fill_(3.25)
    m.eval()
    save_checkpoint(tmp_path / "q.pt", m)
    assert load_checkpoint(tmp_path / "q.pt")["kind"] == "compressed"
    m2 = load_model(tmp_path / "q.pt")
    assert m2.units.b1.act.alpha.item() == 3.25
    x = torch.randn(4, 1, 8, 8)
    assert torch.equal(m(x), m2(x))


def test_save_is_atomic_on_failure(tmp_path):
    m = build_model("digitnet")
    save_checkpoint(tmp_path / "c.pt", m, epoch=1)
    before = (tmp_path / "c.pt").read_bytes()
    with pytest.raises(TypeError):
        save_checkpoint(tmp_path / "c.pt", m, epoch=2, meta={"bad": object()})
    assert (tmp_path / "c.pt").read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["c.pt"]


def _bad_files(tmp_path):
    good = tmp_path / "good.pt"
    save_checkpoint(good, build_model("digitnet"))
    data = good.read_bytes()
    (tmp_path / "trunc.pt").write_bytes(data[: len(data) // 2])
    (tmp_path / "text.pt").write_text("hello")
    torch.save({"weights": torch.zeros(3)}, tmp_path / "plain.pt")
    torch.save(collections.OrderedDict(a=1), tmp_path / "odict.pt")
    ck = torch.load(good, weights_only=True)
    torch.save({**ck, "version": 99}, tmp_path / "v99.pt")
    sd = dict(ck["state_dict"])
    sd["units.stem.conv.weight"] = torch.zeros(5, 1, 3, 3)
    torch.save({**ck, "state_dict": sd}, tmp_path / "shape.pt")
    sd2 = dict(ck["state_dict"])
    sd2.pop("units.head.linear.bias")
    torch.save({**ck, "state_dict": sd2}, tmp_path / "missing_key.pt")
    torch.save({**ck, "model": {"name": "resnet20"}}, tmp_path / "other_model.pt")
    torch.save({**ck, "model": {"name": "nonet"}}, tmp_path / "unknown_model.pt")
    return ["nope.pt", "trunc.pt", "text.pt", "plain.pt", "odict.pt", "v99.pt", "shape.pt",
            "missing_key.pt", "other_model.pt", "unknown_model.pt"]


def test_every_bad_checkpoint_is_a_one_line_user_error(tmp_path):
    for name in _bad_files(tmp_path):
        with pytest.raises(UserError) as e:
            load_model(tmp_path / name)
        msg = str(e.value)
        assert "\n" not in msg and msg, name
    (tmp_path / "adir.pt").mkdir()
    with pytest.raises(UserError):
        load_checkpoint(tmp_path / "adir.pt")
