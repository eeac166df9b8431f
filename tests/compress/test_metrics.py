"""Cost metrics (seed 001 Eq. 5, 6) under DESIGN.md's counting convention."""
import json

import pytest
import torch

from compress.checkpoint import save_checkpoint
from compress.metrics import layer_costs, model_metrics, uniform_pruned_widths
from compress.models import build_model
from compress.quant import default_qconfig, wrap
from shiftq.errors import UserError


def _paper(name, p=0.3):
    m = build_model(name, widths=uniform_pruned_widths(name, p))
    return model_metrics(m, default_qconfig(m, "apot", 4, 4, 8))


def test_resnet20_at_30_percent_matches_the_paper():
    r = _paper("resnet20")
    assert r["size_reduction"] == pytest.approx(15.78, rel=0.005)
    assert 115.6 * 0.995 <= r["bops_reduction"] <= 115.85 * 1.005
    # paper Fig. 9a: 8.67e6 -> 0.55e6 bits, 41.79e9 -> 0.36e9 BOPs (they count BN too)
    assert r["size_bits"] / 1e6 == pytest.approx(0.55, abs=0.01)
    assert r["bops"] / 1e9 == pytest.approx(0.36, abs=0.01)


def test_widths_lose_floor_p_c_filters_of_every_3x3_conv():
    w = uniform_pruned_widths("resnet20", 0.3)
    assert w["stem.conv"] == 12 and w["s1b0.conv1"] == 12
    assert w["s2b0.conv2"] == 23 and w["s3b2.conv1"] == 45
    assert uniform_pruned_widths("vgg16", 0.3)["fc1.linear"] == 512  # linear layers kept


def test_macs_and_bits_per_layer_by_hand():
    m = build_model("digitnet")
    rows = {r["layer"]: r for r in layer_costs(m, default_qconfig(m))}
    stem = rows["stem.conv"]  # 1 -> 16, 3x3, 8x8 output
    assert stem["params"] == 16 * 9 and stem["macs"] == 16 * 9 * 64
    assert (stem["wbits"], stem["abits"]) == (8, 8)
    b2 = rows["b2.conv1"]  # 32 -> 32 after the 2x2 max pool: 4x4 output
    assert b2["macs"] == 32 * 32 * 9 * 16 and b2["bops"] == b2["macs"] * 16
    assert rows["head.linear"]["macs"] == 320 and rows["head.linear"]["size_bits"] == 320 * 8


def test_dense_fp32_has_no_reduction():
    r = model_metrics(build_model("resnet32"), {})
    assert r["size_reduction"] == 1.0 and r["bops_reduction"] == 1.0
    assert r["params"] == r["dense_params"]


def test_checkpoint_metrics_use_its_own_shapes_and_bits(tmp_path, run_cli):
    m = build_model("resnet20", widths=uniform_pruned_widths("resnet20", 0.3))
    wrap(m, default_qconfig(m))
    save_checkpoint(tmp_path / "c.pt", m)
    code, out, err = run_cli("metrics", "--ckpt", tmp_path / "c.pt", "--json")
    assert code == 0, err
    r = json.loads(out)
    ref = _paper("resnet20")
    for k in ("params", "macs", "size_bits", "bops", "size_reduction", "bops_reduction"):
        assert r[k] == ref[k], k


def test_cli_metrics_json(run_cli):
    code, out, err = run_cli("metrics", "--model", "resnet20", "--prune", "0.3", "--wbits", "4",
                             "--abits", "4", "--edge-bits", "8", "--json")
    assert code == 0, err
    r = json.loads(out)
    for k in ("params", "macs", "size_bits", "bops", "size_reduction", "bops_reduction", "layers"):
        assert k in r
    assert r["size_reduction"] == pytest.approx(15.78, rel=0.005)
    assert len(r["layers"]) == 20
    code, out, _ = run_cli("metrics", "--model", "digitnet")
    assert code == 0 and "reduction" in out


@pytest.mark.parametrize("p", [-0.1, 1.0, 1.5, float("nan")])
def test_prune_ratio_outside_0_1(p):
    with pytest.raises(UserError):
        uniform_pruned_widths("resnet20", p)
