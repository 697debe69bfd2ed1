"""Gaussian blobs: a tiny, seeded classification task for tests and smoke runs."""
from __future__ import annotations

import torch


def make_blobs(
    n_train: int = 512,
    n_test: int = 256,
    input_dim: int = 8,
    n_classes: int = 4,
    separation: float = 3.0,
    seed: int = 0,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """One unit-variance Gaussian per class; the class centres are random, mutually orthogonal
    and of norm ``separation`` (so ``n_classes <= input_dim``).

    With the defaults the best classifier reaches about 95 % accuracy (chance: 25 %).
    Returns x_train (n_train, input_dim) float32, y_train (n_train,) int64, x_test, y_test.
    """
    if n_classes > input_dim:
        raise ValueError(f"n_classes ({n_classes}) must not exceed input_dim ({input_dim})")
    g = torch.Generator().manual_seed(seed)
    q, _ = torch.linalg.qr(torch.randn(input_dim, n_classes, generator=g))  # orthonormal columns
    centres = separation * q.T  # (C, D)

    def sample(n: int) -> tuple[torch.Tensor, torch.Tensor]:
        y = torch.randint(n_classes, (n,), generator=g)
        x = centres[y] + torch.randn(n, input_dim, generator=g)
        return x, y

    x_train, y_train = sample(n_train)
    x_test, y_test = sample(n_test)
    return x_train, y_train, x_test, y_test
