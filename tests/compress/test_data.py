"""Data loaders: digits, CIFAR-10 read from a tiny file in CIFAR's own format, synthetic."""
import numpy as np
import pytest
import torch

from compress.data import (calibration_batch, get_data, random_crop_flip, read_cifar_batch,
                           write_cifar_batch)
from compress.models import build_model
from shiftq.errors import UserError


@pytest.fixture(scope="module")
def digitnet():
    return build_model("digitnet")


def test_digits_split_is_fixed_stratified_and_normalised(digitnet):
    d = get_data("digits", digitnet, batch_size=100)
    assert d.train.num_samples + d.test.num_samples == 1797
    assert d.test.num_samples == 360
    assert d.train.x.shape[1:] == (1, 8, 8) and d.input_shape == (1, 8, 8)
    assert abs(float(d.train.x.mean())) < 1e-4 and abs(float(d.train.x.std()) - 1) < 1e-3
    counts = torch.bincount(d.test.y, minlength=10)
    assert counts.min() >= 35 and counts.max() <= 37  # stratified: ~36 of each digit
    d2 = get_data("digits", digitnet, seed=5)  # the split does not depend on the run's seed
    assert torch.equal(d.test.x, d2.test.x)


def test_epoch_order_is_deterministic_and_differs_between_epochs(digitnet):
    d = get_data("digits", digitnet, batch_size=64)
    d.train.set_epoch(1)
    a = [y for _, y in d.train]
    d.train.set_epoch(2)
    b = [y for _, y in d.train]
    d.train.set_epoch(1)
    c = [y for _, y in d.train]
    assert all(torch.equal(u, v) for u, v in zip(a, c))
    assert not all(torch.equal(u, v) for u, v in zip(a, b))
    assert sum(len(y) for y in a) == d.train.num_samples


def _write_tiny_cifar(root, n_train=6, n_test=4, seed=0):
    rng = np.random.default_rng(seed)
    imgs = {}
    for name, n in [(f"data_batch_{i}", n_train) for i in range(1, 6)] + [("test_batch", n_test)]:
        x = rng.integers(0, 256, (n, 3, 32, 32), dtype=np.uint8)
        y = rng.integers(0, 10, n)
        write_cifar_batch(root / "cifar-10-batches-py" / name, x, y)
        imgs[name] = (x, y)
    return imgs


def test_cifar_loader_reads_the_python_batches(tmp_path):
    imgs = _write_tiny_cifar(tmp_path)
    d = get_data("cifar10", build_model("resnet20"), batch_size=8, data_dir=tmp_path)
    assert d.train.num_samples == 30 and d.test.num_samples == 4
    x, y = next(iter(d.test))
    tx, ty = imgs["test_batch"]
    assert torch.equal(y, torch.from_numpy(ty))
    mean = torch.tensor([0.4914, 0.4822, 0.4465]).view(1, 3, 1, 1)
    std = torch.tensor([0.2470, 0.2435, 0.2616]).view(1, 3, 1, 1)
    expect = (torch.from_numpy(tx).float() / 255 - mean) / std
    assert torch.allclose(x, expect, atol=1e-6)
    xb, yb = next(iter(d.train))
    assert xb.shape == (8, 3, 32, 32) and xb.dtype == torch.float32
    assert calibration_batch(d, 5).shape == (5, 3, 32, 32)


def test_crop_flip_moves_pixels_and_pads_with_zero():
    g = torch.Generator().manual_seed(0)
    x = torch.randint(1, 256, (64, 3, 32, 32), dtype=torch.uint8)
    out = random_crop_flip(x, g, pad=4)
    assert out.shape == x.shape
    assert (out == 0).any()  # some crop reached the zero padding
    # without padding, each image is itself or its mirror
    out0 = random_crop_flip(x, torch.Generator().manual_seed(1), pad=0)
    same = (out0 == x).flatten(1).all(1)
    flipped = (out0 == x.flip(3)).flatten(1).all(1)
    assert (same | flipped).all() and flipped.any() and same.any()


def test_cifar_missing_files_say_how_to_get_them(tmp_path):
    with pytest.raises(UserError, match="cifar-10-python.tar.gz"):
        get_data("cifar10", data_dir=tmp_path)


def test_cifar_download_without_torchvision_is_one_line(tmp_path, monkeypatch):
    import builtins
    real = builtins.__import__

    def no_torchvision(name, *a, **k):
        if name.startswith("torchvision"):
            raise ImportError(name)
        return real(name, *a, **k)
    monkeypatch.setattr(builtins, "__import__", no_torchvision)
    with pytest.raises(UserError, match="torchvision") as e:
        get_data("cifar10", data_dir=tmp_path, download=True)
    assert "\n" not in str(e.value)


def test_corrupt_cifar_batch_is_a_user_error(tmp_path):
    p = tmp_path / "data_batch_1"
    p.write_bytes(b"not a pickle at all")
    with pytest.raises(UserError):
        read_cifar_batch(p)
    import pickle
    p.write_bytes(pickle.dumps(__import__("os").system))  # a callable: refused, never run
    with pytest.raises(UserError):
        read_cifar_batch(p)


def test_synthetic_takes_the_model_input_shape():
    m = build_model("resnet20")
    d = get_data("synthetic", m, batch_size=4)
    x, y = next(iter(d.train))
    assert x.shape == (4, 3, 32, 32) and y.max() < 10
    assert len(d.train) == 4


def test_unknown_data_and_mismatched_model_are_user_errors(digitnet):
    with pytest.raises(UserError, match="unknown data set"):
        get_data("mnist", digitnet)
    with pytest.raises(UserError, match="shape"):
        get_data("digits", build_model("resnet20"))
