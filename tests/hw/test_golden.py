"""The golden model: exact integer semantics of docs/ir.md, checked independently."""
import json

import numpy as np
import pytest

from hw import golden
from hw.ir import IR, load


def _tiny_conv_ir(weights, levels_in=None, thresholds=None, mult=1, bias=0, shift=0, acc_bits=16,
                  sum_bits=32, out_bits=4, stride=1, padding=1):
    o, i, kh, kw = weights.shape
    from hw.tables import csd_terms_array
    terms = csd_terms_array(weights)
    act = {"scheme": "apot", "thresholds": thresholds} if thresholds else {"scheme": "uniform", "thresholds": None}
    levels = list(range(1 << out_bits)) if not thresholds else [0] + sorted(set(thresholds))[: (1 << out_bits) - 1]
    graph = {"format": "shiftq-ir", "version": 1, "name": "t", "input": {"shape": [i, 4, 4], "bits": 8, "scale": 1.0},
             "nodes": [{"op": "conv2d", "name": "c", "input": "input", "in_channels": i, "out_channels": o,
                        "kernel": [kh, kw], "stride": stride, "padding": padding,
                        "weight": {"key": "c.w", "terms_key": "c.terms", "scheme": "uniform", "bits": 8,
                                   "terms": terms.shape[-2], "max_shift": 7, "denominator": 127, "scale": 1.0,
                                   "levels": list(range(-127, 128))},
                        "acc_bits": acc_bits,
                        "requant": {"mult": "c.m", "bias": "c.b", "shift": shift, "mult_bits": 16,
                                    "residual": None, "sum_bits": sum_bits, "act": act},
                        "out": {"shape": [o, 4, 4], "kind": "code", "bits": out_bits, "signed": False,
                                "levels": levels, "value_bits": 8, "scale": 1.0}}],
             "output": "c"}
    arrays = {"c.w": weights.astype(np.int32), "c.terms": terms,
              "c.m": np.full(o, mult, np.int32), "c.b": np.full(o, bias, np.int64)}
    return IR(graph, arrays)


def _naive_conv(x, w, stride, pad):
    n, c, h, wd = x.shape
    o, _, kh, kw = w.shape
    xp = np.pad(x, ((0, 0), (0, 0), (pad, pad), (pad, pad)))
    ho, wo = (h + 2 * pad - kh) // stride + 1, (wd + 2 * pad - kw) // stride + 1
    out = np.zeros((n, o, ho, wo), dtype=np.int64)
    for y in range(ho):
        for xx in range(wo):
            patch = xp[:, :, y * stride:y * stride + kh, xx * stride:xx * stride + kw]
            out[:, :, y, xx] = np.einsum("ncij,ocij->no", patch, w)
    return out


@pytest.mark.parametrize("stride,padding", [(1, 1), (2, 1), (1, 0)])
def test_conv_matches_naive_loops(stride, padding):
    rng = np.random.default_rng(0)
    w = rng.integers(-127, 128, size=(5, 3, 3, 3))
    ir = _tiny_conv_ir(w, mult=3, bias=-7, shift=9, acc_bits=20, sum_bits=40, stride=stride, padding=padding)
    ir.nodes[0]["out"]["shape"] = [5, (4 + 2 * padding - 3) // stride + 1, (4 + 2 * padding - 3) // stride + 1]
    x = rng.integers(-127, 128, size=(6, 3, 4, 4))
    env = golden.run(ir, x, quantized=True, return_all=True)
    acc = _naive_conv(x, w, stride, padding)
    want = np.clip((acc * 3 - 7) >> 9, 0, 15)
    assert np.array_equal(env["c"], want)


def test_requant_floor_and_thresholds():
    w = np.zeros((1, 1, 3, 3), dtype=np.int64)
    w[0, 0, 1, 1] = 1  # identity conv: acc = input
    thr = [1, 3, 5, 7, 10, 14, 17, 21, 28, 34, 42, 56, 65, 69, 84]
    ir = _tiny_conv_ir(w, thresholds=thr, mult=1, bias=0, shift=1)
    x = np.arange(-8, 8).reshape(1, 1, 4, 4) * 12  # y = floor(x / 2)
    y = (x >> 1).reshape(-1)
    got = golden.run(ir, x, quantized=True).reshape(-1)
    want = [sum(1 for t in thr if v >= t) for v in y]
    assert got.tolist() == want
    assert golden.run(ir, np.full((1, 1, 4, 4), -3), quantized=True).max() == 0  # fused ReLU


def test_width_violation_is_caught():
    w = np.full((1, 1, 3, 3), 127, dtype=np.int64)
    ir = _tiny_conv_ir(w, acc_bits=12)  # 9 * 127 * 127 needs 18 bits
    with pytest.raises(golden.WidthError, match="accumulator"):
        golden.run(ir, np.full((1, 1, 4, 4), 127), quantized=True)


def test_input_quantization_rounds_half_up_and_clips():
    ir = _tiny_conv_ir(np.zeros((1, 1, 3, 3), dtype=np.int64))
    ir.graph["input"]["scale"] = 0.5
    x = np.array([0.25, 0.2499, -0.25, 100.0, -100.0, 1.0]).reshape(1, 1, 1, 6)
    assert golden.quantize_input(ir, x).reshape(-1).tolist() == [1, 0, 0, 127, -127, 2]


def test_export_vectors_replay_exactly(digitnet_export):
    ir = load(digitnet_export)
    vec = np.load(digitnet_export / "vectors.npz")
    env = golden.run(ir, vec["x"], return_all=True)
    for n in ir.nodes:
        assert np.array_equal(env[n["name"]], vec[f"node:{n['name']}"]), n["name"]
    assert np.array_equal(env[ir.graph["output"]].argmax(1), vec["pred"])


def test_corrupted_weight_changes_golden_output(digitnet_export):
    """Every comparison must be able to fail: one flipped weight bit is visible."""
    ir = load(digitnet_export)
    x = np.load(digitnet_export / "vectors.npz")["x"]
    ref = golden.run(ir, x, return_all=True)
    key = ir.node("b1_conv1")["weight"]["key"]
    w = ir.arrays[key].copy()
    idx = np.unravel_index(np.argmax(np.abs(w)), w.shape)
    w[idx] = -w[idx]
    ir.arrays[key] = w
    bad = golden.run(ir, x, return_all=True)
    assert not np.array_equal(bad["b1_conv1"], ref["b1_conv1"])


def test_model_json_is_the_documented_shape(digitnet_export):
    g = json.loads((digitnet_export / "model.json").read_text())
    assert g["format"] == "shiftq-ir" and g["version"] == 1
    ops = [n["op"] for n in g["nodes"]]
    assert ops == ["conv2d", "conv2d", "conv2d", "conv2d", "maxpool", "conv2d", "conv2d", "gap", "linear"]
    assert g["nodes"][2]["requant"]["residual"]["input"] == "stem"
    assert g["nodes"][-1]["out"]["kind"] == "int"
