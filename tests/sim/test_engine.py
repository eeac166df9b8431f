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

from sim.layers import check_layer, engine_layers, load_export, random_ir, visible_flip
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


@pytest.mark.parametrize("sim", SIMULATORS)
def test_engine_multiplier_pe_variant(sim, rand_ir):
    """The same engine with multiplier PEs (plain integer weights in the ROMs): the
    baseline datapath is bit-exact too, so the synthesis comparison compares like with like."""
    ir, env = rand_ir
    r = check_layer(ir, "c2", env, sim, po_max=4, pi_max=2, pe="mult")
    assert r["passed"], {k: r.get(k) for k in ("error", "mismatches", "first_mismatches")}


@pytest.mark.parametrize("sim", SIMULATORS)
def test_flipped_weight_bit_is_reported(sim, rand_ir):
    """Flip the sign bit of one term in the weight table: the testbench must report
    exactly the output words the golden model says change, and fail."""
    ir, env = rand_ir
    name = "c2"
    idx, bit, want_bad = visible_flip(ir, env, name)
    r = check_layer(ir, name, env, sim, po_max=4, pi_max=2, corrupt=(idx, bit))
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


# ---------------------------------------------------------------- pure Python parts

def test_choose_parallelism_fewest_groups_then_fewest_pes():
    from hw.rtl.engine import choose_parallelism
    assert choose_parallelism(12, 3, 16, 4) == (12, 3)
    assert choose_parallelism(23, 12, 16, 4) == (12, 4)
    assert choose_parallelism(45, 23, 16, 4) == (15, 4)
    assert choose_parallelism(64, 64, 16, 4) == (16, 4)
    assert choose_parallelism(1, 1, 16, 4) == (1, 1)


def test_weight_rom_layout(rand_ir):
    """Lane l, address og*S + (ig*KH + ky)*KW + kx, sub-word b = w[og*PO+l, ig*PI+b, ky, kx]."""
    from hw.rtl.engine import layer_spec, weight_rom_words
    from hw.rtl.pe import term_bits
    ir, _ = rand_ir
    spec = layer_spec(ir, "c2", po_max=4, pi_max=3)
    sw = term_bits(spec.max_shift) * spec.terms
    words = np.asarray(spec.words, dtype=object).reshape(spec.O, spec.C, spec.KH, spec.KW)
    for l in range(spec.PO):
        rom = weight_rom_words(spec, l)
        assert len(rom) == spec.OG * spec.steps
        for og in range(spec.OG):
            for ig in range(spec.IG):
                for ky in range(spec.KH):
                    for kx in range(spec.KW):
                        word = rom[og * spec.steps + (ig * spec.KH + ky) * spec.KW + kx]
                        for b in range(spec.PI):
                            o, i = og * spec.PO + l, ig * spec.PI + b
                            want = words[o, i, ky, kx] if o < spec.O and i < spec.C else 0
                            assert (word >> (b * sw)) & ((1 << sw) - 1) == want


def test_read_mem_matches_tables(tmp_path, rand_ir):
    from hw.rtl.engine import read_mem
    from hw.tables import write_tables
    ir, _ = rand_ir
    write_tables(ir, tmp_path)
    from hw.rtl.engine import layer_spec
    for name in engine_layers(ir):
        n = ir.node(name)
        words = read_mem(tmp_path / f"{name}.mem", np.asarray(ir.array(n["weight"]["key"])).size)
        assert words == layer_spec(ir, name).words
    with pytest.raises(ValueError):
        read_mem(tmp_path / "c1.mem", 3)
