"""boards/weight_image.py: the weight image's bytes, round trip, and refusals."""
import pytest

from boards.flash_loader import FlashLoader
from boards.weight_image import (FLASH_OFFSET, HEADER_BYTES, ImageError, decode, encode, header, word_bytes,
                                 write_image)


def test_layout_is_the_documented_one():
    img = encode([0x12345, 0xABCDE], 20, 0xDEADBEEF)
    assert img[:4] == b"SQWI" and img[4] == 1 and img[5] == 0
    assert img[6:8] == (20).to_bytes(2, "little")
    assert img[8:12] == bytes.fromhex("efbeadde")
    assert img[12:16] == (2).to_bytes(4, "little")
    assert img[16:] == bytes.fromhex("452301" "debc0a")       # 3 bytes per word, LSB first
    assert len(img) == HEADER_BYTES + 2 * word_bytes(20)
    assert [word_bytes(b) for b in (1, 8, 9, 16, 32, 33)] == [1, 1, 2, 2, 4, 5]
    assert FLASH_OFFSET == 0x100000


@pytest.mark.parametrize("bits", [1, 7, 8, 20, 32, 48, 240])
def test_round_trip(bits):
    import random
    rng = random.Random(bits)
    words = [rng.getrandbits(bits) for _ in range(33)] + [0, (1 << bits) - 1]
    im = decode(encode(words, bits, 77))
    assert im.words == words and im.word_bits == bits and im.design_id == 77 and im.n_words == len(words)


def test_empty_image():
    assert decode(encode([], 32, 1)).words == []


def test_refusals():
    good = encode([1, 2, 3], 8, 5)
    with pytest.raises(ImageError, match="magic"):
        decode(b"\xff" * 64)                                  # erased flash
    with pytest.raises(ImageError, match="version"):
        decode(good[:4] + b"\x02" + good[5:])
    with pytest.raises(ImageError, match="flags"):
        decode(good[:5] + b"\x01" + good[6:])
    with pytest.raises(ImageError, match="header says 3 words"):
        decode(good[:-1])
    with pytest.raises(ImageError, match="after the last word"):
        decode(good + b"\x00")
    assert decode(good + b"\xff" * 10, strict=False).words == [1, 2, 3]
    with pytest.raises(ImageError, match="shorter"):
        decode(good[:10])
    with pytest.raises(ImageError, match="does not fit 8"):
        encode([256], 8, 0)
    with pytest.raises(ImageError, match="does not fit"):
        encode([-1], 8, 0)
    with pytest.raises(ImageError, match="design id"):
        encode([1], 8, 1 << 32)
    with pytest.raises(ImageError, match="bits set above bit 3"):
        decode(header(4, 1, 0) + b"\x10")


def test_write_image(tmp_path):
    n = write_image(tmp_path / "w.bin", [5, 6], 16, 9, bitstream_bytes=104090)
    assert n == 20 and decode((tmp_path / "w.bin").read_bytes()).words == [5, 6]
    with pytest.raises(ImageError, match="overlaps"):
        write_image(tmp_path / "x.bin", [1], 8, 0, offset=0x1000, bitstream_bytes=104090)
    with pytest.raises(ImageError, match="does not fit the 16 MiB flash"):
        write_image(tmp_path / "y.bin", [0] * 10, 8, 0, offset=(16 << 20) - 8)


def test_loader_expects_the_writers_header():
    dut = FlashLoader(word_bits=32, n_words=3780, design_id=0x1234ABCD)
    assert dut.header == encode([0] * 3780, 32, 0x1234ABCD)[:HEADER_BYTES]
    assert len(dut.wl_data) == 32 and len(dut.wl_addr) == 12
    with pytest.raises(ValueError, match="clk_div"):
        FlashLoader(word_bits=8, n_words=1, design_id=0, clk_div=0)
    with pytest.raises(ValueError, match="24 address bits"):
        FlashLoader(word_bits=8, n_words=1, design_id=0, flash_addr=1 << 24)
