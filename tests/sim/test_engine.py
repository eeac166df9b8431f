"""The layer engine against hw/golden.py, every output word, on Icarus and Verilator.

Fast: every conv2d / linear of a small random IR (sim/layers.py: int8 input with
CSD weights, APoT codes, uniform codes, residual from codes and from a raw int
shortcut, a raw-accumulator conv, a linear with signed logits) and the bit-flip test.
Slow: the layers of real exports in build/ (digitnet: every layer; resnet20: the
first conv and one residual block), when such an export exists.
"""
from pathlib import Path

import numpy as np
import pytest

from hw.golden import run as golden_run
from hw.ir import IR
from hw.rtl.pe import shift_bits, unpack_word
from sim.layers import check_layer, engine_layers, load_export, random_ir
from sim.runner import SIMULATORS

REPO = Path(__file__).resolve().parents[2]
RANDOM_LAYERS = ["stem", "c1", "c2", "sc", "c3", "fc"]


@pytest.fixture(scope="module")
def rand_ir():
    return random_ir(0)


def _assert_nontrivial(env, name):
    # an engine that wrote nothing (all zeros) must not pass by accident
    assert len(np.unique(env[name][0])) > 4, f"{name}: golden outputs too uniform for a real check"


@pytest.mark.parametrize("sim", SIMULATORS)
@pytest.mark.parametrize("layer", RANDOM_LAYERS)
def test_engine_random_layer(sim, layer, rand_ir):
    ir, env = rand_ir
    _assert_nontrivial(env, layer)
    r = check_layer(ir, layer, env, sim, po_max=4, pi_max=2)
    assert r["passed"], {k: r.get(k) for k in ("error", "mismatches", "first_mismatches", "rundir")}
    assert r["words"] == np.asarray(env[layer][0]).size
    # the engine keeps its PEs busy: cycles = loop bound + a fixed pipeline overhead
    assert r["loop_cycles"] <= r["cycles"] <= r["loop_cycles"] + 8, r


def _corrupted_ir(ir, name, idx, bit):
    """The IR with table word `idx` of `name` flipped at `bit` (terms and weights)."""
    n = ir.node(name)
    wd = n["weight"]
    terms = np.array(ir.array(wd["terms_key"]))
    T, ms = wd["terms"], wd["max_shift"]
    flat = terms.reshape(-1, T, 2)
    from hw.rtl.pe import pack_terms
    word = pack_terms([tuple(t) for t in flat[idx]], ms) ^ (1 << bit)
    flat[idx] = unpack_word(word, T, ms)
    w = (flat[..., 0].astype(np.int64) << flat[..., 1].astype(np.int64)).sum(-1)
    arrays = dict(ir.arrays)
    arrays[wd["terms_key"]] = terms
    arrays[wd["key"]] = w.reshape(np.shape(ir.array(wd["key"]))).astype(np.int32)
    return IR(ir.graph, arrays)


@pytest.mark.parametrize("sim", SIMULATORS)
def test_flipped_weight_bit_is_reported(sim, rand_ir):
    """Flip the sign bit of one term in the weight table: the testbench must report
    exactly the output words the golden model says change, and fail."""
    ir, env = rand_ir
    name = "c2"
    n = ir.node(name)
    ms, T = n["weight"]["max_shift"], n["weight"]["terms"]
    w = np.asarray(ir.array(n["weight"]["key"])).reshape(-1)
    sb = shift_bits(ms)
    want_bad = 0
    for idx in np.flatnonzero(w):  # a used term 0: flipping its sign changes the weight
        bit = sb  # neg bit of term 0
        bad_ir = _corrupted_ir(ir, name, int(idx), bit)
        bad_env = golden_run(bad_ir, env["input"], return_all=True, quantized=True)
        want_bad = int((bad_env[name][0] != env[name][0]).sum())
        if want_bad:
            break
    assert want_bad > 0
    r = check_layer(ir, name, env, sim, po_max=4, pi_max=2, corrupt=(int(idx), bit))
    assert not r["passed"]
    assert r["mismatches"] == want_bad, r
    assert r["first_mismatches"], r


# ---------------------------------------------------------------- real exports (slow)

def _export(name):
    d = REPO / "build" / name
    if not (d / "model.json").exists() or not (d / "vectors.npz").exists():
        pytest.skip(f"no export at {d} (run `make export MODEL={name}`)")
    return load_export(d)


@pytest.mark.slow
@pytest.mark.parametrize("sim", SIMULATORS)
def test_engine_digitnet_every_layer(sim):
    ir, env, words = _export("digitnet")
    for name in engine_layers(ir):
        r = check_layer(ir, name, env, sim, words=words.get(name))
        assert r["passed"], (name, {k: r.get(k) for k in ("error", "mismatches", "first_mismatches")})


@pytest.mark.slow
@pytest.mark.parametrize("sim", SIMULATORS)
def test_engine_resnet20_stem_and_residual_block(sim):
    ir, env, words = _export("resnet20")
    names = engine_layers(ir)
    block = [n["name"] for n in ir.nodes if n.get("requant") and n["requant"].get("residual")][0]
    conv1 = ir.node(block)["input"]  # the block's first conv feeds its last
    for name in [names[0], conv1, block]:
        r = check_layer(ir, name, env, sim, words=words.get(name))
        assert r["passed"], (name, {k: r.get(k) for k in ("error", "mismatches", "first_mismatches")})
