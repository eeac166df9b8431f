"""`ShiftAddDotPE` (the accelerator's PE: PI products summed less the neg bits, passes,
optional product register) against integer arithmetic on Icarus and Verilator (sim/test_dot_pe.py)."""
import pytest

from hw.rtl.pe import ShiftAddDotPE, neg_bits, pack_terms, pe_dot, pe_dot_ones, shift_bits
from sim.runner import SIMULATORS, emit_verilog, run_test

CONFIGS = {
    # the ULX3S array's PE: 4 input lanes, 2 terms, shifts <= 3, two passes, registered
    "pi4-t2-pass2-reg": dict(n=4, value_bits=9, terms=2, max_shift=3, acc_bits=16, passes=2, registered=True),
    # the same with the first adder level registered (latency 2)
    "pi4-t2-pass2-split": dict(n=4, value_bits=9, terms=2, max_shift=3, acc_bits=16, passes=2, registered=True,
                               split=True),
    # the deep ULX3S array's: its own input flip-flops too (latency 3)
    "pi4-t2-pass2-inreg": dict(n=4, value_bits=9, terms=2, max_shift=3, acc_bits=16, passes=2, registered=True,
                               split=True, in_reg=True),
    # the iCEBreaker's: one lane, not registered
    "pi1-t2": dict(n=1, value_bits=7, terms=2, max_shift=3, acc_bits=12, passes=1, registered=False),
}


@pytest.mark.parametrize("sim", SIMULATORS)
@pytest.mark.parametrize("cfg", list(CONFIGS))
def test_dot_pe(sim, cfg):
    kw = CONFIGS[cfg]
    pe = ShiftAddDotPE(**kw)
    case = dict(kw, sb=shift_bits(kw["max_shift"]), seed=3, cycles=1500, latency=pe.latency)
    r = run_test(emit_verilog(pe, "dot_pe"), "dot_pe", "sim.test_dot_pe", sim, case, tag=cfg)
    assert r["passed"], r
    assert r["checked"] == 1500   # small acc_bits: the accumulator wraps too, as the PE's does


def test_pe_dot_model():
    w = [pack_terms([(1, 3), (-1, 0)], 3), pack_terms([(1, 1)], 3)]
    assert pe_dot([5, -2], w, 2, 3) == 5 * 7 + (-2) * 2


def test_pe_dot_ones_model():
    w = [pack_terms([(1, 3), (-1, 0)], 3), pack_terms([(-1, 1)], 3)]
    assert neg_bits(w, 2, 3) == 2
    assert pe_dot_ones([5, -2], w, 2, 3) == 5 * 7 + (-2) * (-2) - 2
    # a neg bit without nz (never in a table) still counts: the PE XORs it in
    assert neg_bits([1 << 2], 2, 3) == 1 and pe_dot_ones([9], [1 << 2], 2, 3) == -1
