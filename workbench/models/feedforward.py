"""The two-layer feed-forward block shared by the GPT and the Mixer."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class FeedForward(nn.Module):
    """``proj(gelu(fc(x)))``: (..., dim) -> (..., dim) through a hidden width.

    ``fc`` and ``proj`` stay plain ``nn.Linear`` so structured-matrix methods can find and
    replace them by name (``*.mlp.fc``, ``*.mlp.proj``).
    """

    def __init__(self, dim: int, hidden: int, dropout: float = 0.0, bias: bool = True) -> None:
        super().__init__()
        self.fc = nn.Linear(dim, hidden, bias=bias)
        self.proj = nn.Linear(hidden, dim, bias=bias)
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.dropout(self.proj(F.gelu(self.fc(x))))
