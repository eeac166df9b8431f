"""The model zoo: CIFAR ResNets, CIFAR VGG-16 and digitnet, built by name.

Every model is `ZooModel`: an input act slot (`quant_in`) and an ordered set of
units (see units.py). Channel widths are per conv, keyed by the conv's path
("stem.conv", "s2b0.conv1", ...), so a physically pruned model is the same
architecture built with smaller widths; `model.config` rebuilds it.
"""
from __future__ import annotations

from collections import OrderedDict

from torch import nn

from shiftq.errors import UserError

from .units import BasicBlock, ConvUnit, Flatten, GlobalAvgPool, LinearUnit, MaxPool


class ZooModel(nn.Module):
    def __init__(self, name, kwargs, widths, input_shape, num_classes, units):
        super().__init__()
        self.config = {"name": name, "kwargs": dict(kwargs), "widths": dict(widths)}
        self.input_shape = tuple(input_shape)
        self.num_classes = num_classes
        self.quant_in = nn.Identity()
        self.units = nn.Sequential(OrderedDict(units))

    def forward(self, x):
        return self.units(self.quant_in(x))


class _Widths:
    """Looks up each conv's width (default: dense) and records what it used."""

    def __init__(self, given):
        self.given = dict(given or {})
        self.used = {}

    def __call__(self, key, dense):
        w = int(self.given.get(key, dense))
        if w < 1:
            raise UserError(f"width of {key} must be at least 1, got {w}")
        self.used[key] = w
        return w

    def check_all_used(self, model_name):
        unknown = sorted(set(self.given) - set(self.used))
        if unknown:
            raise UserError(f"{model_name} has no layer {unknown[0]!r} to set a width for")


def resnet(depth, num_classes=10, option="A", in_channels=3, widths=None, name=None):
    if (depth - 2) % 6 or depth < 8:
        raise UserError(f"CIFAR ResNet depth must be 6n+2 (20, 32, 56, 110), got {depth}")
    if option not in ("A", "B"):
        raise UserError(f"ResNet shortcut option must be A or B, got {option!r}")
    name = name or f"resnet{depth}"
    n = (depth - 2) // 6
    w = _Widths(widths)
    units = []
    c = w("stem.conv", 16)
    units.append(("stem", ConvUnit(in_channels, c)))
    dense_c = 16
    for s, planes in enumerate((16, 32, 64), start=1):
        for b in range(n):
            stride = 2 if (s > 1 and b == 0) else 1
            key = f"s{s}b{b}"
            mid = w(f"{key}.conv1", planes)
            if stride != 1 or dense_c != planes:
                cout = w(f"{key}.conv2", planes)
                units.append((key, BasicBlock(c, mid, cout, stride, shortcut=option)))
                if option == "B":
                    w.used[f"{key}.shortcut.conv"] = cout
                c = cout
            else:
                units.append((key, BasicBlock(c, mid, c, 1, shortcut=None)))
            dense_c = planes
    units.append(("pool", GlobalAvgPool()))
    units.append(("head", LinearUnit(c, num_classes)))
    w.check_all_used(name)
    kwargs = {"num_classes": num_classes, "option": option, "in_channels": in_channels}
    return ZooModel(name, kwargs, w.used, (in_channels, 32, 32), num_classes, units)


VGG16_CFG = [64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512, "M"]


def vgg16(num_classes=10, in_channels=3, widths=None):
    """CIFAR VGG-16 with a 512-512-10 classifier: 14.98M weights, 59.91 MB in FP32."""
    w = _Widths(widths)
    units = []
    c, i, m = in_channels, 0, 0
    for v in VGG16_CFG:
        if v == "M":
            m += 1
            units.append((f"pool{m}", MaxPool(2)))
        else:
            i += 1
            key = f"conv{i}"
            cout = w(f"{key}.conv", v)
            units.append((key, ConvUnit(c, cout)))
            c = cout
    units.append(("flatten", Flatten()))
    hidden = w("fc1.linear", 512)
    units.append(("fc1", LinearUnit(c, hidden, relu=True)))
    units.append(("fc2", LinearUnit(hidden, num_classes)))
    w.check_all_used("vgg16")
    kwargs = {"num_classes": num_classes, "in_channels": in_channels}
    return ZooModel("vgg16", kwargs, w.used, (in_channels, 32, 32), num_classes, units)


def digitnet(num_classes=10, widths=None):
    """A small CNN for the 8x8 digits: conv, residual block, conv, max pool,
    residual block, global average pool, linear (about 24k weights)."""
    w = _Widths(widths)
    c1 = w("stem.conv", 16)
    units = [("stem", ConvUnit(1, c1))]
    units.append(("b1", BasicBlock(c1, w("b1.conv1", 16), c1)))
    c2 = w("down.conv", 32)
    units.append(("down", ConvUnit(c1, c2)))
    units.append(("pool", MaxPool(2)))
    units.append(("b2", BasicBlock(c2, w("b2.conv1", 32), c2)))
    units.append(("gap", GlobalAvgPool()))
    units.append(("head", LinearUnit(c2, num_classes)))
    w.check_all_used("digitnet")
    return ZooModel("digitnet", {"num_classes": num_classes}, w.used, (1, 8, 8), num_classes, units)


MODELS = {
    "resnet20": lambda **kw: resnet(20, **kw),
    "resnet32": lambda **kw: resnet(32, **kw),
    "resnet56": lambda **kw: resnet(56, **kw),
    "resnet110": lambda **kw: resnet(110, **kw),
    "vgg16": vgg16,
    "digitnet": digitnet,
}

# what data each model is made for (input shape must match)
MODEL_DATA = {"digitnet": ("digits",), "vgg16": ("cifar10",)}
MODEL_DATA.update({f"resnet{d}": ("cifar10",) for d in (20, 32, 56, 110)})


def build_model(name: str, **kwargs) -> ZooModel:
    if name not in MODELS:
        raise UserError(f"unknown model {name!r}: choose one of {', '.join(MODELS)}")
    kwargs = {k: v for k, v in kwargs.items() if v is not None}
    try:
        return MODELS[name](**kwargs)
    except TypeError as e:
        raise UserError(f"bad option for model {name}: {e}") from None


def build_from_config(config: dict) -> ZooModel:
    """Rebuild a (possibly pruned) model from `model.config`."""
    try:
        name, kwargs, widths = config["name"], config.get("kwargs", {}), config.get("widths", {})
    except (KeyError, TypeError):
        raise UserError("model config is missing its name: the checkpoint is not a shiftq checkpoint") from None
    return build_model(name, widths=widths, **kwargs)
