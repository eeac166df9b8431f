"""cocotb testbench: the requantization unit against the IR's rule (`requant_ref`).

The unit is combinational: each vector is applied, then read 1 ns later. Vectors mix
the extremes of every port (most negative, most positive, 0, +-1) with random values,
so the floor of negative sums, the clip at both ends and every threshold are crossed.
"""
from __future__ import annotations

import random

import cocotb
from cocotb.triggers import Timer

from hw.rtl.requant import requant_ref
from sim.runner import load_case, write_report


def _extremes(bits, signed_):
    if signed_:
        lo, hi = -(1 << (bits - 1)), (1 << (bits - 1)) - 1
        return [lo, hi, 0, 1, -1, lo + 1, hi - 1]
    return [0, 1, (1 << bits) - 1, (1 << bits) - 2]


def _draw(rng, bits, signed_):
    if rng.random() < 0.25:
        return rng.choice(_extremes(bits, signed_))
    if signed_:
        return rng.randrange(-(1 << (bits - 1)), 1 << (bits - 1))
    return rng.randrange(1 << bits)


def out_bits_for(c):
    """Signed width holding y for every port value (act None)."""
    a, m, b = 1 << (c["acc_bits"] - 1), 1 << (c["mult_bits"] - 1), 1 << (c["bias_bits"] - 1)
    worst = a * m + b
    if c.get("res_bits"):
        r = (1 << c["res_bits"]) if not c["res_signed"] else (1 << (c["res_bits"] - 1))
        worst += r * (1 << (c["rmult_bits"] - 1))
    y = (worst >> c["shift"]) + 1
    return y.bit_length() + 1


def _mask(v, bits):
    return int(v) & ((1 << bits) - 1)


@cocotb.test()
async def requant_matches_ir_rule(dut):
    c = load_case()
    rng = random.Random(c["seed"])
    act = None if c["act"] is None else tuple(c["act"])
    res = c.get("res_bits") is not None
    bad, n = [], 0
    for k in range(c["n"]):
        acc = _draw(rng, c["acc_bits"], True)
        mult = _draw(rng, c["mult_bits"], True)
        bias = _draw(rng, c["bias_bits"], True)
        dut.acc.value = _mask(acc, c["acc_bits"])
        dut.mult.value = _mask(mult, c["mult_bits"])
        dut.bias.value = _mask(bias, c["bias_bits"])
        rv = rm = None
        if res:
            rv = _draw(rng, c["res_bits"], c["res_signed"])
            rm = _draw(rng, c["rmult_bits"], True)
            dut.res.value = _mask(rv, c["res_bits"])
            dut.rmult.value = _mask(rm, c["rmult_bits"])
        await Timer(1, unit="ns")
        want = requant_ref(acc, mult, bias, c["shift"], act, c["out_bits"], rv, rm)
        got = dut.out.value.to_signed() if act is None else dut.out.value.to_unsigned()
        n += 1
        if got != want:
            bad.append(dict(acc=acc, mult=mult, bias=bias, res=rv, rmult=rm, got=got, want=want))
    write_report(dict(passed=not bad, checked=n, mismatches=len(bad), first_mismatches=bad[:5]))
    assert not bad, f"{len(bad)} of {n} wrong, first {bad[:3]}"
