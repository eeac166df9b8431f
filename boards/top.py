"""Board top-levels: the UART bridge and its core, wired to a board's clock, reset
button, UART and LEDs (amaranth-boards platforms, see `hw.synth.BOARDS`).

| board      | clock  | UART (115200 8N1)         | reset           | LEDs |
|------------|--------|---------------------------|-----------------|------|
| icebreaker | 12 MHz | FTDI channel B (2nd port) | user button     | green: idle, red: busy / error (blinks) |
| ulx3s-85f  | 25 MHz | FTDI (US1 USB port)       | button F1 (fire1) | 0 idle, 1 receiving, 2 computing, 3 sending, 4 error, 7 heartbeat |
"""
from amaranth.hdl import ClockDomain, ClockSignal, Const, DomainRenamer, Elaboratable, Instance, Module, ResetSignal, Signal
from amaranth.lib import io, wiring
from amaranth.lib.wiring import In, Out
from amaranth.lib.cdc import FFSynchronizer

from boards.bridge import UARTBridge
from boards.uart import uart_divisor

BAUD = 115200


class CoreReset(wiring.Component):
    """The board core's reset as one flip-flop: 1 while `sync` is in reset, then the button
    (asynchronous, so through a two-stage synchroniser first): three clocks from a press.

    button: In(1)   the reset button (1 = pressed), from its pin
    rst:    Out(1)  the core domain's reset, straight from a flip-flop
    """
    button: In(1)
    rst: Out(1, init=1)

    def elaborate(self, platform):
        m = Module()
        pressed = Signal()
        m.submodules.sync_button = FFSynchronizer(self.button, pressed)
        m.d.sync += self.rst.eq(pressed)
        return m


class BoardTop(Elaboratable):
    """`clk_hz`: the `sync` clock when the caller makes that domain itself (a PLL,
    boards/pll.py); by default the platform's oscillator, which then clocks `sync`.

    The bridge and its core run in a domain `core` on the same clock, whose reset is one
    flip-flop: the button, synchronised, or `sync`'s own reset. A routed 12 x 4 x 8
    ResNet-20 accelerator had its critical path (18.6 ns, 17.2 of routing) on the reset
    when it was the PLL's lock synchroniser OR the raw button, through a LUT and across
    the die to thousands of flip-flops. `global_reset` (ECP5 only) puts that flip-flop's
    output on a global network (a DCCA), as a clock would be."""

    def __init__(self, board: str, core, info, *, baud: int = BAUD, clk_hz: float | None = None,
                 global_reset: bool = False):
        self.board, self.core, self.info, self.baud, self.clk_hz = board, core, info, baud, clk_hz
        self.global_reset = global_reset

    def elaborate(self, platform):
        m = Module()
        clk_hz = self.clk_hz or platform.default_clk_frequency
        div = uart_divisor(clk_hz, self.baud)
        bridge = UARTBridge(self.core, self.info, div, timeout_cycles=int(clk_hz // 10))
        m.submodules.btn = btn = io.Buffer("i", platform.request("button", 0, dir="-"))
        m.submodules.core_reset = core_reset = CoreReset()
        m.d.comb += core_reset.button.eq(btn.i)
        rst = core_reset.rst
        if self.global_reset:
            rst = Signal(name="rst_global")
            m.submodules.rst_dcc = Instance("DCCA", i_CLKI=core_reset.rst, i_CE=Const(1, 1), o_CLKO=rst)
        m.domains.core = ClockDomain("core", local=True)
        m.d.comb += [ClockSignal("core").eq(ClockSignal("sync")), ResetSignal("core").eq(rst)]
        m.submodules.bridge = DomainRenamer("core")(bridge)
        uart = platform.request("uart", 0, dir="-")
        m.submodules.rx = rx = io.Buffer("i", uart.rx)
        m.submodules.tx = tx = io.Buffer("o", uart.tx)
        m.d.comb += [bridge.rx.eq(rx.i), tx.o.eq(bridge.tx)]

        def led(i):
            buf = io.Buffer("o", platform.request("led", i, dir="-"))
            m.submodules[f"led{i}"] = buf
            return buf
        beat = Signal(24)
        m.d.sync += beat.eq(beat + 1)
        if self.board == "icebreaker":
            red, green = led(0), led(1)
            m.d.comb += [green.o.eq(bridge.led_idle & ~bridge.led_err),
                         red.o.eq(bridge.led_rx | bridge.led_busy | bridge.led_tx
                                  | (bridge.led_err & beat[-1]))]
        else:
            leds = [led(i) for i in range(8)]
            for buf, s in zip(leds, [bridge.led_idle, bridge.led_rx, bridge.led_busy, bridge.led_tx,
                                     bridge.led_err]):
                m.d.comb += buf.o.eq(s)
            m.d.comb += leds[7].o.eq(beat[-1])
        return m
