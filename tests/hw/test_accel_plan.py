"""hw/rtl/accel/plan.py: descriptor table, memory plan and device budget (pure Python)."""
from pathlib import Path

import numpy as np
import pytest

from hw.ir import load
from hw.rtl.accel.plan import (PE_MAX_SHIFT, PE_TERMS, PE_TW, DoesNotFit, PlanError, check_budget,
                               dil_column, make_plan, memory_blocks)
from hw.rtl.pe import pe_product
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


def _weights_ok(p, ir):
    """Every weight of every conv, read back from the weight memory as the PE array sees
    it (lane o*PI + i of word wbase + og*S + ((cg*K + k)*npass + q), pass q shifted left
    by 4q), equals the IR's integer weight; lanes past O or C hold 0."""
    tw = PE_TW
    for s in p.steps:
        if s.op != "conv":
            continue
        w = np.asarray(ir.array(ir.node(s.name)["weight"]["key"])).astype(np.int64)
        K = s.KH * s.KW
        w = w.reshape(s.O, s.C, K)
        assert s.S == s.CG * K * s.npass
        for og in range(s.OG):
            for cg in range(s.CG):
                for k in (0, K - 1):
                    for o_ in range(p.PO):
                        for i in range(p.PI):
                            o, c = og * p.PO + o_, cg * p.PI + i
                            got = 0
                            for q in range(s.npass):
                                mw = p.wmem[0][s.wbase + og * s.S + (cg * K + k) * s.npass + q]
                                lane = (mw >> ((o_ * p.PI + i) * tw)) & ((1 << tw) - 1)
                                got += pe_product(1, lane, PE_TERMS, PE_MAX_SHIFT) << (4 * q)
                            want = int(w[o, c, k]) if o < s.O and c < s.C else 0
                            assert got == want, (s.name, o, c, k)


def test_resnet20_plan_shapes_buffers_and_weights():
    ir = _export("resnet20")
    p = make_plan(ir, po=12, px=4)
    assert [s.op for s in p.steps].count("conv") == 20
    assert [s.op for s in p.steps].count("shortcut") == 2   # PI = 1: 4 banks, no deinterleaving
    assert p.act_buffers == 3          # ping-pong + the block input kept for the residual add
    assert p.buf_words == 12 * 32 * 32
    assert p.act_bits == 8             # int8 input and the 8-bit gap codes
    _live_ok(p, ir)
    _weights_ok(p, ir)
    assert p.macs == 21452994


def test_lane_start_values_and_flatten_alias():
    ir = _export("digitnet")
    p = make_plan(ir, po=4, px=4)
    stem = p.steps[0]
    assert not stem.rowmode      # stride 1, same padding: PX consecutive raster pixels
    assert stem.lanes == [(-1, -1, -9, 0), (-1, 0, -8, 1), (-1, 1, -7, 2), (-1, 2, -6, 3)]
    assert stem.PG == 64 // 4
    names = [s.name for s in p.steps]
    assert "pool" in names and names[-1] == "head" and p.steps[-1].to_logits


def test_banked_layout_reads_pi_windows_in_distinct_banks():
    """PI channel windows of PX elements (channel stride HWp) never share a bank, and the
    weight words hold lane o*PI + i = (output og*PO+o, input cg*PI+i); the 8-bit stem
    runs as 2 passes of 2-term words."""
    ir = _export("resnet20")
    p = make_plan(ir, po=12, pi=4, px=8)
    nb = p.banks
    for name, (base, C, HW, HWp) in p.tensor_layout.items():
        assert HWp >= HW and (p.PI == 1 or HWp % nb == p.PX)
        for start in range(base - 5, base + 40):
            banks = {(start + i * HWp + q) % nb for i in range(p.PI) for q in range(p.PX)}
            assert len(banks) == nb, name
    _weights_ok(p, ir)
    assert p.steps[0].npass == 2 and p.steps[1].npass == 1
    down = next(s for s in p.steps if s.op == "conv" and s.stride == 2)
    # its input stored column-deinterleaved: all PX lanes (PX / 2 with the plain layout)
    assert down.rowmode and down.dil_in and down.L == p.PX
    plain = make_plan(ir, po=12, pi=4, px=8, deinterleave=False)
    assert next(s for s in plain.steps if s.op == "conv" and s.stride == 2).L == p.PX // 2


def test_deinterleaved_tensors_and_their_addresses():
    """ResNet-20 at 12 x 4 x 8: the two tensors read by the stride-2 convs (and their
    shortcuts) are deinterleaved, nothing else; a deinterleaved row holds the even
    columns, then the odd ones; the reader's kernel-column offsets walk those runs:
    for every tap, PX consecutive words hold the PX lanes' input pixels."""
    ir = _export("resnet20")
    p = make_plan(ir, po=12, pi=4, px=8)
    assert p.deinterleaved == {"s1b2_conv2": 32, "s2b2_conv2": 16}
    # their option-A shortcuts (channels copied into lo .. lo + C - 1) fold into the
    # residual reads of the blocks' conv2: no step, no buffer
    assert p.folded == {"s2b0_shortcut": ("s1b2_conv2", 5), "s3b0_shortcut": ("s2b2_conv2", 11)}
    assert "shortcut" not in [s.op for s in p.steps]
    c2 = next(s for s in p.steps if s.name == "s2b0_conv2")
    assert c2.res_fold and (c2.res_lo, c2.res_hi) == (5, 17)
    assert c2.res_base == p.tensor_addr["s1b2_conv2"][0] and c2.res_hwp == p.tensor_layout["s1b2_conv2"][3]
    assert [dil_column(x, 8) for x in range(-1, 9)] == [3, 0, 4, 1, 5, 2, 6, 3, 7, 4]
    base, C, HW, HWp = p.tensor_layout["s1b2_conv2"]
    addr = p.element_addresses("s1b2_conv2")
    assert sorted(addr) == sorted(base + c * HWp + q for c in range(C) for q in range(HW))
    assert addr[:4] == [base, base + 16, base + 1, base + 17]
    for s in p.steps:
        if not s.dil_in or s.op != "conv":
            continue
        koff, offs = 0, {}
        for ky in range(s.KH):
            for kx in range(s.KW):
                offs[ky, kx] = koff
                koff += (s.kx_b if kx % 2 else s.kx_a) if kx < s.KW - 1 else s.k_row
        W, P = s.W, s.pad
        for oy in range(s.Ho):
            for ox0 in range(0, s.Wo, s.L):
                row0 = s.lanes[0][2] + (2 * oy) * W + ox0        # the hardware's row0 there
                for (ky, kx), o in offs.items():
                    for j in range(s.L):
                        iy, ix = 2 * oy + ky - P, 2 * (ox0 + j) + kx - P
                        if 0 <= iy < s.H and 0 <= ix < W:
                            assert row0 + o + j == iy * W + dil_column(ix, W), (s.name, oy, ox0, ky, kx, j)


def test_powers_of_two_only():
    ir = _export("digitnet")
    with pytest.raises(PlanError, match="powers of two"):
        make_plan(ir, po=4, px=3)


def test_budget_fits_and_does_not_fit():
    ir = _export("resnet20")
    p = make_plan(ir, po=12, px=4)
    b = check_budget(p, "ulx3s-85f")
    assert 0 < b["ebr"] <= 208
    with pytest.raises(DoesNotFit, match=r"does not fit iCE40 UP5K: memory .* blocks of"):
        check_budget(p, "icebreaker")
    with pytest.raises(DoesNotFit) as e:
        check_budget(make_plan(ir, po=12, px=256), "ecp5-85f")
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


def test_weight_banks_one_block_ram_deep():
    """ECP5 plans split the weight ROM into banks of the block-RAM shape that holds it in
    fewest blocks (each bank's word registered before the pick): as many blocks as the
    budget counts for the whole memory, and none for the iCE40's loaded weights."""
    ir = _export("resnet20")
    p = make_plan(ir, po=12, pi=4, px=8)
    assert p.wmem_word_bits[0] == 384 and len(p.wmem[0]) > 512
    assert p.weight_bank_depth(0) == 512
    banks = -(-len(p.wmem[0]) // 512)
    ecp5 = [(36, 512), (18, 1024), (9, 2048), (4, 4096), (2, 8192), (1, 16384)]
    assert banks * memory_blocks(384, 512, ecp5) == memory_blocks(384, len(p.wmem[0]), ecp5)
    assert make_plan(ir, po=12, pi=4, px=8, deep_pipeline=False).weight_bank_depth(0) == 0
    assert make_plan(ir, po=12, pi=4, px=8, weights_loaded=True).weight_bank_depth(0) == 0


def test_raw_integer_tensors_are_refused():
    ir, _ = random_ir(0)  # has an option-B style conv with requant null
    with pytest.raises(PlanError, match="raw integers"):
        make_plan(ir)


def test_bad_parallelism():
    ir = _export("digitnet")
    with pytest.raises(PlanError):
        make_plan(ir, po=0)


def test_weight_with_three_terms_in_one_shift_window_is_refused():
    """The PEs take 2 terms per 4-shift window: a table word with 3 terms at shifts 0..3
    (7 = 4 + 2 + 1, not CSD) cannot be split into passes and is refused in one line."""
    from hw.rtl.pe import pack_terms
    ir = _export("digitnet")
    n = ir.node("stem")
    T, ms = int(n["weight"]["terms"]), int(n["weight"]["max_shift"])
    assert T >= 3
    size = int(np.asarray(ir.array(n["weight"]["key"])).size)
    words = {"stem": [pack_terms([(1, 2), (1, 1), (1, 0)], ms)] + [0] * (size - 1)}
    with pytest.raises(PlanError, match=r"stem: a weight has 3 terms with shifts in \[0, 3\]") as e:
        make_plan(ir, po=4, words=words)
    assert "\n" not in str(e.value)


def test_bias_holds_the_ones_the_pes_leave_out():
    """Every conv channel's bias in the plan is the IR's bias plus mult times what its PE
    accumulator lacks: the neg bits of its words in the weight memory, pass q counted
    2^(4q) times (hw.rtl.pe.ShiftAddDotPE adds signed terms as ones' complements)."""
    from hw.rtl.pe import neg_bits

    ir = _export("resnet20")
    p = make_plan(ir, po=12, pi=4, px=8)
    seen = 0
    for s in p.steps:
        if s.op != "conv":
            continue
        rq = ir.node(s.name)["requant"]
        bias, mult = np.asarray(ir.array(rq["bias"])), np.asarray(ir.array(rq["mult"]))
        K = s.KH * s.KW
        for o in range(s.O):
            og, o_ = divmod(o, p.PO)
            negs = 0
            for t in range(s.CG * K * s.npass):
                q = t % s.npass
                mw = p.wmem[0][s.wbase + og * s.S + t]
                lanes = [(mw >> ((o_ * p.PI + i) * PE_TW)) & ((1 << PE_TW) - 1) for i in range(p.PI)]
                negs += neg_bits(lanes, PE_TERMS, PE_MAX_SHIFT) << (4 * q)
            assert p.consts["bias"][s.cbase + o] == int(bias[o]) + negs * int(mult[o]), (s.name, o)
            seen += negs > 0
    assert seen > 100                   # most channels have negative terms
    assert p.acc_bits == max(int(n["acc_bits"]) for n in ir.nodes if n["op"] in ("conv2d", "linear")) + 1
