"""scikit-learn's bundled 8x8 handwritten digits (1797 images, 10 classes), flattened to 64."""
from __future__ import annotations

import numpy as np
import torch

N_FEATURES = 64
N_CLASSES = 10


def stratified_split(
    y: np.ndarray, test_fraction: float, seed: int
) -> tuple[np.ndarray, np.ndarray]:
    """Shuffled train / test index arrays holding ``test_fraction`` of every class in test."""
    rng = np.random.default_rng(seed)
    train, test = [], []
    for label in np.unique(y):
        idx = rng.permutation(np.flatnonzero(y == label))
        n_test = int(round(len(idx) * test_fraction))
        test.append(idx[:n_test])
        train.append(idx[n_test:])
    return rng.permutation(np.concatenate(train)), rng.permutation(np.concatenate(test))


def load_digits(
    seed: int = 0, test_fraction: float = 0.2
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Digits, standardized with train-split statistics (constant pixels stay 0).

    Returns x_train (N, 64) float32, y_train (N,) int64, x_test (M, 64), y_test (M,).
    """
    from sklearn.datasets import load_digits as sk_load_digits

    data = sk_load_digits()
    x, y = data.data.astype(np.float32), data.target.astype(np.int64)
    train, test = stratified_split(y, test_fraction, seed)
    mean = x[train].mean(0)
    std = x[train].std(0)
    std[std < 1e-6] = 1.0  # border pixels are always 0
    x = (x - mean) / std
    t = torch.from_numpy
    return t(x[train]), t(y[train]), t(x[test]), t(y[test])
