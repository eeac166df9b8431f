"""The boot-time weight loader (boards/flash_loader.py) on Icarus and Verilator: a model
of the SPI flash (sim/test_flash_loader.py) holds a weight image written by
boards/weight_image.py; every written word is compared with the image, and a bad
header (magic, design id, word count) or an erased flash must raise `error` with no
word written."""
from pathlib import Path

import numpy as np
import pytest

from boards.flash_loader import FlashLoader
from boards.weight_image import FLASH_OFFSET, encode
from sim.runner import SIMULATORS, emit_verilog, run_test

REPO = Path(__file__).resolve().parents[2]
CLK_NS = 10
TESTS = ("loads_image", "bad_magic", "wrong_design_id", "erased_flash", "wrong_word_count")


def _words(n, bits, seed):
    rng = np.random.default_rng(seed)
    w = [int(v) for v in rng.integers(0, 1 << bits, size=n, dtype=np.uint64)]
    if n >= 2:
        w[0], w[-1] = 0, (1 << bits) - 1      # both ends of the range
    return w


def make_case(words, word_bits, design_id, *, clk_div=1, tres1_cycles=5, flash_addr=FLASH_OFFSET, tests=TESTS):
    good = encode(words, word_bits, design_id)
    images = {
        "loads_image": good,
        "bad_magic": bytes([good[0] ^ 0x20]) + good[1:],
        "wrong_design_id": encode(words, word_bits, design_id ^ 0x00010000),
        "erased_flash": b"",
        "wrong_word_count": encode(words[:-1], word_bits, design_id),
    }
    dut = FlashLoader(word_bits=word_bits, n_words=len(words), design_id=design_id, flash_addr=flash_addr,
                      clk_div=clk_div, tres1_cycles=tres1_cycles)
    case = {"flash_addr": flash_addr, "clk_div": clk_div, "tres1_ns": tres1_cycles * CLK_NS,
            "max_cycles": dut.cycles_estimate() + 200,
            "tests": {t: {"image": images[t].hex(), "expect": "done" if t == "loads_image" else "error",
                          "words": words if t == "loads_image" else []} for t in tests}}
    return dut, case


def run_loader(sim, words, word_bits, design_id, *, tag, **kw):
    dut, case = make_case(words, word_bits, design_id, **kw)
    top = "flash_loader"
    rep = run_test(emit_verilog(dut, top), top, "sim.test_flash_loader", sim, case, tag=tag)
    return rep, case


def _check(rep, case):
    assert rep.get("passed"), rep
    tests = rep["tests"]
    assert set(tests) == set(case["tests"]), rep
    good = tests.get("loads_image")
    if good:
        assert good["writes"] == len(case["tests"]["loads_image"]["words"])


@pytest.mark.parametrize("sim", SIMULATORS)
def test_loader_small_image_and_errors(sim):
    """40 words of 20 bits (3 bytes each, 4 padding bits), SPI at clk / 2: all five cases."""
    rep, case = run_loader(sim, _words(40, 20, 1), 20, 0x5EED1234, tag="w20")
    _check(rep, case)


@pytest.mark.slow
@pytest.mark.parametrize("sim", SIMULATORS)
def test_loader_slow_spi_clock(sim):
    """SPI at clk / 6 (clk_div 3), 1-byte words and a 7-byte word width, image at 0x0."""
    rep, case = run_loader(sim, _words(64, 8, 2), 8, 0xFFFFFFFF, clk_div=3, tres1_cycles=37, flash_addr=0,
                           tag="w8d3", tests=("loads_image", "wrong_design_id"))
    _check(rep, case)
    rep, case = run_loader(sim, _words(30, 56, 3), 56, 0, clk_div=2, tag="w56d2",
                           tests=("loads_image", "bad_magic"))
    _check(rep, case)


@pytest.mark.slow
@pytest.mark.parametrize("sim", SIMULATORS)
def test_loader_digitnet_weights(sim):
    """The digitnet export's weights for the iCEBreaker (today's plan, PO=4: 3,780 x 32 bits;
    242,264 clocks = 20 ms at 12 MHz)."""
    from boards.accel_top import BoardNetwork, board_kwargs
    from hw.ir import load

    d = REPO / "build" / "digitnet"
    if not (d / "model.json").exists():
        pytest.skip(f"no export at {d}")
    net = BoardNetwork(load(d), d, **board_kwargs("icebreaker"))
    p = net.plan
    if net.uses_loader:                  # the rewritten plan: exactly what the board loads
        words, bits = p.loaded_words, p.loaded_word_bits
    else:                                # today's plan: its largest weight memory
        f = max(range(len(p.wmem)), key=lambda k: len(p.wmem[k]) * p.wmem_word_bits[k])
        words, bits = p.wmem[f], p.wmem_word_bits[f]
    rep, case = run_loader(sim, words, bits, net.weights_id if net.uses_loader else net.info.design_id,
                           tag="digitnet",
                           tests=("loads_image", "wrong_design_id"))
    _check(rep, case)
