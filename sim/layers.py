"""Layer checks shared by the tests, `shiftq sim` and the RTL benchmark.

- `random_ir(...)`: a small valid IR built here (random weights in the IR's own
  encodings, requant constants calibrated so the codes spread over their range), for
  testing the engine without an export;
- `check_layer(ir, name, env, sim)`: builds the engine for node `name`, loads the
  golden model's input (and residual) tensors of one sample, runs it on `sim` and
  compares every output word with the golden model's; returns the report with cycle
  counts and the MAC bound;
- `load_export(build_dir)`: the IR, one golden sample (every node's output) and the
  table words from `tables/NAME.mem` of an export.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from hw.golden import run as golden_run
from hw.ir import IR, bits_signed, validate
from hw.rtl.engine import LayerEngine, layer_spec, read_mem
from hw.tables import csd_terms_array
from sim.runner import emit_verilog, run_test

APOT4 = [0, 1, 2, 3, 4, 6, 8, 9, 12, 16, 18, 24, 32, 33, 36, 48]
APOT_W4 = [-10, -8, -6, -4, -3, -2, -1, 0, 1, 2, 3, 4, 6, 8, 10]


# ---------------------------------------------------------------- random IRs

def _out_code(shape, scheme, bits=4):
    levels = APOT4 if scheme == "apot" else list(range(2 ** bits))
    return {"shape": list(shape), "kind": "code", "bits": bits, "signed": False, "levels": levels,
            "value_bits": max(levels).bit_length(), "scale": 1.0, "scheme": scheme}


def _weights(rng, shape, scheme, zero_frac=0.3):
    if scheme == "int8":
        w = rng.integers(-127, 128, size=shape)
        T = 4
        ms = 7
        bits = 8
    else:
        w = rng.choice(APOT_W4, size=shape)
        T, ms, bits = 2, 3, 4
    w = np.where(rng.random(shape) < zero_frac, 0, w).astype(np.int32)
    terms = csd_terms_array(w, T)
    return w, terms, T, ms, bits


def _add_layer(ir, rng, env, *, name, op, src, out_ch, kernel=3, stride=1, padding=1,
               wscheme="apot", act="apot", residual=None, requant=True):
    """Append a conv2d / linear node reading `src`; requant constants are calibrated on
    `env` (golden outputs so far) so that the codes use their whole range."""
    g, arrays = ir.graph, ir.arrays
    tin = ir.tensor(src)
    if op == "conv2d":
        C, H, W = tin["shape"]
        wshape = (out_ch, C, kernel, kernel)
        Ho = (H + 2 * padding - kernel) // stride + 1
        Wo = (W + 2 * padding - kernel) // stride + 1
        oshape = [out_ch, Ho, Wo]
    else:
        C = tin["shape"][0]
        wshape = (out_ch, C)
        oshape = [out_ch]
    w, terms, T, ms, wbits = _weights(rng, wshape, wscheme)
    arrays[f"{name}.w"], arrays[f"{name}.terms"] = w, terms
    vmax = max(tin["levels"]) if tin["kind"] == "code" else 2 ** (tin["bits"] - 1)
    worst = int(np.abs(w).reshape(out_ch, -1).sum(1).max()) * vmax
    acc_bits = bits_signed(-worst, worst)
    node = {"op": op, "name": name, "input": src,
            "weight": {"key": f"{name}.w", "terms_key": f"{name}.terms", "scheme": wscheme,
                       "bits": wbits, "terms": T, "max_shift": ms, "denominator": 1, "scale": 1.0},
            "acc_bits": acc_bits}
    if op == "conv2d":
        node.update({"in_channels": C, "out_channels": out_ch, "kernel": [kernel, kernel],
                     "stride": stride, "padding": padding})
    else:
        node.update({"in_features": C, "out_features": out_ch})
    if not requant:
        node["requant"] = None
        node["out"] = {"shape": oshape, "kind": "int", "bits": acc_bits, "signed": True,
                       "value_bits": acc_bits, "scale": 1.0}
        g["nodes"].append(node)
        return node
    # calibrate: raw accumulator on the sample batch
    node["requant"] = None
    node["out"] = {"shape": oshape, "kind": "int", "bits": acc_bits, "signed": True,
                   "value_bits": acc_bits, "scale": 1.0}
    g["nodes"].append(node)
    acc = _node_out(ir, env, node)
    mult = rng.integers(2 ** 13, 2 ** 15, size=out_ch).astype(np.int32)
    s = acc.astype(np.int64) * mult.reshape((1, -1) + (1,) * (acc.ndim - 2))
    rq = {"mult": f"{name}.m", "bias": f"{name}.b", "mult_bits": 16, "residual": None}
    rmult = None
    if residual is not None:
        rt = ir.tensor(residual)
        rv = np.asarray(env[residual])
        if rt["kind"] == "code":
            rv = np.asarray(rt["levels"])[rv]
        rmult = rng.integers(-(2 ** 14), 2 ** 16, size=out_ch).astype(np.int64)
        s = s + rv * rmult.reshape((1, -1) + (1,) * (acc.ndim - 2))
        arrays[f"{name}.rm"] = rmult
        rq["residual"] = {"input": residual, "mult": f"{name}.rm",
                          "rmult_bits": bits_signed(int(rmult.min()), int(rmult.max()))}
    target = 7 if act == "apot" else (5 if act == "uniform" else 9)
    p99 = int(np.percentile(np.abs(s), 99)) + 1
    shift = max(0, p99.bit_length() - target)
    bias = rng.integers(-(2 ** max(shift, 1)), 2 ** max(shift, 1), size=out_ch).astype(np.int64)
    arrays[f"{name}.m"], arrays[f"{name}.b"] = mult, bias
    rq["shift"] = shift
    worst_s = worst * (2 ** 15) + int(np.abs(bias).max())
    if rmult is not None:
        rt = ir.tensor(residual)
        rvmax = max(rt["levels"]) if rt["kind"] == "code" else 2 ** (rt["bits"] - 1)
        worst_s += rvmax * int(np.abs(rmult).max())
    rq["sum_bits"] = bits_signed(-worst_s, worst_s)
    if act == "apot":
        lv = APOT4
        rq["act"] = {"scheme": "apot", "thresholds": [max(1, (a + b + 1) // 2) for a, b in zip(lv, lv[1:])]}
        node["out"] = _out_code(oshape, "apot")
    elif act == "uniform":
        rq["act"] = {"scheme": "uniform"}
        node["out"] = _out_code(oshape, "uniform", 4)
    else:
        rq["act"] = None
        y = s + bias.reshape((1, -1) + (1,) * (acc.ndim - 2))
        y = y >> shift
        ob = bits_signed(int(-(worst_s >> shift)) - 1, int(worst_s >> shift) + 1)
        node["out"] = {"shape": oshape, "kind": "int", "bits": ob, "signed": True,
                       "value_bits": ob, "scale": 1.0}
    node["requant"] = rq
    env[name] = _node_out(ir, env, node)
    return node


def _node_out(ir, env, node):
    from hw.golden import run_node
    return run_node(ir, node, env)


def random_ir(seed: int = 0, *, size: str = "small", batch: int = 2) -> tuple[IR, dict]:
    """A small random network exercising every engine path; returns (ir, golden env).

    input int8 [3, H, W] -> `stem` (int8 CSD weights, T=4, APoT out)
      -> `c1` (APoT weights T=2, stride 2, uniform 4-bit out)
      -> `c2` (3x3, APoT out, residual = c1's codes)
      -> `sc` (1x1 conv, requant null: raw int out)
      -> `c3` (APoT out, residual = sc's raw ints)
      -> flatten -> `fc` (linear, logits: act null)
    """
    rng = np.random.default_rng(seed)
    H = 8 if size == "small" else 16
    ch = [3, 6, 8] if size == "small" else [3, 12, 16]
    graph = {"format": "shiftq-ir", "version": 1, "name": f"random{seed}",
             "input": {"shape": [ch[0], H, H], "bits": 8, "scale": 1.0}, "nodes": [], "output": "fc"}
    ir = IR(graph, {})
    x = rng.integers(-127, 128, size=(batch, ch[0], H, H))
    x[:, :, 0, :] = 127  # the extremes of the int8 input
    x[:, :, -1, :] = -127
    env = {"input": x.astype(np.int64)}
    _add_layer(ir, rng, env, name="stem", op="conv2d", src="input", out_ch=ch[1], wscheme="int8", act="apot")
    _add_layer(ir, rng, env, name="c1", op="conv2d", src="stem", out_ch=ch[2], stride=2, act="uniform")
    _add_layer(ir, rng, env, name="c2", op="conv2d", src="c1", out_ch=ch[2], act="apot", residual="c1")
    _add_layer(ir, rng, env, name="sc", op="conv2d", src="c2", out_ch=ch[2], kernel=1, padding=0,
               requant=False)
    env["sc"] = _node_out(ir, env, graph["nodes"][-1])
    _add_layer(ir, rng, env, name="c3", op="conv2d", src="c2", out_ch=ch[2], act="apot", residual="sc")
    C3, H3, W3 = graph["nodes"][-1]["out"]["shape"]
    graph["nodes"].append({"op": "flatten", "name": "flat", "input": "c3",
                           "out": dict(graph["nodes"][-1]["out"], shape=[C3 * H3 * W3])})
    env["flat"] = _node_out(ir, env, graph["nodes"][-1])
    _add_layer(ir, rng, env, name="fc", op="linear", src="flat", out_ch=10, act=None)
    validate(ir)
    full = golden_run(ir, env["input"], return_all=True, quantized=True)
    for k, v in env.items():  # the calibration env and the golden model must agree
        assert np.array_equal(full[k], v), k
    return ir, full


def downsample_ir(seed: int = 0, *, size: int = 8, batch: int = 2) -> tuple[IR, dict]:
    """A small random network the whole-network accelerator runs, with a ResNet
    downsampling block (stride-2 conv and option-A shortcut); returns (ir, golden env).

    input int8 [3, size, size] -> `stem` (int8 weights, APoT out) -> `c1` (stride 2,
      uniform 4-bit out) and `sc` (shortcut: stride 2, a zero channel, channels 0..5, a zero one)
      -> `c2` (APoT out, residual = sc) -> `c3` (1x1: few clocks a group) -> flatten -> `fc` (logits)
    """
    rng = np.random.default_rng(seed)
    graph = {"format": "shiftq-ir", "version": 1, "name": f"downsample{seed}",
             "input": {"shape": [3, size, size], "bits": 8, "scale": 1.0}, "nodes": [], "output": "fc"}
    ir = IR(graph, {})
    x = rng.integers(-127, 128, size=(batch, 3, size, size))
    env = {"input": x.astype(np.int64)}
    _add_layer(ir, rng, env, name="stem", op="conv2d", src="input", out_ch=6, wscheme="int8", act="apot")
    _add_layer(ir, rng, env, name="c1", op="conv2d", src="stem", out_ch=8, stride=2, act="uniform")
    src = [-1] + list(range(6)) + [-1]
    h = -(-size // 2)
    graph["nodes"].append({"op": "shortcut", "name": "sc", "input": "stem", "stride": 2, "src": src,
                           "out": dict(ir.tensor("stem"), shape=[len(src), h, h])})
    env["sc"] = _node_out(ir, env, graph["nodes"][-1])
    _add_layer(ir, rng, env, name="c2", op="conv2d", src="c1", out_ch=8, act="apot", residual="sc")
    _add_layer(ir, rng, env, name="c3", op="conv2d", src="c2", out_ch=8, kernel=1, padding=0, act="apot")
    graph["nodes"].append({"op": "flatten", "name": "flat", "input": "c3",
                           "out": dict(ir.tensor("c3"), shape=[8 * h * h])})
    env["flat"] = _node_out(ir, env, graph["nodes"][-1])
    _add_layer(ir, rng, env, name="fc", op="linear", src="flat", out_ch=10, act=None)
    validate(ir)
    full = golden_run(ir, env["input"], return_all=True, quantized=True)
    for k, v in env.items():
        assert np.array_equal(full[k], v), k
    return ir, full


# ---------------------------------------------------------------- exports

def load_export(build_dir, sample: int = 0):
    """(ir, env of one sample's golden outputs (batch of 1), {node: table words}) of an export."""
    from hw.ir import load

    build_dir = Path(build_dir)
    ir = load(build_dir)
    vec = build_dir / "vectors.npz"
    if vec.exists():
        with np.load(vec) as z:
            x = z["node:input"][sample:sample + 1] if "node:input" in z.files else None
    else:
        x = None
    if x is None:
        from shiftq.errors import UserError
        raise UserError(f"{vec} has no input vectors (node:input): re-run `shiftq export`")
    env = golden_run(ir, x, return_all=True, quantized=True)
    words = {}
    for n in ir.nodes:
        if n["op"] in ("conv2d", "linear"):
            mem = build_dir / "tables" / f"{n['name']}.mem"
            if mem.exists():
                words[n["name"]] = read_mem(mem, int(np.asarray(ir.array(n["weight"]["key"])).size))
    return ir, env, words


def engine_layers(ir) -> list[str]:
    return [n["name"] for n in ir.nodes if n["op"] in ("conv2d", "linear")]


# ---------------------------------------------------------------- one layer on one simulator

def engine_case(ir, name, env, spec, sample: int = 0) -> dict:
    n = ir.node(name)
    x = np.asarray(env[n["input"]][sample]).reshape(-1)
    y = np.asarray(env[name][sample]).reshape(-1)
    case = dict(name=name, C=spec.C, H=spec.H, W=spec.W, O=spec.O, Ho=spec.Ho, Wo=spec.Wo,
                in_bits=spec.in_bits, out_signed=spec.out_signed,
                inputs=[int(v) for v in x], expected=[int(v) for v in y],
                expect_cycles=spec.run_cycles, residual=False)
    r = spec.requant["residual"] if spec.requant else None
    if r is not None:
        rv = np.asarray(env[r["input"]][sample]).reshape(-1)
        case.update(residual=True, res=[int(v) for v in rv], res_bits=r["bits"])
    return case


def check_layer(ir, name, env, sim, *, po_max=16, pi_max=4, words=None, pe="shift",
                sample=0, corrupt=None) -> dict:
    """Run node `name` on the engine in `sim` and compare with the golden outputs in `env`.

    `corrupt=(index, bit)` flips one bit of table word `index` before building (the
    test that the comparison can fail). Returns the runner's report plus the layer's
    MACs, PE count, the MAC bound and the utilisation MACs / (PEs * cycles).
    """
    spec = layer_spec(ir, name, po_max=po_max, pi_max=pi_max, words=words, pe=pe)
    if corrupt is not None:
        idx, bit = corrupt
        spec.words = list(spec.words)
        spec.words[idx] ^= 1 << bit
    top = "engine"
    text = emit_verilog(LayerEngine(spec), top)
    rep = run_test(text, top, "sim.test_engine", sim, engine_case(ir, name, env, spec, sample),
                   tag=f"{ir.graph['name']}-{name}")
    pes = spec.PO * spec.PI
    rep.update(layer=name, macs=spec.macs, PO=spec.PO, PI=spec.PI, pes=pes,
               mac_bound=spec.ideal_cycles, loop_cycles=spec.run_cycles)
    if rep.get("cycles"):
        rep["utilisation"] = spec.macs / (pes * rep["cycles"])
    return rep


# ---------------------------------------------------------------- fault injection

def corrupt_ir(ir, name, idx, bit):
    """The IR with bit `bit` of table word `idx` of node `name` flipped (terms and weights)."""
    from hw.rtl.pe import pack_terms, unpack_word

    wd = ir.node(name)["weight"]
    terms = np.array(ir.array(wd["terms_key"]))
    T, ms = wd["terms"], wd["max_shift"]
    flat = terms.reshape(-1, T, 2)
    word = pack_terms([tuple(int(v) for v in t) for t in flat[idx]], ms) ^ (1 << bit)
    flat[idx] = unpack_word(word, T, ms)
    w = (flat[..., 0].astype(np.int64) << flat[..., 1].astype(np.int64)).sum(-1)
    arrays = dict(ir.arrays)
    arrays[wd["terms_key"]] = terms
    arrays[wd["key"]] = w.reshape(np.shape(ir.array(wd["key"]))).astype(np.int32)
    return IR(ir.graph, arrays)


def visible_flip(ir, env, name, sample: int = 0):
    """(word index, bit, output words that change): the first nonzero weight of `name`
    whose term-0 sign bit, flipped, changes the golden output of `sample`."""
    from hw.rtl.pe import shift_bits

    n = ir.node(name)
    w = np.asarray(ir.array(n["weight"]["key"])).reshape(-1)
    bit = shift_bits(n["weight"]["max_shift"])  # neg bit of term 0
    x = env["input"][sample:sample + 1]
    for idx in np.flatnonzero(w):
        bad = golden_run(corrupt_ir(ir, name, int(idx), bit), x, return_all=True, quantized=True)
        changed = int((bad[name][0] != env[name][sample]).sum())
        if changed:
            return int(idx), bit, changed
    raise ValueError(f"no single sign flip in {name} changes its output")
