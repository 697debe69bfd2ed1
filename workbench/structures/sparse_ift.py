"""Sparse Iso-FLOP Transformations (Saxena et al., "Sparse-IFT", ICML 2024): layer modules.

Each module replaces one dense ``nn.Linear(d_in, d_out)`` by sparse pieces (``MaskedLinear``
with static random masks) whose kept weights add up to exactly ``d_in·d_out``, so its effective
FLOPs, ``rows·(2·nonzeros + d_out)``, equal the dense layer's; ``sparsity`` s buys a larger
search space instead of fewer FLOPs. Paper claim: at equal training FLOPs, the transformed
networks reach higher accuracy than dense (ResNet / ViT on ImageNet, GPT-3 style LMs).

- :class:`SparseParallelLinear`: ``round(1/(1-s))`` sparse (d_out, d_in) branches, summed.
- :class:`SparseFactorizedLinear`: ``W = B·A``, A (h, d_in) and B (d_out, h) sparse,
  hidden width ``h = ceil(d_in·d_out / ((1-s)(d_in+d_out)))``; no nonlinearity in between.
- :class:`SparseDopedLinear`: ``W = U·V + S``, a dense rank ``floor(s·d_in·d_out/(d_in+d_out))``
  part plus a sparse S holding the remaining ``d_in·d_out - r(d_in+d_out)`` weights.

Sparse Wide (every width × √(1/(1-s))) changes the model, not a layer: see
``workbench.methods.sparse_ift.sparse_wide``. Rounding (branch count, hidden width, rank) only
moves the pieces' sparsity a little away from s; the nonzero total, hence the FLOPs, stays exact.
"""
from __future__ import annotations

import math

import torch
from torch import nn

from .lowrank import LowRankLinear
from .mask_makers import check_sparsity, keep_largest
from .masked import MaskedLinear


def _sparsity(s, where: str) -> float:
    return check_sparsity(s, where, upper_inclusive=False)


def parallel_branches(sparsity: float) -> int:
    """Sparse Parallel's branch count, ``round(1/(1-s))`` (at least 1)."""
    return max(1, round(1 / (1 - _sparsity(sparsity, "parallel_branches"))))


def factorized_hidden(in_features: int, out_features: int, sparsity: float) -> int:
    """Sparse Factorized's hidden width ``ceil(d_in·d_out / ((1-s)(d_in+d_out)))``."""
    s = _sparsity(sparsity, "factorized_hidden")
    return math.ceil(in_features * out_features / ((1 - s) * (in_features + out_features)) - 1e-9)


def doped_rank(in_features: int, out_features: int, sparsity: float) -> int:
    """Sparse Doped's dense low-rank part, ``floor(s·d_in·d_out/(d_in+d_out))``."""
    s = _sparsity(sparsity, "doped_rank")
    return math.floor(s * in_features * out_features / (in_features + out_features) + 1e-9)


def split_count(total: int, sizes: list[int]) -> list[int]:
    """``total`` split over pieces in proportion to ``sizes`` by largest remainders: the parts
    sum to ``total`` exactly and none exceeds its size."""
    if total > sum(sizes):
        raise ValueError(f"split_count: {total} weights do not fit in pieces of {sizes}")
    exact = [total * s / sum(sizes) for s in sizes]
    parts = [math.floor(e) for e in exact]
    for i in sorted(range(len(sizes)), key=lambda i: parts[i] - exact[i])[:total - sum(parts)]:
        parts[i] += 1
    return parts


@torch.no_grad()
def random_piece(in_features: int, out_features: int, nonzeros: int, std: float,
                 generator: torch.Generator | None = None) -> MaskedLinear:
    """A bias-free MaskedLinear keeping exactly ``nonzeros`` uniformly random weights, drawn
    U(±√3·std) (CPU RNG; ``generator`` or the global one)."""
    layer = MaskedLinear(in_features, out_features, bias=False)
    bound = math.sqrt(3) * std
    layer.weight.copy_(torch.rand(layer.weight.shape, generator=generator) * 2 * bound - bound)
    scores = torch.rand(layer.weight.numel(), generator=generator)
    layer.set_mask(keep_largest(scores, nonzeros).view(layer.weight.shape))
    return layer


class _IsoFlopLinear(nn.Module):
    """Shared parts: the output bias, shape checks, cost (pieces' FLOPs plus the bias adds)."""

    def __init__(self, in_features: int, out_features: int, sparsity: float, bias: bool):
        super().__init__()
        where = type(self).__name__
        for name, value in (("in_features", in_features), ("out_features", out_features)):
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ValueError(f"{where}: {name} must be a positive int, got {value!r}")
        self.sparsity = _sparsity(sparsity, where)
        self.in_features, self.out_features = in_features, out_features
        self.bias = nn.Parameter(torch.empty(out_features).uniform_(
            -1 / math.sqrt(in_features), 1 / math.sqrt(in_features))) if bias else None

    def pieces(self) -> list[nn.Module]:
        raise NotImplementedError

    def _check(self, x: torch.Tensor) -> None:
        if x.shape[-1] != self.in_features:
            raise ValueError(f"{type(self).__name__} expects (..., {self.in_features}) inputs, "
                             f"got {tuple(x.shape)}")

    def _bias(self, y: torch.Tensor) -> torch.Tensor:
        return y + self.bias if self.bias is not None else y

    @property
    def nonzeros(self) -> int:
        """Weights a sparse kernel multiplies by: kept entries plus dense low-rank factors."""
        return sum(p.nnz if isinstance(p, MaskedLinear) else p.num_params()
                   for p in self.pieces())

    def num_params(self) -> int:
        """Stored parameters of a sparse format: ``nonzeros`` plus the bias."""
        return self.nonzeros + (self.out_features if self.bias is not None else 0)

    def flops(self, batch_shape: tuple[int, ...] = ()) -> int:
        """Effective FLOPs for inputs of leading shape ``batch_shape``: equal to the dense
        layer's ``rows·(2·d_in·d_out + d_out)`` by construction."""
        rows = math.prod(batch_shape) if batch_shape else 1
        bias = self.out_features if self.bias is not None else 0
        return sum(p.flops(batch_shape) for p in self.pieces()) + rows * bias

    def extra_repr(self) -> str:
        return (f"in_features={self.in_features}, out_features={self.out_features}, "
                f"sparsity={self.sparsity}, bias={self.bias is not None}")


class SparseParallelLinear(_IsoFlopLinear):
    """(..., d_in) -> (..., d_out): ``sum_i x·(M_i⊙W_i)ᵀ + b`` over ``round(1/(1-s))`` branches.

    The d_in·d_out kept weights are split evenly over the branches (random masks, which may
    overlap). Each branch draws nn.Linear's init, so the sum keeps the dense output variance.
    """

    def __init__(self, in_features: int, out_features: int, sparsity: float, bias: bool = True,
                 generator: torch.Generator | None = None):
        super().__init__(in_features, out_features, sparsity, bias)
        n = parallel_branches(self.sparsity)
        counts = split_count(in_features * out_features, [in_features * out_features] * n)
        std = 1 / math.sqrt(3 * in_features)
        self.branches = nn.ModuleList(random_piece(in_features, out_features, c, std, generator)
                                      for c in counts)

    def pieces(self) -> list[nn.Module]:
        return list(self.branches)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self._check(x)
        return self._bias(sum(branch(x) for branch in self.branches))

    @torch.no_grad()
    def to_dense(self) -> torch.Tensor:
        """The (d_out, d_in) weight, the sum of the masked branches."""
        return sum(branch.to_dense() for branch in self.branches)


class SparseFactorizedLinear(_IsoFlopLinear):
    """(..., d_in) -> (..., d_out): ``x·(M_A⊙A)ᵀ·(M_B⊙B)ᵀ + b``, A (h, d_in), B (d_out, h).

    The d_in·d_out kept weights are split between A and B in proportion to their sizes (each at
    sparsity about s). Init: unit-variance hidden units, output variance 1/3 like nn.Linear.
    """

    def __init__(self, in_features: int, out_features: int, sparsity: float, bias: bool = True,
                 generator: torch.Generator | None = None):
        super().__init__(in_features, out_features, sparsity, bias)
        self.hidden = h = factorized_hidden(in_features, out_features, self.sparsity)
        na, nb = split_count(in_features * out_features, [h * in_features, out_features * h])
        self.first = random_piece(in_features, h, na, 1 / math.sqrt(na / h), generator)
        self.second = random_piece(h, out_features, nb, 1 / math.sqrt(3 * nb / out_features),
                                   generator)

    def pieces(self) -> list[nn.Module]:
        return [self.first, self.second]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self._check(x)
        return self._bias(self.second(self.first(x)))

    @torch.no_grad()
    def to_dense(self) -> torch.Tensor:
        """The (d_out, d_in) product ``(M_B⊙B)·(M_A⊙A)``."""
        return self.second.to_dense() @ self.first.to_dense()


class SparseDopedLinear(_IsoFlopLinear):
    """(..., d_in) -> (..., d_out): ``x·(U·V)ᵀ + x·(M⊙S)ᵀ + b``; U·V dense of rank r (a
    ``LowRankLinear``, None when r = 0), S sparse with d_in·d_out − r(d_in+d_out) kept.

    Init: the two parts share nn.Linear's output variance 1/3 in proportion to their weights.
    """

    def __init__(self, in_features: int, out_features: int, sparsity: float, bias: bool = True,
                 generator: torch.Generator | None = None):
        super().__init__(in_features, out_features, sparsity, bias)
        self.rank = r = doped_rank(in_features, out_features, self.sparsity)
        total, low = in_features * out_features, r * (in_features + out_features)
        self.lowrank = LowRankLinear(in_features, out_features, r, bias=False) if r else None
        if self.lowrank is not None:
            with torch.no_grad():
                self.lowrank.u.mul_(math.sqrt(low / total))
        self.sparse = random_piece(in_features, out_features, total - low,
                                   1 / math.sqrt(3 * in_features), generator)

    def pieces(self) -> list[nn.Module]:
        return [self.sparse] + ([self.lowrank] if self.lowrank is not None else [])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self._check(x)
        y = self.sparse(x)
        return self._bias(y + self.lowrank(x) if self.lowrank is not None else y)

    @torch.no_grad()
    def to_dense(self) -> torch.Tensor:
        """The (d_out, d_in) weight ``U·V + M⊙S``."""
        w = self.sparse.to_dense()
        return w + self.lowrank.to_dense() if self.lowrank is not None else w


VARIANTS = {"parallel": SparseParallelLinear, "factorized": SparseFactorizedLinear,
            "doped": SparseDopedLinear}
