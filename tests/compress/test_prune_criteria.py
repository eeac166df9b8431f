"""Pruning criteria on hand-made layers: each must pick the filters it is defined to."""
import pytest
import torch

from compress.models import build_model
from compress.prune import build_plan, collect_features, get_criterion, plan_keeps, select_keep
from compress.prune.criteria import GeometricMedian, L1, RBFOrthogonality, Random
from compress.prune.groups import Group
from shiftq.errors import UserError


class _Conv(torch.nn.Module):
    def __init__(self, w):
        super().__init__()
        self.weight = torch.nn.Parameter(torch.as_tensor(w, dtype=torch.float32))


class _Model(torch.nn.Module):
    def __init__(self, **convs):
        super().__init__()
        for k, w in convs.items():
            setattr(self, k, _Conv(w))


def _group(model, *names):
    return Group("g", model.__getattr__(names[0]).weight.shape[0], convs=list(names))


def test_l1_picks_smallest_norm():
    w = torch.tensor([[3.0, -3.0], [0.1, -0.2], [1.0, 1.0], [-2.0, 0.5]]).view(4, 2, 1, 1)
    m = _Model(c=w)
    s = L1().scores(m, _group(m, "c"))
    assert torch.allclose(s, torch.tensor([6.0, 0.3, 2.0, 2.5]))
    assert select_keep(s, 1).tolist() == [True, False, True, True]


def test_gm_picks_the_central_filter_with_signed_weights():
    # four filters at the corners of a square and one at its centre: the centre is the
    # geometric median; a large filter near the centre is still more central than a corner
    pts = [[2.0, 2.0], [-2.0, 2.0], [2.0, -2.0], [-2.0, -2.0], [0.1, -0.1]]
    m = _Model(c=torch.tensor(pts).view(5, 2, 1, 1))
    s = GeometricMedian().scores(m, _group(m, "c"))
    assert int(s.argmin()) == 4
    # sum-of-distances form, signed: filter 0 and its negation are far apart
    d = torch.cdist(torch.tensor(pts), torch.tensor(pts)).sum(1)
    assert torch.allclose(s, d, atol=1e-5)
    # |w| would make all four corners identical; signed weights keep them apart
    assert select_keep(s, 1).tolist() == [True, True, True, True, False]


def test_gm_on_a_coupled_group_uses_the_joint_filter():
    a = torch.tensor([[1.0], [0.0], [-1.0]]).view(3, 1, 1, 1)
    b = torch.tensor([[0.0], [5.0], [0.0]]).view(3, 1, 1, 1)
    m = _Model(a=a, b=b)
    g = Group("g", 3, convs=["a", "b"])
    alone = GeometricMedian().scores(m, Group("g", 3, convs=["a"]))
    joint = GeometricMedian().scores(m, g)
    assert int(alone.argmin()) == 1        # the middle filter of a
    assert int(joint.argmin()) != 1        # but in the joint space filter 1 is the outlier


def test_rbf_removes_the_redundant_channel():
    torch.manual_seed(0)
    f = torch.randn(4, 500)
    f[3] = f[0] + 0.01 * torch.randn(500)      # channel 3 duplicates channel 0
    g = Group("g", 4)
    one_shot = RBFOrthogonality(greedy=False).scores(None, g, {"g": f})
    assert set(one_shot.argsort().tolist()[:2]) == {0, 3}   # both duplicates look redundant
    s = RBFOrthogonality().scores(None, g, {"g": f})
    keep = select_keep(s, 1)
    assert keep[1] and keep[2] and (keep[0] != keep[3])     # greedy: exactly one of them goes
    # two duplicated pairs: removing two channels takes one of each pair
    f5 = torch.randn(5, 500)
    f5[3] = f5[0] + 0.01 * torch.randn(500)
    f5[4] = f5[1] + 0.01 * torch.randn(500)
    keep2 = select_keep(RBFOrthogonality().scores(None, Group("g", 5), {"g": f5}), 2)
    assert keep2[2] and (keep2[0] != keep2[3]) and (keep2[1] != keep2[4])
    # a fixed gamma works too and is used as given
    s2 = RBFOrthogonality(gamma=1e-3).scores(None, g, {"g": f})
    assert int(s2.argmin()) in (0, 3)


def test_rbf_needs_features():
    with pytest.raises(ValueError):
        RBFOrthogonality().scores(None, Group("g", 3), None)


def test_random_is_seeded():
    g = Group("g", 10)
    assert torch.equal(Random(3).scores(None, g), Random(3).scores(None, g))
    assert not torch.equal(Random(3).scores(None, g), Random(4).scores(None, g))


def test_unknown_criterion_is_a_user_error():
    with pytest.raises(UserError):
        get_criterion("hrank")


def test_plan_keeps_floor_convention_on_resnet20():
    m = build_model("resnet20")
    plan = build_plan(m)
    assert len(plan) == 12                      # 3 stage groups + 9 block-internal groups
    feats = collect_features(m, plan, [torch.randn(4, 3, 32, 32)], max_positions=256)
    for crit in (GeometricMedian(), L1(), RBFOrthogonality(), Random(0)):
        keeps = plan_keeps(m, plan, 0.3, crit, feats)
        assert {k: int(v.sum()) for k, v in keeps.items()}["stem.conv"] == 12   # 16 - floor(4.8)
        assert int(keeps["s2b0.conv2"].sum()) == 23 and int(keeps["s3b1.conv1"].sum()) == 45


@pytest.mark.parametrize("ratio", [1.0, 1.5, -0.1, float("nan")])
def test_ratio_removing_a_whole_layer_is_refused(ratio):
    plan = build_plan(build_model("digitnet"))
    with pytest.raises(UserError):
        plan.counts(ratio)
