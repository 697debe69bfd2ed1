"""N:M sparse layers: at most N kept weights in every group of M consecutive inputs of a row.

:class:`NMLinear` is a :class:`MaskedLinear` whose mask is an N:M mask. Two ways to train it:

- fixed mask (``refine=False``): the magnitude mask of the weight when it was set, held like any
  MaskedLinear mask (one-shot pruning, then fine-tuning);
- SR-STE (``refine=True``; Zhou et al., "Learning N:M fine-grained structured sparse neural
  networks from scratch", ICLR 2021): the dense weight W is trained; every forward recomputes the
  N:M magnitude mask E of the current W and multiplies by W ⊙ E; backward is straight-through
  with the sparse-refined term, ∂L/∂W = ∂L/∂W̃ + λ·(¬E) ⊙ W, which pulls the dropped weights
  toward zero so the mask settles. :meth:`NMLinear.freeze_` ends SR-STE training (fixes the mask
  and zeroes the dropped weights).

:func:`to_semi_structured` hands a 2:4-compliant layer to PyTorch's semi-structured sparse
kernels (CUDA, fp16 / bf16), behind the same ``nn.Linear`` interface.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .mask_makers import check_nm, nm_mask
from .masked import MaskedLinear


class _SRSTE(torch.autograd.Function):
    """W̃ = W ⊙ E forward; ∂L/∂W = ∂L/∂W̃ + λ·(¬E) ⊙ W backward (straight-through + refine)."""

    @staticmethod
    def forward(ctx, weight, mask, decay: float):
        ctx.save_for_backward(weight, mask)
        ctx.decay = decay
        return weight * mask

    @staticmethod
    def backward(ctx, grad):
        weight, mask = ctx.saved_tensors
        return grad + ctx.decay * weight * ~mask, None, None


def srste_weight(weight: torch.Tensor, mask: torch.Tensor, decay: float) -> torch.Tensor:
    """The SR-STE sparse weight W ⊙ E (out, in), differentiable as described above."""
    return _SRSTE.apply(weight, mask, decay)


class NMLinear(MaskedLinear):
    """``nn.Linear`` with an N:M sparse weight (groups of ``m`` consecutive inputs, at most ``n``
    kept). Input (..., in_features) -> output (..., out_features); ``in_features % m == 0``.
    ``refine``: SR-STE training with refine decay ``decay`` (λ; the paper's 2e-4)."""

    def __init__(self, in_features: int, out_features: int, n: int = 2, m: int = 4,
                 bias: bool = True, refine: bool = False, decay: float = 2e-4, device=None,
                 dtype=None):
        check_nm(n, m, in_features, "NMLinear")
        if not decay >= 0:
            raise ValueError(f"NMLinear: decay must be >= 0, got {decay!r}")
        self.n, self.m, self.refine, self.decay = n, m, refine, float(decay)
        super().__init__(in_features, out_features, bias=bias, device=device, dtype=dtype)
        if not self.weight.is_meta:  # a meta layer (e.g. for loading) has no values to rank
            self.update_mask_()

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, n={self.n}, m={self.m}, refine={self.refine}"

    @torch.no_grad()
    def update_mask_(self) -> None:
        """Set the mask to the N:M magnitude mask of the current weight."""
        self.weight_mask.copy_(nm_mask(self.weight, self.n, self.m))
        self.apply_mask_()

    @torch.no_grad()
    def apply_mask_(self) -> None:
        if not self.refine:  # under SR-STE the dropped weights live on, densely trained
            super().apply_mask_()

    @torch.no_grad()
    def set_mask(self, mask: torch.Tensor) -> None:
        """Set a mask, which must itself be N:M (at most n kept per group of m)."""
        counts = mask.reshape(mask.shape[0], -1, self.m).sum(-1) if mask.ndim == 2 and \
            mask.shape[-1] % self.m == 0 else None
        if counts is not None and int(counts.max()) > self.n:
            raise ValueError(f"NMLinear.set_mask: a group of {self.m} inputs keeps "
                             f"{int(counts.max())} > n={self.n} weights")
        super().set_mask(mask)

    def masked_weight(self) -> torch.Tensor:
        if not self.refine:
            return super().masked_weight()
        with torch.no_grad():  # SR-STE: the mask follows the current dense weight
            self.weight_mask.copy_(nm_mask(self.weight, self.n, self.m))
        return srste_weight(self.weight, self.weight_mask, self.decay)

    @torch.no_grad()
    def freeze_(self) -> None:
        """End SR-STE: fix the mask of the current weight and zero the dropped weights."""
        self.refine = False
        self.update_mask_()

    @classmethod
    @torch.no_grad()
    def from_dense(cls, linear_or_weight, mask=None, bias=None, *, n: int = 2, m: int = 4,
                   refine: bool = False, decay: float = 2e-4) -> "NMLinear":
        """An N:M layer from a linear-like module or weight (out, in), its mask the N:M
        magnitude mask of the weight (or ``mask``, which must be N:M)."""
        dense = MaskedLinear.from_dense(linear_or_weight, bias=bias)
        layer = cls(dense.in_features, dense.out_features, n, m, bias=dense.bias is not None,
                    refine=refine, decay=decay, device=dense.weight.device,
                    dtype=dense.weight.dtype)
        layer.load_state_dict(dense.state_dict())
        if mask is None:
            layer.update_mask_()
        else:
            layer.set_mask(mask)
        return layer


class SemiStructuredLinear(nn.Module):
    """Inference-only linear layer whose weight is a ``torch.sparse`` semi-structured (2:4)
    tensor; input (..., in) -> (..., out), computed by PyTorch's sparse kernels (CUDA only)."""

    def __init__(self, weight: torch.Tensor, bias: torch.Tensor | None):
        super().__init__()
        from torch.sparse import to_sparse_semi_structured
        self.out_features, self.in_features = weight.shape
        self.weight = nn.Parameter(to_sparse_semi_structured(weight), requires_grad=False)
        self.bias = None if bias is None else nn.Parameter(bias.detach().clone(),
                                                           requires_grad=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        lead = x.shape[:-1]
        y = F.linear(x.reshape(-1, self.in_features), self.weight, self.bias)
        return y.reshape(*lead, self.out_features)


SEMI_STRUCTURED_DTYPES = (torch.float16, torch.bfloat16)


@torch.no_grad()
def to_semi_structured(layer: MaskedLinear) -> SemiStructuredLinear:
    """The same function as ``layer`` (a MaskedLinear whose mask keeps at most 2 of every 4
    consecutive inputs: 2:4 or 1:4) on PyTorch's 2:4 semi-structured kernels. Needs the layer on
    CUDA in fp16 / bf16; raises ValueError naming what is missing otherwise."""
    weight = layer.to_dense()
    where = f"to_semi_structured({layer.in_features}->{layer.out_features})"
    if weight.device.type != "cuda":
        raise ValueError(f"{where}: semi-structured sparse kernels need a CUDA device, the "
                         f"layer is on {weight.device}")
    if weight.dtype not in SEMI_STRUCTURED_DTYPES:
        raise ValueError(f"{where}: needs fp16 or bf16 weights, got {weight.dtype}")
    if layer.in_features % 4:
        raise ValueError(f"{where}: in_features must be divisible by 4")
    counts = layer.weight_mask.reshape(layer.out_features, -1, 4).sum(-1)
    if int(counts.max()) > 2:
        raise ValueError(f"{where}: the mask is not 2:4 (a group of 4 keeps {int(counts.max())})")
    return SemiStructuredLinear(weight, layer.bias)
