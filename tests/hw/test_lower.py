"""Lowering: random small compressed models, golden vs PyTorch node by node."""
import numpy as np
import pytest
import torch

from compress.models import build_model
from compress.quant import LayerQ, default_qconfig, wrap
from hw import golden
from hw.lower import lower_model
from shiftq.errors import UserError

from .torch_ref import torch_node_ints


def _random_model(name, seed, quant="apot", wbits=4, abits=4, prune=None, option=None):
    rng = np.random.default_rng(seed)
    torch.manual_seed(seed)
    kw = {"option": option} if option else {}
    dense = build_model(name, **kw)
    widths = {k: max(1, int(v * (1 - (prune if prune is not None else rng.uniform(0, 0.6)))))
              for k, v in dense.config["widths"].items() if not k.endswith("shortcut.conv")}
    m = build_model(name, widths=widths, **kw)
    # random option-A channel maps, as physical pruning leaves them
    for mod in m.modules():
        if hasattr(mod, "src"):
            src = mod.src.clone()
            keep = torch.from_numpy(rng.random(len(src)) < 0.7)
            src[~keep] = -1
            mod.src.copy_(src)
    wrap(m, default_qconfig(m, quant=quant, wbits=wbits, abits=abits))
    x = torch.randn(48, *m.input_shape)
    m.train()
    with torch.no_grad():
        for bn in m.modules():
            if isinstance(bn, torch.nn.BatchNorm2d):
                bn.momentum = None
                bn.weight.uniform_(0.5, 1.5)
                bn.bias.uniform_(-0.3, 0.3)
        m(x)
        for q in m.modules():
            if hasattr(q, "alpha") and q.__class__.__name__ == "QuantAct":
                q.alpha.fill_(float(rng.uniform(1.0, 4.0)))
    return m.eval(), x.numpy()


def _teacher_forced(ir, ref):
    """Run each node on PyTorch's own inputs; return {node: (mismatch fraction, max code diff)}."""
    stats = {}
    ref = dict(ref)
    for n in ir.nodes:
        exact = n["op"] in ("maxpool", "shortcut", "flatten") or (n["op"] == "conv2d" and n["requant"] is None)
        if exact and n["input"] in ref:
            ref[n["name"]] = golden.run_node(ir, n, ref)  # exact code moves
            continue
        deps = [n["input"]] + ([n["requant"]["residual"]["input"]]
                               if n.get("requant") and n["requant"].get("residual") else [])
        if n["name"] not in ref or not all(d in ref for d in deps):
            continue
        env = {d: ref[d] for d in deps}
        got = golden.run_node(ir, n, env)
        want = ref[n["name"]]
        if n["out"]["kind"] == "int":
            diff = np.abs(got - want)
            stats[n["name"]] = (float((diff > 1.5).mean()), float(diff.max()))
        else:
            diff = np.abs(got - want)
            stats[n["name"]] = (float((diff != 0).mean()), int(diff.max()))
    return stats


CASES = [
    ("digitnet", 0, "apot", 4, 4, None),
    ("digitnet", 1, "pot", 4, 4, None),
    ("digitnet", 2, "uniform", 4, 4, None),
    ("digitnet", 3, "apot", 5, 3, None),     # mixed: odd widths
    ("resnet20", 4, "apot", 4, 4, "A"),
    ("resnet20", 5, "pot", 5, 4, "B"),
    ("vgg16", 6, "apot", 4, 4, None),
]


@pytest.mark.parametrize("name,seed,quant,wbits,abits,option", CASES)
def test_random_models_golden_matches_torch_node_by_node(name, seed, quant, wbits, abits, option):
    m, x = _random_model(name, seed, quant, wbits, abits, option=option)
    if name == "vgg16":
        x = x[:4]
    ir = lower_model(m, name)
    ref = torch_node_ints(m, ir, x)
    stats = _teacher_forced(ir, ref)
    layers = [n["name"] for n in ir.nodes if n["op"] in ("conv2d", "linear", "gap") and n["requant"]]
    assert set(layers) <= set(stats), f"nodes not compared: {set(layers) - set(stats)}"
    for node, (frac, dmax) in stats.items():
        # the only allowed differences are float-rounding ties between PyTorch's float32
        # and the exact integers: rare, and one level at most
        assert frac < 2e-3 and dmax <= 1, f"{node}: {frac:.2%} mismatched, max diff {dmax}"


def test_node_check_catches_a_wrong_requant_constant():
    m, x = _random_model("digitnet", 0)
    ir = lower_model(m, "digitnet")
    ref = torch_node_ints(m, ir, x)
    ir.arrays["b1_conv2.m"] = ir.arrays["b1_conv2.m"].copy()
    ir.arrays["b1_conv2.m"][3] += max(1, abs(int(ir.arrays["b1_conv2.m"][3])) // 8)
    frac, dmax = _teacher_forced(ir, ref)["b1_conv2"]
    assert frac > 2e-3 or dmax > 1


def test_end_to_end_predictions_agree_on_random_digitnet():
    m, x = _random_model("digitnet", 7, prune=0.3)
    ir = lower_model(m, "digitnet")
    with torch.no_grad():
        tp = m(torch.from_numpy(x)).argmax(1).numpy()
    gp = golden.predict(ir, x)
    assert (tp == gp).mean() >= 0.9


def test_accumulator_widths_are_worst_case_bounds():
    m, _ = _random_model("digitnet", 8)
    ir = lower_model(m, "digitnet")
    for n in ir.nodes:
        if n["op"] in ("conv2d", "linear"):
            w = ir.array(n["weight"]["key"]).astype(np.int64)
            vmax = max(ir.tensor(n["input"]).get("levels") or [(1 << (ir.tensor(n["input"])["bits"] - 1)) - 1])
            bound = int(np.abs(w).reshape(w.shape[0], -1).sum(1).max()) * vmax
            assert bound <= (1 << (n["acc_bits"] - 1)) - 1 < 2 * bound + 1


def test_refuses_unquantized_model():
    m = build_model("digitnet").eval()
    with pytest.raises(UserError, match="not quantized"):
        lower_model(m, "digitnet")


def test_refuses_layer_without_quantizer_naming_it():
    m = build_model("digitnet")
    cfg = default_qconfig(m)
    wrap(m, cfg)
    m.units.b1.act1 = torch.nn.Identity()
    with pytest.raises(UserError, match="b1_conv1"):
        lower_model(m.eval(), "digitnet")


def test_refuses_unknown_unit_naming_it():
    m = build_model("digitnet")
    wrap(m, default_qconfig(m))
    m.units.add_module("mystery", torch.nn.Tanh())
    with pytest.raises(UserError, match="mystery"):
        lower_model(m.eval(), "digitnet")


def test_refuses_masked_model():
    m = build_model("digitnet")
    wrap(m, default_qconfig(m))
    keep = torch.ones(16, dtype=torch.bool)
    keep[3] = False
    m.units.b1.conv1.keep = keep
    with pytest.raises(UserError, match="masked"):
        lower_model(m.eval(), "digitnet")


def test_layerq_mixed_bits_round_trip_into_ir():
    m = build_model("digitnet")
    cfg = default_qconfig(m)
    cfg["b1.conv1"] = LayerQ("pot", 3, "uniform", 6, True)
    wrap(m, cfg)
    ir = lower_model(m.eval(), "digitnet")
    node = ir.node("b1_conv1")
    assert node["weight"]["scheme"] == "pot" and node["weight"]["bits"] == 3
    assert ir.tensor("stem")["bits"] == 6  # the act feeding b1.conv1 is 6-bit uniform
