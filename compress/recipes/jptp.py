"""JPTP-PoT, joint post-training pruning and power-of-two quantization (seed 000).

1. Feature maps of every channel group on a calibration batch; channels scored by
   RBF-kernel nonlinear orthogonality (criteria.RBFOrthogonality); floor(p x C) of every
   group removed physically at once; batch-norm statistics re-estimated on the
   calibration batch.
2. Layer-wise progressive PoT quantization: layer by layer in forward order, the
   layer's weights and its input activations are quantized and their clipping values
   calibrated (MSE search) on activations that already pass through every quantized
   layer before it; then the batch-norm statistics are re-estimated, so the error of
   the layers already quantized does not compound.
3. At most a short fine-tune (`ft_epochs`, default small) at `qat_lr`.
"""
import time

import torch

from compress.models.walk import layers
from compress.prune import build_plan, remove_channels
from compress.quant.fake import QuantAct
from compress.quant.wrap import set_quant_enabled

from . import common as C

NAME = "jptp"
DOC = "post-training: RBF-orthogonality pruning, layer-wise progressive PoT quantization, short fine-tune"
FLAGS = ("prune", "criterion", "gamma", "ft_epochs", "qat_lr")


@torch.no_grad()
def progressive_quantize(model, calib):
    """Quantize layer by layer (see the module doc); every quantizer is on at the end."""
    set_quant_enabled(model, False)
    done_slots = set()
    for path, mod, slot in layers(model):
        mod.wq.enabled = True
        slots = []
        if slot not in done_slots:
            model.get_submodule(slot).enabled = True
            done_slots.add(slot)
            slots.append(slot)
        C.calibrate(model, calib, layer_paths={path}, slots=slots)
        C.recalibrate_bn(model, calib)
    rest = [n for n, m in model.named_modules() if isinstance(m, QuantAct) and n not in done_slots]
    for n in rest:
        model.get_submodule(n).enabled = True
    if rest:
        C.calibrate(model, calib, layer_paths=set(), slots=rest)
    C.recalibrate_bn(model, calib)
    set_quant_enabled(model, True)


def compress(run, fp32):
    s = run.s
    calib = run.calibration()
    if run.done("pruned.pt"):
        pruned = run.load("pruned.pt")
    else:
        t = time.perf_counter()
        plan = build_plan(fp32)
        keeps = C.criterion_keeps(fp32, plan, s.prune, C.make_criterion(s), calib)
        pruned = remove_channels(fp32, keeps, plan)
        run.info["pruned_no_bn_test_acc"] = run.accuracy(pruned)
        C.recalibrate_bn(pruned, calib)
        acc = run.accuracy(pruned)
        run.info["pruned_fp32_test_acc"] = acc
        run.note("prune", t, criterion=s.criterion)
        run.save("pruned.pt", pruned, kind="fp32", meta={"recipe": s.recipe, "phase": "prune", "test_acc": acc})
        run.log(f"[jptp] pruned by {s.criterion} (FP32, BN re-estimated): test accuracy {acc:.2f}%")
    t = time.perf_counter()
    C.quantize(pruned, s)
    progressive_quantize(pruned, calib)
    acc = run.accuracy(pruned)
    run.info["ptq_test_acc"] = acc
    run.note("progressive_quantization", t, test_acc=acc)
    run.log(f"[jptp] progressive {s.quant} quantization: test accuracy {acc:.2f}%")
    pruned.train()
    run.train("finetune", pruned, s.ft_epochs, s.qat_lr)
    return pruned
