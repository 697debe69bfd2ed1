"""A plain multilayer perceptron classifier."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class MLP(nn.Module):
    """``depth`` hidden layers of ``width`` units (Linear -> GELU), then a linear head.

    Input (B, input_dim) float; output logits (B, n_classes). Hidden layers are
    ``layers.0 ... layers.{depth-1}``; the classifier is ``head``.
    """

    def __init__(self, input_dim: int, width: int, depth: int, n_classes: int) -> None:
        super().__init__()
        if depth < 1:
            raise ValueError(f"depth must be >= 1, got {depth}")
        dims = [input_dim] + [width] * depth
        self.layers = nn.ModuleList(nn.Linear(a, b) for a, b in zip(dims[:-1], dims[1:]))
        self.head = nn.Linear(width, n_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for layer in self.layers:
            x = F.gelu(layer(x))
        return self.head(x)
