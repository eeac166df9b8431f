"""`shiftq export`: compressed checkpoint -> build/NAME/ (IR, tables, vectors, report, backends).

The bridge between the PyTorch side and the hardware side: it lowers the model,
runs the golden model and the fake-quantized PyTorch model on the same test images
(the agreement is part of the contract, DESIGN.md), writes golden test vectors for
the testbenches, and calls every backend. The directory appears whole or not at all.
"""
from __future__ import annotations

import time
from pathlib import Path

import numpy as np

from shiftq.errors import UserError, atomic_dir

AGREE_MIN = 0.995      # same predictions on at least 99.5% of the test set
ACC_GAP_MAX = 0.003    # accuracies within 0.3 points
MULT_BITS_TRIED = (16, 20, 24)  # requant multiplier widths, cheapest first

DRY_RUN_HINT = ("To compress on real CIFAR-10 instead: put cifar-10-batches-py under data/ "
                "(or pass --download where torchvision is available), run `shiftq compress --model "
                "MODEL --data cifar10 --recipe ppq --out runs/MODEL`, then `make export MODEL=MODEL`.")


def dry_run_model(name: str, prune: float = 0.3, seed: int = 0, quant: str = "apot"):
    """An untrained, structurally pruned, fully quantized zoo model with batch-norm
    statistics and activation ranges set from synthetic data: hardware testing only."""
    import torch

    from compress.data import get_data
    from compress.metrics import uniform_pruned_widths
    from compress.models import build_model
    from compress.quant import default_qconfig, wrap
    from compress.quant.fake import QuantAct

    torch.manual_seed(seed)
    model = build_model(name, widths=uniform_pruned_widths(name, prune))
    wrap(model, default_qconfig(model, quant=quant))
    data = get_data("synthetic", model, seed=seed)
    x = data.calibration(64)
    # batch-norm statistics from the data, then each act quantizer's range from what it sees
    model.train()
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.momentum = None  # cumulative average
        for _ in range(4):
            model(x)
    model.eval()
    peaks = {}
    hooks = [m.register_forward_pre_hook(lambda m, i, k=k: peaks.__setitem__(k, float(i[0].abs().max())))
             for k, m in model.named_modules() if isinstance(m, QuantAct)]
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, QuantAct):
                m.enabled = False
        model(x)
        for k, m in model.named_modules():
            if isinstance(m, QuantAct):
                m.alpha.fill_(max(peaks.get(k, 1.0), 1e-3))
                m.enabled = True
    for h in hooks:
        h.remove()
    return model, data


def _torch_logits(model, x, batch=256):
    import torch

    out = []
    with torch.no_grad():
        for i in range(0, len(x), batch):
            out.append(model(torch.from_numpy(x[i:i + batch])).double().numpy())
    return np.concatenate(out)


def export(ckpt: str | None, out: str, data_name: str | None = None, data_dir=None,
           vectors: int = 16, eval_limit: int | None = None, dry_run_model_name: str | None = None,
           prune: float = 0.3, backends=None, progress=print, mult_bits="auto",
           quant: str = "apot") -> dict:
    import torch

    from compress.checkpoint import load_checkpoint, load_model
    from compress.data import get_data
    from compress.metrics import model_metrics
    from hw import golden
    from hw.backends import run_backends
    from hw.ir import save, sha256_of
    from hw.lower import lower_model
    from hw.report import write_report
    from hw.tables import write_tables

    t0 = time.time()
    torch.set_num_threads(max(1, torch.get_num_threads()))
    dry = dry_run_model_name is not None
    if dry:
        progress(f"HARDWARE DRY RUN: {dry_run_model_name} pruned {prune:g}, {quant}, untrained, synthetic data")
        model, data = dry_run_model(dry_run_model_name, prune, quant=quant)
        data_name = "synthetic"
        source = {"checkpoint": None, "sha256": None, "recipe": "dry-run", "data": "synthetic"}
    else:
        ck = load_checkpoint(ckpt)
        if not ck.get("qconfig"):
            raise UserError(f"{ckpt} is an FP32 checkpoint: compress it first "
                            f"(shiftq compress --from {ckpt} ...), then export compressed.pt")
        model = load_model(ck, where=str(ckpt))
        meta = ck.get("meta") or {}
        data_name = data_name or meta.get("data") or _run_report_data(ckpt)
        if not data_name:
            raise UserError(f"{ckpt} does not say which data it was trained on: pass --data")
        data = get_data(data_name, model, data_dir=data_dir, augment=False)
        source = {"checkpoint": str(ckpt), "sha256": sha256_of(ckpt),
                  "recipe": meta.get("recipe"), "data": data_name}
    model.eval()
    name = model.config["name"]

    # the test set (or the synthetic batch), un-augmented
    xs, ys = [], []
    for xb, yb in data.test:
        xs.append(xb.numpy())
        ys.append(yb.numpy())
    x, y = np.concatenate(xs).astype(np.float32), np.concatenate(ys)
    if eval_limit:
        x, y = x[:eval_limit], y[:eval_limit]
    tl = _torch_logits(model, x)
    tp = tl.argmax(1)
    # The requant multiplier width is the one precision knob of the lowering: take the
    # narrowest (cheapest in hardware) that meets the agreement contract.
    widths = MULT_BITS_TRIED if mult_bits == "auto" else (int(mult_bits),)
    tried = []
    for mb in widths:
        progress(f"lowering {name} to the integer IR ({mb}-bit requant multipliers); "
                 f"golden vs PyTorch on {len(x)} {data_name} test images")
        ir = lower_model(model, name, mult_bits=mb)
        gp = golden.run(ir, x).argmax(1)
        agree = {"images": int(len(x)), "torch_accuracy": float((tp == y).mean()),
                 "golden_accuracy": float((gp == y).mean()), "same_prediction": float((tp == gp).mean()),
                 "mult_bits": mb}
        ok = agree["same_prediction"] >= AGREE_MIN and \
            abs(agree["torch_accuracy"] - agree["golden_accuracy"]) <= ACC_GAP_MAX
        agree["passed"] = bool(ok)
        tried.append({"mult_bits": mb, "same_prediction": agree["same_prediction"], "passed": bool(ok)})
        if ok:
            break
    agree["tried"] = tried
    agree["verdict"] = (f"{'PASS' if agree['passed'] else 'FAIL'}: the contract asks for >= {100 * AGREE_MIN:.1f}% "
                        f"same predictions and accuracies within {100 * ACC_GAP_MAX:.1f} points "
                        f"({agree['mult_bits']}-bit requant multipliers).")
    ir.graph["source"] = source
    metrics = model_metrics(model)
    float_w = _float_weights(model, ir)

    with atomic_dir(out) as tmp:
        save(ir, tmp)
        tables = write_tables(ir, tmp / "tables")
        n = min(vectors, len(x))
        env = golden.run(ir, x[:n], return_all=True)
        vec = {"x": x[:n], "labels": y[:n].astype(np.int64), "output": env[ir.graph["output"]],
               "pred": env[ir.graph["output"]].argmax(1)}
        vec.update({f"node:{k}": v for k, v in env.items()})
        from hw.ir import _write_npz
        _write_npz(tmp / "vectors.npz", vec)
        summaries = run_backends(ir, tmp, only=backends, progress=progress, label=out)
        figures = {"data": data_name, "dry_run": dry, "agreement": agree,
                   "metrics": {k: metrics[k] for k in ("params", "macs", "size_bits", "bops",
                                                       "size_reduction", "bops_reduction")},
                   "backends": summaries}
        if dry:
            figures["dry_run_hint"] = DRY_RUN_HINT
        rep = write_report(tmp, ir, tables, figures, float_w)
    progress(f"wrote {out}/ in {time.time() - t0:.1f} s")
    return rep


def _run_report_data(ckpt) -> str | None:
    """The data set named by the run's report.json beside the checkpoint, if any."""
    import json
    rep = Path(ckpt).with_name("report.json")
    try:
        return json.loads(rep.read_text()).get("data")
    except (OSError, ValueError, AttributeError):
        return None


def _float_weights(model, ir):
    """Pre-quantization weights in units of each layer's integer grid (for the histograms)."""
    import torch

    from compress.models.walk import layers, short
    out = {}
    by_name = {n["name"]: n for n in ir.nodes if n["op"] in ("conv2d", "linear")}
    for path, mod, _ in layers(model):
        node = by_name.get(_ir_name(short(path)))
        if node is None:
            continue
        with torch.no_grad():
            w = mod.wq.prequant(mod.weight.double())
        out[node["name"]] = (w / node["weight"]["scale"]).numpy()
    return out


def _ir_name(layer: str) -> str:
    """Zoo layer name ("b1.conv1", "stem.conv", "head.linear") to its IR node name."""
    unit, _, part = layer.partition(".")
    if part in ("conv", "linear"):
        return unit
    return f"{unit}_{part.replace('.conv', '')}"
