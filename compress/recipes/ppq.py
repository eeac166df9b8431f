"""PPQ, post-pruning quantization (seed 001, Algorithm 2).

1. Pruning phase, n = `prune_epochs` epochs of FP training from the FP32 model: after
   epochs 1, 1 + n//s, 1 + 2(n//s), ... the ratio grows by p/s (s = `stages`) and the
   criterion (GM by default) picks the new filters among those still kept; pruned
   filters are hard-masked (zero, no gradient) and never come back.
2. The masked channels are removed physically.
3. APoT QAT of the small model for m = `epochs` epochs at `qat_lr` (0.01 in the paper),
   its alphas first calibrated on a calibration batch.
"""
from . import common as C

NAME = "ppq"
DOC = "FP training with incremental hard GM pruning, physical removal, then APoT QAT at lr 0.01"
FLAGS = ("prune", "criterion", "gamma", "prune_epochs", "stages", "epochs", "qat_lr")


def prune_phase(run, model, phase="prune"):
    """Incremental hard pruning on the shared loop; returns the physically pruned model."""
    s = run.s
    if run.done("pruned.pt"):
        return run.load("pruned.pt").train()
    calib = run.calibration()
    masks = C.make_masks(model, "hard")
    hook = C.HardPruneHook(masks, C.make_criterion(s), s.prune, s.stages, s.prune_epochs, calib)
    run.train(phase, model, s.prune_epochs, s.lr, [hook])
    hook.finish(model)
    pruned = C.prune_physically(masks, model)
    acc = run.accuracy(pruned)
    run.info["pruned_fp32_test_acc"] = acc
    run.save("pruned.pt", pruned, kind="fp32", meta={"recipe": s.recipe, "phase": phase, "test_acc": acc})
    run.log(f"[{s.recipe}] pruned model (FP32): test accuracy {acc:.2f}%")
    return pruned


def compress(run, fp32):
    s = run.s
    pruned = prune_phase(run, fp32)
    C.quantize(pruned, s, run.calibration())
    run.info["ptq_test_acc"] = run.accuracy(pruned)
    run.train("qat", pruned, s.epochs, s.qat_lr)
    return pruned
