"""What every recipe shares: the run directory and its phases, the FP32 starting point,
quantizer calibration, pruning hooks for the shared training loop, the final report.

A recipe is a sequence of *phases*. Each phase writes one product file atomically
(`fp32.pt`, `pruned.pt`, `compressed.pt`, ...) into the run directory; a training phase
runs `compress.train.fit` in its own subdirectory (per-epoch checkpoint, log.csv,
report.json there). On `--resume`, a phase whose product exists is skipped (its product
is loaded) and an unfinished training phase continues from its last epoch.
"""
from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch

from compress.checkpoint import load_model, save_checkpoint
from compress.models.walk import layers, short
from compress.prune import ChannelMasks, build_plan, collect_features, get_criterion, remove_channels
from compress.prune.criteria import select_keep
from compress.quant.fake import QuantAct, Quantizer, WeightQuant
from compress.train import Hook, TrainConfig, evaluate, fit
from shiftq.errors import UserError, atomic_path


# ------------------------------------------------------------------ settings

@dataclass
class Settings:
    """Everything a recipe reads; the CLI fills it (defaults per data set)."""
    recipe: str
    prune: float = 0.3
    quant: str = "apot"
    wbits: int = 4
    abits: int = 4
    edge_bits: int = 8
    criterion: str = "gm"
    fp_epochs: int = 30          # FP32 training when no --from is given
    epochs: int = 20             # main training: SPQ / QAT epochs (PPQ: m), quant-only QAT
    prune_epochs: int = 12       # PPQ / prune-only pruning phase (n)
    stages: int = 3              # PPQ / prune-only incremental stages (s)
    ft_epochs: int = 0           # JPTP / prune-only fine-tune
    lr: float = 0.1              # FP32 training, pruning phase, SPQ
    qat_lr: float = 0.01         # PPQ / quant-only QAT, JPTP / prune-only fine-tune
    momentum: float = 0.9
    weight_decay: float = 5e-4
    schedule: str = "plateau"
    factor: float = 0.9
    patience: int = 3
    calib: int = 512             # calibration images
    gamma: float | None = None   # RBF kernel width (None: median heuristic)
    seed: int = 0
    quiet: bool = False
    extra: dict = field(default_factory=dict)

    def train_config(self, epochs, lr) -> TrainConfig:
        return TrainConfig(epochs=epochs, lr=lr, momentum=self.momentum,
                           weight_decay=self.weight_decay, schedule=self.schedule,
                           factor=self.factor, patience=self.patience, seed=self.seed,
                           quiet=self.quiet)


# ------------------------------------------------------------------ run context

class Run:
    """The run directory, data, timings and what the report collects."""

    def __init__(self, out, data, settings: Settings, resume: bool, log=print):
        self.out = Path(out)
        self.data = data
        self.s = settings
        self.resume = resume
        self.log = log if not settings.quiet else (lambda *a, **k: None)
        self.t0 = time.perf_counter()
        self.phases: list[dict] = []
        self.info: dict = {}

    def product(self, name) -> Path:
        return self.out / name

    def done(self, name) -> bool:
        return self.resume and self.product(name).exists()

    def save(self, name, model, kind=None, meta=None):
        save_checkpoint(self.product(name), model, kind=kind, meta=meta or {})

    def load(self, name):
        return load_model(self.product(name))

    def train(self, phase: str, model, epochs: int, lr: float, hooks=(), meta=None):
        """One training phase on the shared loop, in its own subdirectory."""
        t = time.perf_counter()
        if epochs <= 0:
            return None
        cfg = self.s.train_config(epochs, lr)
        self.log(f"[{self.s.recipe}] {phase}: {epochs} epochs at lr {lr:g}")
        st = fit(model, self.data, cfg, out_dir=self.out / phase, resume=self.resume,
                 hooks=list(hooks), meta={"recipe": self.s.recipe, "phase": phase, **(meta or {})})
        hist = st.history
        self.phases.append({"phase": phase, "epochs": epochs, "lr": lr,
                            "time_s": round(time.perf_counter() - t, 2),
                            "epoch_time_s": round(sum(r["epoch_time"] for r in hist) / max(len(hist), 1), 3),
                            "final_test_acc": hist[-1]["test_acc"] if hist else None})
        return st

    def note(self, phase, t, **kw):
        self.phases.append({"phase": phase, "time_s": round(time.perf_counter() - t, 2), **kw})

    def accuracy(self, model) -> float:
        return float(evaluate(model, self.data.test)["acc"])

    def calibration(self) -> torch.Tensor:
        return self.data.calibration(self.s.calib)


# ------------------------------------------------------------------ FP32 start

def fp32_model(run: Run, model_name: str, build, from_ckpt: str | None):
    """The trained FP32 model every recipe starts from: `--from`, or trained here."""
    if from_ckpt:
        model = load_model(from_ckpt)
        if model.config["name"] != model_name:
            raise UserError(f"--from {from_ckpt} holds a {model.config['name']} model, not {model_name}")
        if getattr(model, "qconfig", None):
            raise UserError(f"--from {from_ckpt} is a quantized checkpoint: give an FP32 one")
        dense = build().config
        if model.config != dense:
            raise UserError(f"--from {from_ckpt} holds {model_name} with other settings or widths "
                            f"than this run's ({model.config['kwargs']})")
        model.train()
        run.info["from"] = str(from_ckpt)
        return model
    if run.done("fp32.pt"):
        return run.load("fp32.pt").train()
    torch.manual_seed(run.s.seed)
    model = build()
    run.train("fp32", model, run.s.fp_epochs, run.s.lr)
    run.save("fp32.pt", model, kind="fp32", meta={"recipe": run.s.recipe, "phase": "fp32"})
    return model


# ------------------------------------------------------------------ pruning helpers

def extend_keep(scores: torch.Tensor, keep: torch.Tensor, n_prune: int) -> torch.Tensor:
    """Keep mask removing `n_prune` channels in all: the already pruned stay pruned, the
    rest are chosen among the kept channels by lowest score."""
    n_more = n_prune - int((~keep).sum())
    if n_more <= 0:
        return keep.clone()
    idx = keep.nonzero().flatten()
    sub = select_keep(scores[idx], n_more)
    new = keep.clone()
    new[idx[~sub]] = False
    return new


def criterion_keeps(model, plan, ratio, criterion, calib=None, current=None, only_kept=False):
    """{group: keep} at `ratio` by `criterion`; with `only_kept`, extends `current`."""
    feats = collect_features(model, plan, [calib]) if criterion.needs_features else None
    keeps = {}
    for g in plan:
        scores = criterion.scores(model, g, feats)
        n = g.n_prune(ratio)
        if only_kept and current is not None:
            keeps[g.name] = extend_keep(scores, current[g.name], n)
        else:
            keeps[g.name] = select_keep(scores, n)
    return keeps


class HardPruneHook(Hook):
    """PPQ's pruning phase (seed 001 Alg. 2): after epochs 1, 1+k, 1+2k, ... (k = n // s)
    prune up to p x stage / s of every group by the criterion; pruned filters stay zero."""
    name = "hard_prune"

    def __init__(self, masks: ChannelMasks, criterion, ratio, stages, epochs, calib=None):
        self.masks, self.criterion, self.ratio = masks, criterion, ratio
        self.stages, self.epochs, self.calib = stages, epochs, calib
        self.stage = 0
        self.every = max(epochs // stages, 1)

    def due(self, epoch):
        return self.stage < self.stages and (epoch - 1) % self.every == 0

    def on_epoch_end(self, s):
        if not self.due(s.epoch):
            return
        self.stage += 1
        ratio = self.ratio * self.stage / self.stages
        keeps = criterion_keeps(s.model, self.masks.plan, ratio, self.criterion, self.calib,
                                current=self.masks.keep, only_kept=True)
        self.masks.set(keeps)
        s.row["prune_ratio"] = ratio
        s.row["kept"] = sum(self.masks.kept().values())

    def finish(self, model):
        """Reach the full ratio if the schedule had fewer epochs than stages."""
        if self.stage < self.stages:
            self.stage = self.stages
            keeps = criterion_keeps(model, self.masks.plan, self.ratio, self.criterion, self.calib,
                                    current=self.masks.keep, only_kept=True)
            self.masks.set(keeps)

    def state_dict(self):
        return {"stage": self.stage, "keep": self.masks.state_dict()}

    def load_state_dict(self, d):
        self.stage = int(d["stage"])
        self.masks.load_state_dict(d["keep"])


class SoftPruneHook(Hook):
    """SPQ (seed 001 Alg. 1): at every epoch's end, score all filters on their FP weights
    (masked ones included: they kept learning), mask the lowest p of every group
    (soft masks: see compress.prune.masks)."""
    name = "soft_prune"

    def __init__(self, masks: ChannelMasks, criterion, ratio, calib=None):
        self.masks, self.criterion, self.ratio, self.calib = masks, criterion, ratio, calib
        self.changed = 0

    def on_epoch_end(self, s):
        old = {k: v.clone() for k, v in self.masks.keep.items()}
        keeps = criterion_keeps(s.model, self.masks.plan, self.ratio, self.criterion, self.calib)
        self.masks.set(keeps)
        self.changed = sum(int((old[k] != keeps[k]).sum()) for k in keeps)
        s.row["mask_changes"] = self.changed

    def state_dict(self):
        return {"keep": self.masks.state_dict()}

    def load_state_dict(self, d):
        self.masks.load_state_dict(d["keep"])


def prune_physically(masks: ChannelMasks, model):
    """Remove the masked channels: the smaller model (hooks detached from the old one)."""
    keep = dict(masks.keep)
    masks.detach()
    return remove_channels(model, keep, masks.plan)


def make_masks(model, mode):
    return ChannelMasks(model, build_plan(model), mode)


def make_criterion(s: Settings):
    kw = {}
    if s.criterion == "rbf":
        kw["gamma"] = s.gamma
    elif s.criterion == "random":
        kw["seed"] = s.seed
    return get_criterion(s.criterion, **kw)


# ------------------------------------------------------------------ quantization helpers

def qconfig_for(model, s: Settings, quant=None):
    from compress.quant.wrap import default_qconfig
    return default_qconfig(model, quant or s.quant, s.wbits, s.abits, s.edge_bits)


def quantize(model, s: Settings, calib=None, quant=None):
    """Wrap for fake quantization and calibrate on `calib`: weight alphas (MSE search),
    batch-norm statistics under the quantized (standardised) weights, then activation
    alphas slot by slot in forward order, each on the input its quantized upstream
    produces, and the batch-norm statistics once more."""
    from compress.quant.wrap import wrap
    wrap(model, qconfig_for(model, s, quant))
    if calib is not None:
        calibrate_all(model, calib)
    return model


def act_slots(model) -> list:
    return [n for n, m in model.named_modules() if isinstance(m, QuantAct)]


@torch.no_grad()
def calibrate_all(model, calib):
    slots = act_slots(model)
    for p in slots:
        model.get_submodule(p).enabled = False
    calibrate(model, calib, slots=[])
    recalibrate_bn(model, calib)
    for p in slots:  # named_modules() is forward order for zoo models
        model.get_submodule(p).enabled = True
        calibrate(model, calib, layer_paths=set(), slots=[p])
    recalibrate_bn(model, calib)


def _mse_alpha(q: Quantizer, x: torch.Tensor, grid=40, max_elems=1 << 16) -> float:
    """The alpha minimising ||q(x) - x||^2 over a grid up to max |x| (on at most
    `max_elems` elements drawn with a fixed seed, the maximum always among them)."""
    x = x.detach().flatten()
    top = float(x.abs().max())
    if x.numel() > max_elems:
        g = torch.Generator().manual_seed(0)
        x = torch.cat([x[torch.randint(0, x.numel(), (max_elems,), generator=g)], x.abs().max().view(1)])
    if top <= 0:
        return float(q.alpha.detach().abs())
    best, best_a = None, top
    was = q.enabled
    q.enabled = True
    with torch.no_grad():
        for i in range(1, grid + 1):
            a = top * i / grid
            q.alpha.fill_(a)
            err = float((Quantizer.forward(q, x) - x).pow(2).sum())
            if best is None or err < best:
                best, best_a = err, a
        q.alpha.fill_(best_a)
    q.enabled = was
    return best_a


def _standardized(mod) -> torch.Tensor:
    return mod.wq.prequant(mod.weight.detach(), getattr(mod, "keep", None), getattr(mod, "in_keep", None))


@torch.no_grad()
def act_inputs(model, x, slots) -> dict:
    """{slot path: the tensor entering the QuantAct at that slot} on batch x."""
    got, hooks = {}, []
    for p in slots:
        mod = model.get_submodule(p)
        hooks.append(mod.register_forward_pre_hook(lambda m, inp, p=p: got.__setitem__(p, inp[0].detach())))
    was = model.training
    model.eval()
    try:
        model(x)
    finally:
        for h in hooks:
            h.remove()
        model.train(was)
    return got


@torch.no_grad()
def calibrate(model, x, layer_paths=None, slots=None):
    """MSE-calibrate weight alphas (of `layer_paths`, default all) and act alphas (of
    `slots`, default all) on batch x, acts as they arrive through the current model."""
    for path, mod, _ in layers(model):
        if layer_paths is None or path in layer_paths:
            _mse_alpha(mod.wq, _standardized(mod))
    all_slots = [n for n, m in model.named_modules() if isinstance(m, QuantAct)]
    slots = all_slots if slots is None else slots
    ins = act_inputs(model, x, slots)
    for p in slots:
        _mse_alpha(model.get_submodule(p), ins[p])


@torch.no_grad()
def recalibrate_bn(model, x, batch=256):
    """Re-estimate batch-norm running statistics on calibration data (cumulative average)."""
    bns = [m for m in model.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)]
    saved = [(m.momentum) for m in bns]
    for m in bns:
        m.reset_running_stats()
        m.momentum = None
    was = model.training
    model.train()
    for i in range(0, len(x), batch):
        model(x[i:i + batch])
    model.train(was)
    for m, mom in zip(bns, saved):
        m.momentum = mom


# ------------------------------------------------------------------ the report

def finish(run: Run, model, fp32_acc: float, extra=None) -> dict:
    """Write compressed.pt (kind compressed) and report.json; returns the report."""
    from compress.metrics import model_metrics

    s = run.s
    model.eval()
    acc = run.accuracy(model)
    met = model_metrics(model)
    widths = model.config["widths"]
    from compress.metrics import dense_model
    dm = dense_model(model)
    dense_w = {short(p): (m.out_channels if hasattr(m, "out_channels") else m.out_features)
               for p, m, _ in layers(dm)}
    kept = []
    for r in met["layers"]:
        kept.append({"layer": r["layer"], "kept": r["shape"][0], "dense": dense_w.get(r["layer"]),
                     "shape": r["shape"], "wbits": r["wbits"], "abits": r["abits"],
                     "wscheme": r["wscheme"], "ascheme": r["ascheme"]})
    run.save("compressed.pt", model, kind="compressed",
             meta={"recipe": s.recipe, "fp32_acc": fp32_acc, "test_acc": acc})
    report = {
        "recipe": s.recipe,
        "model": model.config,
        "data": run.data.name,
        "settings": {k: v for k, v in vars(s).items() if k not in ("extra", "quiet")},
        "fp32_test_acc": fp32_acc,
        "compressed_test_acc": acc,
        "accuracy_drop": fp32_acc - acc,
        "layers": kept,
        "widths": widths,
        "params": met["params"], "params_all": met["params_all"], "macs": met["macs"],
        "size_bits": met["size_bits"], "bops": met["bops"],
        "dense_params": met["dense_params"], "dense_size_bits": met["dense_size_bits"],
        "dense_bops": met["dense_bops"],
        "size_reduction": met["size_reduction"], "bops_reduction": met["bops_reduction"],
        "phases": run.phases,
        "wall_time_s": round(time.perf_counter() - run.t0, 2),
        "compressed": "compressed.pt",
        **run.info, **(extra or {}),
    }
    prev = run.out / "report.json"
    with atomic_path(prev) as tmp:
        tmp.write_text(json.dumps(report, indent=2, default=str) + "\n")
    return report
