"""A UART on the simulated pins (cocotb), and the host transport that uses it.

`UartDriver` puts bytes on a DUT input pin, `UartMonitor` decodes a DUT output pin
into a byte queue (checking the start and stop bits and the bit period), both at
`divisor` clock periods per bit. `SimTransport` gives `boards.host.Client` the same
`write(bytes)` / `read(n, timeout_s)` it gets from a serial port, so the very host code
that talks to a board talks to the simulated top-level: call the client from a cocotb
`bridge`d function (a thread), and the transport `resume`s the simulator to move bytes.

Imported only inside a cocotb simulation.
"""
from __future__ import annotations

import cocotb
from cocotb.queue import Queue, QueueEmpty
from cocotb.triggers import FallingEdge, First, Timer
from cocotb.task import resume


class UartDriver:
    def __init__(self, pin, divisor: int, clk_period_ns: float):
        self.pin = pin
        self.bit_ns = divisor * clk_period_ns
        self.pin.value = 1

    async def send(self, data: bytes, *, scale: float = 1.0, stop_bit: int = 1, idle_bits: float = 0.0):
        """Send `data`; `scale` stretches the bit period (baud mismatch tests)."""
        bit = self.bit_ns * scale
        for byte in bytes(data):
            for level in [0] + [(byte >> k) & 1 for k in range(8)] + [stop_bit]:
                self.pin.value = level
                await Timer(round((bit) * 1000), unit="ps")
            self.pin.value = 1
            if idle_bits:
                await Timer(round((bit * idle_bits) * 1000), unit="ps")

    async def glitch(self, ns: float):
        self.pin.value = 0
        await Timer(round((ns) * 1000), unit="ps")
        self.pin.value = 1


class UartMonitor:
    """Decodes the pin into `self.bytes` (a Queue); framing errors go to `self.errors`."""

    def __init__(self, pin, divisor: int, clk_period_ns: float):
        self.pin = pin
        self.bit_ns = divisor * clk_period_ns
        self.bytes = Queue()
        self.errors = []
        self.count = 0

    async def run(self):
        while True:
            await FallingEdge(self.pin)
            await Timer(round((self.bit_ns / 2) * 1000), unit="ps")
            if int(self.pin.value) != 0:
                self.errors.append("start bit not low at its middle")
                continue
            byte = 0
            for k in range(8):
                await Timer(round((self.bit_ns) * 1000), unit="ps")
                byte |= int(self.pin.value) << k
            await Timer(round((self.bit_ns) * 1000), unit="ps")
            if int(self.pin.value) != 1:
                self.errors.append(f"stop bit low after byte {byte:#04x}")
                continue
            self.count += 1
            self.bytes.put_nowait(byte)

    async def read(self, n: int, timeout_s: float | None = None) -> bytes:
        """Up to `n` bytes; stops early when `timeout_s` of simulated time passes with none."""
        out = bytearray()
        while len(out) < n:
            try:
                out.append(self.bytes.get_nowait())
                continue
            except QueueEmpty:
                pass
            if timeout_s is None:
                out.append(await self.bytes.get())
                continue
            task = cocotb.start_soon(self.bytes.get())
            timer = Timer(round((timeout_s * 1e9) * 1000), unit="ps")
            done = await First(task, timer)
            if done is timer:
                task.cancel()
                break
            out.append(task.result())
        return bytes(out)

    def drain(self) -> bytes:
        out = bytearray()
        while True:
            try:
                out.append(self.bytes.get_nowait())
            except QueueEmpty:
                return bytes(out)


class SimTransport:
    """`write` / `read` for `boards.host.Client`, over the simulated UART.

    Use from a thread started by `cocotb.task.bridge`; `timeout_s` is simulated time.
    """

    def __init__(self, driver: UartDriver, monitor: UartMonitor, sim_timeout_s: float = 2e-3):
        self._send = resume(driver.send)
        self._read = resume(monitor.read)
        self._drain = monitor.drain
        self.sim_timeout_s = sim_timeout_s

    def write(self, data: bytes) -> None:
        self._send(bytes(data))

    def read(self, n: int, timeout_s: float | None = None) -> bytes:
        return self._read(n, self.sim_timeout_s)

    def reset_input(self) -> None:
        self._drain()
