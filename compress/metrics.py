"""Cost metrics of seed 001: parameters, MACs, model size (Eq. 5) and BOPs (Eq. 6).

    size_bits = sum_i |W_i| x wbits_i
    BOPs      = sum_i MACs_i x wbits_i x abits_i      (abits_i: the input activation of layer i)

over every conv and linear layer i, in the model as it is: a physically pruned model
is counted with its own (smaller) shapes. Batch norm and biases are not counted
(DESIGN.md's convention, the one that reproduces the paper's tables). Reductions are
against the dense FP32 model of the same architecture (full widths, 32/32 bits).

MACs come from forward hooks on one dummy input of the model's input shape, so any
stride, padding or pooling is accounted for without a formula per layer type.
"""
from __future__ import annotations

import math

import torch
from torch import nn

from compress.models import build_model
from compress.models.walk import layers, short
from shiftq.errors import UserError

FP32 = 32


def layer_costs(model: nn.Module, qconfig: dict | None = None) -> list[dict]:
    """One dict per conv / linear, in forward order: name, kind, shape, params, MACs, bits.

    `qconfig` maps layer name -> LayerQ (or its JSON); default: the model's own qconfig
    if it was wrapped, else FP32 (32/32) everywhere.
    """
    if qconfig is None:
        qconfig = getattr(model, "qconfig", None) or {}
    entries = layers(model)
    macs = {}
    hooks = []
    for path, mod, _ in entries:
        def hook(m, inp, out, path=path):
            per_out = m.weight[0].numel()  # (cin / groups) x kh x kw, or in_features
            macs[path] = (out.numel() // out.shape[0]) * per_out
        hooks.append(mod.register_forward_hook(hook))
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            p = next(model.parameters())
            model(torch.zeros(1, *model.input_shape, dtype=p.dtype, device=p.device))
    finally:
        for h in hooks:
            h.remove()
        model.train(was_training)
    rows = []
    for path, mod, slot in entries:
        name = short(path)
        q = qconfig.get(name)
        if q is not None and not isinstance(q, dict):
            q = q.to_json()
        wbits = int(q["wbits"]) if q else FP32
        abits = int(q["abits"]) if q else FP32
        params = mod.weight.numel()
        kind = "conv" if isinstance(mod, nn.Conv2d) else "linear"
        shape = list(mod.weight.shape)
        rows.append({
            "layer": name, "kind": kind, "shape": shape,
            "kernel": list(mod.kernel_size) if kind == "conv" else None,
            "params": params, "macs": macs[path], "wbits": wbits, "abits": abits,
            "wscheme": q["wscheme"] if q else "fp32", "ascheme": q["ascheme"] if q else "fp32",
            "size_bits": params * wbits, "bops": macs[path] * wbits * abits,
        })
    return rows


def totals(rows: list[dict]) -> dict:
    return {k: sum(r[k] for r in rows) for k in ("params", "macs", "size_bits", "bops")}


def dense_model(model: nn.Module) -> nn.Module:
    """The same architecture at full width (the reference the reductions are against)."""
    cfg = model.config
    return build_model(cfg["name"], **cfg.get("kwargs", {}))


def model_metrics(model: nn.Module, qconfig: dict | None = None) -> dict:
    """Totals, per-layer rows and reductions against the dense FP32 model."""
    rows = layer_costs(model, qconfig)
    tot = totals(rows)
    dense = totals(layer_costs(dense_model(model), {}))
    out = {
        "model": model.config["name"],
        "widths": dict(model.config.get("widths", {})),
        **tot,
        "params_all": sum(p.numel() for p in model.parameters()),
        "dense_params": dense["params"], "dense_macs": dense["macs"],
        "dense_size_bits": dense["size_bits"], "dense_bops": dense["bops"],
        "size_reduction": dense["size_bits"] / tot["size_bits"],
        "bops_reduction": dense["bops"] / tot["bops"],
        "layers": rows,
    }
    return out


def check_prune_ratio(p: float) -> float:
    p = float(p)
    if not (0.0 <= p < 1.0) or math.isnan(p):
        raise UserError(f"prune ratio must be in [0, 1), got {p:g}")
    return p


def uniform_pruned_widths(name: str, p: float, **kwargs) -> dict:
    """Widths after removing floor(p x C) filters from every 3x3 conv (the stem included).

    Structural arithmetic for cost accounting (DESIGN.md's convention); which filters
    go is the pruning stage's business. Consumers shrink with their producer because a
    width is keyed by the producing conv.
    """
    p = check_prune_ratio(p)
    dense = build_model(name, **kwargs)
    widths = dict(dense.config["widths"])
    for path, mod, _ in layers(dense):
        key = short(path)
        if isinstance(mod, nn.Conv2d) and tuple(mod.kernel_size) == (3, 3) and key in widths:
            c = widths[key]
            widths[key] = c - math.floor(p * c)
    return widths
