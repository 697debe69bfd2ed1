"""Monarch matrices (Dao et al. 2022): ``M = P2 · blockdiag(w2) · P1 · blockdiag(w1)``.

Layout, for ``b = nblocks`` blocks (as in the paper's reference layer):
- the input (length ``in_features``) is zero-padded to ``in_ext = b·p`` with ``p = ceil(in/b)``
  and cut into ``b`` blocks of ``p``;
- ``w1``: (b, q, p) maps each input block to ``q = min(p, s)`` middle units, ``b·q`` in all;
- P1: the middle vector, indexed ``j = k·q + i`` (block ``k``, unit ``i``), is read as a (q, b)
  grid and transposed: unit ``j`` goes to block ``l = j mod b``, position ``r = j div b``;
- ``w2``: (b, s, q) maps each middle block to ``s = ceil(out/b)`` outputs;
- P2: output ``o = t·b + l`` comes from block ``l``, row ``t``; the ``out_ext = b·s`` outputs are
  cut back to ``out_features``.
So dense entry ``(o, i)`` with ``o ≡ l (mod b)`` and ``i`` in input block ``k`` is reached only
through the middle units ``j`` with ``j div q = k`` and ``j mod b = l``: each of the ``b²``
sub-blocks ``W[l::b, k·p:(k+1)·p]`` is an independent low-rank matrix (rank ``q/b`` when ``b``
divides ``q``). ``monarch_fit.project`` uses this for the optimal projection.

Parameters (no bias): ``b·q·(p + s) = min(in_ext, out_ext)·(in_ext + out_ext)/b``; forward FLOPs
per row: twice that. Square ``n`` with ``b = √n`` is the canonical form (all sizes ``√n``).
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from ..surgery import dense_linear

INITS = ("variance_matched", "reference")


class MonarchLinear(nn.Module):
    """Drop-in replacement for ``nn.Linear(in_features, out_features)`` with a Monarch weight.

    ``nblocks``: an int >= 1, or ``"sqrt"`` for the canonical ``round(√max(in, out))`` blocks.
    ``init``: ``"variance_matched"`` (default) gives the output the same variance as
    ``nn.Linear``'s default init for unit-variance inputs (1/3); ``"reference"`` is the public
    reference code's ``U(±1/√fan_in)`` per factor, which starts about √3 times quieter.
    ``impl``: how forward multiplies, see ``monarch_kernels.resolve_impl``: ``"auto"`` (default:
    the fast plan for bf16/fp16 CUDA inputs, else ``"plain"``), ``"plain"`` (two bmm with
    permutation copies), ``"torch"`` or ``"triton"`` (the fast plan: strided cuBLAS GEMMs and
    Triton transposes), ``"dense"`` (the weight built from the factors, ``monarch_weight``,
    then one dense GEMM: dense speed and dense FLOPs). On the H200 (benchmarks/NOTES.md,
    2026-11-30) the fast plan's fwd+bwd beat dense from n = 4096 eager and from n = 2048 under
    CUDA graphs (1.1-1.5x at n = 2048, b = 4-16); at n = 1024 neither it (0.22-0.24 ms) nor
    ``"dense"`` (0.19 ms) beat dense (0.16 ms, 16384 tokens, CUDA graphs).
    Input (..., in_features) -> output (..., out_features).
    """

    def __init__(self, in_features: int, out_features: int, nblocks: int | str = 4,
                 bias: bool = True, init: str = "variance_matched", device=None, dtype=None,
                 impl: str = "auto"):
        super().__init__()
        if nblocks == "sqrt":
            nblocks = max(1, round(math.sqrt(max(in_features, out_features))))
        for name, value in (("in_features", in_features), ("out_features", out_features),
                            ("nblocks", nblocks)):
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ValueError(f"MonarchLinear: {name} must be a positive int, got {value!r}")
        if init not in INITS:
            raise ValueError(f"MonarchLinear: init must be one of {INITS}, got {init!r}")
        from .monarch_kernels import IMPLS
        if impl not in IMPLS:
            raise ValueError(f"MonarchLinear: impl must be one of {IMPLS}, got {impl!r}")
        self.in_features, self.out_features, self.nblocks = in_features, out_features, nblocks
        self.in_block = math.ceil(in_features / nblocks)     # p
        self.out_block = math.ceil(out_features / nblocks)   # s
        self.mid_block = min(self.in_block, self.out_block)  # q
        b, p, q, s = nblocks, self.in_block, self.mid_block, self.out_block
        factory = {"device": device, "dtype": dtype}
        self.w1 = nn.Parameter(torch.empty(b, q, p, **factory))
        self.w2 = nn.Parameter(torch.empty(b, s, q, **factory))
        self.bias = nn.Parameter(torch.empty(out_features, **factory)) if bias else None
        self.init = init
        self.impl = impl
        self.reset_parameters()

    # ---- sizes -------------------------------------------------------------------------------
    @property
    def in_ext(self) -> int:
        return self.nblocks * self.in_block

    @property
    def out_ext(self) -> int:
        return self.nblocks * self.out_block

    def extra_repr(self) -> str:
        return (f"in_features={self.in_features}, out_features={self.out_features}, "
                f"nblocks={self.nblocks}, blocks=(p={self.in_block}, q={self.mid_block}, "
                f"s={self.out_block}), bias={self.bias is not None}")

    # ---- init --------------------------------------------------------------------------------
    @torch.no_grad()
    def reset_parameters(self) -> None:
        if self.init == "reference":
            bound1, bound2 = 1 / math.sqrt(self.in_block), 1 / math.sqrt(self.mid_block)
        else:
            # w1: unit-variance middle units (each sees in/b real inputs on average);
            # w2: output variance 1/3, as nn.Linear's U(±1/√in) gives (in · 1/(3·in)).
            bound1 = math.sqrt(3 * self.nblocks / self.in_features)
            bound2 = 1 / math.sqrt(self.mid_block)
        self.w1.uniform_(-bound1, bound1)
        self.w2.uniform_(-bound2, bound2)
        if self.bias is not None:
            bound = 1 / math.sqrt(self.in_features)
            self.bias.uniform_(-bound, bound)

    # ---- compute -----------------------------------------------------------------------------
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.ndim == 0 or x.shape[-1] != self.in_features:
            raise ValueError(f"MonarchLinear expects (..., {self.in_features}) inputs, "
                             f"got {tuple(x.shape)}")
        lead = x.shape[:-1]
        from .monarch_kernels import monarch_multiply_fast
        y = monarch_multiply_fast(x.reshape(-1, self.in_features), self.w1, self.w2,
                                  self.out_features, impl=self.impl)
        if self.bias is not None:
            y = y + self.bias
        return y.reshape(*lead, self.out_features)

    @torch.no_grad()
    def to_dense(self) -> torch.Tensor:
        """The (out_features, in_features) weight this layer multiplies by (bias excluded)."""
        return monarch_weight(self.w1, self.w2, self.out_features, self.in_features)

    def to_linear(self) -> nn.Linear:
        """An ``nn.Linear`` with the same function (for reverse sparsification); a frozen
        factor or bias stays frozen."""
        linear = dense_linear(self.to_dense(), self.bias)
        linear.weight.requires_grad_(self.w1.requires_grad or self.w2.requires_grad)
        if self.bias is not None:
            linear.bias.requires_grad_(self.bias.requires_grad)
        return linear

    # ---- cost --------------------------------------------------------------------------------
    def num_params(self) -> int:
        return sum(p.numel() for p in self.parameters())

    def flops(self, batch_shape: tuple[int, ...] = ()) -> int:
        """FLOPs of one forward on inputs with leading shape ``batch_shape`` (padding counted,
        since the padded products are computed; with ``impl="dense"`` the dense product's,
        the weight's construction, once per call, left out)."""
        rows = math.prod(batch_shape) if batch_shape else 1
        per_row = 2 * (self.w1.numel() + self.w2.numel())
        if self.impl == "dense":
            per_row = 2 * self.in_features * self.out_features
        return rows * (per_row + (self.out_features if self.bias is not None else 0))

    @classmethod
    def from_dense(cls, weight: torch.Tensor, nblocks: int | str = 4,
                   bias: torch.Tensor | None = None, **kwargs) -> "MonarchLinear":
        """The Monarch layer closest to ``weight`` (out, in) in Frobenius norm; see
        ``workbench.structures.monarch_fit.project``. The fit report is in ``layer.fit``."""
        from .monarch_fit import project
        return project(weight, nblocks, bias=bias, **kwargs)


def monarch_multiply(x: torch.Tensor, w1: torch.Tensor, w2: torch.Tensor,
                     out_features: int) -> torch.Tensor:
    """``x`` (N, in) -> (N, out_features) through w1 (b, q, p), P1, w2 (b, s, q), P2."""
    b, q, p = w1.shape
    s = w2.shape[1]
    n = x.shape[0]
    if x.shape[1] < b * p:
        x = F.pad(x, (0, b * p - x.shape[1]))
    h = torch.bmm(x.view(n, b, p).transpose(0, 1), w1.transpose(1, 2))   # (b, N, q)
    h = h.transpose(0, 1).reshape(n, q, b).permute(2, 0, 1)                # P1 -> (b, N, q)
    y = torch.bmm(h, w2.transpose(1, 2))                                   # (b, N, s)
    return y.permute(1, 2, 0).reshape(n, s * b)[:, :out_features]          # P2, cut padding


def monarch_weight(w1: torch.Tensor, w2: torch.Tensor, out_features: int,
                   in_features: int) -> torch.Tensor:
    """The dense (out_features, in_features) matrix of w1 (b, q, p), P1, w2 (b, s, q), P2,
    differentiably. Where b divides q, each sub-block W[l::b, k·p:(k+1)·p] is the product of
    q/b rows of w1[k] and q/b columns of w2[l] (one einsum, 2·b·s·q·p FLOPs); otherwise the
    identity is multiplied through (``monarch_multiply``)."""
    b, q, p = w1.shape
    s = w2.shape[1]
    if q % b:
        eye = torch.eye(in_features, device=w1.device, dtype=w1.dtype)
        return monarch_multiply(eye, w1, w2, out_features).T.contiguous()
    c = q // b  # middle unit j = k·q + c'·b + l = r·b + l with r = k·c + c'
    w1v = w1.view(b, c, b, p)   # [k, c', l, p']
    w2v = w2.view(b, s, b, c)   # [l, s', k, c']
    dense = torch.einsum("lskc,kclp->slkp", w2v, w1v).reshape(s * b, b * p)
    return dense[:out_features, :in_features]
