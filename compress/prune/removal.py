"""Physical channel removal: a smaller ZooModel built from new widths, weights sliced.

`remove_channels(model, plan, keeps)` returns a new model of the same architecture
built by `build_from_config` with each group's width set to its kept count (and
wrapped with the same qconfig if the model was quantized), whose state is the old
state sliced: conv weights along output channels (the conv's group) and input
channels (the producer's group), batch-norm parameters and running statistics,
linear input features (expanded per channel after a Flatten), quantizer alphas
copied, and every option-A shortcut's `src` map remapped (an output channel whose
source channel was removed now reads the zero channel, -1).

Its forward equals the masked model's (compress.prune.masks) to float tolerance.
"""
from __future__ import annotations

import copy

import torch

from compress.models import build_from_config
from shiftq.errors import UserError

from .groups import Plan, build_plan, module


def _remap_src(src: torch.Tensor, out_keep, in_keep) -> torch.Tensor:
    src = src.clone()
    if out_keep is not None:
        src = src[out_keep]
    if in_keep is not None:
        new_index = torch.cumsum(in_keep.long(), 0) - 1
        ok = src >= 0
        mapped = torch.full_like(src, -1)
        sel = src[ok]
        mapped[ok] = torch.where(in_keep[sel], new_index[sel], torch.full_like(sel, -1))
        src = mapped
    return src


def remove_channels(model, keeps: dict, plan: Plan | None = None):
    """The physically pruned copy of `model`: every group keeps the channels in `keeps`."""
    plan = plan or build_plan(model)
    keeps = {k: torch.as_tensor(v, dtype=torch.bool).flatten() for k, v in keeps.items()}
    for g in plan:
        k = keeps.get(g.name)
        if k is None:
            keeps[g.name] = k = torch.ones(g.size, dtype=torch.bool)
        if k.numel() != g.size:
            raise ValueError(f"keep mask of {g.name} has {k.numel()} entries for {g.size} channels")
        if not k.any():
            raise UserError(f"pruning would remove every channel of {g.name}")
    config = copy.deepcopy(model.config)
    for g in plan:
        config["widths"][g.name] = int(keeps[g.name].sum())
    new = build_from_config(config)
    qconfig = getattr(model, "qconfig", None)
    if qconfig:
        from compress.quant.wrap import LayerQ, wrap
        wrap(new, {k: LayerQ(**v) for k, v in qconfig.items()})

    out_of = plan.out_group()              # module path -> group (conv / bn outputs)
    in_of = plan.in_group()                # layer path -> (group, features per channel)
    sc_in, sc_out = {}, {}
    for g in plan:
        for s in g.shortcuts_in:
            sc_in[s] = g.name
        for s in g.shortcuts_out:
            sc_out[s] = g.name

    state = {}
    for key, t in model.state_dict().items():
        mod_path, _, attr = key.rpartition(".")
        t = t.detach().clone()
        if mod_path in sc_in or mod_path in sc_out:
            if attr == "src":
                t = _remap_src(t, keeps.get(sc_out.get(mod_path)), keeps.get(sc_in.get(mod_path)))
        elif mod_path in out_of and t.dim() >= 1 and attr in (
                "weight", "bias", "running_mean", "running_var"):
            t = t[keeps[out_of[mod_path]]]
        if attr == "weight" and mod_path in in_of and t.dim() >= 2:
            gname, per = in_of[mod_path]
            t = t[:, keeps[gname].repeat_interleave(per)]
        state[key] = t
    new.load_state_dict(state, strict=True)
    new.train(model.training)
    return new


def kept_channels(model) -> dict:
    """{layer short name: output channels} of every conv and linear (for reports)."""
    from compress.models.walk import layers, short
    return {short(p): (m.out_channels if hasattr(m, "out_channels") else m.out_features)
            for p, m, _ in layers(model)}


def _check_plan_paths(model, plan):  # pragma: no cover - debugging aid
    for g in plan:
        for p in g.convs + g.bns + g.points:
            module(model, p)
