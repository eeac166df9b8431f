"""shiftq checkpoints: one dict, saved atomically, loaded with `weights_only=True`.

A checkpoint is everything needed to rebuild a model without the code that trained it:

    {"format": "shiftq-checkpoint", "version": 1,
     "kind": "fp32" | "compressed",
     "model": model.config,            # name, kwargs, widths: rebuilds the (pruned) architecture
     "qconfig": {layer: LayerQ json} or None,
     "state_dict": {...},
     "epoch": int,
     "optimizer": optimizer state or None,
     "trainer": training-loop state (scheduler, RNG, history, hooks) or None,
     "meta": {...}}                    # free-form: recipe, accuracy, command line ...

Only plain containers, numbers, strings and tensors go in, so `torch.load(...,
weights_only=True)` can read it: a checkpoint never executes code when loaded.
Every way a file can be wrong (missing, not a torch file, another format or version,
weights that do not fit the config) is a `UserError` naming the file and the problem.
"""
from __future__ import annotations

import pickle
import zipfile
from pathlib import Path

import torch
from torch import nn

from shiftq.errors import UserError, atomic_path

FORMAT = "shiftq-checkpoint"
VERSION = 1
KINDS = ("fp32", "compressed")


def make_checkpoint(model: nn.Module, *, kind: str | None = None, epoch: int = 0,
                    optimizer=None, trainer: dict | None = None, meta: dict | None = None) -> dict:
    """The checkpoint dict of `model` (a zoo model, wrapped for quantization or not).

    `kind` defaults to "compressed" when the model carries a qconfig (it was wrapped),
    else "fp32". `optimizer` may be an optimizer or its state dict.
    """
    if not hasattr(model, "config"):
        raise TypeError("only zoo models (with a .config) can be checkpointed")
    qconfig = getattr(model, "qconfig", None)
    if kind is None:
        kind = "compressed" if qconfig else "fp32"
    if kind not in KINDS:
        raise ValueError(f"checkpoint kind must be one of {KINDS}, not {kind!r}")
    if optimizer is not None and hasattr(optimizer, "state_dict"):
        optimizer = optimizer.state_dict()
    return {
        "format": FORMAT,
        "version": VERSION,
        "kind": kind,
        "model": _plain(model.config),
        "qconfig": _plain(dict(qconfig)) if qconfig else None,
        "state_dict": {k: v.detach().clone() for k, v in model.state_dict().items()},
        "epoch": int(epoch),
        "optimizer": optimizer,
        "trainer": trainer,
        "meta": _plain(dict(meta or {})),
    }


def save_checkpoint(path, model: nn.Module | None = None, *, ckpt: dict | None = None, **kwargs) -> Path:
    """Write a checkpoint atomically: either `model` (+ make_checkpoint kwargs) or a ready `ckpt`.

    The file appears complete or not at all, so an interrupted run never leaves a
    half-written checkpoint where the last good one was.
    """
    if (model is None) == (ckpt is None):
        raise TypeError("save_checkpoint needs exactly one of model or ckpt")
    if ckpt is None:
        ckpt = make_checkpoint(model, **kwargs)
    path = Path(path)
    with atomic_path(path) as tmp:
        torch.save(ckpt, tmp)
    return path


def load_checkpoint(path) -> dict:
    """Read and validate a checkpoint file; any problem is a one-line UserError."""
    path = Path(path)
    if not path.exists():
        raise UserError(f"checkpoint {path} does not exist")
    if path.is_dir():
        raise UserError(f"checkpoint {path} is a directory, not a file")
    if not zipfile.is_zipfile(path):  # torch.save has written zip archives since torch 1.6
        raise UserError(f"checkpoint {path} is not a readable torch file (corrupt or truncated?)")
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        raise UserError(f"checkpoint {path} holds objects a shiftq checkpoint never has "
                        "(refused by torch.load(weights_only=True))") from None
    except (RuntimeError, EOFError, OSError, ValueError, zipfile.BadZipFile, AttributeError, KeyError):
        raise UserError(f"checkpoint {path} is not a readable torch file (corrupt or truncated?)") from None
    check_checkpoint(ckpt, f"checkpoint {path}")
    return ckpt


def check_checkpoint(ckpt, where="checkpoint") -> None:
    """Raise UserError unless `ckpt` has this module's format, version and fields."""
    if not isinstance(ckpt, dict) or ckpt.get("format") != FORMAT:
        raise UserError(f"{where} is not a shiftq checkpoint")
    if ckpt.get("version") != VERSION:
        raise UserError(f"{where} has checkpoint version {ckpt.get('version')!r}; "
                        f"this shiftq reads version {VERSION}")
    if ckpt.get("kind") not in KINDS:
        raise UserError(f"{where} has unknown kind {ckpt.get('kind')!r}")
    if not isinstance(ckpt.get("model"), dict) or "name" not in ckpt["model"]:
        raise UserError(f"{where} has no model config")
    if not isinstance(ckpt.get("state_dict"), dict):
        raise UserError(f"{where} has no state dict")
    if ckpt.get("qconfig") is not None and not isinstance(ckpt["qconfig"], dict):
        raise UserError(f"{where} has a malformed qconfig")


def load_model(source, *, where: str | None = None) -> nn.Module:
    """Rebuild the model of a checkpoint (a path or a loaded dict), weights loaded strictly.

    The architecture comes from the config (pruned widths included); a qconfig means the
    model is wrapped for fake quantization first, so its quantizer parameters load too.
    Returned in eval mode.
    """
    from compress.models import build_from_config
    from compress.quant.wrap import LayerQ, wrap

    if isinstance(source, dict):
        ckpt = source
        where = where or "checkpoint"
        check_checkpoint(ckpt, where)
    else:
        ckpt = load_checkpoint(source)
        where = where or f"checkpoint {source}"
    model = build_from_config(ckpt["model"])
    if ckpt.get("qconfig"):
        try:
            qconfig = {k: LayerQ(**v) for k, v in ckpt["qconfig"].items()}
        except TypeError:
            raise UserError(f"{where} has a malformed qconfig") from None
        wrap(model, qconfig)
    _add_mask_buffers(model, ckpt["state_dict"])
    load_state_dict_strict(model, ckpt["state_dict"], where)
    model.eval()
    return model


def load_state_dict_strict(model: nn.Module, state_dict: dict, where="checkpoint") -> None:
    """load_state_dict(strict=True), with torch's multi-line error turned into one line."""
    own = model.state_dict()
    missing = [k for k in own if k not in state_dict]
    unexpected = [k for k in state_dict if k not in own]
    if missing or unexpected:
        parts = []
        if missing:
            parts.append(f"{len(missing)} missing (e.g. {missing[0]})")
        if unexpected:
            parts.append(f"{len(unexpected)} unexpected (e.g. {unexpected[0]})")
        raise UserError(f"{where} does not match its model config: weights " + ", ".join(parts))
    for k, v in state_dict.items():
        if not isinstance(v, torch.Tensor) or tuple(v.shape) != tuple(own[k].shape):
            shape = tuple(v.shape) if isinstance(v, torch.Tensor) else type(v).__name__
            raise UserError(f"{where} does not match its model config: {k} has shape {shape}, "
                            f"the model expects {tuple(own[k].shape)}")
    model.load_state_dict(state_dict, strict=True)


def _add_mask_buffers(model: nn.Module, state_dict: dict) -> None:
    """Register `keep` masks (per-output-channel bools of a masked, not yet physically
    pruned layer) that the state dict carries but a freshly built model lacks."""
    for key, value in state_dict.items():
        if not key.endswith(".keep") or not isinstance(value, torch.Tensor):
            continue
        path = key[: -len(".keep")]
        try:
            mod = model.get_submodule(path)
        except AttributeError:
            continue
        out = getattr(mod, "out_channels", getattr(mod, "out_features", None))
        if "keep" not in dict(mod.named_buffers(recurse=False)) and tuple(value.shape) == (out,):
            if hasattr(mod, "keep"):
                delattr(mod, "keep")
            mod.register_buffer("keep", torch.ones_like(value))


def _plain(obj):
    """Containers and scalars only (tuples become lists), so weights_only can read them."""
    if isinstance(obj, dict):
        return {str(k): _plain(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_plain(v) for v in obj]
    if isinstance(obj, (str, int, float, bool)) or obj is None:
        return obj
    if isinstance(obj, torch.Tensor):
        return obj
    if hasattr(obj, "to_json"):
        return _plain(obj.to_json())
    raise TypeError(f"cannot store {type(obj).__name__} in a checkpoint")
