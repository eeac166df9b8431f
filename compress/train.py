"""The one training / evaluation loop every recipe reuses.

`fit(model, data, config, out_dir=..., hooks=[...])` trains with SGD (momentum 0.9,
weight decay 5e-4 by default) and, after every epoch, writes atomically to `out_dir`:

- `checkpoint.pt`: a shiftq checkpoint (compress/checkpoint.py) that `load_model` reads,
  plus the loop's own state (optimizer, scheduler, RNG, history, hook states);
- `log.csv`: one row per epoch (rewritten whole from the history, so it never holds
  rows of an epoch the checkpoint does not);
- `report.json`: the summary (final and best test accuracy, time, finished or not).

`resume=True` continues from `checkpoint.pt`. Because each epoch's shuffle order and
augmentation come from (seed, epoch) (see compress/data.py) and the RNG, optimizer and
scheduler states are restored, a resumed run ends with exactly the weights an
uninterrupted run would have had; an epoch cut short is simply redone.

Recipes compose on top through hooks (a `Hook` subclass, any subset of):

    on_train_start(s)   once, after resume, before the first epoch
    on_epoch_start(s)   before the epoch's first batch
    after_backward(s)   gradients ready, before optimizer.step (e.g. zero pruned filters' grads)
    on_batch_end(s)     after optimizer.step (e.g. re-apply masks)
    on_epoch_end(s)     after the epoch's batches, before evaluation (e.g. re-prune by GM)
    on_eval_end(s)      after evaluation; s.row holds the epoch's figures and can be extended
    state_dict() / load_state_dict(d)   saved in and restored from the checkpoint

`s` is the `TrainState`: model, optimizer, scheduler, data, config, epoch, batch, step,
loss, row, history, out_dir; a hook may set `s.stop = True` to end the run after the
current epoch. A custom `loss_fn(model, x, y, s) -> loss` replaces cross-entropy (e.g.
task loss plus a BOPs penalty).
"""
from __future__ import annotations

import csv
import io
import json
import math
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn

from shiftq.errors import UserError, atomic_path

from .checkpoint import load_checkpoint, load_state_dict_strict, make_checkpoint, save_checkpoint

SCHEDULES = ("cosine", "step", "plateau", "constant")
CHECKPOINT = "checkpoint.pt"
LOG = "log.csv"
REPORT = "report.json"


@dataclass
class TrainConfig:
    """Optimizer and schedule settings. `plateau` multiplies the lr by `factor` when test
    accuracy has not improved for `patience` epochs (seed 001: x0.9 after 3)."""

    epochs: int = 30
    lr: float = 0.1
    momentum: float = 0.9
    weight_decay: float = 5e-4
    nesterov: bool = False
    schedule: str = "cosine"
    step_size: int = 30      # step: lr x gamma every step_size epochs
    gamma: float = 0.1
    factor: float = 0.9      # plateau
    patience: int = 3        # plateau
    min_lr: float = 0.0
    seed: int = 0
    quiet: bool = False
    grad_clip: float | None = None

    def check(self):
        if self.epochs < 1:
            raise UserError(f"epochs must be at least 1, got {self.epochs}")
        if not (self.lr > 0 and math.isfinite(self.lr)):
            raise UserError(f"learning rate must be positive, got {self.lr}")
        if self.schedule not in SCHEDULES:
            raise UserError(f"unknown schedule {self.schedule!r}: choose one of {', '.join(SCHEDULES)}")
        if self.weight_decay < 0 or not (0 <= self.momentum < 1):
            raise UserError("weight decay must be >= 0 and momentum in [0, 1)")


class Hook:
    """Base class for training hooks: override what you need (see the module doc)."""

    def on_train_start(self, s): pass
    def on_epoch_start(self, s): pass
    def after_backward(self, s): pass
    def on_batch_end(self, s): pass
    def on_epoch_end(self, s): pass
    def on_eval_end(self, s): pass

    def state_dict(self) -> dict:
        return {}

    def load_state_dict(self, state: dict) -> None:
        pass


@dataclass
class TrainState:
    model: nn.Module
    optimizer: torch.optim.Optimizer
    scheduler: object
    data: object
    config: TrainConfig
    out_dir: Path | None
    epoch: int = 0          # the epoch being run (1-based); completed epochs = epoch - 1 inside it
    batch: int = 0
    step: int = 0           # optimizer steps so far
    loss: torch.Tensor | None = None
    row: dict = field(default_factory=dict)
    history: list = field(default_factory=list)
    train_time: float = 0.0
    stop: bool = False


def make_optimizer(model: nn.Module, cfg: TrainConfig) -> torch.optim.Optimizer:
    """SGD over every trainable parameter (quantizer alphas included)."""
    params = [p for p in model.parameters() if p.requires_grad]
    return torch.optim.SGD(params, lr=cfg.lr, momentum=cfg.momentum,
                           weight_decay=cfg.weight_decay, nesterov=cfg.nesterov and cfg.momentum > 0)


def make_scheduler(optimizer, cfg: TrainConfig):
    if cfg.schedule == "cosine":
        return torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=cfg.epochs, eta_min=cfg.min_lr)
    if cfg.schedule == "step":
        return torch.optim.lr_scheduler.StepLR(optimizer, step_size=cfg.step_size, gamma=cfg.gamma)
    if cfg.schedule == "plateau":
        return torch.optim.lr_scheduler.ReduceLROnPlateau(
            optimizer, mode="max", factor=cfg.factor, patience=cfg.patience, min_lr=cfg.min_lr)
    return torch.optim.lr_scheduler.LambdaLR(optimizer, _constant)


def _constant(epoch):
    return 1.0


def cross_entropy(model, x, y, s=None):
    return F.cross_entropy(model(x), y)


@torch.no_grad()
def evaluate(model: nn.Module, split, max_batches: int | None = None) -> dict:
    """Top-1 accuracy (%) and mean cross-entropy over `split`, in eval mode."""
    was_training = model.training
    model.eval()
    correct, total, loss_sum = 0, 0, 0.0
    for i, (x, y) in enumerate(split):
        if max_batches is not None and i >= max_batches:
            break
        out = model(x)
        loss_sum += float(F.cross_entropy(out, y, reduction="sum"))
        correct += int((out.argmax(1) == y).sum())
        total += len(y)
    model.train(was_training)
    if total == 0:
        return {"acc": float("nan"), "loss": float("nan"), "n": 0}
    return {"acc": 100.0 * correct / total, "loss": loss_sum / total, "n": total}


def fit(model: nn.Module, data, config: TrainConfig | None = None, *, out_dir=None,
        resume: bool = False, hooks: list | None = None, optimizer=None, scheduler=None,
        loss_fn: Callable | None = None, meta: dict | None = None) -> TrainState:
    """Train `model` on `data` (compress.data.Data) for `config.epochs` epochs.

    `optimizer` / `scheduler` default to SGD and the config's schedule; pass your own to
    train, say, only some parameters. With `out_dir`, checkpoint, CSV log and report are
    written after every epoch; `resume` continues from the checkpoint there. Returns the
    final TrainState (its history holds every epoch's row).
    """
    cfg = config or TrainConfig()
    cfg.check()
    hooks = list(hooks or [])
    loss_fn = loss_fn or cross_entropy
    optimizer = optimizer or make_optimizer(model, cfg)
    scheduler = scheduler or make_scheduler(optimizer, cfg)
    out = Path(out_dir) if out_dir is not None else None
    s = TrainState(model, optimizer, scheduler, data, cfg, out)
    meta = dict(meta or {})

    start = 1
    ckpt_path = out / CHECKPOINT if out else None
    if resume and ckpt_path is not None and ckpt_path.exists():
        start = _restore(s, ckpt_path, hooks) + 1
    else:
        torch.manual_seed(cfg.seed)

    for h in hooks:
        h.on_train_start(s)
    show = not cfg.quiet
    bars = show and sys.stderr.isatty()
    for epoch in range(start, cfg.epochs + 1):
        s.epoch, s.row = epoch, {}
        t0 = time.perf_counter()
        data.train.set_epoch(epoch)
        for h in hooks:
            h.on_epoch_start(s)
        model.train()
        lr = optimizer.param_groups[0]["lr"]
        loss_sum, correct, seen = 0.0, 0, 0
        batches = _progress(data.train, bars, f"epoch {epoch}/{cfg.epochs}")
        for s.batch, (x, y) in enumerate(batches):
            optimizer.zero_grad(set_to_none=True)
            if loss_fn is cross_entropy:  # keep the logits for the running accuracy
                logits = model(x)
                loss = F.cross_entropy(logits, y)
                correct += int((logits.detach().argmax(1) == y).sum())
            else:
                loss = loss_fn(model, x, y, s)
            if not torch.isfinite(loss):
                raise RuntimeError(f"loss became {float(loss)} at epoch {epoch}, batch {s.batch}: "
                                   "lower the learning rate")
            loss.backward()
            s.loss = loss.detach()
            for h in hooks:
                h.after_backward(s)
            if cfg.grad_clip:
                nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
            optimizer.step()
            s.step += 1
            for h in hooks:
                h.on_batch_end(s)
            loss_sum += float(s.loss) * len(y)
            seen += len(y)
            if bars:
                batches.set_postfix(loss=f"{loss_sum / seen:.3f}", refresh=False)
        for h in hooks:
            h.on_epoch_end(s)
        test = evaluate(model, data.test)
        s.row.update({
            "epoch": epoch, "lr": lr,
            "train_loss": loss_sum / max(seen, 1),
            "train_acc": 100.0 * correct / seen if (seen and loss_fn is cross_entropy) else float("nan"),
            "test_loss": test["loss"], "test_acc": test["acc"],
        })
        for h in hooks:
            h.on_eval_end(s)
        if isinstance(scheduler, torch.optim.lr_scheduler.ReduceLROnPlateau):
            scheduler.step(test["acc"])
        else:
            scheduler.step()
        dt = time.perf_counter() - t0
        s.train_time += dt
        s.row["epoch_time"] = dt
        s.history.append(dict(s.row))
        if out is not None:
            _save(s, hooks, meta, finished=(epoch == cfg.epochs or s.stop))
        if show:
            print(f"epoch {epoch}/{cfg.epochs}  lr {lr:.4g}  loss {s.row['train_loss']:.4f}  "
                  f"test acc {test['acc']:.2f}%  ({dt:.1f}s)", flush=True)
        if s.stop:
            break
    if out is not None and start > cfg.epochs:  # resumed a finished run: refresh the report
        _write_report(s, meta, finished=True)
    return s


def _progress(split, enabled, desc):
    if not enabled:
        return split
    from tqdm import tqdm
    return tqdm(split, desc=desc, leave=False, dynamic_ncols=True)


def _restore(s: TrainState, path: Path, hooks) -> int:
    """Load the loop state of checkpoint `path` into `s`; returns the completed epochs."""
    ckpt = load_checkpoint(path)
    where = f"checkpoint {path}"
    model_cfg = getattr(s.model, "config", None)
    if model_cfg is not None and ckpt["model"] != _jsonish(model_cfg):
        raise UserError(f"{where} was written for model {ckpt['model'].get('name')} with other "
                        "settings; resume with the same options, or choose another --out")
    qc = getattr(s.model, "qconfig", None)
    if (ckpt.get("qconfig") or None) != (_jsonish(qc) if qc else None):
        raise UserError(f"{where} has another quantization configuration than this run")
    tr = ckpt.get("trainer")
    if not tr:
        raise UserError(f"{where} holds no training state to resume from")
    load_state_dict_strict(s.model, ckpt["state_dict"], where)
    try:
        s.optimizer.load_state_dict(ckpt["optimizer"])
        s.scheduler.load_state_dict(tr["scheduler"])
    except (ValueError, KeyError, TypeError) as e:
        raise UserError(f"{where}: optimizer or schedule state does not fit this run ({e})") from None
    torch.set_rng_state(tr["rng"])
    s.history = list(tr.get("history", []))
    s.step = int(tr.get("step", 0))
    s.train_time = float(tr.get("train_time", 0.0))
    states = tr.get("hooks", {})
    for i, h in enumerate(hooks):
        key = _hook_key(h, i)
        if key in states:
            h.load_state_dict(states[key])
    return int(ckpt["epoch"])


def _hook_key(h, i):
    return getattr(h, "name", None) or f"{i}:{type(h).__name__}"


def _jsonish(obj):
    return json.loads(json.dumps(obj))


def _save(s: TrainState, hooks, meta, finished: bool):
    trainer = {
        "scheduler": s.scheduler.state_dict(),
        "rng": torch.get_rng_state(),
        "history": s.history,
        "step": s.step,
        "train_time": s.train_time,
        "config": asdict(s.config),
        "hooks": {_hook_key(h, i): h.state_dict() for i, h in enumerate(hooks)},
    }
    m = dict(meta)
    m.update({"data": getattr(s.data, "name", None), "test_acc": s.row.get("test_acc")})
    ckpt = make_checkpoint(s.model, epoch=s.epoch, optimizer=s.optimizer, trainer=trainer, meta=m)
    save_checkpoint(s.out_dir / CHECKPOINT, ckpt=ckpt)
    _write_csv(s.out_dir / LOG, s.history)
    _write_report(s, meta, finished)


def _write_csv(path: Path, rows: list):
    cols = ["epoch", "lr", "train_loss", "train_acc", "test_loss", "test_acc", "epoch_time"]
    for r in rows:
        cols += [k for k in r if k not in cols]
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=cols, restval="")
    w.writeheader()
    for r in rows:
        w.writerow({k: (f"{v:.6g}" if isinstance(v, float) else v) for k, v in r.items()})
    with atomic_path(path) as tmp:
        tmp.write_text(buf.getvalue())


def _write_report(s: TrainState, meta, finished: bool):
    hist = s.history
    best = max(hist, key=lambda r: (r.get("test_acc", float("-inf")), r["epoch"])) if hist else {}
    report = {
        "model": getattr(s.model, "config", None),
        "qconfig": getattr(s.model, "qconfig", None),
        "data": getattr(s.data, "name", None),
        "epochs_done": hist[-1]["epoch"] if hist else 0,
        "epochs": s.config.epochs,
        "finished": finished,
        "final_test_acc": hist[-1]["test_acc"] if hist else None,
        "best_test_acc": best.get("test_acc"),
        "best_epoch": best.get("epoch"),
        "train_time_s": round(s.train_time, 3),
        "config": asdict(s.config),
        "checkpoint": CHECKPOINT,
        "meta": meta,
        "history": hist,
    }
    with atomic_path(s.out_dir / REPORT) as tmp:
        tmp.write_text(json.dumps(_no_nan(report), indent=2, default=str) + "\n")


def _no_nan(obj):
    """NaN (e.g. train accuracy under a custom loss) as null, so report.json is strict JSON."""
    if isinstance(obj, dict):
        return {k: _no_nan(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_no_nan(v) for v in obj]
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    return obj
