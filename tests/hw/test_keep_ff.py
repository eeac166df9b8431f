"""hw.rtl.KEEP_FF: per-consumer copies of a register survive yosys (hw.synth's script
marks their flip-flops `keep`); unmarked copies are merged back into one."""
from amaranth.hdl import Module, Signal
from amaranth.lib import wiring
from amaranth.lib.wiring import In, Out

from hw.rtl import KEEP_FF
from hw.synth import yosys_cells


class _Fanout(wiring.Component):
    """One 8-bit register copied into 4 registers, each feeding its own adder."""
    a: In(8)
    b: In(8)
    o: Out(8)

    def __init__(self, keep: bool):
        self.keep = keep
        super().__init__()

    def elaborate(self, platform):
        m = Module()
        r = Signal(8)
        m.d.sync += r.eq(self.a)
        acc = 0
        for k in range(4):
            c = Signal(8, name=f"copy{k}", reset_less=True, **(dict(attrs=KEEP_FF) if self.keep else {}))
            m.d.sync += c.eq(r)
            acc = acc ^ (c + self.b + k)
        m.d.comb += self.o.eq(acc)
        return m


def _ffs(keep):
    return yosys_cells(_Fanout(keep), "ulx3s-85f").get("TRELLIS_FF", 0)


def test_marked_copies_keep_their_flip_flops():
    assert _ffs(keep=True) == 8 + 4 * 8
    assert _ffs(keep=False) == 8 + 8
