"""The board byte protocol, version 1 (documented in docs/boards.md).

Pure Python (no Amaranth, no serial): the host (`boards/host.py`) and the hardware
generator (`boards/bridge.py`) both take their constants and encodings from here.

Host to board, one command byte:

- `I` (0x49) identify. Reply (18 bytes): `S` `Q`, u8 protocol version (1), u8 flags
  (bit 0: input signed, bit 1: output signed), u32 design id, u32 input element count,
  u8 bytes per input element, u32 output element count, u8 bytes per output element.
- `R` (0x52) run, followed by exactly `n_in * in_bytes` payload bytes: the input tensor
  in row-major order, each element little-endian two's complement (`in_bytes` bytes).
  Reply: `K`, u32 cycles the design took from start to done, then `n_out * out_bytes`
  bytes: the output tensor, same encoding.
  If the payload stalls for longer than the board's timeout (~0.1 s) the board drops
  it and replies `T`.
- any other byte: the board replies `?`.

All multi-byte integers are little-endian.
"""
from __future__ import annotations

import json
import struct
import zlib

import numpy as np

VERSION = 1
CMD_INFO = ord("I")
CMD_RUN = ord("R")
REPLY_OK = ord("K")
REPLY_UNKNOWN = ord("?")
REPLY_TIMEOUT = ord("T")
MAGIC = b"SQ"
INFO_LEN = 18
_INFO = struct.Struct("<2sBBIIBIB")
assert _INFO.size == INFO_LEN


def elem_bytes(bits: int) -> int:
    return max(1, (int(bits) + 7) // 8)


def design_id(desc: dict) -> int:
    """A 32-bit id of a wrapped design: CRC-32 of its canonical JSON description."""
    return zlib.crc32(json.dumps(desc, sort_keys=True, separators=(",", ":")).encode()) & 0xFFFFFFFF


class Info:
    """What `I` answers: the shape of one run."""

    def __init__(self, *, design_id: int, n_in: int, in_bits: int, in_signed: bool,
                 n_out: int, out_bits: int, out_signed: bool, version: int = VERSION):
        self.design_id, self.version = int(design_id), int(version)
        self.n_in, self.in_bits, self.in_signed = int(n_in), int(in_bits), bool(in_signed)
        self.n_out, self.out_bits, self.out_signed = int(n_out), int(out_bits), bool(out_signed)
        self.in_bytes = elem_bytes(in_bits)
        self.out_bytes = elem_bytes(out_bits)

    def encode(self) -> bytes:
        flags = int(self.in_signed) | int(self.out_signed) << 1
        return _INFO.pack(MAGIC, self.version, flags, self.design_id, self.n_in, self.in_bytes,
                          self.n_out, self.out_bytes)

    @classmethod
    def decode(cls, raw: bytes) -> "Info":
        if len(raw) != INFO_LEN:
            raise ValueError(f"identify reply: {len(raw)} bytes, expected {INFO_LEN}")
        magic, ver, flags, did, n_in, ib, n_out, ob = _INFO.unpack(raw)
        if magic != MAGIC:
            raise ValueError(f"identify reply does not start with {MAGIC!r}: {raw[:2]!r}")
        if ver != VERSION:
            raise ValueError(f"board speaks protocol version {ver}, this host {VERSION}")
        info = cls(design_id=did, n_in=n_in, in_bits=8 * ib, in_signed=bool(flags & 1),
                   n_out=n_out, out_bits=8 * ob, out_signed=bool(flags & 2), version=ver)
        return info

    def same_shape(self, other: "Info") -> bool:
        return (self.design_id, self.n_in, self.in_bytes, self.n_out, self.out_bytes,
                self.in_signed, self.out_signed) == (other.design_id, other.n_in, other.in_bytes,
                                                     other.n_out, other.out_bytes,
                                                     other.in_signed, other.out_signed)

    def run_reply_len(self) -> int:
        return 1 + 4 + self.n_out * self.out_bytes


def encode_elems(values, nbytes: int, signed: bool) -> bytes:
    """Row-major elements, each `nbytes` little-endian two's complement."""
    a = np.asarray(values, dtype=np.int64).reshape(-1)
    lo, hi = (-(1 << (8 * nbytes - 1)), (1 << (8 * nbytes - 1)) - 1) if signed else (0, (1 << 8 * nbytes) - 1)
    if a.size and (a.min() < lo or a.max() > hi):
        raise ValueError(f"values outside {lo}..{hi} for {nbytes}-byte {'signed' if signed else 'unsigned'} elements")
    u = (a & ((1 << (8 * nbytes)) - 1)).astype(np.uint64)
    out = np.zeros((a.size, nbytes), dtype=np.uint8)
    for k in range(nbytes):
        out[:, k] = (u >> np.uint64(8 * k)) & np.uint64(0xFF)
    return out.tobytes()


def decode_elems(raw: bytes, nbytes: int, signed: bool) -> np.ndarray:
    b = np.frombuffer(raw, dtype=np.uint8).reshape(-1, nbytes).astype(np.int64)
    v = np.zeros(b.shape[0], dtype=np.int64)
    for k in range(nbytes):
        v |= b[:, k] << (8 * k)
    if signed:
        top = 1 << (8 * nbytes - 1)
        v = np.where(v >= top, v - (1 << (8 * nbytes)), v)
    return v


def encode_run(info: Info, values) -> bytes:
    a = np.asarray(values).reshape(-1)
    if a.size != info.n_in:
        raise ValueError(f"input has {a.size} elements, the board expects {info.n_in}")
    return bytes([CMD_RUN]) + encode_elems(a, info.in_bytes, info.in_signed)


def decode_run_reply(info: Info, raw: bytes):
    """(cycles, outputs as int64 array) from a full `K` reply."""
    if not raw:
        raise ValueError("no reply from the board")
    if raw[0] != REPLY_OK:
        what = {REPLY_TIMEOUT: "payload timeout", REPLY_UNKNOWN: "unknown command"}.get(raw[0], "bad reply")
        raise ValueError(f"board replied {bytes(raw[:1])!r} ({what})")
    if len(raw) != info.run_reply_len():
        raise ValueError(f"run reply: {len(raw)} bytes, expected {info.run_reply_len()}")
    cycles = struct.unpack("<I", raw[1:5])[0]
    return cycles, decode_elems(raw[5:], info.out_bytes, info.out_signed)
