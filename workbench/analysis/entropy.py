"""Matrix Nuclear-Norm and Matrix Entropy of hidden states: how spread out a model's
representations of one text are (higher = more information, less collapse).

Both start from Z: the hidden states R (L tokens × d) centred over tokens (each feature's mean
over the L tokens removed), then each row L2-normalised (a row that centring zeroes stays 0).

- Matrix Nuclear-Norm (Li et al. 2024, "Large Language Model Evaluation via Matrix
  Nuclear-Norm"): MNN = (1/L)·Σ of the largest min(L, d) column L2-norms of Z, the L1,2 norm
  standing in for the nuclear norm ‖Z‖_* (equal when Z's columns are orthogonal). O(L·d), no
  SVD. Always ≤ √(min(L, d)/L) (Cauchy-Schwarz); for L ≥ d with no zero row also ≥ 1/√L,
  reached when the tokens collapse onto one axis (rows ±e_1).
- Matrix Entropy (Wei et al. 2024): eigenvalues of Σ = ZᵀZ/L divided by their sum (the trace),
  H = -Σ σ_i log σ_i, reported as H / log d: → 1 for isotropic tokens (L ≫ d), 0 when
  they collapse onto one direction.
  Computed from whichever Gram matrix is smaller, ZᵀZ (d×d) or ZZᵀ (L×L): the same nonzero
  eigenvalues, so the same H, at O(min(L, d)³) instead of O(d³).

Claim (METHODS.md): MNN is 8-24x faster than Matrix Entropy (Cerebras-GPT 111M -> 6.7B) while
ranking models consistently.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F


def normalised_states(hidden: torch.Tensor) -> torch.Tensor:
    """Z from hidden states (L, d) or (B, L, d): centred over tokens, rows L2-normalised.
    bf16/fp16 are upcast to float32; float64 stays float64."""
    if hidden.dim() not in (2, 3) or not hidden.is_floating_point():
        raise ValueError(f"expected float hidden states (L, d) or (B, L, d), got "
                         f"{tuple(hidden.shape)} {hidden.dtype}")
    R = hidden if hidden.dtype == torch.float64 else hidden.float()
    return F.normalize(R - R.mean(dim=-2, keepdim=True), dim=-1)


def matrix_nuclear_norm(hidden: torch.Tensor) -> torch.Tensor:
    """MNN of hidden states (L, d) -> scalar tensor, or (B, L, d) -> (B,)."""
    Z = normalised_states(hidden)
    L, d = Z.shape[-2:]
    norms = torch.linalg.vector_norm(Z, dim=-2)                # (..., d) column norms
    top = norms.topk(L, dim=-1).values if L < d else norms      # largest min(L, d)
    return top.sum(-1) / L


def matrix_entropy(hidden: torch.Tensor) -> torch.Tensor:
    """Normalised Matrix Entropy H / log d of hidden states (L, d) -> scalar, (B, L, d) -> (B,).
    NaN when every centred row is zero (L = 1 or identical tokens) or d = 1."""
    Z = normalised_states(hidden)
    L, d = Z.shape[-2:]
    gram = Z.mT @ Z if d <= L else Z @ Z.mT                    # Σ·L or its L×L twin
    ev = torch.linalg.eigvalsh(gram).clamp_min(0)
    p = ev / ev.sum(-1, keepdim=True)                           # divide by the trace
    H = -torch.special.xlogy(p, p).sum(-1)
    return H / math.log(d) if d > 1 else torch.full_like(H, math.nan)
