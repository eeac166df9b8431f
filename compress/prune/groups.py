"""Channel groups read off a zoo model's unit sequence.

A *group* is a set of channels that must be kept or removed together: the output
channels of one conv, or, through residual adds, the output channels of a chain of
convs that feed the same running tensor (a ResNet stage: the leading conv's output,
every identity block's conv2 output, an option-B shortcut conv's output).

For every group the plan records
- `convs`: convs whose *output* channels are the group's channels (the leader first;
  3x3 convs and option-B 1x1 shortcut convs, which follow their group);
- `bns`: the batch norms of those convs;
- `consumers`: layers whose *input* channels are the group's channels, with the
  number of input features per channel (1 for convs; H*W for a linear after Flatten);
- `points`: modules whose output tensor carries exactly the group's channels (a
  ConvUnit, a block's act1 slot, a block): where masks act and feature maps are read;
- `shortcuts_in` / `shortcuts_out`: option-A shortcuts reading from / writing into
  the group (their `src` map is remapped on removal).

The width key of a group is its leader's key in `model.config["widths"]`, so removal
is "rebuild with smaller widths, then slice". Linear layers are never pruned.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

from torch import nn

from compress.models.units import (BasicBlock, ConvUnit, Flatten, GlobalAvgPool, LinearUnit,
                                   MaxPool, ShortcutA, ShortcutB)
from compress.models.walk import short
from shiftq.errors import UserError


@dataclass
class Group:
    name: str                      # the width key of the leader conv, e.g. "s2b0.conv2"
    size: int                      # number of channels
    convs: list = field(default_factory=list)         # module paths, leader first
    bns: list = field(default_factory=list)
    consumers: list = field(default_factory=list)     # (layer path, features per channel)
    points: list = field(default_factory=list)        # module paths carrying the channels
    shortcuts_in: list = field(default_factory=list)  # ShortcutA paths reading the group
    shortcuts_out: list = field(default_factory=list)  # ShortcutA paths writing the group

    def n_prune(self, ratio: float) -> int:
        return int(math.floor(ratio * self.size))  # the same arithmetic as compress.metrics


@dataclass
class Plan:
    """All prunable groups of a model, in forward order."""
    groups: dict            # name -> Group
    model_name: str

    def __iter__(self):
        return iter(self.groups.values())

    def __len__(self):
        return len(self.groups)

    def out_group(self):
        """{module path: group name} for every conv / bn whose output channels are a group."""
        m = {}
        for g in self:
            for p in g.convs + g.bns:
                m[p] = g.name
        return m

    def in_group(self):
        """{layer path: (group name, features per channel)} for every consumer."""
        m = {}
        for g in self:
            for p, f in g.consumers:
                m[p] = (g.name, f)
        return m

    def counts(self, ratio: float) -> dict:
        """{group: number of channels to remove} under the floor(p x C) convention."""
        check_ratio(ratio)
        return {g.name: g.n_prune(ratio) for g in self}


def check_ratio(ratio) -> float:
    try:
        ratio = float(ratio)
    except (TypeError, ValueError):
        raise UserError(f"prune ratio must be a number in [0, 1), got {ratio!r}") from None
    if not (0.0 <= ratio < 1.0) or math.isnan(ratio):
        raise UserError(f"prune ratio {ratio:g} would remove every filter of a layer: "
                        "use a ratio in [0, 1)")
    return ratio


def build_plan(model) -> Plan:
    """Read the channel groups off the unit sequence of a ZooModel."""
    groups: dict[str, Group] = {}
    cur = None          # group carrying the running tensor (None: the image input)
    flat = False        # a Flatten was met: the next linear reads C*H*W features

    def new(name, size, conv, bn, point):
        g = Group(name, size, convs=[conv], bns=[bn], points=[point])
        groups[name] = g
        return g

    def consume(layer_path, module):
        if cur is None:
            return
        if isinstance(module, nn.Linear) and flat:
            per = module.in_features // cur.size
            if per * cur.size != module.in_features:
                raise ValueError(f"{layer_path}: {module.in_features} features from {cur.size} channels")
        else:
            per = 1
        cur.consumers.append((layer_path, per))

    for name, u in model.units.named_children():
        p = f"units.{name}"
        if isinstance(u, ConvUnit):
            consume(f"{p}.conv", u.conv)
            cur = new(f"{name}.conv", u.conv.out_channels, f"{p}.conv", f"{p}.bn", p)
        elif isinstance(u, BasicBlock):
            consume(f"{p}.conv1", u.conv1)
            mid = new(f"{name}.conv1", u.conv1.out_channels, f"{p}.conv1", f"{p}.bn1", f"{p}.act1")
            mid.consumers.append((f"{p}.conv2", 1))
            if u.shortcut is None:
                cur.convs.append(f"{p}.conv2")
                cur.bns.append(f"{p}.bn2")
                cur.points.append(p)
            else:
                src = cur
                if isinstance(u.shortcut, ShortcutB):
                    consume(f"{p}.shortcut.conv", u.shortcut.conv)
                cur = new(f"{name}.conv2", u.conv2.out_channels, f"{p}.conv2", f"{p}.bn2", p)
                if isinstance(u.shortcut, ShortcutB):
                    cur.convs.append(f"{p}.shortcut.conv")
                    cur.bns.append(f"{p}.shortcut.bn")
                elif isinstance(u.shortcut, ShortcutA):
                    if src is not None:
                        src.shortcuts_in.append(f"{p}.shortcut")
                    cur.shortcuts_out.append(f"{p}.shortcut")
        elif isinstance(u, LinearUnit):
            consume(f"{p}.linear", u.linear)
            cur = None  # linear outputs are not pruned
            flat = False
        elif isinstance(u, Flatten):
            flat = True
        elif isinstance(u, (MaxPool, GlobalAvgPool)):
            pass
        else:
            raise TypeError(f"unit {name} of type {type(u).__name__} is not a zoo unit")
    widths = model.config["widths"]
    for g in groups.values():
        if g.name not in widths:
            raise ValueError(f"group {g.name} has no width key in the model config")
    return Plan(groups, model.config["name"])


def module(model, path: str) -> nn.Module:
    mod = model
    for a in path.split("."):
        mod = getattr(mod, a)
    return mod


def describe(plan: Plan) -> list[dict]:
    """A JSON-able summary of the groups (for reports and debugging)."""
    return [{"group": g.name, "channels": g.size, "convs": [short(c) for c in g.convs],
             "consumers": [short(c) for c, _ in g.consumers]} for g in plan]
