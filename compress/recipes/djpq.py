"""DJPQ, differentiable joint pruning and quantization (seed 002; shared/PAPERS.md).

One training phase minimises one differentiable loss

    cross-entropy + lambda x relu(BOPs / T(t) - 1) + beta x KL(gates)

over the weights, per-channel VIB gates (compress/prune/gates.py) and per-layer
learned quantizers (compress/quant/learned.py: learned step and range, hence a learned
bit width) for the weights of every inner layer and for every activation slot that
feeds one. BOPs (compress/recipes/bops.py) is computed from the gates' expected kept
channels and the learned bit widths, so its gradient reaches both. The first conv and
the last linear stay W`edge_bits`/A`edge_bits` uniform (DESIGN.md's convention; the
IR needs a signed uniform input).

- `--quant pot|apot|uniform`: the weight level family at every width (PoT / APoT keep
  the result shift-add); activations are APoT for apot, uniform otherwise.
- `--pot-bits`: widths restricted to {2, 4, 8}, each moved to the nearest width the
  scheme supports (APoT weights: {3, 4, 7}; APoT activations: {2, 4, 6}).
- `--bops-target R` (a reduction factor vs dense FP32) drives the BOPs term by a
  schedule (BopsHook): a hinge lambda x relu(BOPs / T(t) - 1) on a target T(t) that
  moves from the starting BOPs to the final target over the first 60% of the steps;
  without a target the term is lambda x BOPs / BOPs_start, a fixed trade-off (`--lam`).

At the end: gates below threshold are removed physically (compress.prune.removal),
kept gates folded into batch norm; if the hard BOPs still exceed the target, the
channels with the largest log alpha go first until they do not (recorded as
`forced_prunes`); the widths are frozen into a per-layer qconfig of ordinary
quantizers (the model is an ordinary wrapped zoo model, so `shiftq export` lowers it),
their clipping values taken from the learned ranges; then a short QAT fine-tune.
"""
from __future__ import annotations

import time

import torch
import torch.nn.functional as F

from compress.models import build_from_config
from compress.models.walk import layers, short
from compress.prune import remove_channels
from compress.prune.gates import VIBGates
from compress.quant.fake import QuantAct, Quantizer
from compress.quant.learned import LearnedActQuant, LearnedWeightQuant, allowed_bits, nearest_supported
from compress.quant.wrap import LayerQ, wrap
from compress.train import Hook, fit

from . import common as C
from .bops import BopsModel
from .picpq import ptq

NAME = "djpq"
DOC = "one loss: task + lambda x BOPs(VIB gates, learned bit widths); gates off -> removed, widths frozen, QAT"
FLAGS = ("epochs", "ft_epochs", "qat_lr", "bops_target", "pot_bits", "lam", "gate_threshold", "aux_lr")

BETA = 1e-3          # weight of the VIB information term
TAU = 1.0            # temperature of the expected-kept surrogate
MARGIN = 1.05        # train towards a target this much tighter than asked
INIT_BITS = 6.0


def _schemes(quant):
    return quant, ("apot" if quant == "apot" else "uniform")


def bit_choices(quant: str, pot_bits: bool):
    wscheme, ascheme = _schemes(quant)
    if pot_bits:
        return nearest_supported(wscheme, True, (2, 4, 8)), nearest_supported(ascheme, False, (2, 4, 8))
    cap = lambda bs: [b for b in bs if b <= 8]  # noqa: E731
    return cap(allowed_bits(wscheme, True)), cap(allowed_bits(ascheme, False))


class Learner:
    """The DJPQ model state: gates, learned quantizers and the BOPs model of one model."""

    def __init__(self, model, quant, pot_bits, edge_bits=8, threshold=0.0):
        self.model = model
        self.bm = BopsModel(model)
        self.wscheme, self.ascheme = _schemes(quant)
        self.wchoices, self.achoices = bit_choices(quant, pot_bits)
        self.edge_bits = edge_bits
        names = self.bm.names()
        self.edges = {names[0], names[-1]}
        self.wq, self.aq = {}, {}     # layer name -> quantizer module (learned or fixed)
        slots = {}
        for path, mod, slot in layers(model):
            name = short(path)
            if name not in self.edges:
                old = mod.wq
                mod.wq = LearnedWeightQuant(self.wscheme, self.wchoices, INIT_BITS,
                                            alpha=float(old.alpha.detach().abs()),
                                            standardize=old.standardize)
                if slot not in slots:
                    old_a = model.get_submodule(slot)
                    new_a = LearnedActQuant(self.ascheme, self.achoices, INIT_BITS,
                                            alpha=float(old_a.alpha.detach().abs()))
                    parent, _, attr = slot.rpartition(".")
                    setattr(model.get_submodule(parent), attr, new_a)
                    slots[slot] = new_a
            self.wq[name] = mod.wq
            self.aq[name] = model.get_submodule(slot)
        self.gates = VIBGates(model, self.bm.plan, threshold)
        model.add_module("djpq_gates", self.gates)

    def _bits(self, q, soft):
        if isinstance(q, (LearnedWeightQuant, LearnedActQuant)):
            return q.bits() if soft else q.frozen_bits()
        return q.bits

    def bops(self, soft=True, kept=None):
        if kept is None:
            kept = self.gates.expected_kept(TAU) if soft else self.gates.hard_kept()
        wb = {n: self._bits(q, soft) for n, q in self.wq.items()}
        ab = {n: self._bits(q, soft) for n, q in self.aq.items()}
        return self.bm(kept, wb, ab)

    def qconfig(self) -> dict:
        cfg = {}
        for path, mod, _ in layers(self.model):
            n = short(path)
            if n in self.edges:
                cfg[n] = LayerQ("uniform", self.edge_bits, "uniform", self.edge_bits, False)
            else:
                cfg[n] = LayerQ(self.wscheme, self.wq[n].frozen_bits(), self.ascheme,
                                self.aq[n].frozen_bits(), bool(self.wq[n].standardize))
        return cfg

    def aux_parameters(self):
        ids = set()
        out = []
        for m in list(self.wq.values()) + list(self.aq.values()) + [self.gates]:
            for p in m.parameters():
                if id(p) not in ids:
                    ids.add(id(p))
                    out.append(p)
        return out


class BopsHook(Hook):
    """The BOPs term of the loss, and the schedule that drives it.

    The penalty is lambda x relu(BOPs / T(t) - 1), a hinge on a target that moves
    geometrically from the model's BOPs at the start to the final target over the
    first `ramp` of the training steps, T(t) = B0 (B_target / B0)^min(1, t / ramp): gates and
    widths follow the schedule instead of collapsing at once, and once the model is
    under the current target only the task loss (and the VIB term) acts. Without a
    target, the penalty is lambda x BOPs / B0 throughout (a fixed trade-off)."""
    name = "djpq"

    def __init__(self, learner: Learner, target_bops, lam, total_steps, ramp=0.6):
        self.L, self.target, self.lam = learner, target_bops, float(lam)
        self.total, self.ramp = max(int(total_steps), 1), ramp
        with torch.no_grad():
            self.b0 = float(learner.bops(soft=True))

    def current_target(self, step):
        if self.target is None:
            return self.b0
        f = min(1.0, step / max(self.ramp * self.total, 1.0))
        return self.b0 * (self.target / self.b0) ** f

    def loss(self, model, x, y, s):
        ce = F.cross_entropy(model(x), y)
        ratio = self.L.bops(soft=True) / self.current_target(s.step)
        pen = ratio if self.target is None else F.relu(ratio - 1)
        return ce + self.lam * pen + BETA * self.L.gates.kl()

    def on_eval_end(self, s):
        with torch.no_grad():
            hard = float(self.L.bops(soft=False))
            soft = float(self.L.bops(soft=True))
        s.row["bops_target_now"] = self.L.bm.reduction(self.current_target(s.step))
        s.row["bops_reduction_soft"] = self.L.bm.reduction(soft)
        s.row["bops_reduction_hard"] = self.L.bm.reduction(hard)
        s.row["kept"] = sum(self.L.gates.hard_kept().values())
        s.row["wbits"] = " ".join(str(self.L._bits(q, False)) for q in self.L.wq.values())
        s.row["abits"] = " ".join(str(self.L._bits(q, False)) for q in self.L.aq.values())


def train_phase(run, phase, model, epochs, cfg, optimizer, hook):
    """run.train with a custom loss and optimizer (the shared loop, own subdirectory)."""
    t = time.perf_counter()
    st = fit(model, run.data, cfg, out_dir=run.out / phase, resume=run.resume, hooks=[hook],
             optimizer=optimizer, loss_fn=hook.loss, meta={"recipe": run.s.recipe, "phase": phase})
    hist = st.history
    run.phases.append({"phase": phase, "epochs": epochs, "lr": cfg.lr, "time_s": round(time.perf_counter() - t, 2),
                       "final_test_acc": hist[-1]["test_acc"] if hist else None,
                       "final_bops_reduction": hist[-1].get("bops_reduction_hard") if hist else None})
    return st


@torch.no_grad()
def project(learner: Learner, keeps: dict, target_bops: float):
    """Prune further (largest log alpha first) until the hard BOPs meet the target."""
    wb = {n: learner._bits(q, False) for n, q in learner.wq.items()}
    ab = {n: learner._bits(q, False) for n, q in learner.aq.items()}
    keeps = {k: v.clone() for k, v in keeps.items()}
    forced = 0

    def cost():
        return learner.bm({k: int(v.sum()) for k, v in keeps.items()}, wb, ab)

    while cost() > target_bops:
        best = None
        for g, k in keeps.items():
            if int(k.sum()) <= 1:
                continue
            la = learner.gates.log_alpha(g).clone()
            la[~k] = -float("inf")
            i = int(la.argmax())
            if best is None or la[i] > best[0]:
                best = (float(la[i]), g, i)
        if best is None:
            break
        keeps[best[1]][best[2]] = False
        forced += 1
    return keeps, forced, cost()


def freeze(learner: Learner, keeps: dict):
    """The learned model as an ordinary wrapped zoo model, physically pruned."""
    model = learner.model
    qcfg = learner.qconfig()
    learner.gates.fold(model)
    dense = build_from_config(model.config)
    sd = model.state_dict()
    dense.load_state_dict({k: sd[k] for k in dense.state_dict()})
    wrap(dense, qcfg)
    with torch.no_grad():
        for (path, mod, slot), (_, old, _) in zip(layers(dense), layers(model)):
            mod.wq.alpha.copy_(old.wq.alpha.detach().abs())
        for n, m in dense.named_modules():
            if isinstance(m, QuantAct):
                old = model.get_submodule(n)
                if isinstance(old, Quantizer) or hasattr(old, "alpha"):
                    m.alpha.copy_(old.alpha.detach().abs())
    return remove_channels(dense, keeps), qcfg


def compress(run, fp32):
    s = run.s
    x = s.extra
    run.info["recipe_flags"] = dict(x)
    calib = run.calibration()
    target_red = x.get("bops_target")
    lam0 = x.get("lam", 5.0)
    model = ptq(C.quantize(fp32, s), calib)     # W4/A4, edges W8/A8: BN and alphas calibrated
    L = Learner(model, s.quant, bool(x.get("pot_bits")), s.edge_bits, x.get("gate_threshold", 0.0))
    target = L.bm.dense_bops / target_red if target_red else None
    steps = s.epochs * len(run.data.train)
    hook = BopsHook(L, (target / MARGIN) if target else None, lam0, steps, x.get("ramp", 0.6))
    run.info["djpq_bit_choices"] = {"weights": L.wchoices, "activations": L.achoices}
    run.info["bops_target"] = target_red

    cfg = s.train_config(s.epochs, x.get("aux_lr", 0.01))
    aux = L.aux_parameters()
    aux_ids = {id(p) for p in aux}
    weights = [p for p in model.parameters() if id(p) not in aux_ids]
    opt = torch.optim.Adam([{"params": weights, "lr": x.get("w_lr", 5e-4)},
                            {"params": aux, "lr": x.get("aux_lr", 0.01)}])
    if s.epochs > 0:
        train_phase(run, "djpq", model, s.epochs, cfg, opt, hook)
    model.eval()
    run.info["djpq_learned_test_acc"] = run.accuracy(model)
    run.info["djpq_lambda"] = hook.lam
    run.info["djpq_b0_reduction"] = L.bm.reduction(hook.b0)
    run.info["djpq_gates"] = L.gates.summary()
    run.info["djpq_learned_bits"] = {n: round(float(q.bits().detach()), 3) for n, q in L.wq.items()
                                     if isinstance(q, LearnedWeightQuant)}

    t = time.perf_counter()
    keeps = L.gates.keeps()
    if target is not None:
        keeps, forced, predicted = project(L, keeps, target)
    else:
        forced, predicted = 0, L.bm({k: int(v.sum()) for k, v in keeps.items()},
                                    {n: L._bits(q, False) for n, q in L.wq.items()},
                                    {n: L._bits(q, False) for n, q in L.aq.items()})
    run.info["forced_prunes"] = forced
    run.info["bops_predicted"] = float(predicted)
    pruned, qcfg = freeze(L, keeps)
    run.info["qconfig"] = {k: v.to_json() for k, v in qcfg.items()}
    acc_learned = run.accuracy(pruned)
    C.recalibrate_bn(pruned, calib)
    run.info["frozen_test_acc"] = run.accuracy(pruned)
    run.info["frozen_no_bn_test_acc"] = acc_learned
    run.note("freeze", t, forced_prunes=forced)
    run.log(f"[djpq] frozen: x{L.bm.reduction(predicted):.1f} BOPs, test accuracy {run.info['frozen_test_acc']:.2f}%"
            f" (before BN re-estimation {acc_learned:.2f}%), {forced} channels pruned to meet the target")
    pruned.train()
    run.train("finetune", pruned, s.ft_epochs, s.qat_lr)
    return pruned
