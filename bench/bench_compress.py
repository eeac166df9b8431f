"""Compression recipes: time per epoch of each recipe's training phase on digits, and the
cost of the GM / RBF pruning criteria on ResNet-20.

Part 1 (digitnet on digits, batch 64): one epoch of each phase on the shared loop, timed
in alternation with a plain FP32 epoch (the reference) in the same process, so machine
load affects all alike; figures are medians and ratios to the FP32 epoch.
- fp32:         plain FP32 epoch
- ppq_prune:    FP32 epoch with hard masks and a GM pruning stage at its end (PPQ phase 1,
                also prune-only)
- qat:          APoT W4/A4 QAT epoch of the pruned model (PPQ phase 2, quant-only unpruned)
- spq:          APoT QAT epoch with soft masks and GM re-selection at its end
- jptp_post:    JPTP's post-training work: RBF pruning + layer-wise progressive PoT
                quantization (not an epoch: the whole step), plus its fine-tune epoch

Part 2 (ResNet-20, CIFAR-sized random data): time to score every channel group once by
GM (weights only) and by RBF (feature maps of a 128-image calibration batch, collection
included), against one training step at batch 128; the per-epoch overhead is the
criterion time over 391 steps (one CIFAR-10 epoch), since SPQ re-scores once per epoch.
"""
from __future__ import annotations

import statistics
import time

import torch


def _median_time(fn, repeats):
    ts = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        ts.append(time.perf_counter() - t)
    return statistics.median(ts), ts


def _digits_part(quick):
    from compress.data import get_data
    from compress.models import build_model
    from compress.prune import build_plan, remove_channels
    from compress.recipes import common as C
    from compress.recipes.jptp import progressive_quantize
    from compress.train import TrainConfig, fit

    torch.manual_seed(0)
    base = build_model("digitnet")
    data = get_data("digits", base)
    calib = data.calibration(512)
    s = C.Settings(recipe="bench", quiet=True)
    cfg = TrainConfig(epochs=1, lr=0.01, schedule="constant", quiet=True)

    def fresh():
        m = build_model("digitnet")
        m.load_state_dict(base.state_dict())
        return m

    def epoch(model, hooks=()):
        fit(model, data, cfg, hooks=list(hooks))

    def fp32():
        epoch(fresh())

    def ppq_prune():
        m = fresh()
        masks = C.make_masks(m, "hard")
        epoch(m, [C.HardPruneHook(masks, C.make_criterion(s), 0.3, 1, 1, calib)])

    plan = build_plan(base)
    keeps = C.criterion_keeps(base, plan, 0.3, C.make_criterion(s))
    pruned_state = remove_channels(base, keeps, plan)

    def qat():
        m = remove_channels(pruned_state, {g.name: torch.ones(g.size, dtype=torch.bool)
                                           for g in build_plan(pruned_state)})
        C.quantize(m, s, calib)
        t = time.perf_counter()
        epoch(m)
        return time.perf_counter() - t

    def spq():
        m = C.quantize(fresh(), s, calib)
        masks = C.make_masks(m, "soft")
        t = time.perf_counter()
        epoch(m, [C.SoftPruneHook(masks, C.make_criterion(s), 0.3, calib)])
        return time.perf_counter() - t

    def jptp_post():
        m = fresh()
        p = build_plan(m)
        ks = C.criterion_keeps(m, p, 0.3, C.get_criterion("rbf"), calib)
        pr = remove_channels(m, ks, p)
        C.recalibrate_bn(pr, calib)
        C.quantize(pr, C.Settings(recipe="bench", quant="pot"))
        progressive_quantize(pr, calib)
        return pr

    repeats = 2 if quick else 5
    fp32()  # warm-up
    rows = {"fp32": [], "ppq_prune": [], "qat": [], "spq": [], "jptp_post": [], "jptp_ft": []}
    for _ in range(repeats):
        t = time.perf_counter(); fp32(); rows["fp32"].append(time.perf_counter() - t)
        t = time.perf_counter(); ppq_prune(); rows["ppq_prune"].append(time.perf_counter() - t)
        rows["qat"].append(qat())
        rows["spq"].append(spq())
        t = time.perf_counter(); pr = jptp_post(); rows["jptp_post"].append(time.perf_counter() - t)
        t = time.perf_counter(); epoch(pr); rows["jptp_ft"].append(time.perf_counter() - t)
    med = {k: statistics.median(v) for k, v in rows.items()}
    return {
        "batches_per_epoch": len(data.train),
        "epoch_s": {k: round(v, 3) for k, v in med.items()},
        "ratio_to_fp32_epoch": {k: round(v / med["fp32"], 2) for k, v in med.items()},
        "note": "jptp_post is JPTP's whole post-training step (RBF pruning + progressive PoT), "
                "not an epoch; qat and spq exclude the one-off calibration",
    }


def _criteria_part(quick):
    import torch.nn.functional as F

    from compress.models import build_model
    from compress.prune import build_plan, collect_features, get_criterion

    torch.manual_seed(0)
    m = build_model("resnet20")
    plan = build_plan(m)
    calib = torch.randn(128, 3, 32, 32)
    x, y = torch.randn(128, 3, 32, 32), torch.randint(0, 10, (128,))
    opt = torch.optim.SGD(m.parameters(), lr=0.01, momentum=0.9)

    def step():
        opt.zero_grad()
        F.cross_entropy(m(x), y).backward()
        opt.step()

    gm, l1, rbf = get_criterion("gm"), get_criterion("l1"), get_criterion("rbf")

    def score_gm():
        for g in plan:
            gm.scores(m, g)

    def score_l1():
        for g in plan:
            l1.scores(m, g)

    def score_rbf():
        feats = collect_features(m, plan, [calib])
        for g in plan:
            rbf.scores(m, g, feats)

    repeats = 3 if quick else 7
    step()
    t_step, _ = _median_time(step, repeats)
    t_gm, _ = _median_time(score_gm, repeats)
    t_l1, _ = _median_time(score_l1, repeats)
    t_rbf, _ = _median_time(score_rbf, repeats)
    steps_per_epoch = 391
    return {
        "groups": len(plan),
        "train_step_s": round(t_step, 4),
        "gm_s": round(t_gm, 4), "l1_s": round(t_l1, 4), "rbf_s": round(t_rbf, 4),
        "gm_in_train_steps": round(t_gm / t_step, 3),
        "rbf_in_train_steps": round(t_rbf / t_step, 3),
        "gm_overhead_per_cifar_epoch_pct": round(100 * t_gm / (steps_per_epoch * t_step), 3),
        "rbf_overhead_per_cifar_epoch_pct": round(100 * t_rbf / (steps_per_epoch * t_step), 3),
    }


def run(quick: bool = False) -> dict:
    return {"digits_epoch": _digits_part(quick), "resnet20_criteria": _criteria_part(quick)}


if __name__ == "__main__":
    import json
    import sys
    print(json.dumps(run("--quick" in sys.argv), indent=2))
