"""`shiftq flash` with a boot-time weight image: the programmer command lines, in order,
run against fake programmers that log their arguments (no board is attached here)."""
import json
import stat

import pytest

from boards.weight_image import FLASH_OFFSET, encode
from hw.synth import get_board
from shiftq.commands import flash


def _accel_build(tmp_path, *, image=True, board="icebreaker", ext="bin"):
    d = tmp_path / "synth-accel" / board
    d.mkdir(parents=True)
    (d / f"top.{ext}").write_bytes(b"\x00" * 104090)
    design = {"model": "digitnet", "board": board}
    if image:
        (d / "weights.bin").write_bytes(encode(list(range(100)), 32, 0xABCD))
        design.update(weight_image="weights.bin", weight_offset=FLASH_OFFSET)
    (d / "design.json").write_text(json.dumps(design))
    return d


def _fake(tmp_path, name, log):
    f = tmp_path / name
    f.write_text(f"#!/bin/sh\necho \"$@\" >> {log}\necho ok\n")
    f.chmod(f.stat().st_mode | stat.S_IEXEC)
    return f


def test_command_lines():
    ice = get_board("icebreaker")
    cmds = flash.program_commands("iceprog", ice, "b/top.bin", False, ("b/weights.bin", FLASH_OFFSET))
    assert cmds == [["iceprog", "-o", "0x100000", "b/weights.bin"], ["iceprog", "b/top.bin"]]
    cmds = flash.program_commands("iceprog", ice, "b/top.bin", True, ("b/weights.bin", FLASH_OFFSET))
    assert cmds == [["iceprog", "-o", "0x100000", "b/weights.bin"], ["iceprog", "-S", "b/top.bin"]]
    cmds = flash.program_commands("openfpgaloader", ice, "b/top.bin", False, ("b/weights.bin", FLASH_OFFSET))
    assert cmds == [["openFPGALoader", "-b", "ice40_generic", "-f", "-o", "0x100000", "b/weights.bin"],
                    ["openFPGALoader", "-b", "ice40_generic", "-f", "b/top.bin"]]
    assert flash.program_commands("iceprog", ice, "t.bin", False) == [["iceprog", "t.bin"]]


def test_flash_accel_with_weights_iceprog(run_cli, tmp_path, monkeypatch):
    d = _accel_build(tmp_path)
    log = tmp_path / "log"
    monkeypatch.setenv("ICEPROG", str(_fake(tmp_path, "iceprog", log)))
    code, out, err = run_cli("flash", "--build", tmp_path, "--board", "icebreaker", "--accel", "--tool", "iceprog")
    assert code == 0, err
    assert log.read_text().splitlines() == [f"-o 0x100000 {d / 'weights.bin'}", str(d / "top.bin")]
    assert "weight image" in out and "0x100000" in out


def test_flash_accel_with_weights_openfpgaloader(run_cli, tmp_path, monkeypatch):
    d = _accel_build(tmp_path)
    log = tmp_path / "log"
    monkeypatch.setenv("OPENFPGALOADER", str(_fake(tmp_path, "ofl", log)))
    code, out, err = run_cli("flash", "--build", tmp_path, "--board", "icebreaker", "--accel", "--sram")
    assert code == 0, err
    assert log.read_text().splitlines() == [
        "--detect -b ice40_generic",
        f"-b ice40_generic -f -o 0x100000 {d / 'weights.bin'}",
        f"-b ice40_generic {d / 'top.bin'}"]


def test_flash_without_weight_image_is_unchanged(run_cli, tmp_path, monkeypatch):
    d = _accel_build(tmp_path, image=False)
    log = tmp_path / "log"
    monkeypatch.setenv("ICEPROG", str(_fake(tmp_path, "iceprog", log)))
    code, out, err = run_cli("flash", "--build", tmp_path, "--board", "icebreaker", "--accel", "--tool", "iceprog")
    assert code == 0, err
    assert log.read_text().splitlines() == [str(d / "top.bin")]


def test_flash_refuses_bad_images(run_cli, tmp_path, monkeypatch):
    d = _accel_build(tmp_path)
    log = tmp_path / "log"
    monkeypatch.setenv("ICEPROG", str(_fake(tmp_path, "iceprog", log)))
    (d / "weights.bin").write_bytes(b"\xff" * 64)
    code, out, err = run_cli("flash", "--build", tmp_path, "--board", "icebreaker", "--accel", "--tool", "iceprog")
    assert code == 2 and err.count("\n") == 1 and "magic" in err and not log.exists()
    (d / "weights.bin").unlink()
    code, out, err = run_cli("flash", "--build", tmp_path, "--board", "icebreaker", "--accel", "--tool", "iceprog")
    assert code == 2 and "weights.bin, which is missing" in err and not log.exists()


def test_flash_accel_without_bitstream(run_cli, tmp_path):
    code, out, err = run_cli("flash", "--build", tmp_path, "--board", "icebreaker", "--accel")
    assert code == 2 and err.count("\n") == 1 and "make bitstream MODEL=" in err and "BOARD=icebreaker" in err
