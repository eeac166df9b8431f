"""Which activation slot feeds which conv / linear, read off the unit sequence."""
from __future__ import annotations

from .units import BasicBlock, ConvUnit, Flatten, GlobalAvgPool, LinearUnit, MaxPool


def layers(model):
    """Ordered [(layer_path, module, input_slot_path)] for every conv and linear.

    The input slot is the act slot whose output the layer reads ("quant_in" for the
    first layer). Option-B shortcut convs read the block input.
    """
    out = []
    slot = "quant_in"
    for name, u in model.units.named_children():
        if isinstance(u, ConvUnit):
            out.append((f"units.{name}.conv", u.conv, slot))
            slot = f"units.{name}.act"
        elif isinstance(u, BasicBlock):
            out.append((f"units.{name}.conv1", u.conv1, slot))
            out.append((f"units.{name}.conv2", u.conv2, f"units.{name}.act1"))
            if u.shortcut is not None and hasattr(u.shortcut, "conv"):
                out.append((f"units.{name}.shortcut.conv", u.shortcut.conv, slot))
            slot = f"units.{name}.act"
        elif isinstance(u, GlobalAvgPool):
            slot = f"units.{name}.act"
        elif isinstance(u, LinearUnit):
            out.append((f"units.{name}.linear", u.linear, slot))
            slot = f"units.{name}.act"
        elif isinstance(u, (MaxPool, Flatten)):
            pass
        else:
            raise TypeError(f"unit {name} of type {type(u).__name__} is not a zoo unit")
    return out


def pool_inputs(model):
    """[(act slot, producing layer path)] for each act slot read by a global average pool.

    Pooling sums stored activations, so the slot before it must be quantized too,
    although no conv or linear reads it directly.
    """
    out = []
    slot, producer = "quant_in", None
    for name, u in model.units.named_children():
        if isinstance(u, GlobalAvgPool):
            out.append((slot, producer))
        for path, _, _ in _unit_layers(name, u):
            producer = path
        if isinstance(u, (ConvUnit, BasicBlock, GlobalAvgPool, LinearUnit)):
            slot = f"units.{name}.act"
    return out


def _unit_layers(name, u):
    if isinstance(u, ConvUnit):
        return [(f"units.{name}.conv", u.conv, None)]
    if isinstance(u, BasicBlock):
        return [(f"units.{name}.conv2", u.conv2, None)]
    if isinstance(u, LinearUnit):
        return [(f"units.{name}.linear", u.linear, None)]
    return []


def short(path: str) -> str:
    """Layer path without the 'units.' prefix: the name widths and reports use."""
    return path[6:] if path.startswith("units.") else path
