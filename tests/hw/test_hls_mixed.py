"""Mixed per-layer widths: a synthetic IR written by hand (no lowering) with a different
weight scheme, term count, activation width, level set, multiplier width and shift in
every layer, plus every op of IR v1 (avgpool, shortcut, flatten, gap, maxpool, strided
conv, 1x1 conv with a fused residual, int logits). The golden model checks every width;
the HLS C simulation must equal it on every layer."""
import json

import numpy as np

from hw import golden
from hw.hls.csim import csim
from hw.ir import IR, bits_signed, save
from hw.tables import csd_terms_array


def _levels_out(bits, levels=None):
    lv = list(range(2 ** bits)) if levels is None else levels
    return {"kind": "code", "bits": bits, "signed": False, "levels": lv,
            "value_bits": max(1, max(lv).bit_length()), "scale": 1.0}


def _build(rng):
    arrays, nodes = {}, []
    shapes = {"input": [2, 6, 6]}
    maxval = {"input": 31}  # 6-bit signed input: |value| <= 31

    def weights(name, shape, levels, terms):
        w = rng.choice(np.asarray(levels), size=shape).astype(np.int32)
        t = csd_terms_array(w, terms)
        arrays[f"{name}.w"], arrays[f"{name}.terms"] = w, t
        return w, {"key": f"{name}.w", "terms_key": f"{name}.terms", "scheme": "test", "bits": 8,
                   "terms": terms, "max_shift": int(t[..., 1].max()), "denominator": 1, "scale": 1.0}

    def requant(name, acc_hi, o, out, mult_bits, residual=None, res_hi=0):
        m = rng.integers(1, 2 ** (mult_bits - 1), size=o)
        top = (max(out["levels"]) + 1) if out else 2 ** 10
        s_hi = acc_hi * int(m.max())
        shift = max(0, int(s_hi).bit_length() - int(top).bit_length() - 1)
        b = rng.integers(-(2 ** shift) * 3, 2 ** shift * 3, size=o)
        arrays[f"{name}.m"], arrays[f"{name}.b"] = m.astype(np.int32), b.astype(np.int64)
        total = s_hi + int(np.abs(b).max())
        rq = {"mult": f"{name}.m", "bias": f"{name}.b", "shift": shift, "mult_bits": mult_bits,
              "residual": None, "round_half_up": False}
        if residual:
            rm = rng.integers(-(2 ** 12), 2 ** 12, size=o)
            arrays[f"{name}.rm"] = rm.astype(np.int64)
            rq["residual"] = {"input": residual, "mult": f"{name}.rm", "rmult_bits": 14}
            total += res_hi * int(np.abs(rm).max())
        rq["sum_bits"] = bits_signed(-total, total)
        if out is None:
            rq["act"] = None
        elif out["levels"] == list(range(len(out["levels"]))):
            rq["act"] = {"scheme": "uniform", "thresholds": None}
        else:
            lv = out["levels"]
            rq["act"] = {"scheme": "custom", "thresholds": [int((a + b + 1) // 2) for a, b in zip(lv, lv[1:])]}
        return rq, total, shift

    def conv(name, src, co, k, s, p, wlevels, terms, out, mult_bits, residual=None):
        ci, h, w_ = shapes[src]
        w, wd = weights(name, (co, ci, k, k), wlevels, terms)
        acc_hi = int(np.abs(w).reshape(co, -1).sum(1).max()) * maxval[src]
        ho, wo = (h + 2 * p - k) // s + 1, (w_ + 2 * p - k) // s + 1
        rq, total, shift = requant(name, acc_hi, co, out, mult_bits, residual, maxval.get(residual, 0))
        o = dict(out, shape=[co, ho, wo])
        nodes.append({"op": "conv2d", "name": name, "input": src, "in_channels": ci, "out_channels": co,
                      "kernel": [k, k], "stride": s, "padding": p, "weight": wd,
                      "acc_bits": bits_signed(-acc_hi, acc_hi), "requant": rq, "out": o})
        shapes[name], maxval[name] = o["shape"], max(out["levels"])

    conv("c1", "input", 5, 3, 1, 1, range(-15, 16), 3, _levels_out(3), 9)
    conv("c2", "c1", 4, 3, 2, 1, [-12, -8, -6, -3, 0, 2, 4, 9, 12], 2, _levels_out(3, [0, 1, 2, 4, 8, 16]), 12)
    conv("c3", "c2", 4, 1, 1, 0, [-4, -1, 0, 1, 2, 8], 1, _levels_out(5), 16, residual="c2")
    # side branches: global and window average pooling
    for op, name, extra in (("gap", "g", {}), ("avgpool", "ap", {"kernel": 3, "stride": 3})):
        c, h, w_ = shapes["c3"]
        acc_hi = maxval["c3"] * (h * w_ if op == "gap" else 9)
        out = _levels_out(4 if op == "gap" else 6)
        rq, _, _ = requant(name, acc_hi, c, out, 10)
        shape = [c] if op == "gap" else [c, 1, 1]
        nodes.append({"op": op, "name": name, "input": "c3", **extra, "acc_bits": bits_signed(-acc_hi, acc_hi),
                      "requant": rq, "out": dict(out, shape=shape)})
        shapes[name], maxval[name] = shape, max(out["levels"])
    nodes.append({"op": "shortcut", "name": "sc", "input": "c3", "stride": 2, "src": [-1, 2, 0, -1, 3, 1],
                  "out": dict(_levels_out(5), shape=[6, 2, 2])})
    nodes.append({"op": "maxpool", "name": "mp", "input": "sc", "kernel": 2, "stride": 2,
                  "out": dict(_levels_out(5), shape=[6, 1, 1])})
    nodes.append({"op": "flatten", "name": "fl", "input": "mp", "out": dict(_levels_out(5), shape=[6])})
    w, wd = weights("fc", (3, 6), [-16, -4, -1, 1, 2, 8], 1)
    acc_hi = int(np.abs(w).sum(1).max()) * 31
    rq, total, shift = requant("fc", acc_hi, 3, None, 7)
    ob = bits_signed(-(total >> shift) - 1, (total >> shift) + 1)
    nodes.append({"op": "linear", "name": "fc", "input": "fl", "in_features": 6, "out_features": 3, "weight": wd,
                  "acc_bits": bits_signed(-acc_hi, acc_hi), "requant": rq,
                  "out": {"shape": [3], "kind": "int", "bits": ob, "signed": True, "value_bits": ob, "scale": 1.0}})
    graph = {"format": "shiftq-ir", "version": 1, "name": "mixed", "source": {"recipe": "synthetic"},
             "input": {"shape": [2, 6, 6], "bits": 6, "scale": 1.0}, "nodes": nodes, "output": "fc"}
    return IR(json.loads(json.dumps(graph)), arrays)


def test_mixed_widths_every_op_bit_exact(tmp_path, monkeypatch):
    monkeypatch.setenv("SHIFTQ_HLS_CACHE", str(tmp_path / "bin"))
    ir = _build(np.random.default_rng(7))
    save(ir, tmp_path / "mixed")
    x = np.random.default_rng(8).integers(-31, 32, size=(64, 2, 6, 6))
    env = golden.run(ir, x, quantized=True, return_all=True)  # checks every declared width
    # the model is not degenerate: several codes per layer, a non-constant output
    assert all(len(np.unique(env[n])) > 2 for n in ("c1", "c2", "c3", "g", "ap", "fc"))
    res = csim(tmp_path / "mixed", layers=True, random_images=64, seed=8)
    assert res["images"] == 64
    assert set(res["nodes"]) == {n["name"] for n in ir.nodes}
    assert res["pass"] and all(r["pass"] for r in res["nodes"].values()), res["nodes"]
    src = "".join((tmp_path / "mixed" / "hls" / f).read_text() for f in ("net.h", "net.cpp", "weights.h"))
    for mb in (9, 12, 16, 10, 7):
        assert f"ap_int<{mb}> m_" in src
    for t in ("typedef ap_uint<3> t_c1", "typedef ap_uint<3> t_c2", "typedef ap_uint<5> t_c3", "typedef ap_uint<4> t_g",
              "typedef ap_uint<6> t_ap", "typedef ap_int<6> t_input"):
        assert t in src, t
