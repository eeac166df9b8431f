"""cocotb testbench: `hw.rtl.pe.ShiftAddDotPE` (the accelerator's PE) against integers.

The stimulus is drawn as (sign, shift) term lists and signed values, plus raw term
fields with the neg bit set and nz clear (a field the table never holds, which the
ones'-complement rule must still count). The expected accumulator is the integer
(sum_i value_i * w_i - neg bits) << 4*pass, wrapped to `acc_bits`, with the PE's
`clear` / `en` table, `latency` clocks later (0, 1 registered, 2 split).
"""
from __future__ import annotations

import random

import cocotb
from cocotb.clock import Clock
from cocotb.triggers import FallingEdge, RisingEdge

from hw.rtl.pe import pack_terms
from sim.runner import load_case, write_report


def _wrap(x, bits):
    x &= (1 << bits) - 1
    return x - (1 << bits) if x >> (bits - 1) else x


class DotPEDriver:
    """Inputs set on the falling edge; `acc` read on the next falling edge."""

    def __init__(self, dut, case):
        self.dut, self.c = dut, case

    async def start(self):
        d = self.dut
        cocotb.start_soon(Clock(d.clk, 10, unit="ns").start())
        d.rst.value = 1
        d.en.value = d.clear.value = d.act.value = d.weight.value = 0
        if self.c["passes"] > 1:
            d.pass_.value = 0
        await RisingEdge(d.clk)
        await FallingEdge(d.clk)
        d.rst.value = 0

    async def op(self, values, words, en, clear, pas):
        d, c = self.dut, self.c
        vb, tw = c["value_bits"], c["terms"] * (2 + c["sb"])
        d.act.value = sum((v & ((1 << vb) - 1)) << (i * vb) for i, v in enumerate(values))
        d.weight.value = sum(w << (i * tw) for i, w in enumerate(words))
        d.en.value, d.clear.value = int(en), int(clear)
        if c["passes"] > 1:
            d.pass_.value = pas
        await FallingEdge(d.clk)
        return d.acc.value.to_signed()


@cocotb.test()
async def dot_pe_matches_integers(dut):
    c = load_case()
    rng = random.Random(c["seed"])
    drv = DotPEDriver(dut, c)
    await drv.start()
    n, vb, T, ms = c["n"], c["value_bits"], c["terms"], c["max_shift"]
    acc, pending, bad, checked = 0, [None] * c["latency"], [], 0
    for k in range(c["cycles"]):
        values = [rng.randrange(-(1 << (vb - 1)), 1 << (vb - 1)) for _ in range(n)]
        terms = [[(rng.choice((-1, 0, 1)), rng.randrange(ms + 1)) for _ in range(T)] for _ in range(n)]
        ws = [sum(s << sh for s, sh in t) for t in terms]
        words = [pack_terms(t, ms) for t in terms]
        negs = sum(s < 0 for t in terms for s, _ in t)
        for i in range(n):
            for t in range(T):
                if terms[i][t][0] == 0 and rng.random() < 0.3:   # neg without nz: counts too
                    words[i] |= 1 << (t * (2 + c["sb"]) + c["sb"])
                    negs += 1
        en, clear = rng.random() < 0.8, rng.random() < 0.15
        pas = rng.randrange(c["passes"])
        dot = (sum(v * w for v, w in zip(values, ws)) - negs) << (4 * pas)
        got = await drv.op(values, words, en, clear, pas)
        step = (en, clear, dot)
        if pending:
            pending.append(step)
            step = pending.pop(0)
        if step is not None:
            e, cl, p = step
            acc = _wrap((0 if cl else acc) + (p if e else 0), c["acc_bits"])
        checked += 1
        if got != acc and len(bad) < 5:
            bad.append(dict(cycle=k, got=got, want=acc))
    write_report(dict(passed=not bad, checked=checked, first_mismatches=bad))
    assert not bad, bad
