"""The UART top-level around one layer of the issue-5 engine, end to end vs hw/golden.py:
the host Client sends each input's bytes over the simulated UART, reads the output
codes back and compares them with the golden model, on both simulators."""
import numpy as np
import pytest

from boards.bridge import UARTBridge
from boards.layer import BoardLayer
from sim.layers import random_ir
from sim.runner import SIMULATORS, emit_verilog, run_test

DIV = 8


def _case(layer, xs, **extra):
    info = layer.info
    return {"divisor": DIV, "clk_ns": 10,
            "info": dict(design_id=info.design_id, n_in=info.n_in, in_bits=info.in_bits, in_signed=info.in_signed,
                         n_out=info.n_out, out_bits=info.out_bits, out_signed=info.out_signed),
            "inputs": [np.asarray(x).reshape(-1).tolist() for x in xs],
            "expected": [layer.golden(x).tolist() for x in xs],
            "reply_timeout_s": 2e-4, **extra}


def _top(layer, **kw):
    return UARTBridge(layer.make_core(**kw), layer.info, DIV, timeout_cycles=60 * DIV)


@pytest.fixture(scope="module")
def rand():
    return random_ir(3, batch=2)


@pytest.mark.parametrize("sim", SIMULATORS)
@pytest.mark.parametrize("name", ["stem", pytest.param("fc", marks=pytest.mark.slow),
                                  pytest.param("sc", marks=pytest.mark.slow)])
def test_uart_top_layer_matches_golden(sim, name, rand):
    ir, env = rand
    layer = BoardLayer(ir, name)
    node = ir.node(name)
    xs = [env[node["input"]][b] for b in range(2)]
    for b, x in enumerate(xs):   # the golden reference the test compares with is the env's
        assert np.array_equal(layer.golden(x), env[name][b].reshape(-1))
    v = emit_verilog(_top(layer, po_max=4, pi_max=2), f"uart_{name}")
    rep = run_test(v, f"uart_{name}", "boards.tb_top", sim, _case(layer, xs), testcase="runs_match")
    assert rep.get("passed"), rep
    assert len(rep["tests"]["runs_match"]["cycles"]) == 2


@pytest.mark.parametrize("sim", SIMULATORS)
def test_uart_top_catches_a_corrupted_input(sim, rand):
    """Flip one input element on the host side only: the outputs no longer match golden."""
    ir, env = rand
    layer = BoardLayer(ir, "stem")
    x = env["input"][0].copy()
    case = _case(layer, [x], report_only=True)
    x2 = x.copy().reshape(-1)
    x2[27] = -x2[27] if x2[27] != 0 else 5
    case["inputs"] = [x2.tolist()]    # the board gets x2, the expectation is golden(x)
    v = emit_verilog(_top(layer, po_max=4, pi_max=2), "uart_stem")
    rep = run_test(v, "uart_stem", "boards.tb_top", sim, case, testcase="runs_match")
    assert not rep.get("passed")
    assert rep["tests"]["runs_match"]["mismatched_vectors"] == [0]


@pytest.mark.slow
@pytest.mark.parametrize("sim", SIMULATORS)
def test_uart_top_digitnet_export_stem(sim, tmp_path_factory):
    """A dry-run digitnet export, as `make bitstream` builds it for the iCEBreaker (stem, 4x1
    PEs, the exported tables/stem.mem): the export's own vectors through the UART."""
    from boards.layer import layer_from_build
    from shiftq.export import export

    out = tmp_path_factory.mktemp("exp") / "digitnet"
    export(None, str(out), dry_run_model_name="digitnet", vectors=2, backends=[], progress=lambda *a: None)
    layer = layer_from_build(out)
    xs, want = layer.vectors(2)
    for x, w in zip(xs, want):
        assert np.array_equal(layer.golden(x), w)
    case = _case(layer, xs)
    v = emit_verilog(UARTBridge(layer.make_core("icebreaker"), layer.info, DIV, timeout_cycles=60 * DIV),
                     "uart_digitnet_stem")
    rep = run_test(v, "uart_digitnet_stem", "boards.tb_top", sim, case, testcase="runs_match")
    assert rep.get("passed"), rep
