"""The fast Monarch product (default plan) as two ``torch.library`` custom ops.

``torch.compile`` sees ``workbench::monarch_forward`` and ``workbench::monarch_backward`` as
opaque ops with known output shapes (their fake implementations), so a model holding Monarch
layers compiles into one graph (``fullgraph=True``) instead of breaking around every
``autograd.Function`` that launches Triton kernels; whole training steps can then be captured
in CUDA graphs (``mode="reduce-overhead"``), which removes the host time (~1 ms per Monarch
layer per step, benchmarks/NOTES.md "In whole models") that made small models slower than dense.

Shapes, on padded sizes (see ``monarch_kernels``): x (T, b·p), w1 (b, q, p), w2 (b, s, q).

    monarch_forward(x, w1, w2, backend)                  -> y (T, b·s), mid (T, b, q)
                                          (mid (T, b, q8) under the padded plan, ``use_pad``)
    monarch_backward(dy, x, w1, w2, mid, backend, needs) -> dx, dw1, dw2

``needs`` says which of (dx, dw1, dw2) to compute; the others come back empty (0 elements).
The ops run the default plan only (no overrides); ``backend`` is ``"triton"`` or ``"torch"``.
"""
from __future__ import annotations

import torch

from .monarch_kernels import (ForwardPass, fast_backward, fast_forward, use_cublas_stage2,
                              use_fold, use_pad)
from .monarch_plan import fold_rows, pad_sizes

BACKENDS = ("triton", "torch")


def _check_backend(backend: str) -> None:
    if backend not in BACKENDS:
        raise ValueError(f"monarch op: backend must be one of {BACKENDS}, got {backend!r}")


def _info(x: torch.Tensor, w1: torch.Tensor, w2: torch.Tensor, backend: str,
          needs=(True, True, True)) -> ForwardPass:
    b, q, p = w1.shape
    s = w2.shape[1]
    return ForwardPass((x.shape[0], b, p, q, s), backend, {}, use_fold({}, b, q),
                       use_cublas_stage2({}), tuple(needs), pad=use_pad({}, b, p, q, s))


@torch.library.custom_op("workbench::monarch_forward", mutates_args=())
def monarch_forward(x: torch.Tensor, w1: torch.Tensor, w2: torch.Tensor,
                    backend: str) -> tuple[torch.Tensor, torch.Tensor]:
    _check_backend(backend)
    info = _info(x, w1, w2, backend)
    if not info.cublas:  # the saved middle must be the grouped (T, b, q) one
        raise RuntimeError("monarch op: the default plan must run stage 2 on cuBLAS")
    y, (_, _, _, mid), _ = fast_forward(x, w1, w2, backend, {})
    return y, mid


@monarch_forward.register_fake
def _(x, w1, w2, backend):
    b, q, p = w1.shape
    s, T = w2.shape[1], x.shape[0]
    if use_pad({}, b, p, q, s):  # the padded plan keeps the middle block-padded
        q = pad_sizes(p, q, s)[1]
    return x.new_empty(T, b * s), x.new_empty(T, b, q)


@torch.library.custom_op("workbench::monarch_backward", mutates_args=())
def monarch_backward(dy: torch.Tensor, x: torch.Tensor, w1: torch.Tensor, w2: torch.Tensor,
                     mid: torch.Tensor, backend: str, needs: list[bool]
                     ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    _check_backend(backend)
    info = _info(x, w1, w2, backend, needs)
    w1_used = fold_rows(w1.contiguous()) if info.fold else w1.contiguous()
    grads = fast_backward(info, (x.contiguous(), w1_used, w2.contiguous(), mid), dy)
    return tuple(g if g is not None else t.new_empty(0) for g, t in zip(grads, (x, w1, w2)))


@monarch_backward.register_fake
def _(dy, x, w1, w2, mid, backend, needs):
    return tuple(torch.empty_like(t, memory_format=torch.contiguous_format) if need
                 else t.new_empty(0) for need, t in zip(needs, (x, w1, w2)))


def _setup_context(ctx, inputs, output):
    x, w1, w2, backend = inputs
    ctx.backend = backend
    ctx.save_for_backward(x, w1, w2, output[1])


def _backward(ctx, dy, dmid):
    x, w1, w2, mid = ctx.saved_tensors
    needs = list(ctx.needs_input_grad[:3])
    grads = monarch_backward(dy.contiguous(), x, w1, w2, mid, ctx.backend, needs)
    return tuple(g if need else None for g, need in zip(grads, needs)) + (None,)


monarch_forward.register_autograd(_backward, setup_context=_setup_context)


def monarch_product(x: torch.Tensor, w1: torch.Tensor, w2: torch.Tensor,
                    backend: str) -> torch.Tensor:
    """y (T, b·s) = the Monarch product of x (T, b·p) on padded sizes, by the custom op."""
    return monarch_forward(x, w1, w2, backend)[0]
