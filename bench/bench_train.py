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


def run(quick: bool = False) -> dict:
    from compress.models import build_model
    from compress.quant.wrap import default_qconfig, wrap

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
    warmup, rounds = (2, 5) if quick else (3, 15)
    for _ in range(warmup):
        for f in steps.values():
            f()
    times = {k: [] for k in steps}
    for _ in range(rounds):  # alternate, so a load spike hits both
        for k, f in steps.items():
            t0 = time.perf_counter()
            f()
            times[k].append(time.perf_counter() - t0)
    med = {k: statistics.median(v) for k, v in times.items()}
    ratio = med["apot_w4a4"] / med["fp32"]
    return {
        "what": "ResNet-20 training step (forward, backward, SGD), batch 128, random data",
        "threads": torch.get_num_threads(),
        "rounds": rounds,
        "fp32_step_s": round(med["fp32"], 4),
        "apot_w4a4_step_s": round(med["apot_w4a4"], 4),
        "ratio": round(ratio, 3),
        "target_ratio": TARGET,
        "meets_target": ratio <= TARGET,
        "all_s": {k: [round(t, 4) for t in v] for k, v in times.items()},
    }
