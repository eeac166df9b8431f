"""The board's protocol engine: UART bytes <-> a design's input and output buffers.

`UARTBridge(core, info, divisor)` speaks protocol v1 (`boards/protocol.py`,
docs/boards.md) on `rx` / `tx` and drives `core`, any component with the *core port*:

| port       | dir | meaning |
|------------|-----|---------|
| `in_addr`  | In  | input buffer write address (element index, row-major) |
| `in_data`  | In  | one input element (`info.in_bits` wide) |
| `in_we`    | In  | write strobe |
| `start`    | In  | one-cycle pulse: compute on the input buffer |
| `busy`     | Out | high while computing (goes high the cycle after `start` at the latest) |
| `out_addr` | In  | output buffer read address |
| `out_data` | Out | the element at `out_addr`, valid at most 2 cycles after `out_addr` changes |

The wrapped design (today one layer of the issue-5 layer engine, later the whole
network) is adapted to this port by a thin wrapper (`boards/layer.py`).

Status outputs for LEDs: `led_idle` (waiting for a command), `led_rx` (receiving the
payload), `led_busy` (computing), `led_tx` (sending), `led_err` (the last command was
unknown, timed out, or a framing error was seen; cleared by the next good command).
"""
from amaranth.hdl import Array, Cat, Const, Module, Signal
from amaranth.lib import wiring
from amaranth.lib.wiring import In, Out

from boards import protocol
from boards.uart import UARTRx, UARTTx

__all__ = ["UARTBridge"]


class UARTBridge(wiring.Component):
    rx: In(1, init=1)
    tx: Out(1, init=1)
    led_idle: Out(1)
    led_rx: Out(1)
    led_busy: Out(1)
    led_tx: Out(1)
    led_err: Out(1)

    def __init__(self, core, info: protocol.Info, divisor: int, *, timeout_cycles: int | None = None):
        self.core, self.info, self.divisor = core, info, divisor
        # payload stall timeout: ~0.1 s at 12 MHz, and never under 4 byte times
        self.timeout_cycles = timeout_cycles or max(40 * divisor, 1 << 20)
        super().__init__()

    def elaborate(self, platform):
        m = Module()
        info, core = self.info, self.core
        m.submodules.core = core
        m.submodules.urx = urx = UARTRx(self.divisor)
        m.submodules.utx = utx = UARTTx(self.divisor)
        m.d.comb += [urx.rx.eq(self.rx), self.tx.eq(utx.tx)]

        ib, ob = info.in_bytes, info.out_bytes
        info_rom = Array([Const(b, 8) for b in info.encode()])
        # byte within a field. init=1, not 0: every use sets it first, and a reset value
        # that differs from 0 makes Icarus evaluate the comb ROM mux on idx at least once
        # (an `always @*` whose inputs never change after time 0 is never run there).
        idx = Signal(range(max(protocol.INFO_LEN, 4, ib, ob) + 1), init=1)
        addr = Signal(range(max(info.n_in, info.n_out, 1) + 1), init=1)   # init=1: see idx
        elem = Signal(8 * max(ib, ob))
        cycles = Signal(32)
        timer = Signal(range(self.timeout_cycles + 1))
        wait = Signal(2)
        err = Signal()
        m.d.comb += self.led_err.eq(err)
        with m.If(urx.error):
            m.d.sync += err.eq(1)

        m.d.comb += [core.in_data.eq(elem), core.in_addr.eq(addr), core.out_addr.eq(addr)]

        def send(byte, nxt, m=m):
            m.d.comb += [utx.data.eq(byte), utx.valid.eq(1)]
            with m.If(utx.ready):
                nxt()

        with m.FSM():
            with m.State("IDLE"):
                m.d.comb += self.led_idle.eq(1)
                with m.If(urx.valid):
                    with m.If(urx.data == protocol.CMD_INFO):
                        m.d.sync += [idx.eq(0), err.eq(0)]
                        m.next = "INFO"
                    with m.Elif(urx.data == protocol.CMD_RUN):
                        m.d.sync += [idx.eq(0), addr.eq(0), elem.eq(0), timer.eq(0), err.eq(0)]
                        m.next = "RECV"
                    with m.Else():
                        m.d.sync += err.eq(1)
                        m.next = "UNKNOWN"
            with m.State("UNKNOWN"):
                m.d.comb += self.led_tx.eq(1)
                send(protocol.REPLY_UNKNOWN, lambda: setattr(m, "next", "IDLE"))
            with m.State("INFO"):
                m.d.comb += self.led_tx.eq(1)

                def info_next():
                    m.d.sync += idx.eq(idx + 1)
                    with m.If(idx == protocol.INFO_LEN - 1):
                        m.next = "IDLE"
                send(info_rom[idx], info_next)
            with m.State("RECV"):
                m.d.comb += self.led_rx.eq(1)
                with m.If(urx.valid):
                    m.d.sync += timer.eq(0)
                    for k in range(ib):
                        with m.If(idx == k):
                            m.d.sync += elem[8 * k:8 * k + 8].eq(urx.data)
                    with m.If(idx == ib - 1):
                        m.next = "WRITE"
                    with m.Else():
                        m.d.sync += idx.eq(idx + 1)
                with m.Elif(timer == self.timeout_cycles):
                    m.d.sync += err.eq(1)
                    m.next = "TIMEOUT"
                with m.Else():
                    m.d.sync += timer.eq(timer + 1)
            with m.State("WRITE"):
                m.d.comb += [self.led_rx.eq(1), core.in_we.eq(1)]
                m.d.sync += [idx.eq(0), elem.eq(0), addr.eq(addr + 1)]
                with m.If(addr == info.n_in - 1):
                    m.next = "START"
                with m.Else():
                    m.next = "RECV"
            with m.State("TIMEOUT"):
                m.d.comb += self.led_tx.eq(1)
                send(protocol.REPLY_TIMEOUT, lambda: setattr(m, "next", "IDLE"))
            with m.State("START"):
                m.d.comb += [core.start.eq(1), self.led_busy.eq(1)]
                m.d.sync += [cycles.eq(1), wait.eq(0)]
                m.next = "RUN"
            with m.State("RUN"):
                m.d.comb += self.led_busy.eq(1)
                m.d.sync += cycles.eq(cycles + 1)
                # `busy` may rise one cycle after `start`: look only from the 2nd cycle on
                with m.If(wait != 2):
                    m.d.sync += wait.eq(wait + 1)
                with m.Elif(~core.busy):
                    m.next = "SEND_K"
            with m.State("SEND_K"):
                m.d.comb += self.led_tx.eq(1)
                m.d.sync += cycles.eq(cycles)

                def k_next():
                    m.d.sync += idx.eq(0)
                    m.next = "SEND_CYCLES"
                send(protocol.REPLY_OK, k_next)
            with m.State("SEND_CYCLES"):
                m.d.comb += self.led_tx.eq(1)

                def c_next():
                    m.d.sync += idx.eq(idx + 1)
                    with m.If(idx == 3):
                        m.d.sync += [addr.eq(0), wait.eq(0)]
                        m.next = "FETCH"
                send(cycles.word_select(idx[:2], 8), c_next)
            with m.State("FETCH"):
                m.d.comb += self.led_tx.eq(1)
                m.d.sync += wait.eq(wait + 1)
                with m.If(wait == 2):
                    if info.out_signed:
                        m.d.sync += elem.eq(core.out_data.as_signed())
                    else:
                        m.d.sync += elem.eq(core.out_data)
                    m.d.sync += idx.eq(0)
                    m.next = "SEND_OUT"
            with m.State("SEND_OUT"):
                m.d.comb += self.led_tx.eq(1)

                def o_next():
                    m.d.sync += idx.eq(idx + 1)
                    with m.If(idx == ob - 1):
                        m.d.sync += [addr.eq(addr + 1), wait.eq(0)]
                        with m.If(addr == info.n_out - 1):
                            m.next = "IDLE"
                        with m.Else():
                            m.next = "FETCH"
                send(elem.word_select(idx, 8), o_next)
        return m
