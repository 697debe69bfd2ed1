"""Dataset builders, registered by name: ``load_dataset("mnist1d", seed=0, size="ci")``.

Sizes: ``"ci"`` builds in well under a second on a laptop CPU, ``"default"`` is the normal
experiment size, ``"gpu"`` is as large as the source allows (same as default for the fixed-size
classification sets).
"""
from __future__ import annotations

from collections.abc import Callable

from workbench.data.dataset import Dataset, Task
from workbench.data.digits import load_digits
from workbench.data.mnist1d import load_mnist1d
from workbench.data.synthetic import make_blobs
from workbench.data.text import VOCAB_SIZE, load_stdlib_bytes, sample_batch, split_stream

SIZES = ("ci", "default", "gpu")


def _classification(name: str, tensors: tuple, n_classes: int) -> Dataset:
    x_train, y_train, x_test, y_test = tensors
    return Dataset(name, "classification", x_train, y_train, x_test, y_test,
                   input_dim=x_train.shape[1], n_classes=n_classes)


def _mnist1d(seed: int, size: str) -> Dataset:
    num_samples = {"ci": 1000, "default": 5000, "gpu": 5000}[size]
    return _classification("mnist1d", load_mnist1d(seed=seed, num_samples=num_samples), 10)


def _digits(seed: int, size: str) -> Dataset:
    return _classification("digits", load_digits(seed=seed), 10)


def _synthetic(seed: int, size: str) -> Dataset:
    n_train, n_test = {"ci": (512, 256), "default": (2048, 1024), "gpu": (8192, 2048)}[size]
    blobs = make_blobs(n_train, n_test, input_dim=8, n_classes=4, seed=seed)
    return _classification("synthetic", blobs, n_classes=4)


def _bytes(seed: int, size: str) -> Dataset:
    """The corpus is fixed by the Python install; ``seed`` only matters for batch sampling."""
    max_bytes, block_size = {"ci": (200_000, 64), "default": (4_000_000, 128),
                             "gpu": (32_000_000, 256)}[size]
    train, val = split_stream(load_stdlib_bytes(max_bytes), val_fraction=0.1)
    return Dataset("bytes", "lm", train, None, val, None,
                   vocab_size=VOCAB_SIZE, block_size=block_size)


DATASETS: dict[str, Callable[[int, str], Dataset]] = {
    "mnist1d": _mnist1d,
    "digits": _digits,
    "bytes": _bytes,
    "synthetic": _synthetic,
}


def load_dataset(name: str, seed: int = 0, size: str = "default") -> Dataset:
    """Build dataset ``name`` (one of :data:`DATASETS`) at ``size`` (one of :data:`SIZES`).

    The same ``(name, seed, size)`` always gives the same tensors.
    """
    if name not in DATASETS:
        raise ValueError(f"unknown dataset {name!r}; valid names: {', '.join(sorted(DATASETS))}")
    if size not in SIZES:
        raise ValueError(f"unknown size {size!r}; valid sizes: {', '.join(SIZES)}")
    return DATASETS[name](seed, size)


__all__ = ["DATASETS", "SIZES", "Dataset", "Task", "load_dataset", "sample_batch"]
