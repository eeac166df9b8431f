"""Lowering: a compressed (physically pruned, fake-quantized) zoo model to the integer IR.

This is the only module under hw/ that reads PyTorch. It walks the model's units
(compress/models/units.py) and, per unit, folds batch norm and every quantizer scale
into integer requantization constants (docs/ir.md): for an output quantizer with
levels L over denominator D and clipping alpha, the requant grid is G = D/alpha
(uniform, rounded half up) or 2D/alpha (APoT: floor, compared with the integer
midpoints L_k + L_k+1). Accumulator and sum widths come from worst-case bounds
over the actual integer weights.
"""
from __future__ import annotations

import math

import numpy as np
import torch
from torch import nn

from compress.models.units import (BasicBlock, ConvUnit, Flatten, GlobalAvgPool, LinearUnit,
                                   MaxPool, ShortcutA, ShortcutB)
from compress.quant.fake import QConv2d, QLinear, QuantAct, WeightQuant
from compress.quant.levels import csd_terms
from shiftq.errors import UserError

from .ir import FORMAT, IR, VERSION, bits_signed, bits_unsigned
from .tables import csd_terms_array

MULT_BITS = 16


def _alpha(q) -> float:
    return float(q.alpha.detach().abs().clamp_min(1e-8))


class _Tensor:
    """A lowered tensor: its IR node name, description, and real value per integer unit."""

    def __init__(self, name, out):
        self.name, self.out = name, out

    @property
    def scale(self):
        return self.out["scale"]

    @property
    def vmax(self):
        if self.out["kind"] == "code":
            return max(self.out["levels"])
        return (1 << (self.out["bits"] - 1)) - 1


def _act_out(act: QuantAct, shape, what: str) -> dict:
    if not isinstance(act, QuantAct):
        raise UserError(f"layer {what} has no activation quantizer on its output: "
                        f"lower only fully quantized models (compress with a recipe first)")
    if act.signed:
        raise UserError(f"layer {what}: signed activation quantizers are only supported at the input")
    ls = act.levelset
    return {"shape": list(shape), "kind": "code", "bits": act.bits, "signed": False,
            "levels": list(ls.numerators), "value_bits": bits_unsigned(max(ls.numerators)),
            "scale": _alpha(act) / ls.denominator, "scheme": act.scheme}


def _grid(act: QuantAct):
    """(G, round_half_up, thresholds or None) of an output quantizer."""
    ls = act.levelset
    if act.scheme == "uniform":
        return ls.denominator / _alpha(act), True, None
    nums = ls.numerators
    thr = [nums[k] + nums[k + 1] for k in range(len(nums) - 1)]
    return 2 * ls.denominator / _alpha(act), False, thr


class Lowerer:
    def __init__(self, model, name: str, mult_bits: int = MULT_BITS):
        self.model = model.eval()
        self.name = name
        self.mult_bits = mult_bits
        self.nodes: list[dict] = []
        self.arrays: dict[str, np.ndarray] = {}

    # ------------------------------------------------------------ helpers
    def _weights(self, layer, what: str):
        if not isinstance(layer, (QConv2d, QLinear)) or not isinstance(getattr(layer, "wq", None), WeightQuant):
            raise UserError(f"layer {what} is not quantized: lower only fully quantized models "
                            f"(compress with a recipe first)")
        if not layer.wq.enabled:
            raise UserError(f"layer {what} has its weight quantizer disabled")
        keep = getattr(layer, "keep", None)
        if keep is not None and not bool(keep.all()):
            raise UserError(f"layer {what} still has masked filters: prune physically before lowering")
        with torch.no_grad():
            wq = layer.quant_weight().double().cpu().numpy()
        ls = layer.wq.levelset
        s_w = _alpha(layer.wq) / ls.denominator
        wi = np.rint(wq / s_w).astype(np.int64)
        if np.abs(wq / s_w - wi).max(initial=0) > 1e-3 or not np.isin(wi, ls.numerators).all():
            raise UserError(f"layer {what}: quantized weights are not on the {ls.scheme} level set")
        terms = max(1, ls.max_terms)
        max_shift = max((s for n in ls.numerators for _, s in csd_terms(abs(n))), default=0)
        key = what
        self.arrays[f"{key}.w"] = wi.astype(np.int32)
        self.arrays[f"{key}.terms"] = csd_terms_array(wi, terms)
        desc = {"key": f"{key}.w", "terms_key": f"{key}.terms", "scheme": ls.scheme, "bits": ls.bits,
                "terms": terms, "max_shift": int(max_shift), "denominator": ls.denominator, "scale": s_w,
                "levels": list(ls.numerators)}
        return wi, s_w, desc

    @staticmethod
    def _bn(bn: nn.BatchNorm2d | None, n: int):
        if bn is None:
            return np.ones(n), np.zeros(n)
        g = (bn.weight.detach().double() / torch.sqrt(bn.running_var.double() + bn.eps)).cpu().numpy()
        h = (bn.bias.detach().double().cpu().numpy() - g * bn.running_mean.double().cpu().numpy())
        return g, h

    def _requant(self, name, acc_bound, eff, bias, act, residual=None):
        """Integer requant for y_real = eff[o] * acc + bias[o] (+ rscale[o] * residual value).

        `eff`, `bias`: real per-channel arrays; `residual`: (tensor, rscale array) or None.
        `act`: the output QuantAct, or None for raw logits.
        """
        o = len(eff)
        if act is None:
            # logits: keep the accumulator's own scale, fold the bias in: y = acc + round(bias / eff)
            if residual is not None:
                raise UserError(f"layer {name}: a residual add into un-quantized logits is not supported")
            if not np.allclose(eff, eff[0]):
                raise UserError(f"layer {name}: logits need one scale for all outputs")
            m = np.ones(o, dtype=np.int64)
            b = np.rint(bias / eff[0]).astype(np.int64)
            shift, thr, grid_rounding = 0, None, False
            rm = None
        else:
            g, half, thr = _grid(act)
            rscale = residual[1] if residual is not None else np.zeros(o)
            # `mult` multiplies the wide accumulator, so it alone sets the shift; `rmult`
            # multiplies a narrow activation value and may be wider (declared rmult_bits)
            big = max(np.abs(g * eff).max(initial=0), 1e-30)
            limit = (1 << (self.mult_bits - 1)) - 1
            shift = max(0, min(48, math.floor(math.log2(limit / big))))
            while np.rint(big * 2.0 ** shift) > limit:
                shift -= 1
            m = np.rint(g * eff * 2.0 ** shift).astype(np.int64)
            rm = np.rint(g * rscale * 2.0 ** shift).astype(np.int64) if residual is not None else None
            b = np.rint(g * bias * 2.0 ** shift).astype(np.int64)
            if half and shift > 0:
                b = b + (1 << (shift - 1))
            grid_rounding = half
        sum_bound = acc_bound * np.abs(m) + np.abs(b)
        if residual is not None:
            sum_bound = sum_bound + residual[0].vmax * np.abs(rm)
        sb = int(sum_bound.max(initial=0))
        self.arrays[f"{name}.m"] = m.astype(np.int32)
        self.arrays[f"{name}.b"] = b.astype(np.int64)
        rq = {"mult": f"{name}.m", "bias": f"{name}.b", "shift": int(shift), "mult_bits": self.mult_bits,
              "residual": None, "sum_bits": bits_signed(-sb, sb), "round_half_up": bool(grid_rounding)}
        if residual is not None:
            self.arrays[f"{name}.rm"] = rm.astype(np.int64)
            rmax = int(np.abs(rm).max(initial=0))
            rq["residual"] = {"input": residual[0].name, "mult": f"{name}.rm",
                              "rmult_bits": bits_signed(-rmax, rmax)}
        if act is None:
            rq["act"] = None
            out_bound = int((acc_bound + np.abs(b)).max(initial=0))
            return rq, out_bound
        rq["act"] = {"scheme": "uniform" if act.scheme == "uniform" else act.scheme,
                     "thresholds": thr}
        return rq, None

    def _emit(self, node: dict) -> _Tensor:
        self.nodes.append(node)
        return _Tensor(node["name"], node["out"])

    # ------------------------------------------------------------ layers
    def conv(self, name, conv, bn, x: _Tensor, act, residual=None, raw=False, extra_bias=None):
        wi, s_w, wdesc = self._weights(conv, name)
        o, i, kh, kw = wi.shape
        c, h, w = x.out["shape"]
        if i != c:
            raise UserError(f"layer {name}: weights expect {i} input channels, the input has {c}")
        s, p = conv.stride[0], conv.padding[0]
        if conv.stride[0] != conv.stride[1] or conv.padding[0] != conv.padding[1] or conv.groups != 1 \
                or conv.dilation != (1, 1):
            raise UserError(f"layer {name}: only square stride/padding, groups=1, dilation=1 convs are supported")
        ho, wo = (h + 2 * p - kh) // s + 1, (w + 2 * p - kw) // s + 1
        acc_bound = int(np.abs(wi).reshape(o, -1).sum(1).max(initial=0)) * x.vmax
        node = {"op": "conv2d", "name": name, "input": x.name, "in_channels": i, "out_channels": o,
                "kernel": [kh, kw], "stride": s, "padding": p, "weight": wdesc,
                "acc_bits": bits_signed(-acc_bound, acc_bound)}
        g, hb = self._bn(bn, o)
        if conv.bias is not None:
            hb = hb + g * conv.bias.detach().double().cpu().numpy()
        if extra_bias is not None:
            hb = hb + extra_bias
        eff = g * s_w * x.scale
        if raw:  # option-B shortcut: raw accumulator, folded into the consumer's residual term
            node["requant"] = None
            node["out"] = {"shape": [o, ho, wo], "kind": "int", "bits": node["acc_bits"], "signed": True,
                           "value_bits": node["acc_bits"], "scale": s_w * x.scale}
            t = self._emit(node)
            return t, (g, hb)
        out = _act_out(act, [o, ho, wo], name)
        rq, _ = self._requant(name, acc_bound, eff, hb, act, residual)
        node["requant"] = rq
        node["out"] = out
        return self._emit(node)

    def linear(self, name, lin, x: _Tensor, act):
        wi, s_w, wdesc = self._weights(lin, name)
        o, i = wi.shape
        if x.out["shape"] != [i]:
            raise UserError(f"layer {name}: weights expect {i} inputs, the input has shape {x.out['shape']}")
        acc_bound = int(np.abs(wi).sum(1).max(initial=0)) * x.vmax
        node = {"op": "linear", "name": name, "input": x.name, "in_features": i, "out_features": o,
                "weight": wdesc, "acc_bits": bits_signed(-acc_bound, acc_bound)}
        bias = lin.bias.detach().double().cpu().numpy() if lin.bias is not None else np.zeros(o)
        eff = np.full(o, s_w * x.scale)
        quant_act = act if isinstance(act, QuantAct) else None
        rq, out_bound = self._requant(name, acc_bound, eff, bias, quant_act)
        node["requant"] = rq
        if quant_act is None:
            b = bits_signed(-out_bound, out_bound)
            node["out"] = {"shape": [o], "kind": "int", "bits": b, "signed": True, "value_bits": b,
                           "scale": s_w * x.scale}
        else:
            node["out"] = _act_out(act, [o], name)
        return self._emit(node)

    # ------------------------------------------------------------ units
    def lower(self) -> IR:
        m = self.model
        if not isinstance(m.quant_in, QuantAct) or not m.quant_in.signed or m.quant_in.scheme != "uniform":
            raise UserError("the model input is not quantized to signed uniform integers: "
                            "lower only fully quantized models (compress with a recipe first)")
        qin = m.quant_in
        inp = {"shape": list(m.input_shape), "bits": qin.bits,
               "scale": _alpha(qin) / qin.levelset.denominator}
        x = _Tensor("input", {"shape": list(m.input_shape), "kind": "int", "bits": qin.bits, "signed": True,
                              "value_bits": qin.bits, "scale": inp["scale"]})
        for uname, u in m.units.named_children():
            if isinstance(u, ConvUnit):
                if not u.relu:
                    raise UserError(f"layer {uname}: a conv without ReLU before a quantizer is not supported")
                x = self.conv(uname, u.conv, u.bn, x, u.act)
            elif isinstance(u, BasicBlock):
                x = self.block(uname, u, x)
            elif isinstance(u, MaxPool):
                c, h, w = x.out["shape"]
                k = u.kernel
                x = self._emit({"op": "maxpool", "name": uname, "input": x.name, "kernel": k, "stride": k,
                                "out": dict(x.out, shape=[c, (h - k) // k + 1, (w - k) // k + 1])})
            elif isinstance(u, GlobalAvgPool):
                x = self.gap(uname, u, x)
            elif isinstance(u, Flatten):
                c, h, w = x.out["shape"]
                x = self._emit({"op": "flatten", "name": uname, "input": x.name,
                                "out": dict(x.out, shape=[c * h * w])})
            elif isinstance(u, LinearUnit):
                if u.relu and not isinstance(u.act, QuantAct):
                    raise UserError(f"layer {uname}: a ReLU linear needs an output quantizer")
                x = self.linear(uname, u.linear, x, u.act)
            else:
                raise UserError(f"unit {uname} ({type(u).__name__}) has no IR node: the IR knows conv, "
                                f"residual blocks, pooling, flatten and linear units")
        graph = {"format": FORMAT, "version": VERSION, "name": self.name, "source": {},
                 "input": inp, "nodes": self.nodes, "output": x.name}
        return IR(graph, self.arrays)

    def block(self, uname, u: BasicBlock, x: _Tensor) -> _Tensor:
        h = self.conv(f"{uname}_conv1", u.conv1, u.bn1, x, u.act1)
        o = u.conv2.out_channels
        extra_bias = np.zeros(o)
        if u.shortcut is None:
            skip, rscale = x, np.full(o, x.scale)
        elif isinstance(u.shortcut, ShortcutA):
            c, hh, ww = x.out["shape"]
            st = u.shortcut.stride
            src = [int(v) for v in u.shortcut.src.tolist()]
            skip = self._emit({"op": "shortcut", "name": f"{uname}_shortcut", "input": x.name, "stride": st,
                               "src": src, "out": dict(x.out, shape=[len(src), -(-hh // st), -(-ww // st)])})
            rscale = np.full(o, x.scale)
        elif isinstance(u.shortcut, ShortcutB):
            skip, (g, hb) = self.conv(f"{uname}_shortcut", u.shortcut.conv, u.shortcut.bn, x, None, raw=True)
            rscale = g * skip.scale
            extra_bias = hb
        else:
            raise UserError(f"block {uname}: unknown shortcut {type(u.shortcut).__name__}")
        # conv2 -> bn2 -> + skip -> relu -> act, with the add fused into conv2's requant
        return self.conv(f"{uname}_conv2", u.conv2, u.bn2, h, u.act, residual=(skip, rscale),
                         extra_bias=extra_bias)

    def gap(self, uname, u: GlobalAvgPool, x: _Tensor) -> _Tensor:
        c, h, w = x.out["shape"]
        acc_bound = x.vmax * h * w
        eff = np.full(c, x.scale / (h * w))
        act = u.act
        if not isinstance(act, QuantAct):
            raise UserError(f"pooling {uname} has no activation quantizer on its output")
        rq, _ = self._requant(uname, acc_bound, eff, np.zeros(c), act)
        return self._emit({"op": "gap", "name": uname, "input": x.name,
                           "acc_bits": bits_signed(-acc_bound, acc_bound), "requant": rq,
                           "out": _act_out(act, [c], uname)})


def lower_model(model, name: str, mult_bits: int = MULT_BITS) -> IR:
    """Lower a physically pruned, fully quantized zoo model (in eval mode) to the IR."""
    return Lowerer(model, name, mult_bits).lower()
