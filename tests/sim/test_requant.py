"""The requantization unit vs the IR's rule, on Icarus and Verilator (cocotb)."""
import random

import pytest

from hw.rtl.requant import RequantUnit, requant_ref
from sim.runner import SIMULATORS, emit_verilog, run_test
from sim.test_requant import out_bits_for

APOT_T = [1, 2, 3, 4, 5, 7, 9, 11, 14, 17, 21, 28, 33, 35, 42]

CONFIGS = {
    # APoT thresholds, residual from APoT codes (values 0..48, unsigned)
    "apot-res": dict(acc_bits=15, mult_bits=16, bias_bits=20, shift=18, act=["thresholds", APOT_T],
                     out_bits=4, res_bits=6, res_signed=False, rmult_bits=17),
    # logits (act None), residual from a raw signed shortcut accumulator
    "logits-rawres": dict(acc_bits=18, mult_bits=16, bias_bits=24, shift=13, act=None,
                          res_bits=14, res_signed=True, rmult_bits=16),
    # uniform 4-bit clip, no residual
    "uniform4": dict(acc_bits=20, mult_bits=16, bias_bits=30, shift=22, act=["uniform", 4], out_bits=4),
}


def _case(cfg, n=2000, seed=3):
    c = dict(CONFIGS[cfg], n=n, seed=seed)
    c.setdefault("res_bits", None)
    if c["act"] is None:
        c["out_bits"] = out_bits_for(c)
    return c


def _unit(c):
    kw = {}
    if c["res_bits"] is not None:
        kw = dict(res_bits=c["res_bits"], res_signed=c["res_signed"], rmult_bits=c["rmult_bits"])
    act = None if c["act"] is None else tuple(c["act"])
    return RequantUnit(acc_bits=c["acc_bits"], mult_bits=c["mult_bits"], bias_bits=c["bias_bits"],
                       shift=c["shift"], act=act, out_bits=c["out_bits"], **kw)


@pytest.mark.parametrize("sim", SIMULATORS)
@pytest.mark.parametrize("cfg", ["apot-res", "logits-rawres",
                                 pytest.param("uniform4", marks=pytest.mark.slow)])
def test_requant_unit(sim, cfg):
    c = _case(cfg)
    r = run_test(emit_verilog(_unit(c), "requant"), "requant", "sim.test_requant", sim, c, tag=cfg)
    assert r["passed"], r
    assert r["checked"] == c["n"]


def test_requant_ref_is_the_ir_rule():
    # floor, not truncation, for negative sums; clip; threshold count; residual term
    assert requant_ref(-1, 1, 0, 1, None, 8) == -1
    assert requant_ref(-3, 1, 0, 1, None, 8) == -2
    assert requant_ref(100, 3, -1, 2, ("uniform", 4), 4) == 15
    assert requant_ref(-100, 3, 0, 2, ("uniform", 4), 4) == 0
    assert requant_ref(5, 1, 0, 0, ("thresholds", [1, 3, 5, 7]), 3) == 3
    assert requant_ref(0, 1, 0, 0, ("thresholds", [1, 3, 5, 7]), 3) == 0
    assert requant_ref(1, 2, 3, 1, None, 8, res_value=4, rmult=-5) == (2 + 3 - 20) // 2
    rng = random.Random(0)
    th = sorted(rng.sample(range(1, 200), 15))
    for _ in range(500):
        y = rng.randrange(-50, 250)
        assert requant_ref(y, 1, 0, 0, ("thresholds", th), 4) == sum(y >= t for t in th)
