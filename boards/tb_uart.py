"""cocotb tests of `UARTRx` / `UARTTx` (top: `UARTPair`, both side by side).

Run through `sim.runner.run_test(..., "boards.tb_uart", sim, case)`; `case` holds
`divisor`, `clk_ns` and `seed`. Each test records its findings with `sim.runner.report_test`.
"""
import random

import cocotb
from cocotb.clock import Clock
from cocotb.triggers import ClockCycles, RisingEdge, Timer

from boards.simuart import UartDriver, UartMonitor
from sim.runner import load_case, report_test as _report

async def _setup(dut):
    case = load_case()
    div, clk_ns = case["divisor"], case.get("clk_ns", 10)
    Clock(dut.clk, clk_ns, unit="ns").start()
    dut.rx.value = 1
    dut.tx_valid.value = 0
    dut.tx_data.value = 0
    dut.rst.value = 1
    await ClockCycles(dut.clk, 3)
    dut.rst.value = 0
    await ClockCycles(dut.clk, 3)
    return case, div, clk_ns


async def _collect_rx(dut, sink, errors):
    while True:
        await RisingEdge(dut.clk)
        if int(dut.rx_valid.value):
            sink.append(int(dut.rx_data.value))
        if int(dut.rx_error.value):
            errors.append(1)


@cocotb.test()
async def rx_bytes(dut):
    """Random bytes at the nominal rate and at +-3 % baud are all received exactly."""
    case, div, clk_ns = await _setup(dut)
    rng = random.Random(case.get("seed", 1))
    got, errs = [], []
    cocotb.start_soon(_collect_rx(dut, got, errs))
    drv = UartDriver(dut.rx, div, clk_ns)
    sent = bytes([0x00, 0xFF, 0x55, 0xAA] + [rng.randrange(256) for _ in range(24)])
    await drv.send(sent[:16])
    await drv.send(sent[16:22], scale=1.03)
    await drv.send(sent[22:], scale=0.97)
    await ClockCycles(dut.clk, 2 * div)
    ok = bytes(got) == sent and not errs
    _report("rx_bytes", ok, sent=sent.hex(), got=bytes(got).hex(), errors=len(errs))
    assert ok, f"sent {sent.hex()} got {bytes(got).hex()} errors {len(errs)}"


@cocotb.test()
async def rx_framing(dut):
    """A byte with a low stop bit raises `error`, not `valid`; a short glitch is ignored."""
    case, div, clk_ns = await _setup(dut)
    got, errs = [], []
    cocotb.start_soon(_collect_rx(dut, got, errs))
    drv = UartDriver(dut.rx, div, clk_ns)
    await drv.send(b"\x3c", stop_bit=0)
    await Timer(round((3 * div * clk_ns) * 1000), unit="ps")
    n_err_bad_stop = len(errs)
    await drv.glitch(max(1, div // 4) * clk_ns)
    await Timer(round((12 * div * clk_ns) * 1000), unit="ps")
    glitch_bytes = list(got)
    await drv.send(b"\xa5")
    await ClockCycles(dut.clk, 2 * div)
    ok = n_err_bad_stop == 1 and glitch_bytes == [] and got == [0xA5] and len(errs) == 1
    _report("rx_framing", ok, bad_stop_errors=n_err_bad_stop, after_glitch=glitch_bytes, got=got)
    assert ok, f"bad-stop errors {n_err_bad_stop}, bytes after glitch {glitch_bytes}, final {got}, errors {len(errs)}"


@cocotb.test()
async def tx_bytes(dut):
    """Bytes pushed with valid/ready appear on `tx` framed 8N1 at `divisor` cycles a bit."""
    case, div, clk_ns = await _setup(dut)
    rng = random.Random(case.get("seed", 1) + 1)
    mon = UartMonitor(dut.tx, div, clk_ns)
    cocotb.start_soon(mon.run())
    sent = bytes([0x00, 0xFF, 0x01, 0x80] + [rng.randrange(256) for _ in range(16)])
    busy_while_sending = True
    for b in sent:
        dut.tx_data.value = b
        dut.tx_valid.value = 1
        await RisingEdge(dut.clk)
        while not int(dut.tx_ready.value):
            await RisingEdge(dut.clk)
        # ready was high at this edge: the byte is taken
        if rng.random() < 0.3:
            dut.tx_valid.value = 0
            await ClockCycles(dut.clk, rng.randrange(1, 3 * div))
        await RisingEdge(dut.clk)
        busy_while_sending &= not int(dut.tx_ready.value)
    dut.tx_valid.value = 0
    got = await mon.read(len(sent), timeout_s=20 * div * clk_ns * 1e-9)
    # the line must idle high afterwards
    await ClockCycles(dut.clk, 2 * div)
    ok = got == sent and not mon.errors and busy_while_sending and int(dut.tx.value) == 1
    _report("tx_bytes", ok, sent=sent.hex(), got=got.hex(), errors=mon.errors)
    assert ok, f"sent {sent.hex()} got {got.hex()} errors {mon.errors} busy {busy_while_sending}"
