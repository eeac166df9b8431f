"""boards/accel_top.py: the per-board make_plan keywords, and the boot-time weight loader
between the iCEBreaker's flash pins and the accelerator's weight-load ports.

The iCEBreaker's plan (PARALLELISM) has `weights_loaded`; its top-level is elaborated by
the real amaranth-boards platform (no synthesis) around the real accelerator and around
a stub with the same interface (`plan.loaded_words`, `plan.loaded_word_bits`; ports
`wl_addr`, `wl_data`, `wl_en`, `wl_done` In) to check the pin constraints."""
import re
from pathlib import Path

import pytest
from amaranth.hdl import Module, Signal, signed
from amaranth.lib import wiring
from amaranth.lib.wiring import In, Out

from boards import accel_top
from boards.weight_image import FLASH_OFFSET, decode

REPO = Path(__file__).resolve().parents[2]


def _net(**kw):
    from hw.ir import load
    d = REPO / "build" / "digitnet"
    if not (d / "model.json").exists():
        pytest.skip(f"no export at {d}")
    return accel_top.BoardNetwork(load(d), d, **accel_top.board_kwargs("icebreaker", **kw))


class StubAccelerator(wiring.Component):
    """The announced interface of the new Accelerator (weights written through wl_*)."""

    def __init__(self, plan):
        self.plan = plan
        n = len(plan.loaded_words)
        super().__init__({
            "in_valid": In(1), "in_ready": Out(1), "in_data": In(signed(plan.in_bits)),
            "out_ready": In(1), "out_valid": Out(1), "step_mode": In(1), "resume": In(1),
            "logit_addr": In(range(max(2, plan.n_out))), "logit_data": Out(signed(plan.out_bits)),
            "klass": Out(8), "busy": Out(1),
            "wl_addr": In(range(max(2, n))), "wl_data": In(plan.loaded_word_bits), "wl_en": In(1), "wl_done": In(1),
        })

    def elaborate(self, platform):
        m = Module()
        seen = Signal(self.plan.loaded_word_bits)
        with m.If(self.wl_en):
            m.d.sync += seen.eq(seen ^ self.wl_data ^ self.wl_addr)
        m.d.comb += [self.busy.eq(~self.wl_done | self.in_valid), self.logit_data.eq(seen)]
        return m


def test_parallelism_is_make_plan_kwargs():
    assert accel_top.PARALLELISM["icebreaker"] == dict(po=4, px=1, weights_loaded=True, deep_pipeline=False)
    assert accel_top.PARALLELISM["ulx3s-85f"] == dict(po=12, pi=4, px=8)
    assert all(isinstance(v, dict) for v in accel_top.PARALLELISM.values())
    assert accel_top.board_kwargs("ulx3s-85f") == accel_top.PARALLELISM["ulx3s-85f"]
    assert accel_top.board_kwargs("icebreaker", po=2, px=None) == dict(po=2, px=1, weights_loaded=True,
                                                                       deep_pipeline=False)
    assert accel_top.board_kwargs("ulx3s-85f", pi=2) == dict(po=12, pi=2, px=8)
    assert accel_top.board_kwargs("nosuchboard") == accel_top.DEFAULT_PARALLELISM
    net = _net()
    assert (net.plan.PO, net.plan.PI, net.plan.PX, net.plan.pes) == (4, 1, 1, 4)
    assert net.plan.weights_loaded and net.uses_loader


def test_ulx3s_plan_uses_no_loader():
    from hw.ir import load
    d = REPO / "build" / "digitnet"
    if not (d / "model.json").exists():
        pytest.skip(f"no export at {d}")
    net = accel_top.network_from_build(d, "ulx3s-85f")
    assert (net.plan.PO, net.plan.PI, net.plan.PX, net.plan.pes) == (12, 4, 8, 384)
    assert not net.uses_loader
    core = net.make_core()
    core._MustUse__silence = True
    assert "wl_en" not in core.signature.members


def test_icebreaker_core_has_the_real_accelerators_load_ports():
    from hw.rtl.accel.accel import Accelerator

    net = _net()
    core = net.make_core()
    core._MustUse__silence = True
    acc = Accelerator(net.plan)
    acc._MustUse__silence = True
    for name in ("wl_addr", "wl_data", "wl_en", "wl_done"):
        assert name in core.signature.members and name in acc.signature.members, name
    assert core.signature.members["wl_data"].shape == acc.signature.members["wl_data"].shape
    assert len(net.plan.loaded_words) <= 2 ** len(acc.wl_addr)


def test_prepare_build_budget_per_board():
    """The checks `make bitstream` runs before yosys: SPRAM weights with the loader on the
    UP5K, block RAM only on the 85F; a plan too big for the UP5K is refused in one line."""
    from hw.rtl.accel.plan import DoesNotFit

    d = REPO / "build" / "digitnet"
    if not (d / "model.json").exists():
        pytest.skip(f"no export at {d}")
    net, b = accel_top.prepare_build(d, "icebreaker")
    assert net.uses_loader and b["spram"] >= 1 and b["ebr"] <= 30
    assert [m["ram"] for m in b["memories"] if m["kind"] == "weights"] == ["spram"]
    net, b = accel_top.prepare_build(d, "ulx3s-85f")
    assert not net.uses_loader and b["spram"] == 0 and b["ebr"] <= 208
    with pytest.raises(DoesNotFit) as e:
        accel_top.prepare_build(d, "icebreaker", po=4, pi=4, px=8)
    assert "\n" not in str(e.value)
    with pytest.raises(accel_top.UserError, match="make export"):
        accel_top.prepare_build(d / "nope", "icebreaker")


def test_real_icebreaker_top_puts_the_weights_in_spram():
    """The real accelerator in the iCEBreaker top: the weight memory is the one memory
    marked for SPRAM (its all-zero init is stripped), and the loader sits on the flash pins."""
    from hw.synth import get_board, strip_spram_init

    net = _net()
    top = accel_top.AccelBoardTop("icebreaker", net)
    plan = get_board("icebreaker").make_platform().prepare(top, name="top")
    _, stripped = strip_spram_init(plan.files["top.il"])
    assert len(stripped) == 1 and stripped[0].endswith("accel/wmem0"), stripped
    assert "spi_flash_1x_0__clk__io 15" in plan.files["top.pcf"]
    assert top.loader is not None and top.loader.n_words == len(net.plan.loaded_words)


def _loaded(net):
    """The iCEBreaker's plan loads its weights at boot (PARALLELISM)."""
    assert net.plan.weights_loaded and net.uses_loader
    return net


def test_weight_image_and_id():
    net = _loaded(_net())
    im = decode(net.weight_image())
    assert im.words == list(net.plan.loaded_words) and im.word_bits == net.plan.loaded_word_bits
    assert im.design_id == net.weights_id
    assert net.weights_id != net.info.design_id
    other = _loaded(_net())
    other.plan.loaded_words[7] ^= 1
    assert other.weights_id != net.weights_id         # another layout / table: another id
    ld = net.make_loader(12e6)
    ld._MustUse__silence = True
    assert ld.header == net.weight_image()[:16] and ld.flash_addr == FLASH_OFFSET
    assert ld.tres1_cycles >= 36                        # 3 us at 12 MHz


def test_icebreaker_top_wires_the_loader_to_the_flash_pins(monkeypatch, tmp_path):
    import hw.rtl.accel.accel as accel_mod
    from hw.synth import get_board

    monkeypatch.setattr(accel_mod, "Accelerator", StubAccelerator)
    net = _loaded(_net())
    core = net.make_core()
    core._MustUse__silence = True
    assert {"wl_addr", "wl_data", "wl_en", "wl_done"} <= set(core.signature.members)
    top = accel_top.AccelBoardTop("icebreaker", net)
    platform = get_board("icebreaker").make_platform()
    plan = platform.prepare(top, name="top")
    pcf = plan.files["top.pcf"]
    print("\n".join(ln for ln in pcf.splitlines() if "flash" in ln))
    pins = dict(re.findall(r"set_io\s+(?:--warn-no-port\s+)?(\S+)\s+(\S+)", pcf))
    flash = {k: v for k, v in pins.items() if "spi_flash" in k}
    by_role = {k.split("__")[-2] if k.endswith("__io") else k.split("__")[-1]: v for k, v in flash.items()}
    # iCEBreaker: FLASH_SCK 15, FLASH_SSB 16, FLASH_IO0 (COPI) 14, FLASH_IO1 (CIPO) 17, IO2/WP# 12, IO3/HOLD# 13
    assert {by_role.get(r) for r in ("clk", "cs", "copi", "cipo", "wp", "hold")} == {"15", "16", "14", "17", "12", "13"}, flash
    assert by_role["clk"] == "15" and by_role["cs"] == "16" and by_role["copi"] == "14" and by_role["cipo"] == "17"
    assert top.loader is not None and top.loader.clk_div == 1      # 12 MHz / 2 = 6 MHz SPI
    il = plan.files["top.il"]
    assert "loader" in il and "wl_done" in il


def test_ulx3s_refuses_a_loaded_plan(monkeypatch):
    import hw.rtl.accel.accel as accel_mod
    from shiftq.errors import UserError

    monkeypatch.setattr(accel_mod, "Accelerator", StubAccelerator)
    net = _loaded(_net())
    with pytest.raises(UserError, match="iCEBreaker"):
        accel_top.AccelBoardTop("ulx3s-85f", net)


def test_write_weight_image(tmp_path):
    net = _loaded(_net())
    d = accel_top.write_weight_image(net, tmp_path, bitstream_bytes=104090)
    assert d["weight_offset"] == FLASH_OFFSET and d["weight_image"] == "weights.bin"
    assert decode((tmp_path / "weights.bin").read_bytes()).words == list(net.plan.loaded_words)


class StubSpramAccelerator(StubAccelerator):
    """The stub plus a weight memory in SPRAM the way the real one must be written: one
    address (loader's while loading, a reader's after `wl_done`), ram_style huge, no init."""

    def elaborate(self, platform):
        from amaranth.hdl import Mux
        from amaranth.lib import memory

        from hw.synth import SPRAM_ATTRS

        m = Module()
        n = len(self.plan.loaded_words)
        m.submodules.wmem = mem = memory.Memory(shape=self.plan.loaded_word_bits, depth=n, init=[],
                                                attrs=SPRAM_ATTRS)
        wp, rp = mem.write_port(), mem.read_port()
        raddr = Signal(range(max(2, n)))
        acc = Signal(self.plan.loaded_word_bits)
        with m.If(self.wl_done):
            m.d.sync += [raddr.eq(Mux(raddr == n - 1, 0, raddr + 1)), acc.eq(acc ^ rp.data)]
        a = Mux(self.wl_done, raddr, self.wl_addr)
        m.d.comb += [wp.addr.eq(a), rp.addr.eq(a), wp.data.eq(self.wl_data), wp.en.eq(self.wl_en & ~self.wl_done),
                     rp.en.eq(~wp.en), self.logit_data.eq(acc), self.busy.eq(~self.wl_done | self.in_valid)]
        return m


@pytest.mark.slow
def test_icebreaker_build_with_loader_and_spram(monkeypatch, tmp_path):
    """yosys + nextpnr of the iCEBreaker top (UART bridge, loader, a stub accelerator with
    the plan's 32 x 3,972 weight memory): the memory lands in 2 SPRAMs, the flash pins are placed."""
    import hw.rtl.accel.accel as accel_mod
    from hw.synth import synthesize

    monkeypatch.setattr(accel_mod, "Accelerator", StubSpramAccelerator)
    net = _loaded(_net())
    util = synthesize(accel_top.AccelBoardTop("icebreaker", net), "icebreaker", tmp_path, quiet=True)
    assert util["resources"]["spram"]["used"] == 2, util["resources"]
    assert util["timing_met"], util["clocks"]
    pcf = (tmp_path / "top.pcf").read_text()
    assert "spi_flash_1x_0__clk__io 15" in pcf and "spi_flash_1x_0__cipo__io 17" in pcf
