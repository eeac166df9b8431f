"""bench/bench_accel.py: the per-board plan comes from boards.accel_top.board_kwargs, the
derived figures (MAC bound, utilisation, images/s) and the synthesis figures read from
utilization.json. The Verilator run is replaced by a stub here (the real one: `make
bench ONLY=accel`)."""
import json
from pathlib import Path

import pytest

import bench.bench_accel as ba

REPO = Path(__file__).resolve().parents[2]


class _Plan:
    PO, PI, PX, weights_loaded, macs = 12, 4, 8, False, 484358

    @property
    def pes(self):
        return self.PO * self.PI * self.PX

    def cycle_estimate(self):
        return {"stem": 1000, "head": 3000}


def _util(root, model="digitnet", board="ulx3s-85f", pe=(12, 4, 8), fmax=40.0, clock=25.0):
    d = Path(root) / "build" / model / "synth-accel" / board
    d.mkdir(parents=True)
    u = {"resources": {"lut4": {"used": 30000, "available": 83640}, "ff": {"used": 5000},
                       "bram": {"used": 80, "available": 208}, "spram": {"used": 0, "available": 0},
                       "dsp": {"used": 8, "available": 156}},
         "clocks": [{"name": "clk", "achieved_mhz": fmax, "constraint_mhz": clock, "met": fmax >= clock}],
         "fmax_mhz": fmax, "timing_met": fmax >= clock,
         "wall_time_s": {"yosys": 100.0, "nextpnr": 200.0, "total": 310.0}}
    (d / "utilization.json").write_text(json.dumps(u))
    (d / "design.json").write_text(json.dumps({"PO": pe[0], "PI": pe[1], "PX": pe[2]}))
    return d


def test_synth_result_reads_utilization_json(tmp_path):
    assert ba.synth_result("digitnet", "ulx3s-85f", root=tmp_path) is None
    _util(tmp_path)
    s = ba.synth_result("digitnet", "ulx3s-85f", root=tmp_path)
    assert s["lut4"] == 30000 and s["ff"] == 5000 and s["bram"] == 80 and s["dsp"] == 8
    assert "spram" not in s                      # ECP5: no SPRAM
    assert s["fmax_mhz"] == 40.0 and s["clock_mhz"] == 25.0 and s["timing_met"]
    assert s["yosys_wall_s"] == 100.0 and s["nextpnr_wall_s"] == 200.0
    assert s["built_pe_array"] == [12, 4, 8]


def test_figures_mac_bound_utilisation_images_per_s(tmp_path):
    _util(tmp_path)
    r = ba.figures(_Plan(), 4000, ba.synth_result("digitnet", "ulx3s-85f", root=tmp_path))
    assert r["pes"] == 384 and r["mac_bound_cycles"] == -(-484358 // 384) == 1262
    assert r["pe_utilisation"] == round(484358 / (384 * 4000), 4)
    assert r["images_per_s_at_fmax"] == 10000.0 and r["images_per_s_at_board_clock"] == 6250.0
    no_synth = ba.figures(_Plan(), 4000)
    assert "images_per_s_at_fmax" not in no_synth and "lut4" not in no_synth


def test_a_pll_build_runs_at_the_pll_clock(tmp_path):
    """With a PLL (design.json clock_hz) the bitstream's clock is the PLL's, not the
    oscillator constraint nextpnr also reports."""
    d = _util(tmp_path, fmax=62.0, clock=25.0)
    (d / "design.json").write_text(json.dumps({"PO": 12, "PI": 4, "PX": 8, "clock_hz": 60e6, "pll": True}))
    r = ba.figures(_Plan(), 4000, ba.synth_result("digitnet", "ulx3s-85f", root=tmp_path))
    assert r["clock_mhz"] == 60.0 and r["pll"]
    assert r["images_per_s_at_board_clock"] == 15000.0 and r["images_per_s_at_fmax"] == 15500.0


def test_figures_flag_a_bitstream_of_another_pe_array(tmp_path):
    _util(tmp_path, pe=(12, 1, 4))
    r = ba.figures(_Plan(), 4000, ba.synth_result("digitnet", "ulx3s-85f", root=tmp_path))
    assert "synth_stale" in r and "images_per_s_at_fmax" not in r


def test_figures_flag_a_bitstream_of_an_earlier_rtl(tmp_path):
    """design.json's cycles_estimate is the plan's at build time: another one means the
    schedule (the RTL) has changed since, and the bitstream's Fmax is not this RTL's."""
    d = _util(tmp_path)
    (d / "design.json").write_text(json.dumps({"PO": 12, "PI": 4, "PX": 8, "cycles_estimate": 4400}))
    r = ba.figures(_Plan(), 4000, ba.synth_result("digitnet", "ulx3s-85f", root=tmp_path))
    assert "earlier RTL" in r["synth_stale"] and "images_per_s_at_board_clock" not in r
    (d / "design.json").write_text(json.dumps({"PO": 12, "PI": 4, "PX": 8, "cycles_estimate": 4000}))
    r = ba.figures(_Plan(), 4000, ba.synth_result("digitnet", "ulx3s-85f", root=tmp_path))
    assert "synth_stale" not in r and r["images_per_s_at_board_clock"] == 6250.0


def test_figures_flag_a_bitstream_of_other_rtl(tmp_path):
    """design.json's rtl_sha256 names the accelerator Verilog the bitstream was built
    from: another hash than the simulated one is stale even with the same cycles."""
    d = _util(tmp_path)
    (d / "design.json").write_text(json.dumps({"PO": 12, "PI": 4, "PX": 8, "cycles_estimate": 4000,
                                               "rtl_sha256": "ab" * 32}))
    synth = ba.synth_result("digitnet", "ulx3s-85f", root=tmp_path)
    r = ba.figures(_Plan(), 4000, synth, rtl="cd" * 32)
    assert "other accelerator RTL" in r["synth_stale"] and "images_per_s_at_board_clock" not in r
    r = ba.figures(_Plan(), 4000, synth, rtl="ab" * 32)
    assert "synth_stale" not in r and r["images_per_s_at_board_clock"] == 6250.0


@pytest.mark.parametrize("board", ["icebreaker", "ulx3s-85f"])
def test_measure_uses_the_boards_plan(board, monkeypatch):
    if not (REPO / "build" / "digitnet" / "model.json").exists():
        pytest.skip("no digitnet export")
    import hw.rtl.accel.check as check
    from boards.accel_top import board_kwargs

    seen = {}

    def fake_check_accel(ir, x, sim, *, plan=None, layers=True, **kw):
        seen["plan"], seen["sim"], seen["layers"] = plan, sim, layers
        return {"passed": True, "cycles": 2 * -(-plan.macs // plan.pes)}

    monkeypatch.setattr(check, "check_accel", fake_check_accel)
    monkeypatch.setattr(ba, "synth_result", lambda model, board: None)
    r = ba.measure("digitnet", board)
    kw = board_kwargs(board)
    p = seen["plan"]
    assert (p.PO, p.PI, p.PX) == (kw["po"], kw.get("pi", 1), kw["px"]) and seen["layers"] is False
    assert p.weights_loaded == kw.get("weights_loaded", False) == r["weights_loaded"]
    assert r["pes"] == p.pes and r["bit_exact"] and 0.49 < r["pe_utilisation"] <= 0.5
    assert r["plan_fits"] is True                      # both boards' configurations fit their device
