"""Host side of the board protocol: one `Client` for a real serial port and the simulator.

`Client(transport)` needs only `transport.write(bytes)` and `transport.read(n, timeout_s)`
(returning fewer bytes on timeout). `SerialTransport` wraps pyserial; the cocotb
testbench passes `boards.simuart.SimTransport`, so the bytes the tests check are the
bytes this code sends to a board.

Command line (a board flashed with `make flash`):

    python -m boards.host --port /dev/ttyUSB1 --build build/digitnet [--count 20]

identifies the board, checks that its design id matches the build's layer, sends the
layer's input for the first `--count` golden test vectors (build/NAME/vectors.npz),
and compares every output code with `hw/golden.py`. Exit 0 only if all match.
"""
from __future__ import annotations

import argparse
import sys
import time

import numpy as np

from boards import protocol
from shiftq.errors import UserError


class SerialTransport:
    def __init__(self, port: str, baud: int = 115200):
        try:
            import serial
        except ImportError as e:  # pragma: no cover - pyserial is a dependency
            raise UserError("pyserial is not installed (pip install pyserial)") from e
        try:
            self.ser = serial.Serial(port, baud, timeout=0.05)
        except (serial.SerialException, OSError) as e:
            raise UserError(f"cannot open serial port {port}: {e}") from None
        self.ser.reset_input_buffer()

    def write(self, data: bytes) -> None:
        self.ser.write(bytes(data))
        self.ser.flush()

    def read(self, n: int, timeout_s: float | None = 1.0) -> bytes:
        out = bytearray()
        deadline = time.monotonic() + (timeout_s if timeout_s is not None else 1e9)
        while len(out) < n and time.monotonic() < deadline:
            chunk = self.ser.read(n - len(out))
            if chunk:
                out += chunk
                deadline = time.monotonic() + (timeout_s if timeout_s is not None else 1e9)
        return bytes(out)

    def reset_input(self) -> None:
        self.ser.reset_input_buffer()

    def close(self) -> None:
        self.ser.close()


class Client:
    def __init__(self, transport, timeout_s: float = 1.0):
        self.t = transport
        self.timeout_s = timeout_s
        self.info: protocol.Info | None = None

    def identify(self) -> protocol.Info:
        self.t.write(bytes([protocol.CMD_INFO]))
        raw = self.t.read(protocol.INFO_LEN, self.timeout_s)
        if not raw:
            raise UserError("no answer from the board (is it flashed with this design, and is this its UART?)")
        try:
            self.info = protocol.Info.decode(raw)
        except ValueError as e:
            raise UserError(f"the board's identify reply is not shiftq protocol: {e}") from None
        return self.info

    def run(self, values):
        """Send one input (row-major integers); return (cycles, output integers)."""
        info = self.info or self.identify()
        self.t.write(protocol.encode_run(info, values))
        raw = self.t.read(info.run_reply_len(), self.timeout_s)
        try:
            return protocol.decode_run_reply(info, raw)
        except ValueError as e:
            raise UserError(str(e)) from None

    def raw(self, data: bytes, n: int) -> bytes:
        self.t.write(data)
        return self.t.read(n, self.timeout_s)


# ---------------------------------------------------------------------------------------

def main(argv=None) -> int:
    from boards.layer import layer_from_build

    ap = argparse.ArgumentParser(prog="python -m boards.host", description=__doc__.splitlines()[0])
    ap.add_argument("--port", required=True, help="serial port, e.g. /dev/ttyUSB1 (iCEBreaker: the 2nd FTDI port)")
    ap.add_argument("--build", required=True, help="build/NAME (an export)")
    ap.add_argument("--layer", default=None, help="the node the bitstream computes (default: first conv)")
    ap.add_argument("--baud", type=int, default=115200)
    ap.add_argument("--count", type=int, default=10, help="test vectors to run")
    args = ap.parse_args(argv)
    try:
        layer = layer_from_build(args.build, args.layer)
        client = Client(SerialTransport(args.port, args.baud))
        info = client.identify()
        if not info.same_shape(layer.info):
            raise UserError(f"the board runs design {info.design_id:#010x} ({info.n_in} in, {info.n_out} out), "
                            f"not {layer.name} of {args.build} ({layer.info.design_id:#010x}): flash it first")
        xs, want = layer.vectors(args.count)
        bad = 0
        for i, (x, w) in enumerate(zip(xs, want)):
            cycles, got = client.run(x)
            ok = np.array_equal(got, w.reshape(-1))
            bad += not ok
            print(f"vector {i}: {'ok' if ok else 'MISMATCH'} ({cycles} cycles)")
        print(f"{len(xs) - bad}/{len(xs)} outputs equal to the golden model")
        return 0 if bad == 0 else 1
    except UserError as e:
        print(f"boards.host: error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
