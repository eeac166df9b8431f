"""`make bitstream` / `shiftq synth --accel` (the whole-network accelerator), `make
layer-bitstream` (the one-layer top) and `make flash`: what the targets call, the
argument checks (one line, exit 2) and the files the accelerator build writes. yosys and
nextpnr are replaced by a stub here (the real builds: `make bitstream`, docs/boards.md)."""
import json
import subprocess
from pathlib import Path

import pytest

from boards.weight_image import FLASH_OFFSET, decode

REPO = Path(__file__).resolve().parents[2]
DIGITNET = REPO / "build" / "digitnet"


def _make_n(*args):
    """`make -n` with the set-up stamp taken as up to date (prints, runs nothing)."""
    r = subprocess.run(["make", "-n", "-o", ".venv/.shiftq-setup", *args], cwd=REPO, capture_output=True,
                       text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    return [ln for ln in r.stdout.splitlines() if "shiftq" in ln]


def test_make_targets_call_the_accelerator():
    (cmd,) = _make_n("bitstream", "MODEL=digitnet", "BOARD=ulx3s-85f", "SEED=3")
    assert "synth --accel --build build/digitnet --board ulx3s-85f --seed 3" in cmd
    assert _make_n("accel-bitstream", "MODEL=resnet20", "BOARD=icebreaker") == \
        _make_n("bitstream", "MODEL=resnet20", "BOARD=icebreaker")
    (cmd,) = _make_n("flash", "MODEL=digitnet", "BOARD=icebreaker")
    assert "flash --accel --build build/digitnet --board icebreaker" in cmd
    (cmd,) = _make_n("layer-bitstream", "MODEL=digitnet", "BOARD=icebreaker", "LAYER=conv1")
    assert "synth --build build/digitnet --board icebreaker --seed 1 --layer conv1" in cmd and "--accel" not in cmd
    helptext = subprocess.run(["make", "help"], cwd=REPO, capture_output=True, text=True, timeout=60).stdout
    for target in ("bitstream", "layer-bitstream", "accel-bitstream", "flash"):
        assert any(ln.split()[0] == target for ln in helptext.splitlines() if ln.strip()), target


@pytest.mark.parametrize("extra, msg", [
    (["--layer", "conv1"], "--layer picks the layer"),
    (["--pe", "mult"], "--pe picks the layer engine"),
])
def test_accel_refuses_layer_options(run_cli, tmp_path, extra, msg):
    code, out, err = run_cli("synth", "--accel", "--build", tmp_path, "--board", "icebreaker", *extra)
    assert code == 2 and err.count("\n") == 1 and msg in err


def test_px_needs_accel(run_cli, tmp_path):
    code, out, err = run_cli("synth", "--build", tmp_path, "--board", "icebreaker", "--px", "2")
    assert code == 2 and err.count("\n") == 1 and "--accel" in err


def test_accel_missing_export(run_cli, tmp_path):
    code, out, err = run_cli("synth", "--accel", "--build", tmp_path / "nope", "--board", "ulx3s-85f")
    assert code == 2 and err.count("\n") == 1 and "no export in" in err and "make export" in err


def _need_digitnet():
    if not (DIGITNET / "model.json").exists():
        pytest.skip(f"no export at {DIGITNET}")


def test_accel_plan_too_big_is_one_line(run_cli, monkeypatch):
    """A PE array whose memories exceed the UP5K stops before yosys, in one line."""
    _need_digitnet()
    import hw.synth

    def boom(*a, **k):
        raise AssertionError("synthesize must not run")

    monkeypatch.setattr(hw.synth, "synthesize", boom)
    code, out, err = run_cli("synth", "--accel", "--build", DIGITNET, "--board", "icebreaker",
                             "--pi", "4", "--px", "8")
    assert code == 2 and err.count("\n") == 1 and "does not fit" in err


def _fake_synthesize(calls):
    def fake(top, board, out, *, seed=1, tools=None, **kw):
        calls.append((top, board.name, seed))
        top._MustUse__silence = top.core._MustUse__silence = True     # never elaborated here
        out = Path(out)
        util = {"board": board.name, "resources": {"lut4": {"used": 100}}, "clocks": [
            {"name": "clk", "achieved_mhz": 30.0, "constraint_mhz": board.clock_mhz, "met": True}],
                "fmax_mhz": 30.0, "timing_met": True, "bitstream": f"top.{board.bitstream}",
                "bitstream_bytes": 104090, "wall_time_s": {"yosys": 1.0, "nextpnr": 2.0, "total": 3.5}}
        (out / util["bitstream"]).write_bytes(b"\0" * 16)
        (out / "utilization.json").write_text(json.dumps(util))
        (out / "summary.md").write_text("# Synthesis (stub)\n")
        return util
    return fake


def _copy_export(tmp_path):
    import shutil
    d = tmp_path / "digitnet"
    d.mkdir()
    for f in ("model.json", "weights.npz", "vectors.npz"):
        if (DIGITNET / f).exists():
            shutil.copy(DIGITNET / f, d / f)
    if (DIGITNET / "tables").exists():
        shutil.copytree(DIGITNET / "tables", d / "tables")
    return d


def test_accel_icebreaker_writes_design_and_weight_image(run_cli, tmp_path, monkeypatch):
    """`shiftq synth --accel` on the iCEBreaker: the accelerator top with the loader goes to
    synthesis; design.json names the PE array and the weight image, which decodes."""
    _need_digitnet()
    import hw.synth
    from boards.accel_top import AccelBoardTop  # noqa: F401 (the class the stub receives)

    calls = []
    monkeypatch.setattr(hw.synth, "synthesize", _fake_synthesize(calls))
    d = _copy_export(tmp_path)
    code, out, err = run_cli("synth", "--accel", "--build", d, "--board", "icebreaker", "--seed", "5")
    assert code == 0, err
    (top, board, seed), = calls
    assert board == "icebreaker" and seed == 5 and top.net.uses_loader
    o = d / "synth-accel" / "icebreaker"
    design = json.loads((o / "design.json").read_text())
    assert (design["PO"], design["PI"], design["PX"], design["pes"]) == (4, 1, 1, 4)
    assert design["weights_loaded"] and design["weight_image"] == "weights.bin"
    assert design["weight_offset"] == FLASH_OFFSET and design["budget"]["spram"] >= 1
    im = decode((o / "weights.bin").read_bytes())
    assert im.words == list(top.net.plan.loaded_words) and im.design_id == top.net.weights_id
    assert "4x1x1 PEs" in out and "weight image" in out
    # and `make flash` (shiftq flash --accel) finds both: weights first, then the bitstream
    from shiftq.commands.flash import weight_image_of
    assert weight_image_of(o) == (o / "weights.bin", FLASH_OFFSET)


def test_accel_ulx3s_has_no_weight_image(run_cli, tmp_path, monkeypatch):
    _need_digitnet()
    import hw.synth

    calls = []
    monkeypatch.setattr(hw.synth, "synthesize", _fake_synthesize(calls))
    d = _copy_export(tmp_path)
    o = d / "synth-accel" / "ulx3s-85f"
    o.mkdir(parents=True)
    (o / "weights.bin").write_bytes(b"stale")
    code, out, err = run_cli("synth", "--accel", "--build", d, "--board", "ulx3s-85f", "--po", "8")
    assert code == 0, err
    (top, board, seed), = calls
    assert not top.net.uses_loader and (top.net.plan.PO, top.net.plan.PI, top.net.plan.PX) == (8, 4, 8)
    design = json.loads((o / "design.json").read_text())
    assert design["PO"] == 8 and not design["weights_loaded"] and "weight_image" not in design
    # the RTL's identity: the hash of the Verilog the simulators run for this plan
    from hw.rtl.accel.accel import accel_verilog, rtl_sha256
    assert design["rtl_sha256"] == rtl_sha256(accel_verilog(top.net.plan))
    assert not (o / "weights.bin").exists()
