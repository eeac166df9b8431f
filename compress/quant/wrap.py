"""Per-layer bit-width configuration and wrapping a zoo model for fake quantization.

A layer's `abits` is the width of the activation it reads, so the act slot that
feeds a layer takes that layer's activation quantizer. The default configuration
follows seed 001: the first conv and the last linear are W8/A8 uniform (the image
input signed), everything else W`wbits`/A`abits` in the chosen scheme.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass

from torch import nn

from compress.models.walk import layers, pool_inputs, short
from shiftq.errors import UserError

from .fake import QConv2d, QLinear, QuantAct, WeightQuant
from .levels import level_set

QUANT_CHOICES = ("apot", "pot", "uniform")


@dataclass(frozen=True)
class LayerQ:
    wscheme: str
    wbits: int
    ascheme: str
    abits: int
    standardize: bool = True

    def to_json(self):
        return asdict(self)


def default_qconfig(model, quant="apot", wbits=4, abits=4, edge_bits=8, standardize=None):
    """{layer short name: LayerQ} for every conv and linear of `model`."""
    if quant not in QUANT_CHOICES:
        raise UserError(f"unknown --quant {quant!r}: choose one of {', '.join(QUANT_CHOICES)}")
    ascheme = "apot" if quant == "apot" else "uniform"
    std = quant != "uniform" if standardize is None else standardize
    ls = layers(model)
    cfg = {}
    for i, (path, mod, _) in enumerate(ls):
        edge = i == 0 or i == len(ls) - 1
        if edge and edge_bits:
            cfg[short(path)] = LayerQ("uniform", edge_bits, "uniform", edge_bits, False)
        else:
            cfg[short(path)] = LayerQ(quant, wbits, ascheme, abits, std and isinstance(mod, nn.Conv2d))
    for q in cfg.values():  # validate every scheme/bits pair up front, with a clear message
        level_set(q.wscheme, q.wbits, True)
        level_set(q.ascheme, q.abits, False)
    return cfg


def _swap(parent: nn.Module, attr: str, new: nn.Module):
    setattr(parent, attr, new)


def _resolve(model, path):
    *parents, attr = path.split(".")
    mod = model
    for p in parents:
        mod = getattr(mod, p)
    return mod, attr


def wrap(model, qconfig: dict) -> nn.Module:
    """Replace convs/linears by QConv2d/QLinear and fill act slots with QuantAct, in place.

    The weights and every existing parameter are kept. Returns the model.
    """
    slot_q = {}
    for path, mod, slot in layers(model):
        name = short(path)
        if name not in qconfig:
            raise UserError(f"quantization config has no entry for layer {name}")
        q = qconfig[name]
        if isinstance(mod, (QConv2d, QLinear)):
            continue
        alpha = None if q.standardize else float(mod.weight.detach().abs().max()) or 1.0
        wq = WeightQuant(q.wscheme, q.wbits, standardize=q.standardize, alpha=alpha)
        if isinstance(mod, nn.Conv2d):
            new = QConv2d(mod.in_channels, mod.out_channels, mod.kernel_size, mod.stride,
                          mod.padding, bias=mod.bias is not None)
        else:
            new = QLinear(mod.in_features, mod.out_features, bias=mod.bias is not None)
        new.load_state_dict(mod.state_dict())
        new.wq = wq
        new.to(mod.weight.device)
        parent, attr = _resolve(model, path)
        _swap(parent, attr, new)
        prev = slot_q.get(slot)
        if prev is None or (q.abits, q.ascheme) > prev:
            slot_q[slot] = (q.abits, q.ascheme)
    for slot, producer in pool_inputs(model):
        if slot not in slot_q and producer is not None:
            q = qconfig[short(producer)]
            slot_q[slot] = (q.abits, q.ascheme)
    for slot, (abits, ascheme) in slot_q.items():
        parent, attr = _resolve(model, slot)
        if isinstance(getattr(parent, attr), QuantAct):
            continue
        signed = slot == "quant_in"
        _swap(parent, attr, QuantAct(ascheme, abits, signed=signed))
    model.qconfig = {k: v.to_json() for k, v in qconfig.items()}
    return model


def set_quant_enabled(model, enabled: bool):
    """Turn every quantizer on or off (FP32 pass-through when off)."""
    from .fake import Quantizer
    for m in model.modules():
        if isinstance(m, Quantizer):
            m.enabled = enabled
