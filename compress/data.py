"""Data sets, held in memory as tensors and batched without DataLoader workers.

- `digits`: scikit-learn's bundled 8x8 handwritten digits (1,797 images, offline), a
  fixed stratified 80/20 train/test split, normalised by the train set's mean and std,
  tensors of shape (1, 8, 8).
- `cifar10`: read from CIFAR-10's own python-pickle batches
  (`DATA_DIR/cifar-10-batches-py/data_batch_1..5`, `test_batch`), because torchvision
  cannot be imported beside this torch. Standard augmentation (zero-pad 4 + random
  32x32 crop, horizontal flip) is done here in torch, on whole batches.
- `synthetic`: random tensors of the model's input shape, a few batches, for dry runs.

Why in memory: both real sets are small (digits 110 kB, CIFAR-10 180 MB as uint8),
so a worker pool only adds start-up time and non-determinism. Shuffling and
augmentation draw from a generator seeded by (seed, epoch), so epoch e sees the same
batches whether the run was interrupted and resumed or not.
"""
from __future__ import annotations

import pickle
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path

import numpy as np
import torch

from shiftq.errors import UserError

DATASETS = ("digits", "cifar10", "synthetic")
CIFAR_URL = "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz"
CIFAR_DIR = "cifar-10-batches-py"
CIFAR_MEAN = (0.4914, 0.4822, 0.4465)
CIFAR_STD = (0.2470, 0.2435, 0.2616)
DIGITS_SEED = 0
DEFAULT_DATA_DIR = "data"


class Split:
    """One split as tensors: iterating gives (x, y) batches for the current epoch.

    `set_epoch(e)` picks the shuffle order and augmentation of epoch e (deterministic
    given the seed). `augment` is a function (x uint8/float batch, generator) -> float
    batch; `prepare` turns stored tensors into model input when not augmenting.
    """

    def __init__(self, x, y, batch_size, shuffle=False, seed=0, augment=None, prepare=None,
                 drop_last=False):
        self.x, self.y = x, y
        self.batch_size = int(batch_size)
        self.shuffle, self.seed = shuffle, seed
        self.augment, self.prepare = augment, prepare
        self.drop_last = drop_last
        self.epoch = 0

    def set_epoch(self, epoch: int):
        self.epoch = int(epoch)

    @property
    def num_samples(self) -> int:
        return len(self.y)

    def __len__(self):
        n, b = self.num_samples, self.batch_size
        return n // b if self.drop_last else -(-n // b)

    def __iter__(self):
        g = torch.Generator().manual_seed(self.seed * 1_000_003 + self.epoch)
        n = self.num_samples
        order = torch.randperm(n, generator=g) if self.shuffle else torch.arange(n)
        for i in range(len(self)):
            idx = order[i * self.batch_size:(i + 1) * self.batch_size]
            x = self.x[idx]
            if self.augment is not None:
                x = self.augment(x, g)
            elif self.prepare is not None:
                x = self.prepare(x)
            yield x, self.y[idx]


@dataclass
class Data:
    name: str
    train: Split
    test: Split
    input_shape: tuple
    num_classes: int
    info: dict = field(default_factory=dict)

    def calibration(self, n: int = 256) -> torch.Tensor:
        """The first `n` training images, un-augmented: a fixed calibration batch
        (for activation ranges, BN re-estimation, channel statistics)."""
        return calibration_batch(self, n)


def calibration_batch(data: Data, n: int = 256) -> torch.Tensor:
    """A fixed tensor of up to `n` un-augmented training images, in model-input form."""
    tr = data.train
    x = tr.x[:n]
    return tr.prepare(x) if tr.prepare is not None else x


def get_data(name: str, model=None, batch_size: int | None = None, data_dir=None,
             download: bool = False, seed: int = 0, augment: bool = True,
             test_batch_size: int | None = None) -> Data:
    """Load data set `name` for `model` (whose input shape it must match).

    `batch_size` defaults per set (digits 64, cifar10 128, synthetic 16).
    """
    if name not in DATASETS:
        raise UserError(f"unknown data set {name!r}: choose one of {', '.join(DATASETS)}")
    if batch_size is not None and int(batch_size) < 1:
        raise UserError(f"batch size must be at least 1, got {batch_size}")
    if name == "digits":
        data = _digits(batch_size or 64, seed, augment, test_batch_size)
    elif name == "cifar10":
        data = _cifar10(Path(data_dir or DEFAULT_DATA_DIR), download, batch_size or 128, seed,
                        augment, test_batch_size)
    else:
        if model is None:
            raise UserError("synthetic data needs a model to take its input shape from")
        data = _synthetic(model, batch_size or 16, seed)
    if model is not None:
        shape = tuple(getattr(model, "input_shape", data.input_shape))
        if shape != tuple(data.input_shape):
            raise UserError(f"model {model.config['name']} takes inputs of shape {shape}, "
                            f"data set {name} has {tuple(data.input_shape)}")
        nc = getattr(model, "num_classes", data.num_classes)
        if nc < data.num_classes:
            raise UserError(f"model has {nc} classes, data set {name} has {data.num_classes}")
    return data


# ---------------------------------------------------------------- digits

@lru_cache(maxsize=1)
def _digits_split():
    """The fixed split, normalised; cached because scikit-learn parses a CSV each time."""
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    d = load_digits()
    x = d.images.astype(np.float32)  # (1797, 8, 8), values 0..16
    y = d.target.astype(np.int64)
    # the split is fixed (not `seed`): test accuracy must mean the same thing in every run
    xtr, xte, ytr, yte = train_test_split(x, y, test_size=0.2, stratify=y, random_state=DIGITS_SEED)
    mean, std = float(xtr.mean()), float(xtr.std())
    xtr = torch.from_numpy((xtr - mean) / std).unsqueeze(1)
    xte = torch.from_numpy((xte - mean) / std).unsqueeze(1)
    return xtr, xte, torch.from_numpy(ytr), torch.from_numpy(yte), mean, std


def _digits(batch_size, seed, augment, test_batch_size):
    xtr, xte, ytr, yte, mean, std = _digits_split()
    aug = _shift_augment(1, fill=-mean / std) if augment else None
    train = Split(xtr, ytr, batch_size, shuffle=True, seed=seed, augment=aug)
    test = Split(xte, yte, test_batch_size or 512)
    return Data("digits", train, test, (1, 8, 8), 10, {"mean": mean, "std": std})


# ---------------------------------------------------------------- CIFAR-10

def _cifar10(data_dir: Path, download, batch_size, seed, augment, test_batch_size):
    root = data_dir / CIFAR_DIR
    files = [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]
    if download and not all((root / f).exists() for f in files):
        _download_cifar(data_dir)
    missing = [f for f in files if not (root / f).exists()]
    if missing:
        raise UserError(
            f"CIFAR-10 not found: {root / missing[0]} is missing; download {CIFAR_URL} and "
            f"extract it into {data_dir} (or pass --data-dir DIR, or --download)")
    xtr, ytr = zip(*(read_cifar_batch(root / f) for f in files[:5]))
    xtr, ytr = torch.cat(xtr), torch.cat(ytr)
    xte, yte = read_cifar_batch(root / "test_batch")
    mean = torch.tensor(CIFAR_MEAN).view(1, 3, 1, 1)
    std = torch.tensor(CIFAR_STD).view(1, 3, 1, 1)

    def prepare(x):  # uint8 (B,3,32,32) -> normalised float
        return (x.float() / 255.0 - mean) / std

    def aug(x, g):
        return prepare(random_crop_flip(x, g, pad=4))

    train = Split(xtr, ytr, batch_size, shuffle=True, seed=seed,
                  augment=aug if augment else None, prepare=prepare)
    test = Split(xte, yte, test_batch_size or 1000, prepare=prepare)
    return Data("cifar10", train, test, (3, 32, 32), 10, {"dir": str(root)})


def read_cifar_batch(path: Path):
    """One CIFAR-10 python batch -> (uint8 tensor (N,3,32,32), int64 labels (N,)).

    The file is a pickled dict with b"data" (N x 3072 uint8, channel-major rows) and
    b"labels". Unpickling is restricted to the builtins and the NumPy array types that
    format needs, so a foreign file cannot run code.
    """
    try:
        with open(path, "rb") as f:
            d = _SafeUnpickler(f, encoding="bytes").load()
        data = np.asarray(d[b"data"], dtype=np.uint8)
        labels = np.asarray(d[b"labels"], dtype=np.int64)
        x = torch.from_numpy(data.reshape(-1, 3, 32, 32).copy())
    except (pickle.UnpicklingError, EOFError, KeyError, TypeError, ValueError, AttributeError) as e:
        raise UserError(f"{path} is not a CIFAR-10 python batch ({type(e).__name__})") from None
    if len(labels) != len(x) or (len(labels) and (labels.min() < 0 or labels.max() > 9)):
        raise UserError(f"{path} is not a CIFAR-10 python batch (labels do not fit the images)")
    return x, torch.from_numpy(labels)


def write_cifar_batch(path, images: np.ndarray, labels) -> None:
    """Write images (N,3,32,32 uint8) and labels in CIFAR-10's python batch format
    (for tests and for making small subsets)."""
    images = np.asarray(images, dtype=np.uint8)
    d = {b"batch_label": b"shiftq", b"labels": [int(v) for v in labels],
         b"data": images.reshape(len(images), -1), b"filenames": [b"x.png"] * len(images)}
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    with open(path, "wb") as f:
        pickle.dump(d, f, protocol=2)


class _SafeUnpickler(pickle.Unpickler):
    _ALLOWED = {
        ("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
        ("numpy", "ndarray"), ("numpy", "dtype"),
        ("numpy.core.multiarray", "scalar"), ("numpy._core.multiarray", "scalar"),
        ("_codecs", "encode"),
    }

    def find_class(self, module, name):
        if (module, name) in self._ALLOWED:
            return super().find_class(module, name)
        raise pickle.UnpicklingError(f"{module}.{name} is not allowed in a CIFAR batch")


def _download_cifar(data_dir: Path):
    try:
        import torchvision  # noqa: F401
        from torchvision.datasets import CIFAR10
    except Exception:
        raise UserError(
            f"--download needs torchvision, which cannot be imported here: download {CIFAR_URL} "
            f"yourself and extract it into {data_dir}") from None
    try:
        CIFAR10(str(data_dir), train=True, download=True)
        CIFAR10(str(data_dir), train=False, download=True)
    except Exception as e:
        raise UserError(f"downloading CIFAR-10 into {data_dir} failed ({type(e).__name__}): "
                        f"fetch {CIFAR_URL} and extract it there") from None


def random_crop_flip(x: torch.Tensor, g: torch.Generator, pad: int = 4) -> torch.Tensor:
    """Zero-pad by `pad`, take a random HxW crop per image, flip half horizontally.

    Works on a whole batch with one gather, so it costs little beside a training step.
    """
    b, c, h, w = x.shape
    xp = torch.nn.functional.pad(x, (pad, pad, pad, pad))
    oy = torch.randint(0, 2 * pad + 1, (b,), generator=g)
    ox = torch.randint(0, 2 * pad + 1, (b,), generator=g)
    flip = torch.rand(b, generator=g) < 0.5
    rows = oy[:, None] + torch.arange(h)  # (b, h)
    cols = ox[:, None] + torch.arange(w)  # (b, w)
    cols = torch.where(flip[:, None], cols.flip(1), cols)
    bi = torch.arange(b)[:, None, None]
    out = xp.permute(0, 2, 3, 1)[bi, rows[:, :, None], cols[:, None, :]]  # (b, h, w, c)
    return out.permute(0, 3, 1, 2).contiguous()


def _shift_augment(max_shift: int, fill: float):
    """Random translation by up to `max_shift` pixels (no flip: digits are not symmetric)."""

    def aug(x, g):
        b, c, h, w = x.shape
        xp = torch.nn.functional.pad(x, (max_shift,) * 4, value=fill)
        oy = torch.randint(0, 2 * max_shift + 1, (b,), generator=g)
        ox = torch.randint(0, 2 * max_shift + 1, (b,), generator=g)
        rows = oy[:, None] + torch.arange(h)
        cols = ox[:, None] + torch.arange(w)
        bi = torch.arange(b)[:, None, None]
        out = xp.permute(0, 2, 3, 1)[bi, rows[:, :, None], cols[:, None, :]]
        return out.permute(0, 3, 1, 2).contiguous()
    return aug


# ---------------------------------------------------------------- synthetic

def _synthetic(model, batch_size, seed, train_batches=4, test_batches=2):
    shape = tuple(model.input_shape)
    nc = int(getattr(model, "num_classes", 10))
    g = torch.Generator().manual_seed(seed)
    ntr, nte = train_batches * batch_size, test_batches * batch_size
    xtr = torch.randn(ntr, *shape, generator=g)
    ytr = torch.randint(0, nc, (ntr,), generator=g)
    xte = torch.randn(nte, *shape, generator=g)
    yte = torch.randint(0, nc, (nte,), generator=g)
    train = Split(xtr, ytr, batch_size, shuffle=True, seed=seed)
    test = Split(xte, yte, batch_size)
    return Data("synthetic", train, test, shape, nc, {})
