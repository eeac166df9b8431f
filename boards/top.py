"""Board top-levels: the UART bridge and its core, wired to a board's clock, reset
button, UART and LEDs (amaranth-boards platforms, see `hw.synth.BOARDS`).

| board      | clock  | UART (115200 8N1)         | reset           | LEDs |
|------------|--------|---------------------------|-----------------|------|
| icebreaker | 12 MHz | FTDI channel B (2nd port) | user button     | green: idle, red: busy / error (blinks) |
| ulx3s-85f  | 25 MHz | FTDI (US1 USB port)       | button F1 (fire1) | 0 idle, 1 receiving, 2 computing, 3 sending, 4 error, 7 heartbeat |
"""
from amaranth.hdl import Elaboratable, Module, ResetInserter, Signal
from amaranth.lib import io

from boards.bridge import UARTBridge
from boards.uart import uart_divisor

BAUD = 115200


class BoardTop(Elaboratable):
    """`clk_hz`: the `sync` clock when the caller makes that domain itself (a PLL,
    boards/pll.py); by default the platform's oscillator, which then clocks `sync`."""

    def __init__(self, board: str, core, info, *, baud: int = BAUD, clk_hz: float | None = None):
        self.board, self.core, self.info, self.baud, self.clk_hz = board, core, info, baud, clk_hz

    def elaborate(self, platform):
        m = Module()
        clk_hz = self.clk_hz or platform.default_clk_frequency
        div = uart_divisor(clk_hz, self.baud)
        bridge = UARTBridge(self.core, self.info, div, timeout_cycles=int(clk_hz // 10))
        m.submodules.btn = btn = io.Buffer("i", platform.request("button", 0, dir="-"))
        m.submodules.bridge = ResetInserter(btn.i)(bridge)
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
