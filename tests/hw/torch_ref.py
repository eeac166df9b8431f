"""PyTorch-side references for the hw tests: each IR node's integers as the
fake-quantized model computes them (for a teacher-forced, node-by-node check)."""
import numpy as np
import torch

from compress.quant.fake import QuantAct


def torch_node_ints(model, ir, x):
    """{IR node name: integer tensor} read off the PyTorch model on images `x`.

    Code tensors come from the act slot that stores them (value / unit, then the code
    index of that value); the logits are the head's output over its IR scale.
    """
    acts = {}
    hooks = []
    for path, mod in model.named_modules():
        if isinstance(mod, QuantAct):
            def hook(m, i, o, path=path):
                acts[path] = (o.double() / (m.alpha.detach().abs().double() / m.levelset.denominator)).numpy()
            hooks.append(mod.register_forward_hook(hook))
    with torch.no_grad():
        logits = model(torch.from_numpy(x)).double().numpy()
    for h in hooks:
        h.remove()
    out = {"input": np.rint(acts["quant_in"]).astype(np.int64)}
    for n in ir.nodes:
        name, op = n["name"], n["op"]
        unit, _, part = name.partition("_")
        slot = {"conv1": f"units.{unit}.act1", "conv2": f"units.{unit}.act"}.get(part, f"units.{unit}.act")
        if op in ("conv2d", "linear", "gap") and n["out"]["kind"] == "code":
            vals = np.rint(acts[slot]).astype(np.int64)
            levels = np.asarray(n["out"]["levels"])
            codes = np.searchsorted(levels, vals)
            assert np.array_equal(levels[np.minimum(codes, len(levels) - 1)], vals), f"{name}: off-level values"
            out[name] = codes
        elif op == "linear":
            out[name] = logits / n["out"]["scale"]  # real-valued, compared with a rounding allowance
    return out
