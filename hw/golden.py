"""The golden model: executes the IR with NumPy integers. It is the specification.

RTL and HLS C simulation must equal this on every output bit. Convolutions and
linears are exact integer dot products; they run through float BLAS only where that
is provably exact (every partial sum is an integer below 2^24 for float32, 2^53 for
float64, which the IR's declared accumulator width bounds), otherwise in int64.
Every value is checked against its declared width.
"""
from __future__ import annotations

import numpy as np

from .ir import IR


class WidthError(AssertionError):
    """A value exceeded the width the IR declares for it: the IR (or the lowering) is wrong."""


def _check_signed(a, bits, what):
    if a.size:
        lo, hi = int(a.min()), int(a.max())
        if lo < -(1 << (bits - 1)) or hi > (1 << (bits - 1)) - 1:
            raise WidthError(f"{what}: values in [{lo}, {hi}] exceed {bits} signed bits")


def _check_out(a, out, what):
    if out["kind"] == "code":
        if a.size and (int(a.min()) < 0 or int(a.max()) >= len(out["levels"])):
            raise WidthError(f"{what}: codes outside 0..{len(out['levels']) - 1}")
    else:
        _check_signed(a, out["bits"], what)


def quantize_input(ir: IR, x) -> np.ndarray:
    """Float images [N, C, H, W] (normalised as the loader does) to input integers."""
    inp = ir.graph["input"]
    q = (1 << (inp["bits"] - 1)) - 1
    x = np.asarray(x, dtype=np.float32).astype(np.float64)
    return np.clip(np.floor(x / inp["scale"] + 0.5), -q, q).astype(np.int64)


def _values(ir: IR, name: str, data: np.ndarray) -> np.ndarray:
    t = ir.tensor(name)
    if t["kind"] == "code":
        return np.asarray(t["levels"], dtype=np.int64)[data]
    return data


def _exact_dtype(acc_bits: int):
    """The cheapest dtype in which every partial sum of a dot product bounded by
    `acc_bits` is an exactly represented integer."""
    if acc_bits <= 24:
        return np.float32
    if acc_bits <= 53:
        return np.float64
    return np.int64


def _exact_matmul(a: np.ndarray, b: np.ndarray, acc_bits: int) -> np.ndarray:
    """a @ b for integer arrays, exact, via float BLAS when the bound allows it."""
    dt = _exact_dtype(acc_bits)
    return (a.astype(dt) @ b.astype(dt)).astype(np.int64)


def _conv2d(ir, n, v):
    """Accumulated over the KH*KW kernel offsets, each a (pixels x C) @ (C x O) product
    on a channels-last view: no im2col copy. Exact: every partial sum is bounded by the
    declared accumulator width (see _exact_dtype)."""
    w = ir.array(n["weight"]["key"])  # [O, I, KH, KW]
    o, i, kh, kw = w.shape
    s, p = n["stride"], n["padding"]
    dt = _exact_dtype(n["acc_bits"])
    nb, _, h, wd = v.shape
    ho, wo = (h + 2 * p - kh) // s + 1, (wd + 2 * p - kw) // s + 1
    vp = np.zeros((nb, h + 2 * p, wd + 2 * p, i), dtype=dt)
    vp[:, p:p + h, p:p + wd, :] = v.transpose(0, 2, 3, 1)
    wt = w.astype(dt).transpose(2, 3, 1, 0)  # [KH, KW, I, O]
    acc = np.zeros((nb * ho * wo, o), dtype=dt)
    for ky in range(kh):
        for kx in range(kw):
            patch = vp[:, ky:ky + s * (ho - 1) + 1:s, kx:kx + s * (wo - 1) + 1:s, :]
            # one 2-D BLAS product per offset (a strided 4-D matmul would not use BLAS)
            acc += np.ascontiguousarray(patch).reshape(-1, i) @ wt[ky, kx]
    return acc.astype(np.int64).reshape(nb, ho, wo, o).transpose(0, 3, 1, 2)


def _linear(ir, n, v):
    w = ir.array(n["weight"]["key"])  # [O, I]
    return _exact_matmul(v, w.T, n["acc_bits"])


def _requant(ir, n, acc, env):
    rq, out = n["requant"], n["out"]
    shape = (1, -1) + (1,) * (acc.ndim - 2)
    s = acc * ir.array(rq["mult"]).astype(np.int64).reshape(shape)
    s = s + ir.array(rq["bias"]).astype(np.int64).reshape(shape)
    if rq.get("residual"):
        r = rq["residual"]
        rv = _values(ir, r["input"], env[r["input"]])
        s = s + rv * ir.array(r["mult"]).astype(np.int64).reshape(shape)
    _check_signed(s, rq["sum_bits"], f"{n['name']} requant sum")
    y = s >> rq["shift"]
    act = rq.get("act")
    if act is None:
        return y
    if act["scheme"] == "uniform":
        return np.clip(y, 0, (1 << out["bits"]) - 1)
    thr = np.asarray(act["thresholds"], dtype=np.int64)
    # code = #{k: y >= thr[k]}, through a table over [0, thr[-1]] (thresholds are >= 1,
    # so everything below 0 is code 0 and everything from thr[-1] up is the top code)
    table = np.searchsorted(thr, np.arange(int(thr[-1]) + 1), side="right")
    return table[np.clip(y, 0, int(thr[-1]))].astype(np.int64)


def run_node(ir: IR, n: dict, env: dict) -> np.ndarray:
    """One node's integer output from `env` (name -> integer tensor, batch first)."""
    op, name = n["op"], n["name"]
    x = env[n["input"]]
    if op in ("conv2d", "linear"):
        v = _values(ir, n["input"], x)
        acc = _conv2d(ir, n, v) if op == "conv2d" else _linear(ir, n, v)
        _check_signed(acc, n["acc_bits"], f"{name} accumulator")
        y = acc if n.get("requant") is None else _requant(ir, n, acc, env)
    elif op == "maxpool":
        k, s = n["kernel"], n["stride"]
        win = np.lib.stride_tricks.sliding_window_view(x, (k, k), axis=(2, 3))[:, :, ::s, ::s]
        y = win.max(axis=(4, 5))
    elif op in ("gap", "avgpool"):
        v = _values(ir, n["input"], x)
        if op == "gap":
            acc = v.sum(axis=(2, 3))
        else:
            k, s = n["kernel"], n["stride"]
            win = np.lib.stride_tricks.sliding_window_view(v, (k, k), axis=(2, 3))[:, :, ::s, ::s]
            acc = win.sum(axis=(4, 5))
        _check_signed(acc, n["acc_bits"], f"{name} sum")
        y = _requant(ir, n, acc, env)
    elif op == "shortcut":
        s = n["stride"]
        sub = x[:, :, ::s, ::s]
        src = np.asarray(n["src"])
        y = np.where((src >= 0)[None, :, None, None], sub[:, np.maximum(src, 0)], 0)
    elif op == "flatten":
        y = x.reshape(x.shape[0], -1)
    else:
        raise ValueError(f"unknown op {op!r}")
    _check_out(y, n["out"], name)
    return y


def run(ir: IR, inputs, return_all: bool = False, quantized: bool = False):
    """Run the network on a batch.

    `inputs`: float images [N, C, H, W] (or input integers with `quantized=True`).
    Returns the output node's integers [N, ...], or with `return_all` a dict of every
    node's integer output (codes for code tensors), "input" included.
    """
    x = np.asarray(inputs)
    xq = x.astype(np.int64) if quantized else quantize_input(ir, x)
    _check_signed(xq, ir.graph["input"]["bits"], "input")
    env = {"input": xq}
    for n in ir.nodes:
        env[n["name"]] = run_node(ir, n, env)
    return env if return_all else env[ir.graph["output"]]


def predict(ir: IR, inputs, quantized: bool = False) -> np.ndarray:
    """Class indices: argmax of the output integers (first on ties)."""
    return run(ir, inputs, quantized=quantized).argmax(axis=1)
