"""cocotb testbench: the whole-network accelerator (hw/rtl/accel) against hw/golden.py.

The case (built by `hw.rtl.accel.check.accel_case`) holds, per image, the input
integers, the golden logits and class and, when `layers` is set, every step's golden
output words with their activation-memory base address. The driver streams the input
in, runs the network in step mode (pausing after every step to read the step's output
through the debug port) or straight through, reads the logits from the output stream
and compares everything by integer equality.
"""
from __future__ import annotations

import time

import cocotb
from cocotb.clock import Clock
from cocotb.triggers import ClockCycles, FallingEdge, First, RisingEdge, Timer

from sim.runner import load_case, write_report



def _signed(v, bits):
    v &= (1 << bits) - 1
    return v - (1 << bits) if v >> (bits - 1) else v


class AccelDriver:
    """Host side of `Accelerator`: reset, stream an image in, step, read back."""

    def __init__(self, dut, case):
        self.dut, self.c = dut, case

    async def reset(self):
        d = self.dut
        cocotb.start_soon(Clock(d.clk, 10, unit="ns").start())
        d.rst.value = 1
        for s in ("in_valid", "in_data", "out_ready", "step_mode", "resume", "dbg_addr"):
            getattr(d, s).value = 0
        if "loaded_words" in self.c:
            d.wl_en.value = d.wl_done.value = 0
        await ClockCycles(d.clk, 2)
        await FallingEdge(d.clk)
        d.rst.value = 0
        if "loaded_words" in self.c:
            await self.load_weights(self.c["loaded_words"])

    async def load_weights(self, words):
        """Boot-time weights (plans with weights_loaded): one word per clock on wl_*, then
        wl_done (what boards/flash_loader.FlashLoader does from the SPI flash)."""
        d = self.dut
        for a, w in enumerate(words):
            d.wl_en.value, d.wl_addr.value, d.wl_data.value = 1, a, w
            await FallingEdge(d.clk)
        d.wl_en.value = 0
        d.wl_done.value = 1

    async def send(self, words):
        """Stream the input: a word is set up at a falling edge when `in_ready` is 1 there
        (settled; X right after reset on Icarus counts as not ready) and taken at the
        next rising edge."""
        d = self.dut
        bits = self.c["in_bits"]
        for w in words:
            while True:
                await FallingEdge(d.clk)
                if str(d.in_ready.value) == "1":
                    break
                d.in_valid.value = 0
            d.in_valid.value = 1
            d.in_data.value = int(w) & ((1 << bits) - 1)
            await RisingEdge(d.clk)
        await FallingEdge(d.clk)
        d.in_valid.value = 0

    async def read_act(self, segments):
        """The activation words of `segments` ([start, count] each, one per channel) through
        the debug port (pipelined: an address per clock, its word case["dbg_latency"] clocks later)."""
        d = self.dut
        addrs = [a + k for a, n in segments for k in range(n)]
        out = []
        lat = self.c["dbg_latency"]
        for k in range(len(addrs) + lat - 1 if addrs else 0):
            if k < len(addrs):
                d.dbg_addr.value = addrs[k]
            await FallingEdge(d.clk)
            if k >= lat - 1:
                out.append(int(d.dbg_data.value))
        return out

    async def wait_event(self, timeout_ns):
        d = self.dut
        if int(d.paused.value) or int(d.out_valid.value):
            return
        await First(RisingEdge(d.paused), RisingEdge(d.out_valid), Timer(timeout_ns, unit="ns"))
        await FallingEdge(d.clk)

    async def read_logits(self, n):
        d = self.dut
        d.out_ready.value = 1
        out = []
        for _ in range(n):
            if not int(d.out_valid.value):
                raise AssertionError("out_valid low while logits were expected")
            out.append(_signed(int(d.out_data.value), self.c["out_bits"]))
            await FallingEdge(d.clk)
        d.out_ready.value = 0
        return out, int(d.klass.value), int(d.cycles.value)

    async def infer(self, img, check_layers):
        """Run one image; returns (logits, class, cycles, {step name: words}, {step name:
        clocks}: a step's clocks are read from `cycles` at its pause (step mode only))."""
        d = self.dut
        d.step_mode.value = 1 if check_layers else 0
        await self.send(img["input"])
        layers, step_cycles, prev = {}, {}, 0
        timeout = 20 * self.c["cycle_budget"] + 100000  # ns: twice the plan's cycle estimate
        for _ in range(len(self.c["steps"]) + 1):
            await self.wait_event(timeout)
            if int(d.out_valid.value):
                break
            if not int(d.paused.value):
                raise AssertionError(f"timeout: neither paused nor output valid (step {int(d.step_idx.value)})")
            k = int(d.step_idx.value)
            st = self.c["steps"][k]
            now = int(d.cycles.value)
            step_cycles[st["name"]], prev = now - prev, now
            if st["check"]:
                layers[st["name"]] = await self.read_act(st["segments"])
            d.resume.value = 1
            await FallingEdge(d.clk)
            d.resume.value = 0
        logits, klass, cycles = await self.read_logits(self.c["n_out"])
        return logits, klass, cycles, layers, step_cycles


@cocotb.test()
async def accel_matches_golden(dut):
    c = load_case()
    drv = AccelDriver(dut, c)
    await drv.reset()
    results, bad_total = [], 0
    first_bad = []
    t0 = time.perf_counter()
    for n, img in enumerate(c["images"]):
        check = bool(img.get("layers"))
        logits, klass, cycles, layers, step_cycles = await drv.infer(img, check)
        r = dict(image=n, cycles=cycles, step_cycles=step_cycles, klass=klass, want_klass=img["klass"],
                 logits_ok=logits == img["logits"], klass_ok=klass == img["klass"], layer_mismatches={})
        if not r["logits_ok"] and len(first_bad) < 4:
            first_bad.append(dict(image=n, got=logits, want=img["logits"]))
        for name, want in (img.get("layers") or {}).items():
            got = layers.get(name)
            nbad = len(want) if got is None else sum(1 for g, w in zip(got, want) if g != w)
            if nbad:
                r["layer_mismatches"][name] = nbad
                if len(first_bad) < 4:
                    k = next((i for i, (g, w) in enumerate(zip(got, want)) if g != w), 0) if got else 0
                    first_bad.append(dict(image=n, layer=name, index=k, got=got[k] if got else None, want=want[k]))
        r["ok"] = r["logits_ok"] and r["klass_ok"] and not r["layer_mismatches"]
        bad_total += 0 if r["ok"] else 1
        results.append(r)
    wall = time.perf_counter() - t0
    report = dict(passed=bad_total == 0 and len(results) == len(c["images"]), images=len(results),
                  failed_images=bad_total, results=results, first_mismatches=first_bad, wall_s=wall)
    write_report(report)
    assert bad_total == 0, f"{bad_total} of {len(results)} images differ from the golden model: {first_bad[:2]}"
