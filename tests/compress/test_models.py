"""Every zoo model: forward shape, weight count, rebuild from config."""
import pytest
import torch

from compress.models import MODELS, build_from_config, build_model
from compress.models.walk import layers
from shiftq.errors import UserError


def _weights(model):
    return sum(m.weight.numel() for _, m, _ in layers(model))


# conv + linear weights (what the paper counts), dense
EXPECTED_WEIGHTS = {
    "resnet20": 268_336, "resnet32": 461_872, "resnet56": 848_944, "resnet110": 1_719_856,
    "vgg16": 14_977_728, "digitnet": 28_112,
}


@pytest.mark.parametrize("name", sorted(MODELS))
def test_forward_shape_and_weight_count(name):
    torch.manual_seed(0)
    m = build_model(name).eval()
    x = torch.randn(2, *m.input_shape)
    with torch.no_grad():
        y = m(x)
    assert y.shape == (2, 10)
    assert _weights(m) == EXPECTED_WEIGHTS[name]


def test_resnet20_is_about_027m_params():
    m = build_model("resnet20")
    total = sum(p.numel() for p in m.parameters())
    assert 0.26e6 < total < 0.28e6
    assert build_model("resnet20", option="B").units.s2b0.shortcut.conv.kernel_size == (1, 1)


def test_vgg16_is_the_5991mb_variant():
    m = build_model("vgg16")
    assert _weights(m) * 4 / 1e6 == pytest.approx(59.91, abs=0.01)


def test_pruned_widths_rebuild_from_config():
    m = build_model("resnet20", widths={"stem.conv": 12, "s1b0.conv1": 10, "s2b0.conv2": 23})
    m2 = build_from_config(m.config)
    m2.load_state_dict(m.state_dict())
    assert m2.units.s1b0.conv1.out_channels == 10
    assert m2(torch.randn(1, 3, 32, 32)).shape == (1, 10)


def test_bad_model_and_widths_are_user_errors():
    with pytest.raises(UserError):
        build_model("resnet21")
    with pytest.raises(UserError):
        build_model("resnet20", widths={"nope.conv": 3})
    with pytest.raises(UserError):
        build_model("resnet20", option="C")
