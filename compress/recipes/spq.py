"""SPQ, simultaneous pruning and quantization (seed 001, Algorithm 1).

APoT QAT in every iteration, from the FP32 model (alphas calibrated first); at the end
of every epoch the criterion (GM on the full-precision weights, masked filters
included) re-selects floor(p x C) channels per group and zero-masks them. Masks are
soft: the forward pass ignores masked channels, the backward pass is straight-through,
so masked filters keep learning and can come back. Weight standardisation takes its
statistics over kept filters only (PAPERS.md's pitfall). After the last epoch the
masked channels are removed physically.
"""
from . import common as C

NAME = "spq"
DOC = "APoT QAT every iteration, soft GM pruning at each epoch's end, then physical removal"
FLAGS = ("prune", "criterion", "gamma", "epochs")


def compress(run, fp32):
    s = run.s
    calib = run.calibration()
    model = C.quantize(fp32, s, calib)
    masks = C.make_masks(model, "soft")
    hook = C.SoftPruneHook(masks, C.make_criterion(s), s.prune, calib)
    st = run.train("spq", model, s.epochs, s.lr, [hook])
    if st is None:  # no training epochs: prune once
        hook.on_epoch_end(type("S", (), {"model": model, "row": {}})())
    run.info["masked_test_acc"] = run.accuracy(model)
    return C.prune_physically(masks, model)
