"""MNIST-1D (Greydanus & Steinbach, 2020): 10-class digits drawn as 1-D signals of length 40.

Built locally with the ``mnist1d`` package's generator; nothing is downloaded.
"""
from __future__ import annotations

import functools
import random

import numpy as np
import torch

SEQ_LEN = 40
N_CLASSES = 10
CANONICAL_SEED = 42  # the seed of the published mnist1d_data.pkl (4000 train / 1000 test)


@functools.lru_cache(maxsize=8)
def _generate(seed: int, num_samples: int) -> tuple[np.ndarray, ...]:
    """Run the package's generator (about 0.15 s per 1000 samples), once per argument pair."""
    from mnist1d.data import get_dataset_args, make_dataset  # slow import (matplotlib)

    args = get_dataset_args()
    args.seed = seed
    args.num_samples = num_samples
    # make_dataset reseeds the global numpy / random generators; leave the caller's untouched.
    np_state, py_state = np.random.get_state(), random.getstate()
    try:
        data = make_dataset(args)
    finally:
        np.random.set_state(np_state)
        random.setstate(py_state)
    return data["x"], data["y"], data["x_test"], data["y_test"]


def load_mnist1d(
    seed: int = CANONICAL_SEED, num_samples: int = 5000
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """MNIST-1D with the package's default arguments (80 / 20 train / test split).

    Returns x_train (0.8 N, 40) float32, y_train (0.8 N,) int64, x_test (0.2 N, 40) float32,
    y_test (0.2 N,) int64. ``seed`` drives the generator; 42 reproduces the published data.
    """
    x, y, x_test, y_test = _generate(seed, num_samples)
    as_x = lambda a: torch.tensor(a, dtype=torch.float32)  # noqa: E731 - copies the cache
    as_y = lambda a: torch.tensor(a, dtype=torch.int64)  # noqa: E731
    return as_x(x), as_y(y), as_x(x_test), as_y(y_test)
