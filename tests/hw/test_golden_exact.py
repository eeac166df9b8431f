"""The fast golden model against a slow, plain int64 reference of docs/ir.md, node by node.

`hw/golden.py` computes in float where bounds prove that exact, channel-major, in
chunks, on threads; none of that may change a single integer or a width check. The
reference below is the straightforward reading of the IR (int64 everywhere, every
value checked), kept deliberately simple and independent of the golden model's code.
"""
import numpy as np
import pytest

from hw import golden
from hw.ir import IR, load

# ---------------------------------------------------------------- the reference


def _ref_values(ir, name, data):
    t = ir.tensor(name)
    if t["kind"] == "code":
        return np.asarray(t["levels"], dtype=np.int64)[data]
    return np.asarray(data, dtype=np.int64)


def _ref_conv(v, w, s, p):
    nb, i, h, wd = v.shape
    o, _, kh, kw = w.shape
    ho, wo = (h + 2 * p - kh) // s + 1, (wd + 2 * p - kw) // s + 1
    vp = np.pad(v, ((0, 0), (0, 0), (p, p), (p, p)))
    acc = np.zeros((nb, o, ho, wo), dtype=np.int64)
    for ky in range(kh):
        for kx in range(kw):
            patch = vp[:, :, ky:ky + s * (ho - 1) + 1:s, kx:kx + s * (wo - 1) + 1:s]
            acc += np.einsum("nihw,oi->nohw", patch, w[:, :, ky, kx].astype(np.int64))
    return acc


def _ref_requant(ir, n, acc, env):
    rq, out = n["requant"], n["out"]
    shape = (1, -1) + (1,) * (acc.ndim - 2)
    s = acc * ir.array(rq["mult"]).astype(np.int64).reshape(shape)
    s = s + ir.array(rq["bias"]).astype(np.int64).reshape(shape)
    if rq.get("residual"):
        r = rq["residual"]
        s = s + _ref_values(ir, r["input"], env[r["input"]]) * ir.array(r["mult"]).astype(np.int64).reshape(shape)
    golden._check_signed(s, rq["sum_bits"], f"{n['name']} requant sum")
    y = s >> rq["shift"]
    act = rq.get("act")
    if act is None:
        return y
    if act["scheme"] == "uniform":
        return np.clip(y, 0, (1 << out["bits"]) - 1)
    thr = np.asarray(act["thresholds"], dtype=np.int64)
    return (y[..., None] >= thr).sum(-1).astype(np.int64)


def ref_node(ir, n, env):
    op, name = n["op"], n["name"]
    x = env[n["input"]]
    if op in ("conv2d", "linear"):
        v = _ref_values(ir, n["input"], x)
        w = ir.array(n["weight"]["key"]).astype(np.int64)
        acc = _ref_conv(v, w, n["stride"], n["padding"]) if op == "conv2d" else v @ w.T
        golden._check_signed(acc, n["acc_bits"], f"{name} accumulator")
        y = acc if n.get("requant") is None else _ref_requant(ir, n, acc, env)
    elif op == "maxpool":
        k, s = n["kernel"], n["stride"]
        win = np.lib.stride_tricks.sliding_window_view(x, (k, k), axis=(2, 3))[:, :, ::s, ::s]
        y = win.max(axis=(4, 5))
    elif op in ("gap", "avgpool"):
        v = _ref_values(ir, n["input"], x)
        if op == "gap":
            acc = v.sum(axis=(2, 3))
        else:
            k, s = n["kernel"], n["stride"]
            acc = np.lib.stride_tricks.sliding_window_view(v, (k, k), axis=(2, 3))[:, :, ::s, ::s].sum(axis=(4, 5))
        golden._check_signed(acc, n["acc_bits"], f"{name} sum")
        y = _ref_requant(ir, n, acc, env)
    elif op == "shortcut":
        s = n["stride"]
        src = np.asarray(n["src"])
        y = np.where((src >= 0)[None, :, None, None], x[:, :, ::s, ::s][:, np.maximum(src, 0)], 0)
    elif op == "flatten":
        y = x.reshape(x.shape[0], -1)
    golden._check_out(y, n["out"], name)
    return y


def ref_run(ir, xq):
    golden._check_signed(xq, ir.graph["input"]["bits"], "input")
    env = {"input": xq}
    for n in ir.nodes:
        env[n["name"]] = ref_node(ir, n, env)
    return env


# ---------------------------------------------------------------- the IRs


def _lowered(name, seed, quant, wbits, abits, option):
    from .test_lower import _random_model
    from hw.lower import lower_model
    m, x = _random_model(name, seed, quant, wbits, abits, option=option)
    ir = lower_model(m, name)
    return ir, golden.quantize_input(ir, x)


LOWERED = [
    ("digitnet", 10, "apot", 4, 4, None),
    ("digitnet", 11, "uniform", 3, 5, None),
    ("resnet20", 12, "apot", 4, 4, "A"),
    ("resnet20", 13, "pot", 5, 4, "B"),
]


def _assert_same(ir, xq):
    want = ref_run(ir, xq)
    got = golden.run(ir, xq, quantized=True, return_all=True)
    assert got.keys() == want.keys()
    for k in want:
        assert got[k].dtype == np.int64 and got[k].shape == want[k].shape, k
        assert np.array_equal(got[k], want[k]), k
    # node by node on the reference's own inputs (the teacher-forced path of run_node)
    for n in ir.nodes:
        assert np.array_equal(golden.run_node(ir, n, want), want[n["name"]]), n["name"]


@pytest.mark.parametrize("name,seed,quant,wbits,abits,option", LOWERED)
def test_lowered_random_models_match_reference(name, seed, quant, wbits, abits, option):
    ir, xq = _lowered(name, seed, quant, wbits, abits, option)
    # 2.5 chunks: several threads and a short last chunk
    reps = -(-(golden.CHUNK * 5 // 2) // len(xq))
    _assert_same(ir, np.concatenate([xq] * reps)[:golden.CHUNK * 5 // 2])


@pytest.mark.parametrize("seed,size", [(0, "small"), (1, "large"), (2, "small")])
def test_engine_random_irs_match_reference(seed, size):
    """sim.layers.random_ir: int8 input, stride 2, uniform and APoT outputs, a code
    residual, a raw int residual (requant null), flatten and logits."""
    from sim.layers import random_ir
    ir, env = random_ir(seed, size=size, batch=golden.CHUNK + 3)
    _assert_same(ir, env["input"])


def test_dry_run_exports_match_reference(digitnet_export):
    ir = load(digitnet_export)
    x = np.random.default_rng(3).standard_normal((golden.CHUNK * 2 + 1, *ir.graph["input"]["shape"]))
    _assert_same(ir, golden.quantize_input(ir, x.astype(np.float32) * 3))


# ---------------------------------------------------------------- hand-made IRs at the edges


def _conv_ir(w, *, acc_bits, sum_bits, mult, bias=0, shift=0, thresholds=None, levels_in=None,
             in_bits=8, residual=False, out_bits=4, raw=False):
    o, i, kh, kw = w.shape
    from hw.tables import csd_terms_array
    act = {"scheme": "apot", "thresholds": thresholds} if thresholds else {"scheme": "uniform", "thresholds": None}
    levels = list(range(1 << out_bits)) if not thresholds else [0] + list(thresholds)
    nodes = []
    src = "input"
    if levels_in is not None:  # a first node producing codes with these levels (identity 1x1)
        nodes.append({"op": "conv2d", "name": "a", "input": "input", "in_channels": i, "out_channels": i,
                      "kernel": [1, 1], "stride": 1, "padding": 0,
                      "weight": {"key": "a.w", "terms_key": "a.t", "terms": 1},
                      "acc_bits": in_bits,
                      "requant": {"mult": "a.m", "bias": "a.b", "shift": 0, "mult_bits": 2, "residual": None,
                                  "sum_bits": in_bits + 1,
                                  "act": {"scheme": "apot", "thresholds": list(levels_in[1:])}},
                      "out": {"shape": [i, 6, 6], "kind": "code", "bits": 8, "signed": False,
                              "levels": list(levels_in), "value_bits": 30, "scale": 1.0}})
        src = "a"
    rq = {"mult": "c.m", "bias": "c.b", "shift": shift, "mult_bits": 40, "sum_bits": sum_bits, "act": act,
          "residual": {"input": src, "mult": "c.rm"} if residual else None}
    out = {"shape": [o, 6, 6], "kind": "code", "bits": out_bits, "signed": False,
           "levels": levels, "value_bits": 8, "scale": 1.0}
    if raw:  # requant null: the raw accumulator is the output
        rq, out = None, {"shape": [o, 6, 6], "kind": "int", "bits": acc_bits, "signed": True,
                         "value_bits": acc_bits, "scale": 1.0}
    nodes.append({"op": "conv2d", "name": "c", "input": src, "in_channels": i, "out_channels": o,
                  "kernel": [kh, kw], "stride": 1, "padding": 1,
                  "weight": {"key": "c.w", "terms_key": "c.t", "terms": 1}, "acc_bits": acc_bits,
                  "requant": rq, "out": out})
    graph = {"format": "shiftq-ir", "version": 1, "name": "t", "output": "c", "nodes": nodes,
             "input": {"shape": [i, 6, 6], "bits": in_bits, "scale": 1.0}}
    arrays = {"c.w": w.astype(np.int64), "c.t": csd_terms_array(np.zeros_like(w)),
              "c.m": np.asarray(mult, dtype=np.int64).reshape(-1) * np.ones(o, dtype=np.int64),
              "c.b": np.full(o, bias, np.int64), "c.rm": np.arange(1, o + 1, dtype=np.int64) * 3,
              "a.w": np.eye(i, dtype=np.int64).reshape(i, i, 1, 1), "a.m": np.ones(i, np.int64),
              "a.b": np.zeros(i, np.int64)}
    return IR(graph, arrays)


def _xq(ir, n=golden.CHUNK * 2 + 3, seed=0, lo=None, hi=None):
    b = ir.graph["input"]["bits"]
    lo = -(1 << (b - 1)) + 1 if lo is None else lo
    hi = (1 << (b - 1)) - 1 if hi is None else hi
    return np.random.default_rng(seed).integers(lo, hi + 1, size=(n, *ir.graph["input"]["shape"]))


@pytest.mark.parametrize("wmax,in_bits,shift", [
    (127, 8, 9),           # float32 accumulators
    (1 << 12, 12, 20),     # worst case above 2^24: float64 accumulators
    (1 << 26, 30, 40),     # above 2^53: int64 all the way
])
def test_accumulator_dtype_choice_is_exact(wmax, in_bits, shift):
    rng = np.random.default_rng(wmax)
    w = rng.integers(-wmax, wmax + 1, size=(5, 4, 3, 3))
    w[0] = wmax  # the worst case is reached: all-positive weights on an all-max input
    bound = int(np.abs(w).reshape(5, -1).sum(1).max()) * (1 << (in_bits - 1))
    acc_bits = bound.bit_length() + 1
    xq = None
    for raw in (True, False):  # the raw accumulator shows every bit; then through a requant
        ir = _conv_ir(w, acc_bits=acc_bits, sum_bits=acc_bits + 8, mult=3, bias=-7, shift=shift,
                      in_bits=in_bits, raw=raw)
        if xq is None:
            xq = _xq(ir)
            xq[0] = (1 << (in_bits - 1)) - 1
        _assert_same(ir, xq)


def test_apot_thresholds_and_residual_codes():
    thr = [1, 3, 5, 7, 10, 14, 17, 21, 28, 34, 42, 56, 65, 69, 84]
    w = np.random.default_rng(1).integers(-9, 10, size=(6, 6, 3, 3))
    lv = [0, 1, 2, 3, 4, 6, 8, 9, 12, 16, 18, 24, 32, 33, 36, 48]
    ir = _conv_ir(w, acc_bits=20, sum_bits=40, mult=[5, -3, 0, 7, 1, 2], bias=11, shift=4, thresholds=thr,
                  levels_in=lv, residual=True)
    _assert_same(ir, _xq(ir, lo=-3, hi=60))


def test_unproven_sum_width_is_checked_value_by_value():
    """sum_bits below the worst case but above what the data reach: no error, same codes;
    then data that do exceed it: the same WidthError as the reference, whole-batch range."""
    w = np.ones((2, 1, 3, 3), dtype=np.int64)
    ir = _conv_ir(w, acc_bits=12, sum_bits=14, mult=8, shift=3)  # worst 9*127*8 needs 14 bits...
    xs = _xq(ir, lo=0, hi=20)  # ...these stay within 9*20*8 < 2^13
    _assert_same(ir, xs)
    xb = _xq(ir, lo=100, hi=127)
    with pytest.raises(golden.WidthError) as want:
        ref_run(ir, xb)
    with pytest.raises(golden.WidthError) as got:
        golden.run(ir, xb, quantized=True)
    assert str(got.value) == str(want.value) and "requant sum" in str(got.value)


def test_unproven_output_codes_are_checked():
    w = np.ones((2, 1, 3, 3), dtype=np.int64)
    ir = _conv_ir(w, acc_bits=14, sum_bits=16, mult=1, shift=0)
    ir.nodes[-1]["out"]["levels"] = list(range(10))  # uniform 4-bit act can reach code 15
    _assert_same(ir, _xq(ir, lo=-1, hi=1))  # codes stay below 10
    with pytest.raises(golden.WidthError, match="codes outside 0..9"):
        golden.run(ir, _xq(ir, lo=0, hi=100), quantized=True)


def test_run_node_on_out_of_width_inputs_matches_reference():
    """run_node gets its inputs from outside (teacher forcing): values beyond the
    declared input width void the float bounds, so it must compute them exactly."""
    w = np.random.default_rng(5).integers(-127, 128, size=(3, 2, 3, 3))
    ir = _conv_ir(w, acc_bits=48, sum_bits=60, mult=1, shift=0)
    x = np.random.default_rng(6).integers(-(1 << 30), 1 << 30, size=(3, 2, 6, 6))
    n = ir.nodes[-1]
    env = {"input": x}
    assert np.array_equal(golden.run_node(ir, n, env), ref_node(ir, n, env))


def test_images_larger_than_declared_match_reference(digitnet_export):
    """The bounds of `gap` count the declared pixels; a larger image voids them, so
    the sum is then computed and checked exactly."""
    ir = load(digitnet_export)
    c, h, w = ir.graph["input"]["shape"]
    x = np.random.default_rng(4).standard_normal((golden.CHUNK + 1, c, 2 * h, 2 * w)).astype(np.float32)
    xq = golden.quantize_input(ir, x)
    try:
        want = ref_run(ir, xq)
    except golden.WidthError as e:  # the dry-run IR's sum width is exceeded: the same error
        with pytest.raises(golden.WidthError) as got:
            golden.run(ir, xq, quantized=True)
        assert str(got.value) == str(e)
        return
    got = golden.run(ir, xq, quantized=True, return_all=True)
    for k in want:
        assert np.array_equal(got[k], want[k]), k


@pytest.mark.parametrize("mult,shift", [([5, -3, 0, 7, 1, 2], 4), ([1 << 40, -(1 << 38), 3, 1, 0, 1 << 20], 44)])
def test_output_only_runs_match_reference(mult, shift):
    """Without return_all, tensors read only as values (conv input, residual) carry no
    codes; the float64 and the int64 requantization (mult 2^40: sums beyond 2^53)
    must both read them right."""
    thr = [1, 3, 5, 7, 10, 14, 17, 21, 28, 34, 42, 56, 65, 69, 84]
    lv = [0, 1, 2, 3, 4, 6, 8, 9, 12, 16, 18, 24, 32, 33, 36, 48]
    w = np.random.default_rng(2).integers(-9, 10, size=(6, 6, 3, 3))
    ir = _conv_ir(w, acc_bits=20, sum_bits=63, mult=mult, bias=11, shift=shift, thresholds=thr,
                  levels_in=lv, residual=True)
    xq = _xq(ir, lo=-3, hi=60)
    assert np.array_equal(golden.run(ir, xq, quantized=True), ref_run(ir, xq)["c"])
