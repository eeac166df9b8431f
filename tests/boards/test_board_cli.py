"""Bad inputs of `shiftq synth` / `shiftq flash` / `python -m boards.host`, and the
pure-Python protocol encodings."""
import os
import stat

import numpy as np
import pytest

from boards import protocol
from boards.host import Client


def test_synth_unknown_board(run_cli, tmp_path):
    code, out, err = run_cli("synth", "--build", tmp_path, "--board", "arty")
    assert code == 2 and err.count("\n") == 1 and "unknown board 'arty'" in err


def test_synth_missing_build_dir(run_cli, tmp_path):
    code, out, err = run_cli("synth", "--build", tmp_path / "nope", "--board", "icebreaker")
    assert code == 2 and err.count("\n") == 1 and "no export in" in err and "make export" in err


def test_flash_without_bitstream(run_cli, tmp_path):
    code, out, err = run_cli("flash", "--build", tmp_path, "--board", "ulx3s-85f")
    assert code == 2 and err.count("\n") == 1 and "no bitstream" in err and "make layer-bitstream" in err


def _fake_bitstream(tmp_path, board="icebreaker", ext="bin"):
    d = tmp_path / "synth" / board
    d.mkdir(parents=True)
    (d / f"top.{ext}").write_bytes(b"\x00" * 64)


def test_flash_without_programmer(run_cli, tmp_path, monkeypatch):
    _fake_bitstream(tmp_path)
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    monkeypatch.delenv("OPENFPGALOADER", raising=False)
    monkeypatch.delenv("ICEPROG", raising=False)
    code, out, err = run_cli("flash", "--build", tmp_path, "--board", "icebreaker")
    assert code == 2 and err.count("\n") == 1 and "no programmer found" in err


def test_flash_with_no_board_attached(run_cli, tmp_path, monkeypatch):
    """A programmer that finds no board (as openFPGALoader does here): one line, exit 2."""
    _fake_bitstream(tmp_path, "ulx3s-85f", "bit")
    fake = tmp_path / "ofl"
    fake.write_text("#!/bin/sh\necho 'unable to open ftdi device: -3 (device not found)' >&2\nexit 1\n")
    fake.chmod(fake.stat().st_mode | stat.S_IEXEC)
    monkeypatch.setenv("OPENFPGALOADER", str(fake))
    code, out, err = run_cli("flash", "--build", tmp_path, "--board", "ulx3s-85f")
    assert code == 2 and err.count("\n") == 1 and "no ulx3s-85f board found" in err


def test_host_bad_port_and_bad_build(tmp_path, capsys):
    from boards.host import main
    assert main(["--port", "/dev/nonexistent-tty", "--build", str(tmp_path / "nope")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "no build directory" in err


# ------------------------------------------------------------------ protocol

def test_elements_roundtrip():
    for nbytes, signed, vals in [(1, True, [-128, -1, 0, 127]), (1, False, [0, 15, 255]),
                                 (2, True, [-512, 511, -1]), (3, True, [-(1 << 23), (1 << 23) - 1])]:
        raw = protocol.encode_elems(vals, nbytes, signed)
        assert len(raw) == nbytes * len(vals)
        assert protocol.decode_elems(raw, nbytes, signed).tolist() == vals
    assert protocol.encode_elems([-2], 2, True) == b"\xfe\xff"
    with pytest.raises(ValueError):
        protocol.encode_elems([128], 1, True)


def test_info_roundtrip_and_refusals():
    info = protocol.Info(design_id=0xDEADBEEF, n_in=64, in_bits=8, in_signed=True,
                         n_out=768, out_bits=4, out_signed=False)
    raw = info.encode()
    assert len(raw) == protocol.INFO_LEN and raw[:2] == b"SQ"
    back = protocol.Info.decode(raw)
    assert back.same_shape(info) and back.run_reply_len() == 5 + 768
    with pytest.raises(ValueError, match="version"):
        protocol.Info.decode(raw[:2] + b"\x07" + raw[3:])
    with pytest.raises(ValueError, match="does not start"):
        protocol.Info.decode(b"XY" + raw[2:])


class _Loopback:
    """A board in Python: answers I and R (output = input + 1) like the hardware would."""

    def __init__(self, info):
        self.info, self.buf, self.pending = info, b"", b""

    def write(self, data):
        self.pending += data
        if self.pending[:1] == b"I":
            self.buf += self.info.encode()
            self.pending = b""
        elif self.pending[:1] == b"R" and len(self.pending) == 1 + self.info.n_in * self.info.in_bytes:
            x = protocol.decode_elems(self.pending[1:], self.info.in_bytes, self.info.in_signed)
            self.buf += b"K" + (1234).to_bytes(4, "little") + protocol.encode_elems(x + 1, self.info.out_bytes,
                                                                                     self.info.out_signed)
            self.pending = b""

    def read(self, n, timeout_s=None):
        out, self.buf = self.buf[:n], self.buf[n:]
        return out


def test_client_over_a_loopback():
    info = protocol.Info(design_id=7, n_in=4, in_bits=8, in_signed=True, n_out=4, out_bits=16, out_signed=True)
    c = Client(_Loopback(info))
    assert c.identify().design_id == 7
    cycles, y = c.run(np.array([-128, -1, 0, 126]))
    assert cycles == 1234 and y.tolist() == [-127, 0, 1, 127]
