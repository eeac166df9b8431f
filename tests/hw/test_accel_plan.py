"""hw/rtl/accel/plan.py: descriptor table, memory plan and device budget (pure Python)."""
from pathlib import Path

import numpy as np
import pytest

from hw.ir import load
from hw.rtl.accel.plan import DoesNotFit, PlanError, check_budget, make_plan, memory_blocks
from hw.tables import pack_words
from sim.layers import random_ir

REPO = Path(__file__).resolve().parents[2]


def _export(name):
    d = REPO / "build" / name
    if not (d / "model.json").exists():
        pytest.skip(f"no export at {d}")
    return load(d)


def _live_ok(plan, ir):
    """No step writes a buffer holding a tensor that is read later (liveness)."""
    out = ir.graph["output"]
    base = {k: v[0] for k, v in plan.tensor_addr.items()}
    readers = {}
    for k, n in enumerate(ir.nodes):
        srcs = [n["input"]] + ([n["requant"]["residual"]["input"]] if n.get("requant") and n["requant"].get("residual") else [])
        for s in srcs:
            readers.setdefault(s, []).append(k)
    for k, n in enumerate(ir.nodes):
        if n["op"] == "flatten" or n["name"] == out:
            continue
        for t, rs in readers.items():
            if t != n["name"] and base.get(t) == base[n["name"]] and any(r > k for r in rs) and \
                    any(m["name"] == t for m in ir.nodes[:k]) | (t == "input"):
                pytest.fail(f"{n['name']} overwrites {t}, still read by node {max(rs)}")


def test_resnet20_plan_shapes_buffers_and_weights():
    ir = _export("resnet20")
    p = make_plan(ir, po=12, px=4)
    assert [s.op for s in p.steps].count("conv") == 20
    assert [s.op for s in p.steps].count("shortcut") == 2
    assert p.act_buffers == 3          # ping-pong + the block input kept for the residual add
    assert p.buf_words == 12 * 32 * 32
    assert p.act_bits == 8             # int8 input and the 8-bit gap codes
    _live_ok(p, ir)
    # every weight is in its format memory at wbase + og*S + t, lane l
    for s in p.steps:
        if s.op != "conv":
            continue
        n = ir.node(s.name)
        T, ms = p.wformats[s.wfmt]
        tw = T * (2 + max(1, ms.bit_length()))
        words, _ = pack_words(ir.array(n["weight"]["terms_key"]), n["weight"]["max_shift"])
        words = np.asarray([int(w) for w in words]).reshape(s.O, s.S)
        for og in range(s.OG):
            for t in (0, s.S - 1):
                mw = p.wmem[s.wfmt][s.wbase + og * s.S + t]
                for l in range(p.PO):
                    o = og * p.PO + l
                    want = int(words[o, t]) if o < s.O else 0
                    assert (mw >> (l * tw)) & ((1 << tw) - 1) == want
    assert p.macs == 21452994


def test_lane_start_values_and_flatten_alias():
    ir = _export("digitnet")
    p = make_plan(ir, po=4, px=3)
    stem = p.steps[0]
    assert stem.lanes == [(-1, -1, -9, 0), (-1, 0, -8, 1), (-1, 1, -7, 2)]
    assert stem.PG == -(-64 // 3)
    names = [s.name for s in p.steps]
    assert "pool" in names and names[-1] == "head" and p.steps[-1].to_logits


def test_budget_fits_and_does_not_fit():
    ir = _export("resnet20")
    p = make_plan(ir, po=12, px=4)
    b = check_budget(p, "ulx3s-85f")
    assert 0 < b["ebr"] <= 208
    with pytest.raises(DoesNotFit, match=r"does not fit iCE40 UP5K: memory .* blocks of"):
        check_budget(p, "icebreaker")
    with pytest.raises(DoesNotFit) as e:
        check_budget(make_plan(ir, po=12, px=64), "ecp5-85f")
    assert "\n" not in str(e.value)


def test_up5k_spram_weights_need_the_loader():
    ir = _export("digitnet")
    p = make_plan(ir, po=4, px=1)
    with pytest.raises(DoesNotFit, match="needs SPRAM, which a bitstream cannot initialise"):
        check_budget(p, "icebreaker")
    b = check_budget(p, "icebreaker", loader=True)
    assert b["spram"] == 2 and b["ebr"] <= 30


def test_memory_blocks():
    assert memory_blocks(16, 16384, [(16, 16384)]) == 1
    assert memory_blocks(17, 16385, [(16, 16384)]) == 4
    assert memory_blocks(8, 512, [(16, 256), (8, 512)]) == 1


def test_raw_integer_tensors_are_refused():
    ir, _ = random_ir(0)  # has an option-B style conv with requant null
    with pytest.raises(PlanError, match="raw integers"):
        make_plan(ir)


def test_bad_parallelism():
    ir = _export("digitnet")
    with pytest.raises(PlanError):
        make_plan(ir, po=0)
