"""Training-step time of ResNet-20 (batch 128, random data): FP32 vs APoT W4/A4 fake-quant.

Both models are built, warmed up and then timed in alternation in the same process,
so machine load affects both alike; the figure is the ratio of medians.
Target (issue 2): fake-quant / FP32 <= 1.3.
"""
from __future__ import annotations

import statistics
import time

import torch
import torch.nn.functional as F

TARGET = 1.3


def _step_fn(model, x, y):
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9, weight_decay=5e-4)

    def step():
        opt.zero_grad(set_to_none=True)
        loss = F.cross_entropy(model(x), y)
        loss.backward()
        opt.step()
    return step


def _measure(threads: int, warmup: int, rounds: int) -> dict:
    from compress.models import build_model
    from compress.quant.wrap import default_qconfig, wrap

    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        torch.manual_seed(0)
        batch = 128
        x = torch.randn(batch, 3, 32, 32)
        y = torch.randint(0, 10, (batch,))
        fp = build_model("resnet20")
        q = build_model("resnet20")
        wrap(q, default_qconfig(q, "apot", 4, 4, 8))
        fp.train()
        q.train()
        steps = {"fp32": _step_fn(fp, x, y), "apot_w4a4": _step_fn(q, x, y)}
        for _ in range(warmup):
            for f in steps.values():
                f()
        times = {k: [] for k in steps}
        for _ in range(rounds):  # alternate, so a load spike hits both
            for k, f in steps.items():
                t0 = time.perf_counter()
                f()
                times[k].append(time.perf_counter() - t0)
    finally:
        torch.set_num_threads(before)
    med = {k: statistics.median(v) for k, v in times.items()}
    ratio = med["apot_w4a4"] / med["fp32"]
    return {"threads": threads, "rounds": rounds,
            "fp32_step_s": round(med["fp32"], 4), "apot_w4a4_step_s": round(med["apot_w4a4"], 4),
            "ratio": round(ratio, 3), "all_s": {k: [round(t, 4) for t in v] for k, v in times.items()}}


def run(quick: bool = False) -> dict:
    """At torch's default thread count (the headline figure) and on one thread: on a
    loaded machine the two-thread figure mostly measures waiting for the other thread."""
    warmup, rounds = (2, 5) if quick else (3, 10)
    default = _measure(torch.get_num_threads(), warmup, rounds)
    single = _measure(1, warmup, rounds)
    return {
        "what": "ResNet-20 training step (forward, backward, SGD), batch 128, random data",
        "threads": default["threads"],
        "fp32_step_s": default["fp32_step_s"],
        "apot_w4a4_step_s": default["apot_w4a4_step_s"],
        "ratio": default["ratio"],
        "ratio_1_thread": single["ratio"],
        "target_ratio": TARGET,
        "meets_target": default["ratio"] <= TARGET,
        "default_threads": default,
        "one_thread": single,
    }
