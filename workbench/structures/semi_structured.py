"""2:4 sparse weights on PyTorch's semi-structured GPU kernels, and how fast they are.

:func:`to_semi_structured` turns a masked layer whose mask keeps at most 2 of every 4
consecutive inputs (2:4, or 1:4) into a :class:`SemiStructuredLinear` whose weight is a
``torch.sparse`` semi-structured tensor (CUDA, fp16 / bf16; inference only). Same function as
the masked layer, so every use is checked with ``allclose`` against the dense result.
:func:`semi_structured_timing` measures one layer shape side by side with dense (plain torch, so
``benchmarks/semi_structured.py`` runs on a bare GPU image).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .mask_makers import nm_mask
from .masked import MaskedLinear

DTYPES = (torch.float16, torch.bfloat16)


class SemiStructuredLinear(nn.Module):
    """Inference-only linear layer: weight (out, in) held as a semi-structured (2:4) sparse
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


def _check_2_4(mask: torch.Tensor, where: str) -> None:
    if mask.shape[1] % 4:
        raise ValueError(f"{where}: in_features must be divisible by 4, got {mask.shape[1]}")
    most = int(mask.reshape(mask.shape[0], -1, 4).sum(-1).max())
    if most > 2:
        raise ValueError(f"{where}: the mask is not 2:4 (a group of 4 keeps {most})")


@torch.no_grad()
def to_semi_structured(layer: MaskedLinear) -> SemiStructuredLinear:
    """The same function as ``layer`` on the 2:4 kernels. Needs the layer on CUDA in fp16 /
    bf16 and a 2:4-compliant mask; raises ValueError naming what is missing otherwise."""
    weight = layer.to_dense()
    where = f"to_semi_structured({layer.in_features}->{layer.out_features})"
    if weight.device.type != "cuda":
        raise ValueError(f"{where}: semi-structured sparse kernels need a CUDA device, the "
                         f"layer is on {weight.device}")
    if weight.dtype not in DTYPES:
        raise ValueError(f"{where}: needs fp16 or bf16 weights, got {weight.dtype}")
    _check_2_4(layer.weight_mask, where)
    return SemiStructuredLinear(weight, layer.bias)


def _median_ms(fn, min_run_time: float) -> float:
    from torch.utils.benchmark import Timer
    fn()  # warm-up (kernel selection, allocator)
    torch.cuda.synchronize()
    return Timer("fn()", globals={"fn": fn}).blocked_autorange(min_run_time=min_run_time).median \
        * 1e3


@torch.no_grad()
def semi_structured_timing(out_features: int, in_features: int, tokens: int = 16384,
                           dtype: torch.dtype = torch.bfloat16, min_run_time: float = 0.5,
                           seed: int = 0) -> dict:
    """Dense ``F.linear`` against the 2:4 semi-structured one for a weight (out, in) with a 2:4
    magnitude mask and an input (tokens, in), on the current CUDA device, side by side.

    Returns ms_dense, ms_2_4 (medians of ``torch.utils.benchmark`` after warm-up),
    speedup (ms_dense / ms_2_4; below 1 means 2:4 is slower) and the max absolute errors of both
    outputs against a float32 product of the same (rounded) operands, relative to its largest
    entry: err_dense, err_2_4.
    """
    if not torch.cuda.is_available():
        raise ValueError("semi_structured_timing: needs a CUDA device")
    if dtype not in DTYPES:
        raise ValueError(f"semi_structured_timing: dtype must be fp16 or bf16, got {dtype}")
    gen = torch.Generator(device="cuda").manual_seed(seed)
    w = torch.randn(out_features, in_features, device="cuda", generator=gen)
    w = (w * nm_mask(w, 2, 4)).to(dtype)
    x = torch.randn(tokens, in_features, device="cuda", generator=gen).to(dtype)
    from torch.sparse import to_sparse_semi_structured
    sparse = to_sparse_semi_structured(w)
    reference = x.float() @ w.float().T
    scale = reference.abs().max()
    dense_out, sparse_out = F.linear(x, w), F.linear(x, sparse)
    ms_dense = _median_ms(lambda: F.linear(x, w), min_run_time)
    ms_sparse = _median_ms(lambda: F.linear(x, sparse), min_run_time)
    return {"out_features": out_features, "in_features": in_features, "tokens": tokens,
            "dtype": str(dtype).removeprefix("torch."), "ms_dense": ms_dense,
            "ms_2_4": ms_sparse, "speedup": ms_dense / ms_sparse,
            "err_dense": float((dense_out.float() - reference).abs().max() / scale),
            "err_2_4": float((sparse_out.float() - reference).abs().max() / scale)}
