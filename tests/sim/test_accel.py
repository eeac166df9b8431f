"""The whole-network accelerator against hw/golden.py: logits, class and every layer's
activations (read through the debug port after each step), integer equality.

Fast (default suite): digitnet on 3 digits test images on Verilator (every layer), a
flipped bit in one weight-table word must be caught, and a ResNet downsampling block
(random weights) with and without the column-deinterleaved layout. Slow: digitnet on 50 test images
(Verilator), digitnet on Icarus, the ResNet-20 dry run on 2 images (Verilator).
Needs the exports `build/digitnet` and `build/resnet20` (`make export MODEL=...`).
"""
from pathlib import Path

import numpy as np
import pytest

from boards import accel_top
from hw.golden import quantize_input, run as golden_run
from hw.ir import load
from hw.rtl.accel.check import check_accel, load_words
from hw.rtl.accel.plan import make_plan
from sim.layers import corrupt_ir, downsample_ir
from sim.runner import missing_reason

REPO = Path(__file__).resolve().parents[2]
# measured PE utilisation (MACs / (PEs x cycles)) of digitnet on a 4x2x4 array, with
# margin: the stem (1 input channel of PI = 2) and the 2-pass 8-bit stem / head cost it
UTIL_DIGITNET_4x2x4 = 0.6


def _export(name):
    d = REPO / "build" / name
    if not (d / "model.json").exists() or not (d / "vectors.npz").exists() or not (d / "tables").is_dir():
        pytest.skip(f"no export at {d} (run `make export MODEL={name}`)")
    return d, load(d)


def _need(sim):
    why = missing_reason(sim)
    if why:
        pytest.skip(why)


def digits_test_images(ir, n):
    """The first `n` digits test images as input integers (the loader's split and
    normalisation, recomputed with NumPy + scikit-learn: no torch here)."""
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    d = load_digits()
    x, y = d.images.astype(np.float32), d.target.astype(np.int64)
    xtr, xte, _, yte = train_test_split(x, y, test_size=0.2, stratify=y, random_state=0)
    mean, std = float(xtr.mean()), float(xtr.std())
    xte = ((xte - mean) / std)[:, None]
    return quantize_input(ir, xte[:n]), yte[:n]


def _check(rep):
    assert rep["passed"], {k: rep.get(k) for k in ("error", "failed_images", "first_mismatches", "rundir")}


def test_digits_images_are_the_export_vectors():
    d, ir = _export("digitnet")
    x, _ = digits_test_images(ir, 16)
    with np.load(d / "vectors.npz") as z:
        assert np.array_equal(x, z["node:input"][:16])


def _digitnet(sim, n, **kw):
    """The accelerator on the first `n` digits test images, built from the export's tables."""
    _need(sim)
    d, ir = _export("digitnet")
    x, _ = digits_test_images(ir, n)
    return check_accel(ir, x, sim, words=load_words(d, ir), **kw)


def test_accel_digitnet_verilator_every_layer():
    rep = _digitnet("verilator", 3, po=4, pi=2, px=4)
    _check(rep)
    assert rep["images"] == 3
    assert all(r["layer_mismatches"] == {} for r in rep["results"])
    assert rep["utilisation"] > UTIL_DIGITNET_4x2x4, rep["utilisation"]


def test_accel_digitnet_weights_loaded_at_boot():
    """The iCEBreaker's plan: weights written through wl_* before the first image (its
    SPRAM, filled by boards/flash_loader.py from the SPI flash), no deep pipeline (the
    default suite's other runs have it): same results."""
    _check(_digitnet("verilator", 1, **accel_top.PARALLELISM["icebreaker"]))


def test_accel_corrupted_table_is_caught():
    """One sign bit flipped in a table word of b1_conv1: the run must fail, at exactly
    the layers the golden model of the corrupted network says differ."""
    _need("verilator")
    d, ir = _export("digitnet")
    x, _ = digits_test_images(ir, 1)
    words = load_words(d, ir)
    name = "b1_conv1"
    w = np.asarray(ir.array(ir.node(name)["weight"]["key"])).reshape(-1)
    idx = int(np.flatnonzero(w)[0])
    bit = 2  # the neg bit of term 0 (max_shift 3: SB = 2)
    bad_ir = corrupt_ir(ir, name, idx, bit)
    env_ok = golden_run(ir, x, return_all=True, quantized=True)
    env_bad = golden_run(bad_ir, x, return_all=True, quantized=True)
    assert not np.array_equal(env_ok[name], env_bad[name])
    words[name] = list(words[name])
    words[name][idx] ^= 1 << bit
    rep = check_accel(ir, x, "verilator", po=4, pi=2, px=2, words=words, tag="digitnet-corrupt")
    assert not rep["passed"]
    mism = rep["results"][0]["layer_mismatches"]
    assert mism.get(name) == int((env_ok[name] != env_bad[name]).sum()), mism
    assert "stem" not in mism  # the layer before the corrupted one still matches


def test_accel_downsampling_block_deinterleaved():
    """A ResNet downsampling block (stride-2 conv + option-A shortcut, both reading the
    stem's output): with the stem's output stored column-deinterleaved the stride-2 conv
    uses all PX pixel lanes and the shortcut is folded into c2's residual read; every
    layer equals the golden model's, and the run takes fewer clocks than the same network
    with the plain layout (half the lanes, a shortcut step), which must be bit-exact too."""
    _need("verilator")
    ir, env = downsample_ir(3, size=8)
    x = env["input"]
    kw = dict(po=4, pi=2, px=4)
    dil = make_plan(ir, **kw)
    plain = make_plan(ir, deinterleave=False, **kw)
    assert dil.deinterleaved == {"stem": 8} and plain.deinterleaved == {}
    # the shortcut has no step: c2 reads its residual from the stem's output
    assert dil.folded == {"sc": ("stem", 1)} and "sc" not in [s.name for s in dil.steps]
    assert "sc" in [s.name for s in plain.steps]
    c1 = next(s for s in dil.steps if s.name == "c1")
    assert c1.dil_in and c1.L == 4 and next(s for s in plain.steps if s.name == "c1").L == 2
    reps = []
    for plan, tag in ((dil, "dil"), (plain, "plain")):
        rep = check_accel(ir, x, "verilator", plan=plan, tag=f"downsample-{tag}")
        _check(rep)
        assert rep["images"] == 2 and all(r["layer_mismatches"] == {} for r in rep["results"])
        reps.append(rep)
    assert reps[0]["cycles"] < reps[1]["cycles"], (reps[0]["cycles"], reps[1]["cycles"])
    # 4 x 4 x 2: the 1x1 conv c3 has S = 2 clocks a group, less than the PO = 4 clocks
    # of a drain: its groups wait for the shadow rows
    narrow = make_plan(ir, po=4, pi=4, px=2)
    assert next(s for s in narrow.steps if s.name == "c3").S < narrow.PO and narrow.folded
    rep = check_accel(ir, x, "verilator", plan=narrow, tag="downsample-4x4x2")
    _check(rep)
    assert all(r["layer_mismatches"] == {} for r in rep["results"])


@pytest.mark.slow
def test_accel_digitnet_50_images_verilator():
    rep = _digitnet("verilator", 50, po=4, pi=2, px=4)
    _check(rep)
    assert rep["images"] == 50


@pytest.mark.slow
def test_accel_digitnet_icarus():
    _check(_digitnet("icarus", 2, po=4, pi=2, px=2))


@pytest.mark.slow
def test_accel_resnet20_verilator():
    _need("verilator")
    d, ir = _export("resnet20")
    with np.load(d / "vectors.npz") as z:
        x = z["node:input"][:2]
    rep = check_accel(ir, x, "verilator", po=12, pi=4, px=8, words=load_words(d, ir))
    _check(rep)
    assert rep["images"] == 2
