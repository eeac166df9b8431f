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


def short(path: str) -> str:
    """Layer path without the 'units.' prefix: the name widths and reports use."""
    return path[6:] if path.startswith("units.") else path
