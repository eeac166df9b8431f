"""cocotb testbench: the shift-add PE and the multiplier PE against integer arithmetic.

Run through `tests/sim/test_pe.py` (pytest, both simulators) or `sim.runner.run_test`.
The case (JSON, see `case_for`) gives the PE's parameters, a seed and a count.

The stimulus is independent of the hardware's own arithmetic: a weight is drawn as a
list of (sign, shift) terms, its integer `w = sum sign * 2^shift` is computed in Python,
and the expected accumulator is the plain integer sum of `value * w`. Three phases:

1. random: random codes, random term lists (including unused and duplicate terms),
   random en / clear, every cycle checked;
2. widest: runs of `run_len` products of the largest |value| and the largest |w| of
   one sign, so the accumulator reaches the extremes its width was sized for;
3. back-to-back: `clear & en` on the first product of each sum, no idle cycles.
"""
from __future__ import annotations

import random

import cocotb
from cocotb.clock import Clock
from cocotb.triggers import FallingEdge, RisingEdge

from hw.rtl.pe import pack_terms, value_width
from sim.runner import load_case, write_report


def case_for(kind: str, *, act_bits: int, terms: int, max_shift: int, run_len: int,
             act_signed: bool = False, levels=None, n: int = 3000, seed: int = 1,
             weight_bits: int | None = None) -> dict:
    """A test case for `kind` in {"shift", "mult"}; also gives the PE's acc_bits, sized
    so that `run_len` products of the extreme operands just fit (the widest case)."""
    if kind == "mult" and weight_bits is None:
        weight_bits = max_shift + 2
    vw, vs = value_width(act_bits, act_signed, levels)
    vmax = 2 ** (vw - 1) if vs else (max(levels) if levels is not None else 2 ** vw - 1)
    wmax = max_abs_weight(terms, max_shift, weight_bits if kind == "mult" else None)
    acc_bits = (run_len * vmax * wmax).bit_length() + 1
    return dict(kind=kind, act_bits=act_bits, act_signed=act_signed, levels=levels,
                terms=terms, max_shift=max_shift, acc_bits=acc_bits, run_len=run_len,
                n=n, seed=seed, weight_bits=weight_bits)


def max_abs_weight(terms, max_shift, weight_bits=None):
    m = sum(2 ** (max_shift - t) for t in range(min(terms, max_shift + 1)))
    if weight_bits is not None:
        m = min(m, 2 ** (weight_bits - 1) - 1)
    return m


class PEDriver:
    """Drives one PE: inputs change on the falling edge, `acc` is read on the next one."""

    def __init__(self, dut, case):
        self.dut, self.c = dut, case
        self.cycles = 0

    async def start(self):
        cocotb.start_soon(Clock(self.dut.clk, 10, unit="ns").start())
        self.dut.rst.value = 1
        self.dut.en.value = 0
        self.dut.clear.value = 0
        self.dut.act.value = 0
        self.dut.weight.value = 0
        await RisingEdge(self.dut.clk)
        await FallingEdge(self.dut.clk)
        self.dut.rst.value = 0

    def weight_port(self, terms, w):
        if self.c["kind"] == "shift":
            return pack_terms(terms, self.c["max_shift"])
        return w

    async def op(self, code, terms, w, en, clear) -> int:
        """Apply one operation; returns acc after the clock edge (signed)."""
        d = self.dut
        d.act.value = code
        d.weight.value = self.weight_port(terms, w)
        d.en.value = int(en)
        d.clear.value = int(clear)
        await FallingEdge(d.clk)
        self.cycles += 1
        return d.acc.value.to_signed()


class Stimulus:
    """Random operands from the case's parameters, with their exact integer meaning."""

    def __init__(self, c, rng):
        self.c, self.rng = c, rng
        self.levels = c["levels"]

    def code_value(self, extreme=None):
        c, rng = self.c, self.rng
        b = c["act_bits"]
        if self.levels is not None:
            code = len(self.levels) - 1 if extreme else rng.randrange(len(self.levels))
            return code, self.levels[code]
        if c["act_signed"]:
            if extreme:
                v = -(2 ** (b - 1)) if extreme < 0 else 2 ** (b - 1) - 1
            else:
                v = rng.randrange(-(2 ** (b - 1)), 2 ** (b - 1))
            return v, v
        v = 2 ** b - 1 if extreme else rng.randrange(2 ** b)
        return v, v

    def weight(self, extreme=None):
        """(terms, w): extreme=+1/-1 gives the largest |w| of that sign."""
        c, rng = self.c, self.rng
        T, ms = c["terms"], c["max_shift"]
        wb = c["weight_bits"] if c["kind"] == "mult" else None
        lim = max_abs_weight(T, ms, wb)  # acc_bits was sized with this bound
        if extreme:
            terms = [(extreme, ms - t) for t in range(min(T, ms + 1))]
            terms += [(0, 0)] * (T - len(terms))
        else:
            while True:
                terms = [(rng.choice((-1, 0, 1)), rng.randrange(ms + 1)) for _ in range(T)]
                terms = [(s, sh if s else 0) for s, sh in terms]
                w = sum(s * 2 ** sh for s, sh in terms)
                if abs(w) <= lim:
                    break
        w = sum(s * 2 ** sh for s, sh in terms)
        if abs(w) > lim:
            w = extreme * lim
            terms = None
        return terms, w


@cocotb.test()
async def pe_matches_integer_arithmetic(dut):
    c = load_case()
    rng = random.Random(c["seed"])
    drv = PEDriver(dut, c)
    st = Stimulus(c, rng)
    await drv.start()
    mismatches = []
    acc = 0
    acc_min = acc_max = 0
    checked = 0

    async def check(code, value, terms, w, en, clear, phase):
        nonlocal acc, acc_min, acc_max, checked
        if c["kind"] == "shift" and terms is None:
            return
        got = await drv.op(code, terms, w, en, clear)
        acc = (0 if clear else acc) + (value * w if en else 0)
        acc_min, acc_max = min(acc_min, acc), max(acc_max, acc)
        checked += 1
        if got != acc:
            mismatches.append(dict(phase=phase, cycle=drv.cycles, code=code, value=value,
                                   w=w, terms=terms, en=en, clear=clear, got=got, want=acc))
            acc = got  # resynchronise so one fault is reported once
        return got

    # 1. random operations; clear often enough that the accumulator stays in range
    since_clear = 0
    for _ in range(c["n"]):
        code, value = st.code_value()
        terms, w = st.weight()
        clear = since_clear >= c["run_len"] - 1 or rng.random() < 0.05
        en = rng.random() < 0.85
        await check(code, value, terms, w, en, clear, "random")
        since_clear = 0 if clear else since_clear + (1 if en else 0)
        if clear and not en:
            since_clear = 0

    # 2. widest accumulations: run_len extreme products of each sign, both extremes of value
    for vsign in (1, -1) if c["act_signed"] else (1,):
        for wsign in (1, -1):
            code, value = st.code_value(extreme=vsign)
            terms, w = st.weight(extreme=wsign)
            for k in range(c["run_len"]):
                await check(code, value, terms, w, True, k == 0, "widest")
            await check(code, value, terms, w, False, False, "widest-hold")

    # 3. back-to-back sums of random length
    for _ in range(c["n"] // 16):
        n = rng.randrange(1, min(8, c["run_len"]) + 1)
        for k in range(n):
            code, value = st.code_value()
            terms, w = st.weight()
            await check(code, value, terms, w, True, k == 0, "back-to-back")

    limit = 2 ** (c["acc_bits"] - 1)
    report = dict(passed=not mismatches, checked=checked, mismatches=len(mismatches),
                  first_mismatches=mismatches[:5], acc_min=acc_min, acc_max=acc_max,
                  acc_bits=c["acc_bits"], acc_range_used=max(acc_max / (limit - 1), -acc_min / limit))
    write_report(report)
    assert not mismatches, f"{len(mismatches)} of {checked} cycles wrong, first: {mismatches[:3]}"
