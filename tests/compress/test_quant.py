"""Fake quantizers: snapping (against a naive nearest-level search), round trips,
gradients (x and alpha), and wrapping a model."""
import pytest
import torch

from compress.models import build_model
from compress.quant import QuantAct, Quantizer, WeightQuant, default_qconfig, set_quant_enabled, wrap
from compress.quant.fake import QConv2d, QLinear
from compress.quant.levels import level_set

CASES = [("apot", 4, False), ("apot", 4, True), ("apot", 6, False), ("pot", 4, True),
         ("pot", 8, True),  # too fine for the cell table: the bucketize path
         ("uniform", 8, False), ("uniform", 8, True), ("uniform", 2, False)]


def _naive(x, alpha, ls):
    """alpha * nearest level of clamp(x / alpha), ties up: the levels x elements way."""
    levels = torch.tensor([n / ls.denominator for n in ls.numerators], dtype=torch.float64)
    lo = -1.0 if ls.signed else 0.0
    xs = (x.double() / alpha).clamp(lo, 1.0)
    d = (xs[:, None] - levels[None, :]).abs()
    # ties to the upper level: pick the last index of the minimum distance
    best = d.shape[1] - 1 - torch.argmin(d.flip(1), dim=1)
    return levels[best] * alpha


@pytest.mark.parametrize("scheme,bits,signed", CASES)
def test_snapping_matches_naive_nearest_level(scheme, bits, signed):
    torch.manual_seed(0)
    q = Quantizer(scheme, bits, signed, alpha=1.25)
    x = torch.randn(4000, dtype=torch.float64) * 1.5
    y = q.double()(x)
    ref = _naive(x, 1.25, level_set(scheme, bits, signed))
    # the level tables are float32: same level means equal to float32 precision
    assert torch.isclose(y, ref, rtol=1e-6, atol=0).all()
    assert q.has_lut == ((scheme, bits) != ("pot", 8))


@pytest.mark.parametrize("scheme,bits,signed", CASES)
def test_quantizing_a_level_gives_it_back(scheme, bits, signed):
    ls = level_set(scheme, bits, signed)
    alpha = 2.5
    q = Quantizer(scheme, bits, signed, alpha=alpha)
    levels = torch.tensor([n / ls.denominator for n in ls.numerators]) * alpha
    out = q(levels)
    assert torch.allclose(out, levels, rtol=1e-6, atol=1e-7)
    assert torch.equal(q(out), out)  # idempotent


def test_gradient_flow_x_and_alpha():
    torch.manual_seed(0)
    q = QuantAct("apot", 4, signed=False, alpha=2.0)
    edges = torch.tensor([0.0, 2.0, 2.0000002, -1e-7])  # alpha itself is inside, its neighbours not
    x = torch.cat([torch.randn(1000) * 2, edges]).requires_grad_()
    g = torch.randn(1004)
    (q(x) * g).sum().backward()
    xs = x.detach() / 2.0
    inside = (xs >= 0) & (xs <= 1)
    # straight through inside the clipping range, zero outside
    assert torch.equal(x.grad, torch.where(inside, g, torch.zeros_like(g)))
    # alpha: q - x/alpha inside, the clipped value outside (APoT reference)
    lv = q(x.detach()) / 2.0
    ref = (g * torch.where(inside, lv - xs, xs.clamp(0, 1))).sum()
    assert q.alpha.grad is not None and torch.isfinite(q.alpha.grad)
    assert torch.allclose(q.alpha.grad, ref, rtol=1e-4, atol=1e-5)


def test_weight_quant_passes_gradient_outside_and_standardises():
    torch.manual_seed(0)
    wq = WeightQuant("apot", 4)
    w = (torch.randn(16, 8, 3, 3) * 0.1).requires_grad_()
    y = wq(w)
    ls = level_set("apot", 4, True)
    vals = torch.tensor(ls.numerators) / ls.denominator * 3.0  # alpha_w starts at 3
    dist = (y.detach().reshape(-1, 1) - vals.reshape(1, -1)).abs().min(dim=1).values
    assert dist.max() < 1e-5  # every weight is a level times alpha
    assert len(y.detach().unique()) > 5
    y.sum().backward()
    assert w.grad is not None and torch.isfinite(w.grad).all() and w.grad.abs().sum() > 0
    assert wq.alpha.grad is not None


def test_wrap_default_qconfig_edges_8bit_and_disable_gives_fp32():
    torch.manual_seed(0)
    fp = build_model("resnet20").eval()
    q = build_model("resnet20")
    q.load_state_dict(fp.state_dict())
    cfg = default_qconfig(q, "apot", 4, 4, 8)
    names = list(cfg)
    assert cfg[names[0]].wbits == 8 and cfg[names[-1]].abits == 8
    assert all(cfg[n].wbits == 4 and cfg[n].wscheme == "apot" for n in names[1:-1])
    wrap(q, cfg)
    q.eval()
    assert isinstance(q.units.stem.conv, QConv2d) and isinstance(q.units.head.linear, QLinear)
    assert isinstance(q.quant_in, QuantAct) and q.quant_in.signed
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        yq = q(x)
        set_quant_enabled(q, False)
        yf = q(x)
    assert torch.equal(yf, fp(x))
    assert not torch.allclose(yq, yf)
