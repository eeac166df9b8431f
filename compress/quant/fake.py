"""Fake-quantization building blocks: a level set, a snapping function, and modules.

`Quantizer` holds one level set (normalised to [-1, 1] or [0, 1]) and a learnable
clipping value alpha; it maps x to alpha * snap(clamp(x / alpha)). The gradient is
the APoT reference's: straight-through for x, and for alpha the clipped part's sign
plus the rounding residual. Snapping uses bucketize on the sorted level midpoints,
so it never builds a levels x elements tensor.

`QConv2d` / `QLinear` quantize their weight on the fly (optionally standardised over
the kept filters only, so a masked filter stays zero: see PAPERS.md's pitfall);
`QuantAct` sits in the models' act slots.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .levels import level_set


class _SnapSTE(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, alpha, levels, mids, lo, pass_outside):
        xs = x / alpha
        xc = xs.clamp(lo, 1.0)
        q = levels[torch.bucketize(xc, mids, right=True)]
        ctx.save_for_backward(xs, q)
        ctx.lo, ctx.pass_outside = lo, pass_outside
        return q * alpha

    @staticmethod
    def backward(ctx, grad):
        xs, q = ctx.saved_tensors
        outside = (xs > 1.0) | (xs < ctx.lo)
        g_alpha = torch.where(outside, xs.clamp(ctx.lo, 1.0), q - xs)
        grad_alpha = (grad * g_alpha).sum().reshape(())
        grad_x = grad if ctx.pass_outside else grad * (~outside)
        return grad_x, grad_alpha, None, None, None, None


class Quantizer(nn.Module):
    """alpha * snap(clamp(x / alpha)) onto one level set, with a learnable alpha."""

    def __init__(self, scheme: str, bits: int, signed: bool, alpha: float = 1.0,
                 pass_outside: bool = False):
        super().__init__()
        self.scheme, self.bits, self.signed = scheme, bits, signed
        self.pass_outside = pass_outside
        ls = level_set(scheme, bits, signed)
        self.levelset = ls
        levels = torch.tensor(ls.numerators, dtype=torch.float32) / ls.denominator
        self.register_buffer("levels", levels, persistent=False)
        self.register_buffer("mids", (levels[1:] + levels[:-1]) / 2, persistent=False)
        self.alpha = nn.Parameter(torch.tensor(float(alpha)))
        self.enabled = True

    @property
    def lo(self) -> float:
        return -1.0 if self.signed else 0.0

    def forward(self, x):
        if not self.enabled:
            return x
        alpha = self.alpha.abs().clamp_min(1e-8)
        return _SnapSTE.apply(x, alpha, self.levels.to(x.dtype), self.mids.to(x.dtype),
                              self.lo, self.pass_outside)

    def extra_repr(self):
        return f"{self.scheme}, bits={self.bits}, signed={self.signed}"


class QuantAct(Quantizer):
    """Activation quantizer for an act slot (unsigned after ReLU, signed for the input)."""

    def __init__(self, scheme="apot", bits=4, signed=False, alpha=None):
        super().__init__(scheme, bits, signed, alpha if alpha is not None else (3.0 if signed else 8.0))


class WeightQuant(Quantizer):
    """Weight quantizer; with `standardize`, quantizes (W - mean) / std per layer,
    the statistics taken over kept filters only (`keep`, a bool per output channel)."""

    def __init__(self, scheme="apot", bits=4, standardize=True, alpha=None):
        super().__init__(scheme, bits, True, alpha if alpha is not None else 3.0, pass_outside=True)
        self.standardize = standardize

    def prequant(self, w, keep=None, in_keep=None):
        """The weights as the quantizer sees them before clipping and snapping."""
        if self.standardize:
            kept = w if keep is None else w[keep]
            if in_keep is not None:  # input channels of a pruned producer: not in the pruned model
                kept = kept[:, in_keep]
            w = (w - kept.mean()) / (kept.std() + 1e-8)
        return w

    def forward(self, w, keep=None, in_keep=None):
        if not self.enabled:
            return w
        q = super().forward(self.prequant(w, keep, in_keep))
        if keep is not None:
            # forward: masked filters are zero; backward: straight through, so a soft-masked
            # filter keeps learning (hard masks zero their filters and gradients themselves)
            m = keep.to(q.dtype).view(-1, *([1] * (q.dim() - 1)))
            q = q * m + (q - q.detach()) * (1 - m)
        return q


class _QLayer:
    """Shared by QConv2d and QLinear: the weight as the hardware will see it."""

    def quant_weight(self):
        keep = getattr(self, "keep", None)
        return self.wq(self.weight, keep, getattr(self, "in_keep", None))


class QConv2d(_QLayer, nn.Conv2d):
    def forward(self, x):
        return self._conv_forward(x, self.quant_weight(), self.bias)


class QLinear(_QLayer, nn.Linear):
    def forward(self, x):
        return F.linear(x, self.quant_weight(), self.bias)
