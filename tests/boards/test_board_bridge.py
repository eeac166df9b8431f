"""The UART protocol bridge around a toy core (protocol only; the real layer is in
test_board_layer.py): identify, runs, unknown command, payload timeout, both simulators."""
import numpy as np
import pytest
from amaranth.hdl import Module, Signal, signed, unsigned
from amaranth.lib import wiring
from amaranth.lib.memory import Memory
from amaranth.lib.wiring import In, Out

from boards import protocol
from boards.bridge import UARTBridge
from sim.runner import SIMULATORS, emit_verilog, run_test


class ToyCore(wiring.Component):
    """out[i] = (3 * in[i % n_in] + i) wrapped to out_bits (signed if asked), after `lat` busy cycles."""

    def __init__(self, n_in, in_bits, in_signed, n_out, out_bits, out_signed, lat=5):
        self.n_in, self.n_out, self.lat = n_in, n_out, lat
        self.in_shape = signed(in_bits) if in_signed else unsigned(in_bits)
        self.out_shape = signed(out_bits) if out_signed else unsigned(out_bits)
        super().__init__({"in_addr": In(range(n_in)), "in_data": In(self.in_shape), "in_we": In(1),
                          "start": In(1), "busy": Out(1),
                          "out_addr": In(range(n_out)), "out_data": Out(self.out_shape)})

    def elaborate(self, platform):
        m = Module()
        m.submodules.imem = imem = Memory(shape=self.in_shape, depth=self.n_in, init=[])
        m.submodules.omem = omem = Memory(shape=self.out_shape, depth=self.n_out, init=[])
        w = imem.write_port()
        m.d.comb += [w.addr.eq(self.in_addr), w.data.eq(self.in_data), w.en.eq(self.in_we)]
        r = imem.read_port(domain="comb")
        ow = omem.write_port()
        orp = omem.read_port()
        m.d.comb += [orp.addr.eq(self.out_addr), self.out_data.eq(orp.data)]
        i = Signal(range(self.n_out + 1))
        cnt = Signal(range(self.lat + 1))
        with m.FSM():
            with m.State("IDLE"):
                with m.If(self.start):
                    m.d.sync += [i.eq(0), cnt.eq(0)]
                    m.next = "WAIT"
            with m.State("WAIT"):
                m.d.comb += self.busy.eq(1)
                m.d.sync += cnt.eq(cnt + 1)
                with m.If(cnt == self.lat):
                    m.next = "RUN"
            with m.State("RUN"):
                m.d.comb += [self.busy.eq(1), r.addr.eq(i % self.n_in), ow.addr.eq(i),
                             ow.data.eq(r.data * 3 + i), ow.en.eq(1)]
                m.d.sync += i.eq(i + 1)
                with m.If(i == self.n_out - 1):
                    m.next = "IDLE"
        return m


def toy_expected(x, n_out, out_bits, out_signed):
    x = np.asarray(x, dtype=np.int64)
    y = (3 * x[np.arange(n_out) % len(x)] + np.arange(n_out)) & ((1 << out_bits) - 1)
    if out_signed:
        y = np.where(y >= 1 << (out_bits - 1), y - (1 << out_bits), y)
    return y


@pytest.mark.parametrize("sim", SIMULATORS)
@pytest.mark.parametrize("shape", [pytest.param((6, 8, True, 9, 4, False), id="s8-u4"),
                                   pytest.param((5, 12, False, 7, 10, True), id="u12-s10",
                                                marks=pytest.mark.slow)])
def test_bridge_protocol(sim, shape):
    n_in, in_bits, in_signed, n_out, out_bits, out_signed = shape
    info = protocol.Info(design_id=0x5EED1234, n_in=n_in, in_bits=in_bits, in_signed=in_signed,
                         n_out=n_out, out_bits=out_bits, out_signed=out_signed)
    div = 8
    top = UARTBridge(ToyCore(*shape), info, div, timeout_cycles=60 * div)
    rng = np.random.default_rng(n_in)
    lo, hi = (-(1 << (in_bits - 1)), 1 << (in_bits - 1)) if in_signed else (0, 1 << in_bits)
    xs = [rng.integers(lo, hi, n_in) for _ in range(3)]
    xs[0][:2] = [lo, hi - 1]
    case = {"divisor": div, "clk_ns": 10,
            "info": dict(design_id=info.design_id, n_in=n_in, in_bits=in_bits, in_signed=in_signed,
                         n_out=n_out, out_bits=out_bits, out_signed=out_signed),
            "inputs": [x.tolist() for x in xs],
            "expected": [toy_expected(x, n_out, out_bits, out_signed).tolist() for x in xs],
            "reply_timeout_s": 2e-6 * 60}
    rep = run_test(emit_verilog(top, "bridge_top"), "bridge_top", "boards.tb_top", sim, case)
    assert rep.get("passed"), rep
    assert set(rep["tests"]) == {"runs_match", "bad_commands"}


@pytest.mark.parametrize("sim", SIMULATORS)
def test_bridge_catches_a_wrong_expectation(sim):
    """The end-to-end check can fail: one expected code off by one is reported."""
    shape = (6, 8, True, 9, 4, False)
    info = protocol.Info(design_id=0x5EED1234, n_in=6, in_bits=8, in_signed=True, n_out=9, out_bits=4,
                         out_signed=False)
    top = UARTBridge(ToyCore(*shape), info, 8, timeout_cycles=480)   # the same build as s8-u4
    x = np.arange(6) - 3
    want = toy_expected(x, 9, 4, False)
    want[4] = (want[4] + 1) % 16
    case = {"divisor": 8, "clk_ns": 10, "info": dict(design_id=0x5EED1234, n_in=6, in_bits=8, in_signed=True, n_out=9,
                                                      out_bits=4, out_signed=False),
            "inputs": [x.tolist()], "expected": [want.tolist()], "reply_timeout_s": 1.2e-4,
            "report_only": True}
    rep = run_test(emit_verilog(top, "bridge_top"), "bridge_top", "boards.tb_top", sim, case,
                   testcase="runs_match")
    assert not rep.get("passed")
    assert rep["tests"]["runs_match"]["first_mismatch"]["positions"] == [4]
