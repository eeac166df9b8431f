"""Baselines: prune-only and quant-only (each still ends physically pruned and quantized).

- prune-only: PPQ's pruning phase (incremental hard pruning with FP training, physical
  removal), then post-training quantization only (alphas calibrated, no QAT): what
  pruning buys without quantization-aware training.
- quant-only: no pruning (`--prune` must be 0), QAT from the FP32 model at `qat_lr`.
"""
import time

from . import common as C
from . import ppq


class PruneOnly:
    NAME = "prune-only"
    DOC = "incremental hard pruning with FP training, physical removal, post-training quantization"
    FLAGS = ("prune", "criterion", "gamma", "prune_epochs", "stages")

    @staticmethod
    def compress(run, fp32):
        pruned = ppq.prune_phase(run, fp32)
        t = time.perf_counter()
        C.quantize(pruned, run.s, run.calibration())
        C.recalibrate_bn(pruned, run.calibration())
        run.note("ptq", t)
        return pruned


class QuantOnly:
    NAME = "quant-only"
    DOC = "no pruning: QAT of the FP32 model"
    FLAGS = ("epochs", "qat_lr")

    @staticmethod
    def compress(run, fp32):
        s = run.s
        model = C.quantize(fp32, s, run.calibration())
        run.info["ptq_test_acc"] = run.accuracy(model)
        run.train("qat", model, s.epochs, s.qat_lr)
        return model
