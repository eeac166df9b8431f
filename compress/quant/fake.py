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

from bisect import bisect_right

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from .levels import level_set


class _SnapSTE(torch.autograd.Function):
    """y = alpha * nearest level of clamp(x / alpha, lo, 1), ties to the upper level.

    Snapping: every midpoint between two levels n_i / D is (n_i + n_(i+1)) / 2D, a
    multiple of 1 / 2D, so the nearest level is constant on each cell of a grid of step
    1 / 2D and one table lookup per element replaces a binary search (`lut`: the level
    of each cell). Level sets too fine for a small table (8-bit PoT) use bucketize on
    the midpoints. Neither builds a levels x elements tensor.

    Gradient (APoT reference): straight-through for x inside [lo, 1] * alpha (and
    outside too with `pass_outside`); for alpha, q - x / alpha inside and the clipped
    value q outside, i.e. sum(g * q) - sum(g_inside * x / alpha), taken as two dot
    products over tensors autograd keeps anyway (x and y), so backward allocates only
    the mask and the masked gradient.
    """

    @staticmethod
    def forward(ctx, x, alpha, levels, mids, lut, lo, pass_outside):
        a = float(alpha)
        if lut is not None:
            n = lut.numel() - 1  # cells from lo to 1, of width (1 - lo) / n = 1 / 2D
            t = x * (n / ((1.0 - lo) * a))
            if lo:
                t.sub_(lo * n / (1.0 - lo))
            idx = t.clamp_(0, n).to(_INDEX_DTYPE)
            out = (lut * a).index_select(0, idx.reshape(-1)).view(x.shape)
        else:
            xc = (x / a).clamp_(lo, 1.0)
            out = levels[torch.bucketize(xc, mids, right=True)] * a
        ctx.save_for_backward(x, out, alpha)
        ctx.lo, ctx.pass_outside = lo, pass_outside
        return out

    @staticmethod
    def backward(ctx, grad):
        x, out, alpha = ctx.saved_tensors
        a = float(alpha)
        # grad where lo * a <= x <= a, else 0, in one fused pass: hardtanh's backward
        # keeps the open interval, so widen each bound by one ulp of x's dtype
        lo_b, hi_b = _widen(ctx.lo * a, a, x.dtype)
        grad_in = torch.ops.aten.hardtanh_backward(grad, x, lo_b, hi_b)
        g, o, xi, gi = (t.reshape(-1) for t in (grad, out, x, grad_in))
        grad_alpha = (torch.dot(g, o) - torch.dot(gi, xi)) / alpha
        grad_x = grad if ctx.pass_outside else grad_in
        return grad_x, grad_alpha, None, None, None, None, None


def _widen(lo: float, hi: float, dtype) -> tuple[float, float]:
    """(lo, hi) each moved one ulp outwards in `dtype`: an open interval that holds
    exactly the values of the closed one."""
    np_t = {torch.float32: np.float32, torch.float64: np.float64}.get(dtype)
    if np_t is None:
        b = torch.tensor([lo, hi], dtype=dtype)
        return tuple(torch.nextafter(b, b + torch.tensor([-1.0, 1.0], dtype=dtype)).tolist())
    return (float(np.nextafter(np_t(lo), np_t(-np.inf))), float(np.nextafter(np_t(hi), np_t(np.inf))))


MAX_TABLE = 4096
# measured (ResNet-20 step, 1 thread): int64 indices make index_select fast enough to
# repay the wider conversion (fake-quant/FP32 1.22 against 1.30 with int32)
_INDEX_DTYPE = torch.int64


def _cell_table(ls):
    """Level value of each 1/2D grid cell from the lowest level to the top one (see
    _SnapSTE), exact in integers; None when the table would exceed MAX_TABLE entries."""
    nums, den = ls.numerators, ls.denominator
    n = 2 * (nums[-1] - nums[0])
    if nums[-1] != den or nums[0] not in (0, -den) or n > MAX_TABLE:
        return None
    mids2 = [a + b for a, b in zip(nums, nums[1:])]  # midpoints, over 2D
    vals = [nums[bisect_right(mids2, 2 * nums[0] + k)] / den for k in range(n + 1)]
    return torch.tensor(vals, dtype=torch.float32)


class Quantizer(nn.Module):
    """alpha * snap(clamp(x / alpha)) onto one level set, with a learnable alpha."""

    def __init__(self, scheme: str, bits: int, signed: bool, alpha: float = 1.0,
                 pass_outside: bool = False):
        super().__init__()
        self.scheme, self.bits, self.signed = scheme, bits, signed
        self.pass_outside = pass_outside
        ls = level_set(scheme, bits, signed)
        self.levelset = ls
        # divided in Python: 8-bit PoT numerators (2^126) do not fit a torch integer
        levels = torch.tensor([n / ls.denominator for n in ls.numerators], dtype=torch.float32)
        self.register_buffer("levels", levels, persistent=False)
        self.register_buffer("mids", (levels[1:] + levels[:-1]) / 2, persistent=False)
        lut = _cell_table(ls)
        self.register_buffer("lut", lut, persistent=False)
        self.has_lut = lut is not None
        self.alpha = nn.Parameter(torch.tensor(float(alpha)))
        self.enabled = True

    @property
    def lo(self) -> float:
        return -1.0 if self.signed else 0.0

    def forward(self, x):
        if not self.enabled:
            return x
        alpha = self.alpha.abs().clamp_min(1e-8)
        lut = self.lut.to(x.dtype) if self.has_lut else None
        return _SnapSTE.apply(x, alpha, self.levels.to(x.dtype), self.mids.to(x.dtype), lut,
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

    def forward(self, w, keep=None, in_keep=None, zero_masked=True):
        if not self.enabled:
            return w
        q = super().forward(self.prequant(w, keep, in_keep))
        if keep is not None and zero_masked:
            # forward: masked filters are zero; backward: straight through, so a soft-masked
            # filter keeps learning (hard masks zero their filters and gradients themselves)
            m = keep.to(q.dtype).view(-1, *([1] * (q.dim() - 1)))
            q = q * m + (q - q.detach()) * (1 - m)
        return q


class _QLayer:
    """Shared by QConv2d and QLinear: the weight as the hardware will see it."""

    def quant_weight(self):
        keep = getattr(self, "keep", None)
        return self.wq(self.weight, keep, getattr(self, "in_keep", None),
                       getattr(self, "zero_masked", True))


class QConv2d(_QLayer, nn.Conv2d):
    def forward(self, x):
        return self._conv_forward(x, self.quant_weight(), self.bias)


class QLinear(_QLayer, nn.Linear):
    def forward(self, x):
        return F.linear(x, self.quant_weight(), self.bias)
