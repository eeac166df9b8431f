"""8N1 UART receiver and transmitter as small Amaranth components.

Both count `divisor` clock cycles per bit (`divisor = round(clk_hz / baud)`, >= 4).

`UARTRx`: `rx` is the pin (idle high). A 2-flop synchroniser, start-bit detection on a
falling edge, the start bit re-checked at its middle (a glitch shorter than half a bit
is ignored), then the eight data bits (LSB first) sampled at their middles, then the
stop bit. On a good stop bit `valid` pulses for one cycle with `data`; on a bad one
(a break, or a baud mismatch) `error` pulses instead and the byte is dropped. `data`
holds its value until the next byte.

`UARTTx`: a byte is taken when `valid & ready`; `tx` then sends start, eight data bits
LSB first, stop. `ready` is high only while idle.
"""

from amaranth.hdl import Cat, Module, Signal
from amaranth.lib import wiring
from amaranth.lib.wiring import In, Out

__all__ = ["UARTRx", "UARTTx", "UARTPair", "uart_divisor"]


def uart_divisor(clk_hz: float, baud: int) -> int:
    div = int(round(clk_hz / baud))
    if div < 4:
        raise ValueError(f"clock {clk_hz} Hz is too slow for {baud} baud (divisor {div} < 4)")
    err = abs(clk_hz / div - baud) / baud
    if err > 0.02:
        raise ValueError(f"{baud} baud from {clk_hz} Hz is {100 * err:.1f}% off (> 2%)")
    return div


class UARTRx(wiring.Component):
    rx: In(1, init=1)
    data: Out(8)
    valid: Out(1)
    error: Out(1)

    def __init__(self, divisor: int):
        if divisor < 4:
            raise ValueError("divisor >= 4 required")
        self.divisor = divisor
        super().__init__()

    def elaborate(self, platform):
        m = Module()
        div = self.divisor
        s1 = Signal(init=1)
        s2 = Signal(init=1)
        m.d.sync += [s1.eq(self.rx), s2.eq(s1)]
        timer = Signal(range(div + div // 2 + 1))
        bit = Signal(range(9))
        shreg = Signal(8)
        m.d.sync += [self.valid.eq(0), self.error.eq(0)]
        with m.FSM():
            with m.State("IDLE"):
                with m.If(~s2):
                    m.d.sync += timer.eq(div // 2 - 1)
                    m.next = "START"
            with m.State("START"):
                with m.If(timer == 0):
                    with m.If(s2):            # not a real start bit: back to idle
                        m.next = "IDLE"
                    with m.Else():
                        m.d.sync += [timer.eq(div - 1), bit.eq(0)]
                        m.next = "DATA"
                with m.Else():
                    m.d.sync += timer.eq(timer - 1)
            with m.State("DATA"):
                with m.If(timer == 0):
                    m.d.sync += [shreg.eq(Cat(shreg[1:], s2)), timer.eq(div - 1), bit.eq(bit + 1)]
                    with m.If(bit == 7):
                        m.next = "STOP"
                with m.Else():
                    m.d.sync += timer.eq(timer - 1)
            with m.State("STOP"):
                with m.If(timer == 0):
                    with m.If(s2):
                        m.d.sync += [self.data.eq(shreg), self.valid.eq(1)]
                        m.next = "IDLE"
                    with m.Else():
                        m.d.sync += self.error.eq(1)
                        m.next = "BREAK"
                with m.Else():
                    m.d.sync += timer.eq(timer - 1)
            with m.State("BREAK"):                # wait for the line to return high
                with m.If(s2):
                    m.next = "IDLE"
        return m


class UARTTx(wiring.Component):
    data: In(8)
    valid: In(1)
    ready: Out(1)
    tx: Out(1, init=1)

    def __init__(self, divisor: int):
        if divisor < 4:
            raise ValueError("divisor >= 4 required")
        self.divisor = divisor
        super().__init__()

    def elaborate(self, platform):
        m = Module()
        div = self.divisor
        timer = Signal(range(div))
        bits = Signal(10)
        busy = Signal()
        left = Signal(range(11))       # bits still to put on the line
        m.d.comb += self.ready.eq(~busy)
        with m.If(~busy):
            with m.If(self.valid):
                m.d.sync += [bits.eq(Cat(0, self.data, 1)), left.eq(10), timer.eq(0), busy.eq(1)]
        with m.Elif(timer != 0):
            m.d.sync += timer.eq(timer - 1)
        with m.Elif(left != 0):           # a bit boundary: the next bit, held `div` cycles
            m.d.sync += [self.tx.eq(bits[0]), bits.eq(bits >> 1), left.eq(left - 1), timer.eq(div - 1)]
        with m.Else():                    # the stop bit has been on the line for `div` cycles
            m.d.sync += busy.eq(0)
        return m


class UARTPair(wiring.Component):
    """A receiver and a transmitter side by side, unconnected: the cocotb test top."""
    rx: In(1, init=1)
    rx_data: Out(8)
    rx_valid: Out(1)
    rx_error: Out(1)
    tx_data: In(8)
    tx_valid: In(1)
    tx_ready: Out(1)
    tx: Out(1, init=1)

    def __init__(self, divisor: int):
        self.divisor = divisor
        super().__init__()

    def elaborate(self, platform):
        m = Module()
        m.submodules.urx = urx = UARTRx(self.divisor)
        m.submodules.utx = utx = UARTTx(self.divisor)
        m.d.comb += [urx.rx.eq(self.rx), self.rx_data.eq(urx.data), self.rx_valid.eq(urx.valid),
                     self.rx_error.eq(urx.error),
                     utx.data.eq(self.tx_data), utx.valid.eq(self.tx_valid),
                     self.tx_ready.eq(utx.ready), self.tx.eq(utx.tx)]
        return m
