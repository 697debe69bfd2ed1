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

The GPU path for 2:4 masks (PyTorch's semi-structured kernels) is in ``semi_structured.py``.
"""
from __future__ import annotations

import torch

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
