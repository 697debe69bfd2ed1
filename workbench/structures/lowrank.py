"""Low-rank layers: ``W ≈ U·V`` with U (out, r) and V (r, in), the truncated SVD optimum.

Truncated SVD is the Frobenius-optimal rank-r approximation (Eckart–Young); ``from_dense``
splits the singular values evenly between the two factors (``U = U_r·√Σ_r``, ``V = √Σ_r·V_rᵀ``).
``rank_for_params`` picks the rank that matches another layer's parameter count, for
comparisons at equal size (e.g. against Monarch).
"""
from __future__ import annotations

import math

import torch
from torch import nn


class LowRankLinear(nn.Module):
    """``nn.Linear(in_features, out_features)`` with weight ``U @ V`` of rank ``rank``.

    Input (..., in_features) -> output (..., out_features). Init: V ~ U(±√(3/in)) gives unit-
    variance middle units, U ~ U(±1/√rank) gives output variance 1/3 like ``nn.Linear``.
    """

    def __init__(self, in_features: int, out_features: int, rank: int, bias: bool = True,
                 device=None, dtype=None):
        super().__init__()
        for name, value in (("in_features", in_features), ("out_features", out_features),
                            ("rank", rank)):
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ValueError(f"LowRankLinear: {name} must be a positive int, got {value!r}")
        self.in_features, self.out_features, self.rank = in_features, out_features, rank
        factory = {"device": device, "dtype": dtype}
        self.v = nn.Parameter(torch.empty(rank, in_features, **factory))
        self.u = nn.Parameter(torch.empty(out_features, rank, **factory))
        self.bias = nn.Parameter(torch.empty(out_features, **factory)) if bias else None
        self.reset_parameters()

    @torch.no_grad()
    def reset_parameters(self) -> None:
        self.v.uniform_(-math.sqrt(3 / self.in_features), math.sqrt(3 / self.in_features))
        self.u.uniform_(-1 / math.sqrt(self.rank), 1 / math.sqrt(self.rank))
        if self.bias is not None:
            bound = 1 / math.sqrt(self.in_features)
            self.bias.uniform_(-bound, bound)

    def extra_repr(self) -> str:
        return (f"in_features={self.in_features}, out_features={self.out_features}, "
                f"rank={self.rank}, bias={self.bias is not None}")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[-1] != self.in_features:
            raise ValueError(f"LowRankLinear expects (..., {self.in_features}) inputs, "
                             f"got {tuple(x.shape)}")
        y = (x @ self.v.T) @ self.u.T
        return y + self.bias if self.bias is not None else y

    @torch.no_grad()
    def to_dense(self) -> torch.Tensor:
        """The (out_features, in_features) weight ``U @ V``."""
        return self.u @ self.v

    def num_params(self) -> int:
        return sum(p.numel() for p in self.parameters())

    def flops(self, batch_shape: tuple[int, ...] = ()) -> int:
        rows = math.prod(batch_shape) if batch_shape else 1
        bias = self.out_features if self.bias is not None else 0
        return rows * (2 * self.rank * (self.in_features + self.out_features) + bias)

    @classmethod
    @torch.no_grad()
    def from_dense(cls, weight: torch.Tensor, rank: int,
                   bias: torch.Tensor | None = None) -> "LowRankLinear":
        """The rank-``rank`` layer closest to ``weight`` (out, in) in Frobenius norm; the
        relative error ‖W − UV‖/‖W‖ is in ``layer.relative_error``."""
        if weight.ndim != 2:
            raise ValueError(f"LowRankLinear.from_dense: weight must be (out, in), got "
                             f"{tuple(weight.shape)}")
        if not torch.isfinite(weight).all():
            raise ValueError("LowRankLinear.from_dense: weight contains NaN or infinite values")
        out, inp = weight.shape
        rank = min(rank, out, inp)
        work = weight.double() if weight.dtype == torch.float64 else weight.float()
        u, s, vh = torch.linalg.svd(work, full_matrices=False)
        layer = cls(inp, out, rank, bias=bias is not None, device=weight.device,
                    dtype=work.dtype)
        root = s[:rank].sqrt()
        layer.u.copy_(u[:, :rank] * root)
        layer.v.copy_(root[:, None] * vh[:rank])
        if bias is not None:
            layer.bias.copy_(bias)
        total = s.square().sum()
        layer.relative_error = float((s[rank:].square().sum() / total).sqrt()) if total > 0 \
            else 0.0
        return layer.to(weight.dtype)


def rank_for_params(in_features: int, out_features: int, params: int) -> int:
    """The largest rank whose factors (no bias) hold at most ``params`` entries (at least 1)."""
    return max(1, params // (in_features + out_features))
