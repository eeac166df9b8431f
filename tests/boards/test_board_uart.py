"""UART receiver and transmitter in cocotb, on every available simulator."""
import pytest

from boards.uart import UARTPair, uart_divisor
from sim.runner import SIMULATORS, emit_verilog, run_test


@pytest.mark.parametrize("sim", SIMULATORS)
@pytest.mark.parametrize("divisor", [8, pytest.param(13, marks=pytest.mark.slow)])
def test_uart_rx_tx(sim, divisor):
    v = emit_verilog(UARTPair(divisor), "uart_pair")
    rep = run_test(v, "uart_pair", "boards.tb_uart", sim, {"divisor": divisor, "clk_ns": 10, "seed": divisor})
    assert rep.get("passed"), rep
    assert set(rep["tests"]) == {"rx_bytes", "rx_framing", "tx_bytes"}, rep


def test_uart_divisor():
    assert uart_divisor(12e6, 115200) == 104
    assert uart_divisor(25e6, 115200) == 217
    with pytest.raises(ValueError):
        uart_divisor(1e6, 1_000_000)
