"""The accelerator's UART top-level (boards/accel_top.py) end to end: the host code that
`shiftq run` uses (`boards.host.Client`) sends digits images over the simulated UART
and reads back the logits and the class, compared with hw/golden.py."""
from pathlib import Path

import numpy as np
import pytest

from boards.accel_top import BoardNetwork
from boards.bridge import UARTBridge
from hw.ir import load
from sim.runner import emit_verilog, missing_reason, run_test

REPO = Path(__file__).resolve().parents[2]
DIV = 8


def _net():
    d = REPO / "build" / "digitnet"
    if not (d / "model.json").exists() or not (d / "vectors.npz").exists():
        pytest.skip(f"no export at {d}")
    return BoardNetwork(load(d), d, po=4, px=1), d


def _case(net, xs, **extra):
    info = net.info
    return {"divisor": DIV, "clk_ns": 10,
            "info": dict(design_id=info.design_id, n_in=info.n_in, in_bits=info.in_bits, in_signed=info.in_signed,
                         n_out=info.n_out, out_bits=info.out_bits, out_signed=info.out_signed),
            "inputs": [np.asarray(x).reshape(-1).tolist() for x in xs],
            "expected": [net.golden(x).tolist() for x in xs],
            "reply_timeout_s": 5e-3, **extra}


@pytest.mark.slow  # a third Verilator build of the accelerator: kept out of the default suite
@pytest.mark.parametrize("sim", ["verilator", "icarus"])
def test_accel_uart_top_digitnet(sim):
    if missing_reason(sim):
        pytest.skip(missing_reason(sim))
    net, d = _net()
    with np.load(d / "vectors.npz") as z:
        xs = [z["node:input"][k] for k in range(2)]
        want_pred = z["pred"][:2]
    case = _case(net, xs)
    assert [e[-1] for e in case["expected"]] == [int(v) for v in want_pred]
    top = UARTBridge(net.make_core(), net.info, DIV, timeout_cycles=60 * DIV)
    v = emit_verilog(top, "accel_uart")
    rep = run_test(v, "accel_uart", "boards.tb_top", sim, case, testcase="runs_match", tag="digitnet")
    assert rep.get("passed"), rep
    assert len(rep["tests"]["runs_match"]["cycles"]) == 2


# ---------------------------------------------------------------- shiftq run (host side)

class _GoldenBoard:
    """A transport that answers protocol v1 like a board running `net`'s accelerator
    (logits + class from hw/golden.py), optionally with another design id."""

    def __init__(self, net, design_id=None):
        from boards import protocol
        self.p, self.net = protocol, net
        info = net.info
        self.info = protocol.Info(design_id=design_id if design_id is not None else info.design_id,
                                  n_in=info.n_in, in_bits=info.in_bits, in_signed=True,
                                  n_out=info.n_out, out_bits=info.out_bits, out_signed=True)
        self.out = b""

    def write(self, data):
        p = self.p
        if data[:1] == bytes([p.CMD_INFO]):
            self.out += self.info.encode()
        elif data[:1] == bytes([p.CMD_RUN]):
            x = p.decode_elems(data[1:], self.info.in_bytes, True)
            y = self.net.golden(x)
            self.out += bytes([p.REPLY_OK]) + (1234).to_bytes(4, "little") + \
                p.encode_elems(y, self.info.out_bytes, True)

    def read(self, n, timeout_s=None):
        r, self.out = self.out[:n], self.out[n:]
        return r


def test_shiftq_run_host_side(tmp_path):
    from boards.host import Client
    from shiftq.commands.run import classify, load_image
    from shiftq.errors import UserError

    net, d = _net()
    with np.load(d / "vectors.npz") as z:
        xf, pred = z["x"][3], int(z["pred"][3])
        xi = z["node:input"][3]
    np.save(tmp_path / "img.npy", xf)                    # a float image, quantised by the IR rule
    x = load_image(tmp_path / "img.npy", net.ir)
    assert np.array_equal(x, xi)
    klass, logits, cycles = classify(Client(_GoldenBoard(net)), net, x)
    assert klass == pred and cycles == 1234 and len(logits) == net.plan.n_out
    assert np.array_equal(load_image(d / "vectors.npz", net.ir, index=3), xi)
    with pytest.raises(UserError, match="flash it first"):
        classify(Client(_GoldenBoard(net, design_id=1)), net, x)
    np.save(tmp_path / "bad.npy", np.zeros((3, 8, 8), np.float32))
    with pytest.raises(UserError, match="image shape"):
        load_image(tmp_path / "bad.npy", net.ir)
