"""`python -m boards.host` over a real pseudo-terminal (pyserial), against a board
emulated in Python from the golden model: identify, design-id check, vectors, verdict."""
import os
import threading

import numpy as np
import pytest

from boards import protocol
from boards.host import main
from boards.layer import BoardLayer
from hw.ir import _write_npz, save
from sim.layers import random_ir


@pytest.fixture
def build(tmp_path):
    ir, env = random_ir(5, batch=3)
    save(ir, tmp_path)
    _write_npz(tmp_path / "vectors.npz", {f"node:{k}": v for k, v in env.items()})
    return tmp_path, ir


def _fake_board(fd, layer, corrupt=False, design_id=None):
    info = layer.info
    if design_id is not None:
        info = protocol.Info(design_id=design_id, n_in=info.n_in, in_bits=info.in_bits, in_signed=info.in_signed,
                             n_out=info.n_out, out_bits=info.out_bits, out_signed=info.out_signed)

    def read_exact(n):
        buf = b""
        while len(buf) < n:
            chunk = os.read(fd, n - len(buf))
            if not chunk:
                raise EOFError
            buf += chunk
        return buf

    def serve():
        try:
            while True:
                cmd = read_exact(1)
                if cmd == b"I":
                    os.write(fd, info.encode())
                elif cmd == b"R":
                    x = protocol.decode_elems(read_exact(info.n_in * info.in_bytes), info.in_bytes, info.in_signed)
                    y = layer.golden(x)
                    if corrupt:
                        y[3] = (y[3] + 1) % (1 << info.out_bits)
                    os.write(fd, b"K" + (99).to_bytes(4, "little")
                             + protocol.encode_elems(y, info.out_bytes, info.out_signed))
                else:
                    os.write(fd, b"?")
        except (EOFError, OSError):
            pass

    t = threading.Thread(target=serve, daemon=True)
    t.start()
    return t


@pytest.mark.parametrize("corrupt", [False, True], ids=["match", "mismatch"])
def test_host_cli_over_a_pty(build, corrupt, capsys):
    d, ir = build
    master, slave = os.openpty()
    try:
        _fake_board(master, BoardLayer(ir, None, d), corrupt=corrupt)
        code = main(["--port", os.ttyname(slave), "--build", str(d), "--count", "3"])
    finally:
        os.close(slave)
        os.close(master)
    out = capsys.readouterr().out
    if corrupt:
        assert code == 1 and "0/3 outputs equal" in out and "MISMATCH" in out
    else:
        assert code == 0 and "3/3 outputs equal to the golden model" in out and "(99 cycles)" in out


def test_host_cli_refuses_another_design(build, capsys):
    d, ir = build
    master, slave = os.openpty()
    try:
        _fake_board(master, BoardLayer(ir, None, d), design_id=0x12345678)
        code = main(["--port", os.ttyname(slave), "--build", str(d)])
    finally:
        os.close(slave)
        os.close(master)
    err = capsys.readouterr().err
    assert code == 2 and "0x12345678" in err and "flash it first" in err
