"""cocotb testbench: one layer engine (hw/rtl/engine.py) against the golden model.

The case (built by `sim.layers.engine_case`) holds the layer's geometry, the input
words (codes, or signed ints for the network input), the residual words, and the
golden model's output words for the same input. The driver loads the buffers, pulses
`start`, waits for `done`, reads every output word and compares it with the golden
word by integer equality. The report lists the mismatch count and the first
mismatches as (channel, y, x, got, want), and the cycle count of the run.
"""
from __future__ import annotations

import time

import cocotb
from cocotb.clock import Clock
from cocotb.triggers import ClockCycles, FallingEdge, RisingEdge, with_timeout

from sim.runner import load_case, write_report


def _mask(v, bits):
    return int(v) & ((1 << bits) - 1)


class EngineDriver:
    """Host side of the engine: load buffers, start, wait, read back."""

    def __init__(self, dut, case):
        self.dut, self.c = dut, case

    async def reset(self):
        d = self.dut
        cocotb.start_soon(Clock(d.clk, 10, unit="ns").start())
        d.rst.value = 1
        for sig in ("start", "in_we", "in_chan", "in_pix", "in_data", "out_chan", "out_pix"):
            getattr(d, sig).value = 0
        if self.c["residual"]:
            for sig in ("res_we", "res_chan", "res_pix", "res_data"):
                getattr(d, sig).value = 0
        await ClockCycles(d.clk, 2)
        await FallingEdge(d.clk)
        d.rst.value = 0

    async def load(self, prefix, words, chans, pix, bits):
        """Write a [chans][pix] tensor, one word per clock (inputs driven on falling edges)."""
        d = self.dut
        we, ch, px, data = (getattr(d, f"{prefix}_{k}") for k in ("we", "chan", "pix", "data"))
        we.value = 1
        for c in range(chans):
            for p in range(pix):
                ch.value = c
                px.value = p
                data.value = _mask(words[c * pix + p], bits)
                await FallingEdge(d.clk)
        we.value = 0

    async def run(self, timeout_cycles):
        d = self.dut
        d.start.value = 1
        await FallingEdge(d.clk)
        d.start.value = 0
        if not int(d.done.value):
            await with_timeout(RisingEdge(d.done), timeout_cycles * 10, "ns")
        await FallingEdge(d.clk)
        return int(d.cycles.value)

    async def read(self, chans, pix, signed_out):
        """Every output word; the read port answers one clock after the address."""
        d = self.dut
        out = []
        addrs = [(c, p) for c in range(chans) for p in range(pix)]
        for k in range(len(addrs)):
            d.out_chan.value, d.out_pix.value = addrs[k]
            await FallingEdge(d.clk)  # address latched at the rising edge, data now valid
            v = d.out_data.value
            out.append(v.to_signed() if signed_out else v.to_unsigned())
        return out


@cocotb.test()
async def engine_matches_golden(dut):
    c = load_case()
    drv = EngineDriver(dut, c)
    await drv.reset()
    t0 = time.perf_counter()
    await drv.load("in", c["inputs"], c["C"], c["H"] * c["W"], c["in_bits"])
    if c["residual"]:
        await drv.load("res", c["res"], c["O"], c["Ho"] * c["Wo"], c["res_bits"])
    t1 = time.perf_counter()
    cycles = await drv.run(timeout_cycles=4 * c["expect_cycles"] + 1000)
    t2 = time.perf_counter()
    got = await drv.read(c["O"], c["Ho"] * c["Wo"], c["out_signed"])
    want = c["expected"]
    hw = c["Ho"] * c["Wo"]
    bad = [k for k, (g, w) in enumerate(zip(got, want)) if g != w]
    first = [dict(chan=k // hw, y=(k % hw) // c["Wo"], x=k % c["Wo"], got=got[k], want=want[k])
             for k in bad[:8]]
    report = dict(passed=not bad and len(got) == len(want), words=len(want), mismatches=len(bad),
                  first_mismatches=first, cycles=cycles, run_wall_s=t2 - t1, load_wall_s=t1 - t0)
    write_report(report)
    assert not bad, f"{c['name']}: {len(bad)} of {len(want)} output words differ, first {first[:3]}"
