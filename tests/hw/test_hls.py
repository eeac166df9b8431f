"""HLS C++ backend: g++ C simulation equals the golden model on every layer, and can fail.

Compiles are content-cached in one directory shared by the xdist workers, so a binary
built from byte-identical sources is compiled once per session.
"""
import json
import re
import shutil

import numpy as np
import pytest

from hw.hls import emit
from hw.hls.csim import csim
from hw.ir import IR, load
from shiftq.errors import UserError


@pytest.fixture(scope="session")
def hls_cache_dir(tmp_path_factory):
    return tmp_path_factory.getbasetemp().parent / "shiftq-hls-cache"


@pytest.fixture
def hls_cache(hls_cache_dir, monkeypatch):
    """The binary cache, for csim() and (through SHIFTQ_HLS_CACHE) the command."""
    monkeypatch.setenv("SHIFTQ_HLS_CACHE", str(hls_cache_dir))
    return hls_cache_dir


def _copy_export(src, dst):
    dst.mkdir(parents=True)
    for f in ("model.json", "weights.npz", "vectors.npz"):
        shutil.copy(src / f, dst / f)
    return dst


def test_digitnet_csim_bit_exact_every_layer(digitnet_export, tmp_path, hls_cache, run_cli):
    d = _copy_export(digitnet_export, tmp_path / "digitnet")
    res = csim(d, layers=True, random_images=40, seed=1, cache_dir=hls_cache)
    ir = load(d)
    assert res["images"] == 8 + 40
    assert set(res["nodes"]) == {n["name"] for n in ir.nodes}
    assert all(r["pass"] and r["images"] == 48 for r in res["nodes"].values()), res["nodes"]
    assert res["pass"]
    # the command on the same sources: the binary is reused, the output is bit-exact
    code, out, err = run_cli("hls-csim", "--build", d, "--layers")
    assert code == 0, err
    assert "digitnet: PASS on 8 images (every layer)" in out and "FAIL" not in out


def test_corrupted_constant_is_caught(digitnet_export, tmp_path, hls_cache, run_cli):
    d = _copy_export(digitnet_export, tmp_path / "digitnet")
    ir = load(d)
    emit.emit_hls(ir, d / "hls")
    wh = (d / "hls" / "weights.h").read_text()
    # the first word of b1_conv1's table: replace it by a different, valid non-zero word
    m = re.search(r"(static const \w+(?: \w+)? w_b1_conv1\[\d+\]\[\d+\] = \{\n\s*)(\d+)", wh)
    assert m, "b1_conv1's weight table not found"
    old = int(m.group(2))
    from hw.tables import field_layout
    w = ir.node("b1_conv1")["weight"]
    lay = field_layout(w["max_shift"], w["terms"])
    one = (1 << (lay["shift_bits"] + 1)) | 1  # a single term +2^1
    new = one if old != one else one + 1  # +2^1, or +2^2 if the word already was +2^1
    wh = wh[:m.start(2)] + str(new) + wh[m.end(2):]
    (d / "hls" / "weights.h").write_text(wh)
    res = csim(d, layers=True, cache_dir=hls_cache)
    assert not res["pass"]
    assert res["nodes"]["stem"]["pass"]
    bad = res["nodes"]["b1_conv1"]
    assert not bad["pass"] and bad["got"] != bad["want"]
    code, out, _ = run_cli("hls-csim", "--build", d)
    assert code == 1 and "FAIL  head" in out


def test_resnet20_dry_run_csim_bit_exact(tmp_path, hls_cache):
    """The exporter runs the HLS backend; the C++ of ResNet-20 (option-A shortcuts, fused
    residuals, 8-bit edges, APoT W4/A4 inside) equals the golden model on every layer."""
    from shiftq.export import export
    out = tmp_path / "resnet20"
    rep = export(None, str(out), dry_run_model_name="resnet20", vectors=2, eval_limit=8,
                 backends=["hls"], progress=lambda *a: None)
    assert rep["backends"]["hls"]["top"] == "resnet20_top"
    for f in emit.FILES:
        assert (out / "hls" / f).exists(), f
    res = csim(out, layers=True, cache_dir=hls_cache)
    assert res["images"] == 2
    assert res["pass"] and all(r["pass"] for r in res["nodes"].values()), res["nodes"]
    assert {"s2b0_shortcut", "s3b0_shortcut", "pool", "head"} <= set(res["nodes"])


def test_emitter_is_deterministic_and_shift_add(digitnet_export):
    ir = load(digitnet_export)
    a, b = emit.generate(ir), emit.generate(ir)
    assert a == b
    src = a["net.cpp"] + a["weights.h"] + a["net.h"]
    assert "float" not in src and "double" not in src
    # weights are consumed as (sign, shift) terms: shifted values added or subtracted
    assert src.count("if (f[") >= 2 and "acc -= p; else acc += p;" in src
    for n in ir.nodes:
        if n["op"] in ("conv2d", "linear"):
            assert f"void layer_{n['name']}(" in src
            assert f"ap_int<{n['acc_bits']}> acc" in src
            assert f"ap_int<{n['requant']['sum_bits']}> s" in src
    assert "#pragma HLS PIPELINE" in src and "#pragma HLS ARRAY_PARTITION" in src
    assert "PAR_b1_conv1" in a["parameters.h"]
    man = json.loads(a["manifest.json"])
    assert man["top"] == "digitnet_top" and man["output"] == "head"


def _ir_with_op(digitnet_export, op):
    ir = load(digitnet_export)
    g = json.loads(json.dumps(ir.graph))
    g["nodes"][4]["op"] = op  # the maxpool
    return IR(g, ir.arrays)


def test_emitter_refuses_a_layer_it_lacks(digitnet_export, tmp_path):
    with pytest.raises(UserError, match="no 'upsample' layer"):
        emit.emit_hls(_ir_with_op(digitnet_export, "upsample"), tmp_path / "hls")
    assert not (tmp_path / "hls" / "net.cpp").exists()
    ir = load(digitnet_export)
    g = json.loads(json.dumps(ir.graph))
    g["nodes"][1]["groups"] = 12
    with pytest.raises(UserError, match="groups"):
        emit.generate(IR(g, ir.arrays))


def test_bad_input_is_one_line_exit_2(run_cli, tmp_path, digitnet_export):
    (tmp_path / "noir").mkdir()
    for args in (["--build", tmp_path / "noir"], ["--build", tmp_path / "missing"]):
        code, out, err = run_cli("hls-csim", *args)
        assert code == 2 and len(err.strip().splitlines()) == 1 and "Traceback" not in err, err
    # a model with a layer the emitter (and IR v1) lacks
    d = _copy_export(digitnet_export, tmp_path / "odd")
    g = json.loads((d / "model.json").read_text())
    g["nodes"][4]["op"] = "upsample"
    (d / "model.json").write_text(json.dumps(g))
    code, _, err = run_cli("hls-csim", "--build", d)
    assert code == 2 and len(err.strip().splitlines()) == 1 and "upsample" in err
    code, _, err = run_cli("hls-csim", "--build", digitnet_export, "--random", "-1")
    assert code == 2 and len(err.strip().splitlines()) == 1


def test_random_inputs_cover_the_input_range(digitnet_export, tmp_path):
    from hw.hls.csim import write_data
    ir = load(digitnet_export)
    n = write_data(ir, tmp_path / "none", tmp_path / "data", random_images=5, seed=3)
    x = np.frombuffer((tmp_path / "data" / "input.i64").read_bytes(), dtype="<i8")
    assert n == 5 and x.size == 5 * 64 and x.min() >= -127 and x.max() <= 127


def test_trained_digitnet_csim_bit_exact(tmp_path, hls_cache):
    """The PPQ-compressed digitnet (runs/digitnet/compressed.pt, `make export`), on real
    digits test images, every layer. Skipped when the checkpoint has not been made."""
    from pathlib import Path

    from shiftq.export import export
    ckpt = Path(__file__).resolve().parents[2] / "runs" / "digitnet" / "compressed.pt"
    if not ckpt.exists():
        pytest.skip("no runs/digitnet/compressed.pt (shiftq compress --model digitnet --data digits --recipe ppq)")
    local = tmp_path / "compressed.pt"
    shutil.copy(ckpt, local)  # another process may rewrite runs/ meanwhile
    out = tmp_path / "digitnet"
    export(str(local), str(out), data_name="digits", vectors=32, eval_limit=32, backends=["hls"],
           progress=lambda *a: None)
    assert load(out).graph["source"]["recipe"] == "ppq"
    res = csim(out, layers=True, cache_dir=hls_cache)
    assert res["images"] == 32
    assert res["pass"] and all(r["pass"] for r in res["nodes"].values()), res["nodes"]
