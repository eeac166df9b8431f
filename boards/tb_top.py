"""cocotb tests of a UART top-level (`boards.bridge.UARTBridge` around a core).

The host side is `boards.host.Client`, the code that drives a real board, talking
through `boards.simuart.SimTransport` to the simulated rx / tx pins. `case` holds
`divisor`, `clk_ns`, `info` (protocol.Info fields), `inputs` / `expected` (lists of
row-major integer lists), `reply_timeout_s` (simulated), and `report_only` (do not
fail the cocotb test, only report: for the test that checks a mismatch is caught).
"""
import cocotb
from cocotb.clock import Clock
from cocotb.task import bridge
from cocotb.triggers import ClockCycles, Timer

from boards import protocol
from boards.host import Client
from boards.simuart import SimTransport, UartDriver, UartMonitor
from sim.runner import load_case, report_test as _report

async def _setup(dut):
    case = load_case()
    div, clk_ns = case["divisor"], case.get("clk_ns", 10)
    Clock(dut.clk, clk_ns, unit="ns").start()
    dut.rx.value = 1
    dut.rst.value = 1
    await ClockCycles(dut.clk, 3)
    dut.rst.value = 0
    await ClockCycles(dut.clk, 3)
    drv = UartDriver(dut.rx, div, clk_ns)
    mon = UartMonitor(dut.tx, div, clk_ns)
    cocotb.start_soon(mon.run())
    byte_s = 10 * div * clk_ns * 1e-9
    tr = SimTransport(drv, mon, sim_timeout_s=case.get("reply_timeout_s", 1e-3) + 4 * byte_s)
    return case, Client(tr), drv, mon


@cocotb.test()
async def runs_match(dut):
    """identify, then every input through Client.run equals its expected output."""
    case, client, drv, mon = await _setup(dut)
    want_info = protocol.Info(**case["info"])

    def host():
        info = client.identify()
        results = []
        for x in case["inputs"]:
            cycles, got = client.run(x)
            results.append((cycles, [int(v) for v in got]))
        return info, results

    info, results = await bridge(host)()
    mism = [i for i, ((c, got), want) in enumerate(zip(results, case["expected"])) if got != list(want)]
    ok = info.same_shape(want_info) and not mism and len(results) == len(case["expected"]) and not mon.errors
    first = None
    if mism:
        i = mism[0]
        diff = [k for k, (a, b) in enumerate(zip(results[i][1], case["expected"][i])) if a != b]
        first = {"vector": i, "positions": diff[:8], "got": [results[i][1][k] for k in diff[:8]],
                 "want": [case["expected"][i][k] for k in diff[:8]]}
    _report("runs_match", ok, mismatched_vectors=mism, first_mismatch=first,
            cycles=[c for c, _ in results], design_id=info.design_id, uart_errors=mon.errors)
    if not case.get("report_only"):   # report_only: the negative test reads the report instead
        assert ok, f"mismatched vectors {mism}, first {first}, uart errors {mon.errors}"


@cocotb.test()
async def bad_commands(dut):
    """An unknown command answers '?'; a stalled payload answers 'T'; the board then still works."""
    case, client, drv, mon = await _setup(dut)

    def host():
        unknown = client.raw(b"x", 1)
        stalled = client.raw(bytes([protocol.CMD_RUN]), 1)   # no payload: times out
        info = client.identify()
        return unknown, stalled, info

    unknown, stalled, info = await bridge(host)()
    ok = unknown == b"?" and stalled == b"T" and info.design_id == case["info"]["design_id"]
    _report("bad_commands", ok, unknown=unknown.hex(), stalled=stalled.hex())
    assert ok, f"unknown -> {unknown!r}, stalled -> {stalled!r}"
