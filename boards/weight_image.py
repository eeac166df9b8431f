"""The weight image: what `shiftq flash` writes into the iCEBreaker's SPI flash and what
`boards.flash_loader.FlashLoader` copies into SPRAM at boot (layout in docs/boards.md).

Pure Python (no Amaranth). Layout, every integer little-endian:

| offset | size | field |
|---:|---:|---|
| 0 | 4 | magic `b"SQWI"` (0x53 0x51 0x57 0x49) |
| 4 | 1 | format version (1) |
| 5 | 1 | flags (0; a loader refuses anything else) |
| 6 | 2 | word width in bits (`word_bits`, 1..65535) |
| 8 | 4 | design id (`boards.accel_top.BoardNetwork.info.design_id`, CRC-32 of the export) |
| 12 | 4 | word count `n` |
| 16 | n x B | the words, word k at 16 + k*B, B = ceil(word_bits / 8) bytes each, least significant byte first, unused top bits 0 |

The image sits in the flash at `FLASH_OFFSET` (1 MiB), well past the UP5K bitstream
(104,090 bytes at offset 0).
"""
from __future__ import annotations

import struct
from dataclasses import dataclass

from shiftq.errors import UserError

__all__ = ["MAGIC", "VERSION", "HEADER_BYTES", "FLASH_OFFSET", "FLASH_BYTES", "ImageError", "WeightImage",
           "word_bytes", "header", "encode", "decode", "write_image"]

MAGIC = b"SQWI"
VERSION = 1
HEADER_BYTES = 16
#: where `shiftq flash` puts the image in the iCEBreaker's flash (and where the loader reads it)
FLASH_OFFSET = 0x100000
#: the iCEBreaker's SPI flash (W25Q128JV): 16 MiB
FLASH_BYTES = 16 << 20
_HDR = struct.Struct("<4sBBHII")


class ImageError(UserError):
    """Bytes that are not a valid weight image, or words that do not fit one."""


@dataclass(frozen=True)
class WeightImage:
    words: list
    word_bits: int
    design_id: int

    @property
    def n_words(self) -> int:
        return len(self.words)


def word_bytes(word_bits: int) -> int:
    """Bytes per word in the image: ceil(word_bits / 8)."""
    return (int(word_bits) + 7) // 8


def header(word_bits: int, n_words: int, design_id: int) -> bytes:
    """The 16-byte header (also what the loader compares the flash's bytes with)."""
    if not 1 <= int(word_bits) <= 0xFFFF:
        raise ImageError(f"word width {word_bits} bits: must be 1..65535")
    if not 0 <= int(n_words) <= 0xFFFFFFFF:
        raise ImageError(f"word count {n_words}: must fit 32 bits")
    if not 0 <= int(design_id) <= 0xFFFFFFFF:
        raise ImageError(f"design id {design_id:#x}: must fit 32 bits")
    return _HDR.pack(MAGIC, VERSION, 0, int(word_bits), int(design_id), int(n_words))


def encode(words, word_bits: int, design_id: int) -> bytes:
    """Header + words (each `word_bytes(word_bits)` bytes, little-endian)."""
    words = [int(w) for w in words]
    nb = word_bytes(word_bits)
    body = bytearray()
    for k, w in enumerate(words):
        if w < 0 or w >> word_bits:
            raise ImageError(f"word {k} = {w:#x} does not fit {word_bits} unsigned bits")
        body += w.to_bytes(nb, "little")
    return header(word_bits, len(words), design_id) + bytes(body)


def decode(data: bytes, *, strict: bool = True) -> WeightImage:
    """Parse an image (trailing bytes beyond the last word are allowed unless `strict`)."""
    data = bytes(data)
    if len(data) < HEADER_BYTES:
        raise ImageError(f"weight image: {len(data)} bytes, shorter than the {HEADER_BYTES}-byte header")
    magic, version, flags, word_bits, design_id, n = _HDR.unpack_from(data)
    if magic != MAGIC:
        raise ImageError(f"weight image: magic {magic!r}, expected {MAGIC!r} (erased flash reads b'\\xff\\xff\\xff\\xff')")
    if version != VERSION:
        raise ImageError(f"weight image: format version {version}, this tool reads version {VERSION}")
    if flags != 0:
        raise ImageError(f"weight image: flags {flags:#04x}, expected 0")
    if word_bits == 0:
        raise ImageError("weight image: word width 0")
    nb = word_bytes(word_bits)
    end = HEADER_BYTES + n * nb
    if len(data) < end:
        raise ImageError(f"weight image: header says {n} words of {nb} bytes ({end} bytes), got {len(data)} bytes")
    if strict and len(data) != end:
        raise ImageError(f"weight image: {len(data) - end} bytes after the last word")
    words = [int.from_bytes(data[HEADER_BYTES + k * nb:HEADER_BYTES + (k + 1) * nb], "little") for k in range(n)]
    bad = [k for k, w in enumerate(words) if w >> word_bits]
    if bad:
        raise ImageError(f"weight image: word {bad[0]} has bits set above bit {word_bits - 1}")
    return WeightImage(words=words, word_bits=word_bits, design_id=design_id)


def write_image(path, words, word_bits: int, design_id: int, *, offset: int = FLASH_OFFSET,
                bitstream_bytes: int | None = None) -> int:
    """Write the image file `path`; check it fits the flash after `offset` (and, given the
    bitstream's size, that the two do not overlap). Returns the image's size in bytes."""
    from pathlib import Path

    data = encode(words, word_bits, design_id)
    if bitstream_bytes is not None and bitstream_bytes > offset:
        raise ImageError(f"the bitstream ({bitstream_bytes} bytes) overlaps the weight image at {offset:#x}")
    if offset + len(data) > FLASH_BYTES:
        raise ImageError(f"weight image ({len(data)} bytes) at {offset:#x} does not fit the {FLASH_BYTES >> 20} MiB flash")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_bytes(data)
    tmp.replace(path)
    return len(data)
