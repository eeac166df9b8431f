"""iCE40 SPRAM inference (hw/synth.py): what yosys maps a weight memory to.

Found with yosys 0.70 (YoWASP): `synth_ice40 -spram` alone infers no SB_SPRAM256KA. A
memory becomes SPRAM only with `ram_style = "huge"`, one address shared by its write
port and its synchronous read port, and no initial contents (Amaranth always writes a
zero `$meminit_v2`, which `strip_spram_init` removes)."""
import pytest
from amaranth.hdl import Module, Mux
from amaranth.back import rtlil
from amaranth.lib import memory, wiring
from amaranth.lib.wiring import In, Out

from hw.synth import SPRAM_ATTRS, SynthFailed, strip_spram_init, yosys_cells
from shiftq.errors import UserError


class WeightMem(wiring.Component):
    """A weights-like memory: a loader writes it, the engine reads it (32 x 3780: digitnet, PO=4)."""

    def __init__(self, *, shared=True, attrs=SPRAM_ATTRS, init=(), width=32, depth=3780, rom=False):
        self.shared, self.attrs, self.init, self.width, self.depth, self.rom = shared, attrs, list(init), width, depth, rom
        super().__init__({"waddr": In(range(depth)), "wdata": In(width), "we": In(1),
                          "raddr": In(range(depth)), "rdata": Out(width), "rom_out": Out(8)})

    def elaborate(self, platform):
        m = Module()
        m.submodules.wmem = mem = memory.Memory(shape=self.width, depth=self.depth, init=self.init,
                                                attrs=self.attrs)
        wp, rp = mem.write_port(), mem.read_port()
        if self.shared:
            a = Mux(self.we, self.waddr, self.raddr)
            m.d.comb += [wp.addr.eq(a), rp.addr.eq(a), rp.en.eq(~self.we)]
        else:
            m.d.comb += [wp.addr.eq(self.waddr), rp.addr.eq(self.raddr)]
        m.d.comb += [wp.data.eq(self.wdata), wp.en.eq(self.we), self.rdata.eq(rp.data)]
        if self.rom:   # an initialised table next to it keeps its contents
            m.submodules.table = tab = memory.Memory(shape=8, depth=512, init=[(k * 37 + 1) & 0xFF for k in range(512)])
            rt = tab.read_port()
            m.d.comb += [rt.addr.eq(self.raddr[:9]), self.rom_out.eq(rt.data)]
        return m


def test_strip_only_huge_memories():
    text = rtlil.convert(WeightMem(rom=True), name="top")
    assert text.count("cell $meminit_v2") == 2
    out, stripped = strip_spram_init(text)
    assert stripped == ["top/wmem"]
    assert out.count("cell $meminit_v2") == 1 and 'parameter \\MEMID "\\\\table"' in out
    plain = rtlil.convert(WeightMem(attrs=None, rom=True), name="top")
    assert strip_spram_init(plain) == (plain, [])


def test_refuses_initialised_spram():
    with pytest.raises(UserError, match="non-zero initial contents"):
        strip_spram_init(rtlil.convert(WeightMem(init=[1, 2, 3]), name="top"))


def test_yosys_maps_shared_address_memory_to_spram(tmp_path):
    cells = yosys_cells(WeightMem(rom=True), "icebreaker", tmp_path / "spram")
    assert cells.get("SB_SPRAM256KA") == 2, cells          # 32 bits = two 16-bit SPRAMs side by side
    assert cells.get("SB_RAM40_4K") == 1, cells            # the initialised table stays in EBR


@pytest.mark.slow
def test_yosys_without_the_conditions_no_spram(tmp_path):
    cells = yosys_cells(WeightMem(attrs=None), "icebreaker", tmp_path / "plain")
    assert "SB_SPRAM256KA" not in cells and cells.get("SB_RAM40_4K") == 32, cells   # > the UP5K's 30 EBR
    with pytest.raises(SynthFailed, match="no valid mapping"):
        yosys_cells(WeightMem(shared=False), "icebreaker", tmp_path / "two-addr")
