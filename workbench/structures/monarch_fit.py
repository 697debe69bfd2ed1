"""Optimal projection of a dense weight onto Monarch matrices, with a fit report.

After the permutations, a Monarch weight splits into ``b²`` disjoint sub-blocks
``W[l::b, k·p:(k+1)·p]`` (rows ``o ≡ l mod b``, input block ``k``), and sub-block ``(l, k)`` is
any matrix of rank at most ``R(k, l) = #{j in [k·q, (k+1)·q) : j ≡ l (mod b)}`` (= q/b when b
divides q), each through its own middle units. So the Frobenius-optimal Monarch approximation
is a truncated SVD of every sub-block at that rank (Eckart–Young, block by block), and the
squared residual is the sum of the discarded squared singular values.

Padding: rows past ``out_features`` and columns past ``in_features`` are never seen (inputs are
zero-padded, outputs cut), so the objective is ``‖W − M[:out, :in]‖_F``. Each sub-block's seen
part is a full rectangle (seen rows × seen columns); zero-padding it changes no singular value
or seen entry of its truncated SVD, so the result is optimal for padded sizes too.
"""
from __future__ import annotations

import dataclasses
import math

import torch
import torch.nn.functional as F

from .monarch import MonarchLinear
from .topk_svd import topk_svd


@dataclasses.dataclass
class MonarchFit:
    """How well a Monarch layer fits the dense weight it was projected from.

    ``block_residual_sq`` (b, b) and ``block_norm_sq`` (b, b) are indexed [l, k] (output
    residue class l, input block k); ``ranks`` (b, b) the rank each sub-block could keep.
    """
    nblocks: int
    residual_sq: float
    norm_sq: float
    block_residual_sq: torch.Tensor
    block_norm_sq: torch.Tensor
    ranks: torch.Tensor
    method: str

    @property
    def relative_error(self) -> float:
        """‖W − M‖_F / ‖W‖_F."""
        return math.sqrt(self.residual_sq / self.norm_sq) if self.norm_sq > 0 else 0.0


def sub_blocks(weight: torch.Tensor, nblocks: int) -> torch.Tensor:
    """(out, in) -> (b, b, s, p): ``[l, k] = W_padded[l::b, k·p:(k+1)·p]``."""
    out, inp = weight.shape
    b = nblocks
    s, p = math.ceil(out / b), math.ceil(inp / b)
    padded = F.pad(weight, (0, b * p - inp, 0, b * s - out))
    return padded.view(s, b, b, p).permute(1, 2, 0, 3)


def sub_block_ranks(nblocks: int, mid_block: int) -> torch.Tensor:
    """(b, b) ranks ``[l, k]`` a Monarch layer can hold in each sub-block."""
    j = torch.arange(nblocks * mid_block)
    ranks = torch.zeros(nblocks, nblocks, dtype=torch.long)
    ranks.index_put_((j % nblocks, j // mid_block), torch.ones_like(j), accumulate=True)
    return ranks


@torch.no_grad()
def project(weight: torch.Tensor, nblocks: int | str = 4, bias: torch.Tensor | None = None,
            method: str = "auto", tol: float = 1e-6, dtype: torch.dtype | None = None,
            generator: torch.Generator | None = None, impl: str = "auto") -> MonarchLinear:
    """The ``MonarchLinear`` closest to ``weight`` (out, in) in Frobenius norm.

    ``method``: ``"exact"`` (full SVD per sub-block), ``"randomized"`` (subspace iteration to
    tolerance ``tol``, see ``topk_svd``) or ``"auto"`` (exact on the CPU). Works in float32
    (float64 if given float64) and returns a layer in ``dtype`` (default: the weight's) on the
    weight's device, with ``impl`` (see ``MonarchLinear``); fit report in ``.fit``.
    """
    if weight.ndim != 2:
        raise ValueError(f"project: weight must be (out, in), got shape {tuple(weight.shape)}")
    if not torch.isfinite(weight).all():
        raise ValueError("project: weight contains NaN or infinite values")
    out, inp = weight.shape
    if bias is not None and tuple(bias.shape) != (out,):
        raise ValueError(f"project: bias must have shape ({out},), got {tuple(bias.shape)}")
    if bias is not None and not torch.isfinite(bias).all():
        raise ValueError("project: bias contains NaN or infinite values")
    layer = MonarchLinear(inp, out, nblocks, bias=bias is not None, device=weight.device,
                          dtype=torch.float64 if weight.dtype == torch.float64 else torch.float32,
                          impl=impl)
    b, q = layer.nblocks, layer.mid_block
    work = weight.to(layer.w1.dtype)
    blocks = sub_blocks(work, b).reshape(b * b, layer.out_block, layer.in_block)
    ranks = sub_block_ranks(b, q).to(weight.device)
    u, s, v = topk_svd(blocks, int(ranks.max()), method=method, tol=tol, generator=generator)
    _assign_factors(layer, u, s, v)
    if bias is not None:
        layer.bias.copy_(bias)
    keep = torch.arange(s.shape[-1], device=s.device) < ranks.reshape(-1, 1)
    block_norm = blocks.square().sum((-2, -1))
    # the residual itself, not ‖W‖² − Σ kept σ²: that difference cancels (in float32 an exact
    # fit reported relative errors ~1e-4 instead of ~1e-7)
    kept = (u * (s * keep).unsqueeze(-2)) @ v.mT
    block_res = (blocks - kept).square().sum((-2, -1))
    layer.fit = MonarchFit(b, float(block_res.sum()), float(block_norm.sum()),
                           block_res.view(b, b).cpu(), block_norm.view(b, b).cpu(),
                           ranks.cpu(), method)
    return layer.to(dtype or weight.dtype)


def _assign_factors(layer: MonarchLinear, u, s, v) -> None:
    """Middle unit j (block k = j div q, row i = j mod q) carries component t = i div b of
    sub-block (l = j mod b, k); its w2 column sits at position r = j div b of block l."""
    b, q = layer.nblocks, layer.mid_block
    j = torch.arange(b * q, device=u.device)
    k, i, l, r = j // q, j % q, j % b, j // b
    pair, t = l * b + k, i // b
    root = s[pair, t].clamp_min(0).sqrt()                 # (b·q,)
    layer.w1.zero_()
    layer.w2.zero_()
    layer.w1[k, i] = root[:, None] * v[pair, :, t]        # (b·q, p)
    layer.w2[l, :, r] = root[:, None] * u[pair, :, t]     # (b·q, s)
