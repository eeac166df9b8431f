"""The ULX3S's PLL: run the design at its own Fmax rather than the 25 MHz oscillator.

Why: the accelerator closes timing well above the board's oscillator (docs/accelerator.md),
and images/s is clock / cycles. `ecp5_pll(fin_mhz, fout_mhz)` asks `ecppll` (Project
Trellis, installed with the project as `yowasp-ecppll`) for the EHXPLLL settings, the same
module the open ECP5 flow documents, and returns its Verilog and the frequency it reaches
(the dividers make a grid: 75 MHz exactly, 66.7 MHz as 66.667). `PLLDomain` instantiates it
as the `sync` clock, held in reset until the PLL reports lock, and constrains the
output net for nextpnr.
"""
from __future__ import annotations

import re
import subprocess
import tempfile
from pathlib import Path

from amaranth.hdl import ClockSignal, Elaboratable, Instance, Module, Signal
from amaranth.lib import io
from amaranth.lib.cdc import ResetSynchronizer

from shiftq.errors import UserError

__all__ = ["ecp5_pll", "PLLDomain", "PLL_MIN_MHZ", "PLL_MAX_MHZ"]

# EHXPLLL output range with the VCO in 400..800 MHz (CLKOP divider 1..128): 3.125..400 MHz;
# the design never closes timing anywhere near either end, so the CLI takes 10..200
PLL_MIN_MHZ, PLL_MAX_MHZ = 10.0, 200.0


def ecp5_pll(fin_mhz: float, fout_mhz: float, *, tools: str | None = None) -> tuple[str, float]:
    """(Verilog of `module pll(clkin, clkout0, locked)`, achieved output MHz) from ecppll."""
    from hw.synth import tool_command

    if not PLL_MIN_MHZ <= fout_mhz <= PLL_MAX_MHZ:
        raise UserError(f"PLL output {fout_mhz} MHz outside {PLL_MIN_MHZ:g}..{PLL_MAX_MHZ:g} MHz: "
                        f"give --clock-mhz in that range")
    with tempfile.TemporaryDirectory(prefix="ecppll-") as tmp:
        # the WASI build writes only below its working directory: a relative file name
        argv = tool_command("ecppll", tools) + ["-i", f"{fin_mhz:g}", "-o", f"{fout_mhz:g}", "-f", "pll.v"]
        r = subprocess.run(argv, cwd=tmp, capture_output=True, text=True)
        path = Path(tmp) / "pll.v"
        if r.returncode != 0 or not path.exists():
            msg = (r.stderr or r.stdout).strip().splitlines()
            raise UserError(f"ecppll found no PLL for {fin_mhz:g} -> {fout_mhz:g} MHz: "
                            f"{msg[-1] if msg else 'exit code ' + str(r.returncode)}")
        text = path.read_text()
    got = re.search(r"clkout0 frequency:\s*([0-9.]+)", r.stdout)
    if not got:
        raise UserError(f"ecppll printed no output frequency for {fout_mhz:g} MHz")
    return text, float(got.group(1))


class PLLDomain(Elaboratable):
    """Drives the `sync` domain at `fout_mhz` from the platform's default clock through an
    EHXPLLL (ECP5 only). The parent defines `sync` (`m.domains.sync = ClockDomain()`), as
    Amaranth wants a domain defined at or above every module that uses it.
    `achieved_hz` is what the dividers give; use it for baud divisors."""

    def __init__(self, fin_hz: float, fout_mhz: float, *, tools: str | None = None):
        self.verilog, mhz = ecp5_pll(fin_hz / 1e6, fout_mhz, tools=tools)
        self.achieved_hz = mhz * 1e6
        self.locked = Signal()

    def elaborate(self, platform):
        m = Module()
        platform.add_file("shiftq_pll.v", self.verilog)
        clk_in = platform.request(platform.default_clk, dir="-")
        m.submodules.clk_in = buf = io.Buffer("i", clk_in)
        clk = Signal(name="pll_clk")
        m.submodules.pll = Instance("pll", i_clkin=buf.i, o_clkout0=clk, o_locked=self.locked)
        m.d.comb += ClockSignal("sync").eq(clk)
        platform.add_clock_constraint(clk, self.achieved_hz)
        m.submodules.rst_sync = ResetSynchronizer(~self.locked, domain="sync")
        return m
