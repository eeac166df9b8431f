"""cocotb testbench: `boards.flash_loader.FlashLoader` against a model of the SPI flash.

`SpiFlashModel` is a W25Q-style flash in SPI mode 0 that starts in deep power-down:
it answers 0xAB (release from power-down; commands are honoured only `tres1_ns`
later) and 0x03 (READ + 24-bit address, then bytes from that address on, 0xFF where
nothing was written) from a bytes image placed at `base`. It samples the DUT's pins
once per system clock (the DUT's outputs are flip-flops), and records protocol
violations: a command while powered down or before tRES1 elapsed, an SPI half period
shorter than `clk_div` clocks, a chip select edge with SCK high, an unknown command.

`LoaderDriver` resets the DUT, records every `wl_en` write and waits for `done` or
`error`. The case (`load_case()`) holds the DUT's parameters and, per cocotb test, the
image bytes (hex) and what must happen. Every test reports through `report_test`.
"""
from __future__ import annotations

import cocotb
from cocotb.clock import Clock
from cocotb.triggers import ClockCycles, FallingEdge

from sim.runner import load_case, report_test

CLK_NS = 10


class SpiFlashModel:
    def __init__(self, dut, image: bytes, base: int, *, tres1_ns: float, clk_div: int, powered_down=True):
        self.dut, self.image, self.base = dut, bytes(image), base
        self.tres1_ns, self.clk_div = tres1_ns, clk_div
        self.powered_down = powered_down
        self.ready_at_ns = 0.0
        self.violations: list[str] = []
        self.commands: list[tuple] = []      # (command byte, address or None)
        self.bytes_out = 0

    def byte_at(self, addr: int) -> int:
        k = addr - self.base
        return self.image[k] if 0 <= k < len(self.image) else 0xFF

    async def run(self):
        d = self.dut
        d.cipo.value = 1
        prev_cs, prev_sck = 1, 0
        half, t = 0, 0           # clocks since the last SCK edge, cycle counter
        selected = False
        sel_ns = 0.0
        bits_in, nbits = 0, 0
        cmd, addr, out_byte, out_bit, reading = None, 0, 0xFF, 0, False
        while True:
            await FallingEdge(d.clk)
            t += 1
            cs, sck, copi = int(d.cs_n.value), int(d.sck.value), int(d.copi.value)
            now_ns = t * CLK_NS
            if sck != prev_sck:
                if half < self.clk_div and selected:
                    self.violations.append(f"SCK half period of {half} clocks < clk_div {self.clk_div}")
                half = 0
            half += 1
            if prev_cs == 1 and cs == 0:                    # select
                if sck:
                    self.violations.append("CS# fell with SCK high (not mode 0)")
                selected, bits_in, nbits, cmd, reading = True, 0, 0, None, False
                sel_ns = now_ns
                prev_sck = sck
                prev_cs = cs
                continue
            if selected and sck != prev_sck:
                if sck == 1:                                 # rising: sample COPI
                    if not reading:
                        bits_in = (bits_in << 1) | copi
                        nbits += 1
                        if nbits == 8 and cmd is None:
                            cmd = bits_in & 0xFF
                            if cmd == 0xAB:
                                pass
                            elif cmd == 0x03:
                                if self.powered_down or sel_ns < self.ready_at_ns:
                                    self.violations.append(
                                        f"READ selected at {sel_ns} ns while "
                                        f"{'powered down' if self.powered_down else 'within tRES1'}")
                            else:
                                self.violations.append(f"unknown command {cmd:#04x}")
                        elif nbits == 32 and cmd == 0x03:
                            addr = bits_in & 0xFFFFFF
                            self.commands.append((cmd, addr))
                            reading, out_bit = True, 0
                            out_byte = self.byte_at(addr) if not self.powered_down else 0xFF
                    else:
                        out_bit += 1
                        if out_bit == 8:
                            out_bit, addr = 0, addr + 1
                            self.bytes_out += 1
                            out_byte = self.byte_at(addr) if not self.powered_down else 0xFF
                else:                                        # falling: drive CIPO
                    if reading:
                        d.cipo.value = (out_byte >> (7 - out_bit)) & 1
            if prev_cs == 0 and cs == 1:                    # deselect
                if sck:
                    self.violations.append("CS# rose with SCK high")
                if cmd == 0xAB and nbits == 8:
                    self.commands.append((0xAB, None))
                    self.powered_down = False
                    self.ready_at_ns = now_ns + self.tres1_ns
                elif cmd == 0xAB:
                    self.violations.append(f"0xAB with {nbits} bits (must end after 8)")
                selected, reading = False, False
                d.cipo.value = 1
            prev_sck, prev_cs = sck, cs


class LoaderDriver:
    """Reset the loader, collect its writes, wait for done / error."""

    def __init__(self, dut):
        self.dut = dut
        self.writes: list[tuple] = []
        self.cycles = 0

    async def reset(self):
        d = self.dut
        Clock(d.clk, CLK_NS, unit="ns").start()
        d.cipo.value = 1
        d.rst.value = 1
        await ClockCycles(d.clk, 3)
        d.rst.value = 0

    async def run(self, max_cycles: int):
        """Returns "done", "error" or "timeout"; `writes` holds (addr, data) in order,
        plus the state of done/error during each write (must both be 0)."""
        d = self.dut
        for k in range(max_cycles):
            await FallingEdge(d.clk)
            if int(d.wl_en.value):
                self.writes.append((int(d.wl_addr.value), int(d.wl_data.value),
                                    int(d.done.value) | int(d.error.value)))
            done, err = int(d.done.value), int(d.error.value)
            if done or err:
                self.cycles = k
                # stays put, flash released
                await ClockCycles(d.clk, 20)
                await FallingEdge(d.clk)
                steady = (int(d.done.value), int(d.error.value), int(d.cs_n.value)) == (done, err, 1)
                late = int(d.wl_en.value)
                if not steady or late:
                    return "unsteady"
                return "done" if done and not err else "error" if err and not done else "both"
        self.cycles = max_cycles
        return "timeout"


async def _run_case(dut, name):
    case = load_case()
    if name not in case["tests"]:       # this run checks a subset of the cases
        return
    c = case["tests"][name]
    image = bytes.fromhex(c["image"])
    drv = LoaderDriver(dut)
    await drv.reset()
    flash = SpiFlashModel(dut, image, c.get("base", case["flash_addr"]), tres1_ns=case["tres1_ns"],
                          clk_div=case["clk_div"])
    cocotb.start_soon(flash.run())
    outcome = await drv.run(case["max_cycles"])
    want = c["expect"]
    words = c.get("words", [])
    problems = list(flash.violations)
    if outcome != want:
        problems.append(f"outcome {outcome}, expected {want}")
    if want == "done":
        if len(drv.writes) != len(words):
            problems.append(f"{len(drv.writes)} writes, expected {len(words)}")
        for k, (a, v, flag) in enumerate(drv.writes):
            if k < len(words) and (a != k or v != words[k]):
                problems.append(f"write {k}: addr {a} data {v:#x}, expected addr {k} data {words[k]:#x}")
                break
            if flag:
                problems.append(f"write {k} while done/error already high")
                break
    else:
        if drv.writes:
            problems.append(f"{len(drv.writes)} words written although the header is bad")
    if [cmd for cmd, _ in flash.commands[:2]] != [0xAB, 0x03] or flash.commands[1][1] != case["flash_addr"]:
        problems.append(f"flash saw commands {flash.commands}, expected 0xAB then READ at {case['flash_addr']:#x}")
    ok = not problems
    report_test(name, ok, outcome=outcome, writes=len(drv.writes), cycles=drv.cycles,
                bytes_read=flash.bytes_out, problems=problems[:8])
    assert ok, problems[:8]


@cocotb.test()
async def loads_image(dut):
    """A good image: every word written in order, then `done`."""
    await _run_case(dut, "loads_image")


@cocotb.test()
async def bad_magic(dut):
    """Magic changed: `error`, nothing written."""
    await _run_case(dut, "bad_magic")


@cocotb.test()
async def wrong_design_id(dut):
    """An image for another design (stale weights): `error`, nothing written."""
    await _run_case(dut, "wrong_design_id")


@cocotb.test()
async def erased_flash(dut):
    """No image at the offset (0xFF everywhere): `error`."""
    await _run_case(dut, "erased_flash")


@cocotb.test()
async def wrong_word_count(dut):
    """Right design id but another word count or width: `error`."""
    await _run_case(dut, "wrong_word_count")
