"""Channel masks on a dense model: soft (SPQ) and hard (PPQ).

A mask zeroes a group's pruned channels wherever the group's channels are carried
(`Group.points`: a ConvUnit's output, a block's act1 slot, a block's output), so the
masked model computes exactly what the physically pruned model computes (see
removal.py; tests check this for every zoo model).

- soft: the forward pass ignores pruned channels, but the backward pass is
  straight-through (the gradient a channel would get if it were present, as in
  dynamic pruning with feedback), so masked filters keep their weights, keep being
  updated and can come back when the mask is recomputed. Their filters are not
  zeroed inside the layer: a conv output channel that is identically zero would
  make its batch norm divide by sqrt(eps) in training mode, and the straight-through
  gradient would carry that x300 blow-up upstream.
- hard: forward and backward both zero the channel, and the pruned filters of the
  group's convs are set to zero before every forward pass, so they stay zero whatever
  momentum or weight decay does.

On quantized layers (QConv2d / QLinear) the masks also set `keep` (output channels)
and `in_keep` (input channels) so that weight standardisation takes its statistics
over kept weights only (PAPERS.md's pitfall) and matches the pruned model.
"""
from __future__ import annotations

import torch

from .groups import module


class _SoftMask(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, m):
        return x * m

    @staticmethod
    def backward(ctx, g):
        return g, None


class ChannelMasks:
    def __init__(self, model, plan, mode: str = "soft"):
        if mode not in ("soft", "hard"):
            raise ValueError(f"mask mode must be soft or hard, not {mode!r}")
        self.model, self.plan, self.mode = model, plan, mode
        self.keep = {g.name: torch.ones(g.size, dtype=torch.bool) for g in plan}
        self._hooks = []
        self._attach()

    # ---- state
    def set(self, keeps: dict):
        for name, k in keeps.items():
            k = torch.as_tensor(k, dtype=torch.bool).flatten()
            if k.numel() != self.keep[name].numel():
                raise ValueError(f"mask of {name} has {k.numel()} entries, group has {self.keep[name].numel()}")
            if not k.any():
                raise ValueError(f"mask of {name} would remove every channel")
            self.keep[name] = k.clone()
        self._sync_layers()
        if self.mode == "hard":
            self.zero_pruned()

    def state_dict(self) -> dict:
        return {k: v.tolist() for k, v in self.keep.items()}

    def load_state_dict(self, state: dict):
        self.set({k: torch.tensor(v, dtype=torch.bool) for k, v in state.items()})

    def kept(self) -> dict:
        return {k: int(v.sum()) for k, v in self.keep.items()}

    # ---- hooks
    def _attach(self):
        for g in self.plan:
            for p in g.points:
                self._hooks.append(module(self.model, p).register_forward_hook(self._point_hook(g.name)))
            if self.mode == "hard":
                for c in g.convs:
                    self._hooks.append(module(self.model, c).register_forward_pre_hook(self._zero_hook(g.name)))
        self._sync_layers()

    def _point_hook(self, name):
        def hook(mod, inp, out):
            k = self.keep[name]
            if bool(k.all()):
                return out
            m = k.to(out.dtype).to(out.device).view(1, -1, *([1] * (out.dim() - 2)))
            return _SoftMask.apply(out, m) if self.mode == "soft" else out * m
        return hook

    def _zero_hook(self, name):
        def hook(mod, inp):
            k = self.keep[name]
            if not bool(k.all()):
                with torch.no_grad():
                    mod.weight[~k.to(mod.weight.device)] = 0
        return hook

    @torch.no_grad()
    def zero_pruned(self, bn: bool = True):
        """Set the pruned filters (conv weights, and with `bn` the batch-norm affine
        parameters) of every group to zero."""
        for g in self.plan:
            k = self.keep[g.name]
            for c in g.convs:
                module(self.model, c).weight[~k] = 0
            for b in (g.bns if bn else []):
                m = module(self.model, b)
                if m.affine:
                    m.weight[~k] = 0
                    m.bias[~k] = 0

    def _sync_layers(self):
        """keep / in_keep attributes for quantized layers' standardisation statistics."""
        for g in self.plan:
            k = self.keep[g.name]
            full = bool(k.all())
            for c in g.convs:
                mod = module(self.model, c)
                if hasattr(mod, "wq"):
                    mod.keep = None if full else k.clone()
                    mod.zero_masked = self.mode == "hard"
            for c, per in g.consumers:
                mod = module(self.model, c)
                if hasattr(mod, "wq"):
                    mod.in_keep = None if full else k.repeat_interleave(per)

    def detach(self):
        """Remove every hook and the keep attributes; the model is plain again."""
        for h in self._hooks:
            h.remove()
        self._hooks = []
        for m in self.model.modules():
            if hasattr(m, "zero_masked"):
                del m.zero_masked
            for a in ("keep", "in_keep"):
                if hasattr(m, a) and hasattr(m, "wq"):
                    setattr(m, a, None)
