"""PIC-PQ, physics-inspired criterion for pruning-quantization joint learning (seed 003).

1. Filter property FP per channel of every channel group (compress/prune/groups.py),
   min-max normalised within its group (so b_g shifts a layer against a unit spread):
   - `hrank` (default): the average rank of the channel's feature maps (H x W matrices,
     after ReLU, at every point where the group's channels are carried) over the
     calibration images;
   - `norm`: the L1 norm of the channel's filters (over the group's convs).
2. Importance = a_g x FP + b_g per group (Hooke's law: a_g the deformation scale, b_g
   the relative shift that makes scores comparable across layers), plus 1e-3 x the
   normalised filter norm: on small feature maps most channels have full rank, and
   the tie would otherwise be broken by layer order.
3. For given (a, b), channels are ranked globally and removed from the least important
   up while the BOPs (compress/recipes/bops.py, counted exactly as compress.metrics
   counts the final model) exceed the target. Each removal changes the layers' kept
   weight mass, hence their bit widths (4.), hence the BOPs: recomputed every step.
   Every group keeps at least one channel.
4. Bit widths of every inner layer's weights: b_l = upper - ceil(penalty / rho_l),
   rho_l = sum |W_l| over the kept filters and kept input channels / sum |W_l|, clamped
   to the widths the weight scheme supports and at most `upper`. Activations stay at
   `--abits`; the first conv and the last linear at `--edge-bits` (DESIGN.md).
5. (a, b) by a small evolutionary search: a population of `population` candidates
   (the first a = 1, b = 0: plain FP ranking; the others a = exp(N(0, 0.3)),
   b = N(0, 0.1)), each scored by the cross-entropy on the calibration images after
   `ft_steps` SGD steps of the physically pruned FP model; for `steps` generations the
   better half survives and the rest are mutated copies of it (a x exp(N(0, 0.2)),
   b + N(0, 0.05)).
6. The best candidate's channels are removed physically, the model is wrapped with the
   per-layer (mixed) qconfig, batch-norm statistics and alphas calibrated (`ptq`), then
   QAT for `epochs` at `qat_lr`.
"""
from __future__ import annotations

import copy
import math
import time

import torch
import torch.nn.functional as F

from compress.models.walk import layers, short
from compress.prune import remove_channels
from compress.prune.criteria import L1
from compress.prune.groups import module
from compress.quant.learned import allowed_bits
from compress.quant.wrap import LayerQ, wrap

from . import common as C
from .bops import BopsModel

NAME = "picpq"
DOC = "importance a_l x FP + b_l (HRank / norm), (a, b) by evolution, global BOPs-target ranking, b_l = upper - ceil(penalty/rho_l), QAT"
FLAGS = ("epochs", "qat_lr", "bops_target", "fp", "population", "steps", "penalty", "upper_bits", "ft_steps")

FP_CHOICES = ("hrank", "norm")
TIE = 1e-3   # weight of the normalised filter norm that breaks ties between equal FP values


# ------------------------------------------------------------------ filter property

@torch.no_grad()
def hrank(model, plan, x, batch=128) -> dict:
    """{group: [C] average rank of each channel's feature maps over the images in x}."""
    sums = {g.name: torch.zeros(g.size, dtype=torch.float64) for g in plan}
    counts = {g.name: 0 for g in plan}
    hooks = []
    for g in plan:
        for p in g.points:
            def hook(mod, inp, out, name=g.name):
                if out.dim() == 4:
                    r = torch.linalg.matrix_rank(out.detach().float())     # [N, C]
                else:
                    r = (out.detach() != 0).float()
                sums[name] += r.double().sum(0)
                counts[name] += r.shape[0]
            hooks.append(module(model, p).register_forward_hook(hook))
    was = model.training
    model.eval()
    try:
        for i in range(0, len(x), batch):
            model(x[i:i + batch])
    finally:
        for h in hooks:
            h.remove()
        model.train(was)
    return {k: (sums[k] / max(counts[k], 1)).float() for k in sums}


def filter_property(model, plan, x, kind: str) -> dict:
    if kind == "hrank":
        fp = hrank(model, plan, x)
    elif kind == "norm":
        fp = {g.name: L1().scores(model, g) for g in plan}
    else:
        raise ValueError(f"unknown filter property {kind!r}: choose one of {FP_CHOICES}")
    out = {}
    for k, v in fp.items():   # min-max per group: every layer's FP spans [0, 1]
        span = float(v.max() - v.min())
        out[k] = (v - v.min()) / span if span > 0 else torch.ones_like(v)
    return out


# ------------------------------------------------------------------ bit widths

def pic_bits(rho: float, upper: int, penalty: float, allowed) -> int:
    """b = upper - ceil(penalty / rho), moved into the allowed widths (at most upper)."""
    b = upper - math.ceil(penalty / max(rho, 1e-12) - 1e-9)
    ok = [a for a in allowed if a <= upper] or [min(allowed)]
    return min(max(b, ok[0]), ok[-1]) if b not in ok else b


class Planner:
    """Everything needed to turn (a, b) into keeps, bit widths and BOPs on one FP model."""

    def __init__(self, model, s, fp: dict, upper: int, penalty: float):
        self.bm = BopsModel(model)
        self.plan = self.bm.plan
        self.fp = fp
        # ties (HRank on small maps: most channels have full rank) broken by filter norm
        norm = filter_property(model, self.plan, None, "norm")
        self.tie = {k: TIE * v for k, v in norm.items()}
        self.upper, self.penalty = upper, penalty
        self.wscheme = s.quant
        self.ascheme = "apot" if s.quant == "apot" else "uniform"
        self.allowed = allowed_bits(self.wscheme, True)
        self.abits, self.edge_bits = s.abits, s.edge_bits
        names = self.bm.names()
        self.edges = {names[0], names[-1]}
        self.mass = {}   # layer -> [cout, cin] |W| summed over the kernel
        for path, mod, _ in layers(model):
            w = mod.weight.detach().abs()
            self.mass[short(path)] = w.flatten(2).sum(2) if w.dim() == 4 else w
        self.terms = {t.name: t for t in self.bm.terms}

    def rho(self, name, keeps) -> float:
        t, m = self.terms[name], self.mass[name]
        if t.out_group:
            m = m[keeps[t.out_group]]
        if t.in_group:
            m = m[:, keeps[t.in_group].repeat_interleave(t.in_per)]
        return float(m.sum() / self.mass[name].sum())

    def bits(self, keeps) -> tuple[dict, dict]:
        wb, ab = {}, {}
        for n in self.terms:
            if n in self.edges:
                wb[n], ab[n] = self.edge_bits, self.edge_bits
            else:
                wb[n] = pic_bits(self.rho(n, keeps), self.upper, self.penalty, self.allowed)
                ab[n] = self.abits
        return wb, ab

    def bops(self, keeps) -> float:
        wb, ab = self.bits(keeps)
        return self.bm({k: int(v.sum()) for k, v in keeps.items()}, wb, ab)

    def select(self, a: dict, b: dict, target: float) -> dict:
        """Keeps removing the globally least important channels until BOPs <= target."""
        keeps = {g.name: torch.ones(g.size, dtype=torch.bool) for g in self.plan}
        order = []
        for g in self.plan:
            imp = a[g.name] * self.fp[g.name] + b[g.name] + self.tie[g.name]
            order += [(float(v), g.name, i) for i, v in enumerate(imp)]
        order.sort()
        cur = self.bops(keeps)
        for _, g, i in order:
            if cur <= target:
                break
            if int(keeps[g].sum()) <= 1:
                continue
            keeps[g][i] = False
            cur = self.bops(keeps)
        return keeps

    def qconfig(self, model, keeps) -> dict:
        wb, ab = self.bits(keeps)
        cfg = {}
        for path, mod, _ in layers(model):
            n = short(path)
            if n in self.edges:
                cfg[n] = LayerQ("uniform", self.edge_bits, "uniform", self.edge_bits, False)
            else:
                cfg[n] = LayerQ(self.wscheme, wb[n], self.ascheme, ab[n],
                                self.wscheme != "uniform" and isinstance(mod, torch.nn.Conv2d))
        return cfg


# ------------------------------------------------------------------ evolutionary search

def score(run, fp32, keeps, steps, lr, calib, seed) -> float:
    """Cross-entropy on the calibration images after `steps` SGD steps of the pruned FP model."""
    m = remove_channels(copy.deepcopy(fp32), keeps)
    m.train()
    opt = torch.optim.SGD(m.parameters(), lr=lr, momentum=0.9, weight_decay=run.s.weight_decay)
    torch.manual_seed(seed)
    done = 0
    run.data.train.set_epoch(1000 + seed)
    while done < steps:
        for xb, yb in run.data.train:
            opt.zero_grad(set_to_none=True)
            F.cross_entropy(m(xb), yb).backward()
            opt.step()
            done += 1
            if done >= steps:
                break
    m.eval()
    x, y = calib
    with torch.no_grad():
        return float(F.cross_entropy(m(x), y))


def evolve(run, fp32, planner: Planner, target, population, steps, ft_steps, lr, calib, seed=0):
    gen = torch.Generator().manual_seed(seed)
    names = [g.name for g in planner.plan]

    def randn():
        return float(torch.randn(1, generator=gen))

    def candidate(a, b):
        return {"a": a, "b": b, "loss": None}

    pop = [candidate({n: 1.0 for n in names}, {n: 0.0 for n in names})]
    while len(pop) < population:
        pop.append(candidate({n: math.exp(0.3 * randn()) for n in names}, {n: 0.1 * randn() for n in names}))
    history = []
    evals = 0

    def evaluate(c):
        nonlocal evals
        if c["loss"] is None:
            keeps = planner.select(c["a"], c["b"], target)
            c["kept"] = {k: int(v.sum()) for k, v in keeps.items()}
            c["loss"] = score(run, fp32, keeps, ft_steps, lr, calib, seed + evals)
            evals += 1

    for gen_i in range(steps + 1):
        for c in pop:
            evaluate(c)
        pop.sort(key=lambda c: c["loss"])
        history.append({"generation": gen_i, "best_loss": pop[0]["loss"],
                        "losses": [round(c["loss"], 4) for c in pop]})
        if gen_i == steps:
            break
        elite = pop[:max(1, (len(pop) + 1) // 2)]
        children = []
        for j in range(len(pop) - len(elite)):
            p = elite[j % len(elite)]
            children.append(candidate({n: p["a"][n] * math.exp(0.2 * randn()) for n in names},
                                      {n: p["b"][n] + 0.05 * randn() for n in names}))
        pop = elite + children
    return pop[0], history, evals


# ------------------------------------------------------------------ post-training start

@torch.no_grad()
def ptq(model, calib):
    """Calibrate a freshly wrapped model. Standardised (APoT / PoT) weights change every
    conv's output scale, so the batch-norm statistics are re-estimated first (activations
    unquantized), then the clipping values (MSE) on activations that now have the right
    scale, then the statistics once more with every quantizer on."""
    from compress.quant.fake import QuantAct
    acts = [m for m in model.modules() if isinstance(m, QuantAct)]
    for m in acts:
        m.enabled = False
    C.recalibrate_bn(model, calib)
    for m in acts:
        m.enabled = True
    C.calibrate(model, calib)
    C.recalibrate_bn(model, calib)
    return model


# ------------------------------------------------------------------ the recipe

def compress(run, fp32):
    s = run.s
    x = s.extra
    run.info["recipe_flags"] = dict(x)
    t = time.perf_counter()
    calib_x = run.calibration()
    calib_y = run.data.train.y[:len(calib_x)]
    kind = x.get("fp", "hrank")
    planner_fp = filter_property(fp32, BopsModel(fp32).plan, calib_x, kind)
    upper = int(x.get("upper_bits", 5))
    penalty = float(x.get("penalty", 0.5))
    planner = Planner(fp32, s, planner_fp, upper, penalty)
    target_red = float(x.get("bops_target", 120.0))
    target = planner.bm.dense_bops / target_red
    best, hist, evals = evolve(run, fp32, planner, target, int(x.get("population", 6)), int(x.get("steps", 2)),
                               int(x.get("ft_steps", 10)), s.qat_lr, (calib_x, calib_y), seed=s.seed)
    keeps = planner.select(best["a"], best["b"], target)
    predicted = planner.bops(keeps)
    run.info.update({"bops_target": target_red, "pic_fp": kind, "pic_upper": upper, "pic_penalty": penalty,
                     "pic_search": hist, "pic_evaluations": evals,
                     "pic_best": {"a": best["a"], "b": best["b"], "loss": best["loss"]},
                     "bops_predicted": float(predicted),
                     "pic_rho": {n: round(planner.rho(n, keeps), 4) for n in planner.terms}})
    run.note("pic_search", t, evaluations=evals, best_loss=best["loss"])
    run.log(f"[picpq] search: {evals} candidates, best loss {best['loss']:.4f}, "
            f"kept {sum(int(v.sum()) for v in keeps.values())} channels, x{planner.bm.reduction(predicted):.1f} BOPs")
    t = time.perf_counter()
    qcfg = planner.qconfig(fp32, keeps)
    pruned = remove_channels(fp32, keeps)
    wrap(pruned, qcfg)
    ptq(pruned, calib_x)
    run.info["qconfig"] = {k: v.to_json() for k, v in qcfg.items()}
    run.info["ptq_test_acc"] = run.accuracy(pruned)
    run.note("prune_quantize", t, test_acc=run.info["ptq_test_acc"])
    pruned.train()
    run.train("qat", pruned, s.epochs, s.qat_lr)
    return pruned
