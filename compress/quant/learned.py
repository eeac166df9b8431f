"""A fake quantizer with a learned step and range, whose bit width is learned (DJPQ).

Parameters (per layer): the range q_max (`alpha`, the clipping value) and the step d
(`log_step`, its log). As in DJPQ / Uhlich et al., the bit width is a function of them,

    b = log2(q_max / d + 1) + 1   (signed)        b = log2(q_max / d + 1)   (unsigned)

so the bit width moves whenever the step or the range does, and the BOPs penalty
(compress/recipes/bops.py) is differentiable in b.

The values are always on a real level set of compress/quant/levels.py at an allowed
width (`choices`: any subset of the widths the scheme supports, e.g. {2, 4, 8} for
the power-of-two-bit variant), scaled by q_max: uniform levels make d the actual step
at integer b; PoT / APoT levels keep the weights shift-add friendly at every width.
Between two allowed widths c_j <= b <= c_j+1 the output is the interpolation
(1 - f) Q_cj(x) + f Q_cj+1(x), f = (b - c_j) / (c_j+1 - c_j): its derivative in b is
Q_cj+1(x) - Q_cj(x), which tells the task loss what one more step of precision is
worth, and its BOPs cost is exactly b (cost is linear in the width). `frozen_bits()`
rounds b to the nearest allowed width (f >= 1/2 goes up), which the recipe then
writes into a per-layer qconfig.

Snapping is straight-through for x inside the range and the clipping gradient for
alpha is the APoT reference's (q - x / alpha inside, q outside), from autograd.
"""
from __future__ import annotations

import math

import torch
from torch import nn

from .levels import BITS_RANGE, level_set


def allowed_bits(scheme: str, signed: bool) -> list[int]:
    if scheme == "apot":
        return list(range(3, 8)) if signed else list(range(2, 7))
    return list(BITS_RANGE[scheme])


def nearest_supported(scheme: str, signed: bool, wanted) -> list[int]:
    """Each wanted width moved to the nearest supported one (ties: the lower), deduplicated."""
    ok = allowed_bits(scheme, signed)
    return sorted({min(ok, key=lambda b: (abs(b - w), b)) for w in wanted})


def _snap(x: torch.Tensor, levels: torch.Tensor, mids: torch.Tensor) -> torch.Tensor:
    return levels[torch.bucketize(x, mids, right=True)]


class LearnedQuantizer(nn.Module):
    def __init__(self, scheme: str, signed: bool, choices, init_bits: float, alpha: float):
        super().__init__()
        self.scheme, self.signed = scheme, signed
        self.choices = sorted(int(c) for c in choices)
        for c in self.choices:
            level_set(scheme, c, signed)  # validates
        for c in self.choices:
            ls = level_set(scheme, c, signed)
            lv = torch.tensor(ls.values, dtype=torch.float32)  # PoT 8-bit denominators overflow int64
            self.register_buffer(f"levels{c}", lv, persistent=False)
            self.register_buffer(f"mids{c}", (lv[1:] + lv[:-1]) / 2, persistent=False)
        b = min(max(float(init_bits), self.choices[0]), self.choices[-1])
        self.alpha = nn.Parameter(torch.tensor(float(alpha)))
        self.log_step = nn.Parameter(torch.tensor(math.log(alpha / (2 ** (b - self.sign_bit) - 1))))
        self.enabled = True

    @property
    def sign_bit(self) -> int:
        return 1 if self.signed else 0

    @property
    def lo(self) -> float:
        return -1.0 if self.signed else 0.0

    def bits(self) -> torch.Tensor:
        """The learned (real) bit width, clamped to the allowed range; differentiable."""
        a = self.alpha.abs().clamp_min(1e-8)
        b = torch.log2(a / torch.exp(self.log_step) + 1) + self.sign_bit
        return b.clamp(self.choices[0], self.choices[-1])

    def _bracket(self, b: float):
        cs = self.choices
        for lo, hi in zip(cs, cs[1:]):
            if b <= hi:
                return lo, hi
        return cs[-1], cs[-1]

    def frozen_bits(self) -> int:
        b = float(self.bits().detach())
        lo, hi = self._bracket(b)
        if lo == hi:
            return lo
        return hi if (b - lo) / (hi - lo) >= 0.5 else lo

    def quantize(self, x: torch.Tensor, bits: int) -> torch.Tensor:
        a = self.alpha.abs().clamp_min(1e-8)
        xc = (x / a).clamp(self.lo, 1.0)
        q = _snap(xc.detach(), getattr(self, f"levels{bits}").to(x.dtype), getattr(self, f"mids{bits}").to(x.dtype))
        return a * (xc + (q - xc).detach())

    def forward(self, x):
        if not self.enabled:
            return x
        b = self.bits()
        lo, hi = self._bracket(float(b.detach()))
        if lo == hi:
            return self.quantize(x, lo)
        f = (b - lo) / (hi - lo)
        return (1 - f) * self.quantize(x, lo) + f * self.quantize(x, hi)

    def extra_repr(self):
        return f"{self.scheme}, signed={self.signed}, choices={self.choices}"


class LearnedWeightQuant(LearnedQuantizer):
    """Weights: standardised per layer as WeightQuant does, then the learned quantizer;
    accepts the same call as WeightQuant (w, keep, in_keep, ...)."""

    def __init__(self, scheme, choices, init_bits, alpha=3.0, standardize=True):
        super().__init__(scheme, True, choices, init_bits, alpha)
        self.standardize = standardize

    def forward(self, w, keep=None, in_keep=None, *unused):
        # DJPQ never masks (gates act after batch norm), so keep / in_keep are unused
        if not self.enabled:
            return w
        if self.standardize:
            w = (w - w.mean()) / (w.std() + 1e-8)
        return super().forward(w)


class LearnedActQuant(LearnedQuantizer):
    """Activations after ReLU (unsigned)."""

    def __init__(self, scheme, choices, init_bits, alpha=8.0):
        super().__init__(scheme, False, choices, init_bits, alpha)
