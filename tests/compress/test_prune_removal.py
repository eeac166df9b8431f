"""Physical removal: the pruned model computes what the masked model computes, for every
zoo model; it really has fewer channels; ResNet-20 at 0.3 hits the paper's figures."""
import pytest
import torch

from compress.metrics import model_metrics, uniform_pruned_widths
from compress.models import MODELS, build_model
from compress.models.units import ShortcutA
from compress.models.walk import layers
from compress.prune import ChannelMasks, build_plan, plan_keeps, remove_channels
from compress.prune.criteria import GeometricMedian, Random
from compress.quant import default_qconfig, wrap

CASES = [(n, o) for n in MODELS for o in (("A", "B") if n.startswith("resnet") else (None,))]
SLOW = {"resnet56", "resnet110", "vgg16"}


def _randomize_bn(model, seed=0):
    g = torch.Generator().manual_seed(seed)
    for m in model.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.copy_(torch.rand(m.num_features, generator=g) - 0.5)
            m.running_var.copy_(torch.rand(m.num_features, generator=g) + 0.5)
            m.weight.data.copy_(torch.rand(m.num_features, generator=g) + 0.5)
            m.bias.data.copy_(torch.rand(m.num_features, generator=g) - 0.5)


def _cases():
    for n, o in CASES:
        for quant in (False, True):
            for mode in ("soft", "hard"):
                if mode == "hard" and not quant and n != "digitnet":
                    continue  # hard and soft differ only in the backward pass
                slow = n in SLOW and (quant or mode == "hard")  # the big ones: FP32 soft in the fast suite
                ids = f"{n}{o or ''}-{'apot' if quant else 'fp32'}-{mode}"
                yield pytest.param(n, o, quant, mode, id=ids, marks=[pytest.mark.slow] if slow else [])


@pytest.mark.parametrize("name,option,quant,mode", list(_cases()))
def test_masked_equals_physically_pruned(name, option, quant, mode):
    torch.manual_seed(0)
    m = build_model(name, option=option) if option else build_model(name)
    if quant:
        wrap(m, default_qconfig(m))
    _randomize_bn(m)
    plan = build_plan(m)
    keeps = plan_keeps(m, plan, 0.3, Random(1))
    masks = ChannelMasks(m, plan, mode)
    masks.set(keeps)
    m.eval().double()
    x = torch.randn(2, *m.input_shape, dtype=torch.float64)
    with torch.no_grad():
        y_masked = m(x)
    masks.detach()
    p = remove_channels(m, keeps, plan).eval().double()
    with torch.no_grad():
        y_pruned = p(x)
    assert torch.allclose(y_masked, y_pruned, rtol=1e-9, atol=1e-9), (y_masked - y_pruned).abs().max()
    # ...and it really is smaller: every group lost floor(0.3 x C) channels in the modules
    for g in plan:
        width = p.config["widths"][g.name]
        assert width == g.size - int(0.3 * g.size)
    for path, mod, _ in layers(p):
        if isinstance(mod, torch.nn.Conv2d):
            assert mod.weight.shape[0] == mod.out_channels
    assert sum(t.numel() for t in p.parameters()) < 0.7 * sum(t.numel() for t in m.parameters())


def test_resnet20_at_0p3_matches_metrics_and_paper():
    m = build_model("resnet20")
    plan = build_plan(m)
    p = remove_channels(m, plan_keeps(m, plan, 0.3, GeometricMedian()), plan)
    assert p.config["widths"] == uniform_pruned_widths("resnet20", 0.3)
    wrap(p, default_qconfig(p, "apot", 4, 4, 8))
    met = model_metrics(p)
    predicted = model_metrics(build_model("resnet20", widths=uniform_pruned_widths("resnet20", 0.3)),
                              default_qconfig(m, "apot", 4, 4, 8))
    assert met["params"] == predicted["params"]
    assert met["params"] == sum(mod.weight.numel() for _, mod, _ in layers(p))
    assert met["size_reduction"] == pytest.approx(15.78, rel=0.005)
    assert met["bops_reduction"] == pytest.approx(115.6, rel=0.005)


def test_option_a_src_map_is_remapped():
    m = build_model("resnet20")
    plan = build_plan(m)
    keeps = {g.name: torch.ones(g.size, dtype=torch.bool) for g in plan}
    keeps["stem.conv"][[0, 5]] = False           # stage-1 channels 0 and 5 go
    keeps["s2b0.conv2"][[8, 9, 30]] = False      # stage-2 channels 8 (reads 0), 9 (reads 1), 30 (pad)
    p = remove_channels(m, keeps, plan)
    sc = p.units.s2b0.shortcut
    assert isinstance(sc, ShortcutA)
    old = m.units.s2b0.shortcut.src[keeps["s2b0.conv2"]]
    assert sc.src.numel() == 29
    new_index = {o: n for n, o in enumerate([i for i in range(16) if i not in (0, 5)])}
    expect = [new_index.get(int(s), -1) if s >= 0 else -1 for s in old]
    assert sc.src.tolist() == expect
    assert -1 in sc.src.tolist() and max(sc.src.tolist()) == 13


def test_removal_refuses_an_empty_group():
    from shiftq.errors import UserError
    m = build_model("digitnet")
    plan = build_plan(m)
    with pytest.raises(UserError):
        remove_channels(m, {"b1.conv1": torch.zeros(16, dtype=torch.bool)}, plan)


def test_hard_masks_keep_filters_zero_through_training():
    torch.manual_seed(0)
    m = build_model("digitnet")
    plan = build_plan(m)
    masks = ChannelMasks(m, plan, "hard")
    keeps = plan_keeps(m, plan, 0.5, Random(0))
    masks.set(keeps)
    opt = torch.optim.SGD(m.parameters(), lr=0.1, momentum=0.9, weight_decay=5e-4)
    for _ in range(3):
        opt.zero_grad()
        m(torch.randn(8, 1, 8, 8)).sum().backward()
        opt.step()
    m(torch.randn(1, 1, 8, 8))
    w = m.units.stem.conv.weight
    assert torch.all(w[~keeps["stem.conv"]] == 0) and w[keeps["stem.conv"]].abs().sum() > 0


def test_soft_masks_let_masked_filters_learn():
    torch.manual_seed(0)
    m = build_model("digitnet")
    wrap(m, default_qconfig(m))
    plan = build_plan(m)
    masks = ChannelMasks(m, plan, "soft")
    keeps = plan_keeps(m, plan, 0.5, Random(0))
    masks.set(keeps)
    m(torch.randn(8, 1, 8, 8)).sum().backward()
    g = m.units.b1.conv1.weight.grad
    k = keeps["b1.conv1"]
    assert g[~k].abs().sum() > 0          # masked filters get a (straight-through) gradient
    assert torch.isfinite(g).all() and g[~k].abs().max() < 100 * g[k].abs().max()
