"""boards/pll.py: the ULX3S's EHXPLLL settings from ecppll, and the accelerator's ULX3S top
clocked from it (elaborated by the real amaranth-boards platform, no synthesis here; the
slow synthesis test in tests/hw/test_synth.py builds one)."""
from pathlib import Path

import pytest

from boards import accel_top
from boards.pll import ecp5_pll
from shiftq.errors import UserError

REPO = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize("mhz, got, divs", [
    (75, 75.0, dict(CLKI_DIV=1, CLKFB_DIV=3, CLKOP_DIV=8)),       # VCO 600 MHz
    (62.5, 62.5, dict(CLKI_DIV=2, CLKFB_DIV=5, CLKOP_DIV=10)),
    (66.7, 66.6667, dict(CLKI_DIV=3, CLKFB_DIV=8, CLKOP_DIV=9)),  # the nearest the dividers reach
])
def test_ecppll_settings(mhz, got, divs):
    text, achieved = ecp5_pll(25, mhz)
    assert achieved == pytest.approx(got, abs=1e-4)
    assert "EHXPLLL" in text and "module pll" in text
    for k, v in divs.items():
        assert f".{k}({v})" in text, k
    # the output is 25 MHz * CLKFB_DIV / CLKI_DIV
    assert 25 * divs["CLKFB_DIV"] / divs["CLKI_DIV"] == pytest.approx(achieved, abs=1e-3)


def test_pll_range_is_one_line():
    with pytest.raises(UserError, match="10..200") as e:
        ecp5_pll(25, 500)
    assert "\n" not in str(e.value)


def _net():
    from hw.ir import load
    d = REPO / "build" / "digitnet"
    if not (d / "model.json").exists():
        pytest.skip(f"no export at {d}")
    return accel_top.BoardNetwork(load(d), d, **accel_top.board_kwargs("ulx3s-85f", po=2, pi=1, px=1))


def test_ulx3s_top_runs_from_the_pll():
    from hw.synth import get_board

    top = accel_top.AccelBoardTop("ulx3s-85f", _net(), clock_mhz=62.5)
    assert top.pll_hz == 62.5e6
    plan = get_board("ulx3s-85f").make_platform().prepare(top, name="top")
    assert "EHXPLLL" in plan.files["shiftq_pll.v"]
    lpf = plan.files["top.lpf"]
    # the PLL output is constrained at its frequency, the oscillator pin at 25 MHz
    assert any("pll_clk" in ln and "62500000" in ln for ln in lpf.splitlines() if ln.startswith("FREQUENCY NET")), lpf
    assert any("clk25" in ln and "25000000" in ln for ln in lpf.splitlines() if ln.startswith("FREQUENCY")), lpf
    assert "pll" in plan.files["top.il"]
    # the core's reset goes onto a global network (DCCA), from the CoreReset flip-flop
    il = plan.files["top.il"]
    assert il.count("cell \\DCCA ") == 1, "one DCCA: the core's reset"
    dcc = il[il.index("cell \\DCCA "):]
    dcc = dcc[:dcc.index("end")]
    assert "connect \\CLKI" in dcc and "core_reset" in il


def test_pll_only_where_built():
    with pytest.raises(UserError, match="PLL") as e:
        accel_top.AccelBoardTop("icebreaker", _net(), clock_mhz=24)
    assert "\n" not in str(e.value)
    assert accel_top.board_clock_mhz("ulx3s-85f", 0) is None
    assert accel_top.board_clock_mhz("icebreaker") is None
    assert accel_top.board_clock_mhz("ulx3s-85f", 40) == 40


@pytest.mark.slow
def test_pll_build_meets_its_constraint(tmp_path):
    """A real ULX3S build (yosys + nextpnr + ecppack) of a small digitnet accelerator from
    the PLL at 50 MHz: nextpnr derives the PLL output's constraint, meets it, and
    design.json records the PLL clock (about 40 s)."""
    import json
    import shutil

    src = REPO / "build" / "digitnet"
    if not (src / "model.json").exists():
        pytest.skip(f"no export at {src}")
    build = tmp_path / "digitnet"
    build.mkdir()
    for name in ("model.json", "weights.npz", "tables"):
        (shutil.copytree if (src / name).is_dir() else shutil.copy)(src / name, build / name)
    design = accel_top.build_bitstream(build, "ulx3s-85f", po=2, pi=1, px=1, clock_mhz=50, log=lambda s: None)
    assert design["pll"] and design["clock_hz"] == 50e6
    out = build / "synth-accel" / "ulx3s-85f"
    util = json.loads((out / "utilization.json").read_text())
    assert [c["constraint_mhz"] for c in util["clocks"]] == [50.0], util["clocks"]
    assert util["timing_met"] and util["resources"]["lut4"]["used"] > 0
    assert "Derived frequency constraint of 50.0 MHz" in (out / "nextpnr.log").read_text()
    assert (out / "top.bit").stat().st_size > 0
