"""An hls4ml project from the IR, built through hls4ml's Python API (no torch, no Keras).

hls4ml normally converts a Keras / PyTorch / ONNX model; here the layer list that its
converters would produce is written directly from the IR and handed to
`hls4ml.model.ModelGraph.from_layer_list` (channels-last, io_parallel, Vivado backend).
Every type is set explicitly, so hls4ml infers nothing and fuses nothing:

- conv2d / linear: `Conv2D` / `Dense` with the IR's integer weights. A layer whose
  weights are all single-term powers of two without zeros gets hls4ml's exponent type
  (`ExponentPrecisionType`, product `weight_exponential`: `y = a << w`, sign bit); any
  other layer (APoT two-term, uniform 8-bit edges, PoT layers with zero weights, since
  the exponent type has no zero code) gets `ap_fixed<bits, bits>` integers. Accumulator
  and result are `ap_fixed<acc_bits, acc_bits>`: the sum is exact.
- requant: a `BatchNormalization` with scale = mult / 2^shift and bias = bias / 2^shift
  (dyadic, exact in `ap_fixed` with `shift` fractional bits), its result cast to
  `ap_ufixed<b, b, AP_TRN, AP_SAT>`: AP_TRN is the IR's floor, AP_SAT the clip to
  0..2^b-1 (the fused ReLU), for uniform activations; `ap_fixed<b, b, AP_TRN>` for logits.
- fused residual: both branches as exact `BatchNormalization`s (the residual one with
  scale rmult / 2^shift), a `Merge` add whose result type does the floor and clip.
- gap: `Reshape` to a vector and a `Dense` of 0/1 weights (the sum), then the requant;
  hls4ml's own average pooling divides, which the IR does not.
- maxpool: `MaxPooling2D` on values (uniform codes are values).

Not expressible, refused with one line: APoT (or any non-uniform) activation codes,
option-A shortcuts, avgpool, conv2d without requant.

NumPy 2: hls4ml 1.3's `ExponentWeightVariable.__iter__` calls `np.product`, removed in
NumPy 2; `np.product` is aliased to `np.prod` while hls4ml writes the project.
"""
from __future__ import annotations

import contextlib
import json
import shutil
import time
from pathlib import Path

import numpy as np

from shiftq.errors import UserError

from ..ir import IR, bits_signed


class _ExponentQuantizer:
    """What hls4ml's QKeras po2 quantizer provides: an ExponentPrecisionType and identity data."""

    def __init__(self, width):
        from hls4ml.model.types import ExponentPrecisionType
        self.bits = width
        self.hls_type = ExponentPrecisionType(width=width, signed=True)

    def __call__(self, data):
        return np.asarray(data, dtype=np.float64)


@contextlib.contextmanager
def _numpy2_compat():
    """hls4ml 1.3 still calls np.product (removed in NumPy 2) on the exponent-weight path."""
    added = not hasattr(np, "product")
    if added:
        np.product = np.prod
    try:
        yield
    finally:
        if added:
            del np.product


def check_expressible(ir: IR) -> None:
    for n in ir.nodes:
        op, name = n["op"], n["name"]
        out = n["out"]
        if out["kind"] == "code" and list(out["levels"]) != list(range(len(out["levels"]))):
            raise UserError(f"hls4ml cannot express node {name!r}: its activations are "
                            f"{out.get('scheme', 'non-uniform')} codes (threshold requant + level decode); "
                            f"only uniform activations map to hls4ml (use the shiftq HLS C++ instead)")
        if op in ("shortcut", "avgpool"):
            raise UserError(f"hls4ml cannot express node {name!r}: no {op} mapping to hls4ml layers")
        if op in ("conv2d", "linear") and not n.get("requant"):
            raise UserError(f"hls4ml cannot express node {name!r}: a conv without requant")


def _fx(width, integer, signed=True, trn_sat=False, trn=False):
    t = "ap_fixed" if signed else "ap_ufixed"
    if trn_sat:
        return f"{t}<{width},{integer},AP_TRN,AP_SAT>"
    if trn:
        return f"{t}<{width},{integer},AP_TRN,AP_WRAP>"
    return f"{t}<{width},{integer}>"


def _pot_exponent_width(ir, n):
    """Exponent width if every weight of `n` is a single nonzero power of two, else None."""
    terms = ir.array(n["weight"]["terms_key"])
    used = (terms[..., 0] != 0).sum(-1)
    if not np.all(used == 1):
        return None
    max_shift = int(terms[..., 1].max())
    # hls4ml's weight_exponential product type is ap_fixed<2(E+X), E+X> (E exponent width,
    # X data width): a << shift stays in range only if E >= shift + 1, so E is sized by the
    # largest shift plus a sign bit, not merely to hold the shift value
    return max(bits_signed(0, max_shift), max_shift + 1)


def build_layers(ir: IR):
    """(layer list, per-layer precision config, description) for ModelGraph.from_layer_list."""
    check_expressible(ir)
    inp = ir.graph["input"]
    c, h, w = inp["shape"]
    layers = [{"class_name": "InputLayer", "name": "x_in", "input_shape": [h, w, c],
               "data_format": "channels_last"}]
    prec = {"x_in": {"Precision": {"result": _fx(inp["bits"], inp["bits"])}}}
    shapes = {"input": [h, w, c]}
    var = {"input": "x_in"}  # IR tensor -> hls4ml layer producing it
    desc = []

    def requant(n, src_layer, out_shape, acc_bits):
        name, rq, out = n["name"], n["requant"], n["out"]
        sh, sb = int(rq["shift"]), int(rq["sum_bits"])
        mult = ir.array(rq["mult"]).astype(np.float64)
        bias = ir.array(rq["bias"]).astype(np.float64)
        mb = int(rq.get("mult_bits") or bits_signed(mult.min(), mult.max()))
        b_int = ir.array(rq["bias"]).astype(np.int64)
        bb = bits_signed(min(0, b_int.min()), max(0, b_int.max()))
        act = rq.get("act")
        if act is None:
            final = _fx(out["bits"], out["bits"], trn=True)
        else:
            final = _fx(out["bits"], out["bits"], signed=False, trn_sat=True)
        size = int(np.prod(out_shape))
        nf = out_shape[-1] if len(out_shape) > 1 else -1
        exact = _fx(sb + 2, sb + 2 - sh)
        bn = {"class_name": "BatchNormalization", "name": f"{name}_rq", "inputs": [src_layer],
              "n_in": size, "n_out": size, "n_filt": nf, "data_format": "channels_last",
              "scale_data": mult / 2.0 ** sh, "bias_data": bias / 2.0 ** sh, "use_gamma": True, "use_beta": True}
        layers.append(bn)
        p = {"scale": _fx(mb + sh, mb), "bias": _fx(bb + sh + 1, bb + 1)}
        if rq.get("residual"):
            r = rq["residual"]
            rm = ir.array(r["mult"]).astype(np.float64)
            rmb = int(r.get("rmult_bits") or bits_signed(rm.min(), rm.max()))
            prec[f"{name}_rq"] = {"Precision": dict(p, result=exact)}
            layers.append({"class_name": "BatchNormalization", "name": f"{name}_res", "inputs": [var[r["input"]]],
                           "n_in": size, "n_out": size, "n_filt": nf, "data_format": "channels_last",
                           "scale_data": rm / 2.0 ** sh, "bias_data": np.zeros_like(rm),
                           "use_gamma": True, "use_beta": True})
            prec[f"{name}_res"] = {"Precision": {"scale": _fx(rmb + sh, rmb), "bias": _fx(2, 2), "result": exact}}
            layers.append({"class_name": "Merge", "op": "add", "name": f"{name}_add",
                           "inputs": [f"{name}_rq", f"{name}_res"]})
            prec[f"{name}_add"] = {"Precision": {"result": final}}
            return f"{name}_add"
        prec[f"{name}_rq"] = {"Precision": dict(p, result=final)}
        return f"{name}_rq"

    for n in ir.nodes:
        op, name = n["op"], n["name"]
        src = var[n["input"]]
        ishape = shapes[n["input"]]
        if op == "conv2d":
            ih, iw, ic = ishape
            kh, kw = n["kernel"]
            s, p = int(n["stride"]), int(n["padding"])
            oc, oh, ow = n["out"]["shape"]
            wt = ir.array(n["weight"]["key"]).astype(np.float64)  # [O, I, KH, KW]
            ew = _pot_exponent_width(ir, n)
            layer = {"class_name": "Conv2D", "name": name, "inputs": [src], "data_format": "channels_last",
                     "in_height": ih, "in_width": iw, "n_chan": ic, "n_filt": oc, "filt_height": kh,
                     "filt_width": kw, "stride_height": s, "stride_width": s, "out_height": oh, "out_width": ow,
                     "pad_top": p, "pad_bottom": p, "pad_left": p, "pad_right": p, "dilation": 1,
                     "weight_data": wt.transpose(2, 3, 1, 0), "bias_data": np.zeros(oc), "use_bias": False}
            out_shape = [oh, ow, oc]
        elif op == "linear":
            wt = ir.array(n["weight"]["key"]).astype(np.float64)  # [O, I]
            ew = _pot_exponent_width(ir, n)
            layer = {"class_name": "Dense", "name": name, "inputs": [src], "n_in": int(wt.shape[1]),
                     "n_out": int(wt.shape[0]), "weight_data": wt.T.copy(), "bias_data": np.zeros(wt.shape[0]),
                     "use_bias": False}
            out_shape = [int(wt.shape[0])]
        elif op == "maxpool":
            ih, iw, ic = ishape
            k, s = int(n["kernel"]), int(n["stride"])
            _, oh, ow = n["out"]["shape"]
            layers.append({"class_name": "MaxPooling2D", "name": name, "inputs": [src],
                           "data_format": "channels_last", "in_height": ih, "in_width": iw, "n_filt": ic,
                           "out_height": oh, "out_width": ow, "pool_height": k, "pool_width": k,
                           "stride_height": s, "stride_width": s, "pad_top": 0, "pad_bottom": 0, "pad_left": 0,
                           "pad_right": 0, "pool_op": "Max"})
            tb = n["out"]["bits"]
            prec[name] = {"Precision": {"result": _fx(tb, tb, signed=False), "accum": _fx(tb + 1, tb + 1)}}
            shapes[name], var[name] = [oh, ow, ic], name
            desc.append({"node": name, "hls4ml": ["MaxPooling2D"]})
            continue
        elif op == "flatten":
            size = int(np.prod(ishape))
            layers.append({"class_name": "Reshape", "name": name, "inputs": [src], "target_shape": [size]})
            shapes[name], var[name] = [size], name
            desc.append({"node": name, "hls4ml": ["Reshape"], "note": "channels-last order"})
            continue
        elif op == "gap":
            ih, iw, ic = ishape
            layers.append({"class_name": "Reshape", "name": f"{name}_flat", "inputs": [src],
                           "target_shape": [ih * iw * ic]})
            ones = np.zeros((ih * iw * ic, ic))
            for ch in range(ic):
                ones[ch::ic, ch] = 1.0  # channels-last flattening: index (y*W + x)*C + c
            layer = {"class_name": "Dense", "name": f"{name}_sum", "inputs": [f"{name}_flat"], "n_in": ih * iw * ic,
                     "n_out": ic, "weight_data": ones, "bias_data": np.zeros(ic), "use_bias": False}
            ew = None
            out_shape = [ic]
            acc = int(n["acc_bits"])
            layers.append(layer)
            prec[layer["name"]] = {"Precision": {"weight": _fx(2, 2), "bias": _fx(2, 2), "accum": _fx(acc, acc),
                                                 "result": _fx(acc, acc)}}
            var[name] = requant(n, layer["name"], out_shape, acc)
            shapes[name] = out_shape
            desc.append({"node": name, "hls4ml": ["Reshape", "Dense (0/1 weights: the sum)", "BatchNormalization"]})
            continue
        else:  # check_expressible refused everything else
            raise UserError(f"hls4ml cannot express node {name!r} ({op})")
        acc = int(n["acc_bits"])
        wbits = int(n["weight"]["bits"])
        wabs = int(np.abs(ir.array(n["weight"]["key"])).max())
        wb = max(wbits, bits_signed(-wabs, wabs))
        if ew is not None:
            layer["weight_quantizer"] = _ExponentQuantizer(ew)
            wdesc = f"exponent type (sign + ap_int<{ew}> exponent)"
        else:
            wdesc = f"ap_fixed<{wb},{wb}> integers"
        layers.append(layer)
        prec[name] = {"Precision": {"weight": _fx(wb, wb), "bias": _fx(2, 2), "accum": _fx(acc, acc),
                                    "result": _fx(acc, acc)}}
        var[name] = requant(n, name, out_shape, acc)
        shapes[name] = out_shape
        desc.append({"node": name, "hls4ml": [layer["class_name"], "BatchNormalization"] +
                     (["BatchNormalization", "Merge(add)"] if n["requant"].get("residual") else []),
                     "weights": wdesc})
    return layers, prec, desc, var[ir.graph["output"]]


def _to_channels_last(a):
    return a.transpose(0, 2, 3, 1) if a.ndim == 4 else a


def write(ir: IR, out_dir, images=None, compile_and_check: bool = True, reuse_factor: int = 1,
          part: str = "xc7z020clg400-1", opt: str | None = None, progress=None) -> dict:
    """Write an hls4ml project for `ir` into `out_dir` (build/NAME/hls4ml); with
    `compile_and_check`, compile it (hls4ml's g++ C simulation) and compare its
    `predict()` on `images` (input integers [N, C, H, W]) with the golden model.
    `opt` (e.g. "-O0") replaces the -O3 of hls4ml's build_lib.sh, for quicker tests."""
    try:
        import hls4ml
    except ImportError:
        raise UserError("hls4ml is not installed: pip install -e '.[dev]'") from None
    from hls4ml.model import ModelGraph
    from hls4ml.utils.config import create_config

    from hw import golden

    layers, prec, desc, out_layer = build_layers(ir)
    out_dir = Path(out_dir)
    name = "".join(ch if ch.isalnum() else "_" for ch in str(ir.graph["name"]))
    t0 = time.time()
    if out_dir.exists():
        shutil.rmtree(out_dir)
    out_dir.mkdir(parents=True)
    tmp = out_dir  # written in place: hls4ml records its output directory inside the project
    config = create_config(output_dir=str(tmp), project_name=f"{name}_hls4ml", backend="Vivado",
                           part=part, io_type="io_parallel")
    config["HLSConfig"] = {"Model": {"Precision": "ap_fixed<32,16>", "ReuseFactor": reuse_factor,
                                     "Strategy": "Latency"}, "LayerName": prec}
    with _numpy2_compat():
        model = ModelGraph.from_layer_list(config, layers, inputs=["x_in"], outputs=[out_layer])
        model.write()
    if opt:
        bl = tmp / "build_lib.sh"
        bl.write_text(bl.read_text().replace('CFLAGS="-O3 -fPIC"', f'CFLAGS="{opt} -fPIC"'))
    summary = {"hls4ml_version": hls4ml.__version__, "layers": desc, "project": str(out_dir),
               "build_opt": opt or "-O3",
               "exponent_layers": [d["node"] for d in desc if "exponent" in d.get("weights", "")],
               "fixed_layers": [d["node"] for d in desc if "ap_fixed" in d.get("weights", "")]}
    if compile_and_check:
        if images is None:
            raise UserError("no images to check the hls4ml project with")
        x = np.asarray(images, dtype=np.int64)
        if progress:
            progress(f"compiling the hls4ml project (g++) and predicting {len(x)} images")
        t1 = time.time()
        with _numpy2_compat():
            model.compile()
            t2 = time.time()
            y = model.predict(np.ascontiguousarray(_to_channels_last(x).astype(np.float64)))
            t3 = time.time()
        y = np.asarray(y, dtype=np.float64).reshape(len(x), -1)
        want = golden.run(ir, x, quantized=True).reshape(len(x), -1)
        yi = np.rint(y).astype(np.int64)
        integral = bool(np.all(y == yi))
        same = np.all(yi == want, axis=1)
        summary["check"] = {
            "images": int(len(x)), "bit_exact_images": int(same.sum()),
            "bit_exact_fraction": float(same.mean()), "outputs_integral": integral,
            "same_prediction": float((yi.argmax(1) == want.argmax(1)).mean()),
            "max_abs_diff": int(np.abs(yi - want).max()) if len(x) else 0,
            "compile_seconds": round(t2 - t1, 1), "predict_seconds": round(t3 - t2, 3)}
    summary["seconds"] = round(time.time() - t0, 1)
    (tmp / "shiftq_hls4ml.json").write_text(json.dumps(summary, indent=1) + "\n")
    return summary


def project_images(build_dir, ir: IR, n: int | None = None, random_images: int = 0, seed: int = 0):
    """Input integers for the check: the export's vectors, plus random ones."""
    parts = []
    vp = Path(build_dir) / "vectors.npz"
    if vp.exists():
        with np.load(vp) as z:
            parts.append(z["node:input"][:n] if n else z["node:input"])
    if random_images:
        q = (1 << (ir.graph["input"]["bits"] - 1)) - 1
        rng = np.random.default_rng(seed)
        parts.append(rng.integers(-q, q + 1, size=(random_images, *ir.graph["input"]["shape"]), dtype=np.int64))
    return np.concatenate(parts) if parts else None


def clean(out_dir):
    shutil.rmtree(out_dir, ignore_errors=True)


def export_project(build_dir, random_images: int = 0, opt: str | None = None, progress=print) -> dict:
    """`shiftq export --hls4ml`: build_dir/hls4ml from build_dir's IR, checked on its vectors."""
    from hw.ir import load

    build_dir = Path(build_dir)
    ir = load(build_dir)
    try:
        check_expressible(ir)
    except UserError as e:
        raise UserError(f"{build_dir} is exported, but no hls4ml project: {e}") from None
    x = project_images(build_dir, ir, random_images=random_images)
    s = write(ir, build_dir / "hls4ml", images=x, opt=opt, progress=progress)
    c = s["check"]
    progress(f"hls4ml project in {build_dir / 'hls4ml'}: its C simulation equals the golden model on "
             f"{c['bit_exact_images']}/{c['images']} images ({100 * c['bit_exact_fraction']:.1f}% bit-exact); "
             f"exponent-type layers: {', '.join(s['exponent_layers']) or 'none'}")
    return s
