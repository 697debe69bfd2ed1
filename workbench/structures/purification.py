"""The orthogonal projector onto the top-k eigenvectors of a batch of symmetric PSD matrices, by
trace-correcting purification (Niklasson 2002): GEMMs only, no eigensolver.

``top_projector(g, k)`` with ``g`` (B, w, w) returns ``P`` (B, w, w). The spectrum is scaled
into [0, 1]; each step applies x ↦ x² (lowers the trace) or x ↦ 2x − x² (raises it), whichever
lands the trace closer to ``k``. Both maps fix 0 and 1 and keep the eigenvalue order, so the top
``k`` eigenvalues go to 1 and the rest to 0. Eigenvalues closer together than the working
precision stay fractional (either choice loses no energy).

On CUDA with Triton each step is two launches: the GEMM x·x into a preallocated buffer, and one
fused kernel (``purify_triton``) that reads trace(x²) from its diagonal, picks the map and
updates x in place, carrying trace(x) from step to step (the torch path spends ~10 small
launches per step on the same work: benchmarks/NOTES.md, "Projection").
"""
from __future__ import annotations

import torch

PURIFY_STEPS = 96         # at most this many purification steps (GEMMs of the small side)
PURIFY_TOL = 1e-9         # stop purifying when the fractional occupation is this × k
CHECK_EVERY = 8           # steps between convergence checks (each is a host sync)


def top_projector(g: torch.Tensor, k: int, steps: int = PURIFY_STEPS,
                  fused: bool | None = None) -> torch.Tensor:
    """Projector (B, w, w) onto the top-``k`` eigenvectors of each ``g`` (B, w, w).

    ``fused``: run each step's update as one Triton kernel (default: on CUDA when Triton
    imports); ``False`` runs the same steps as torch operations."""
    if g.ndim != 3 or g.shape[-1] != g.shape[-2]:
        raise ValueError(f"top_projector expects (B, w, w), got {tuple(g.shape)}")
    if fused is None:
        from .monarch_kernels import triton_available
        fused = g.is_cuda and triton_available()
    tiny = torch.finfo(g.dtype).tiny
    bound = torch.minimum(g.norm(dim=(-2, -1)), g.abs().sum(-1).amax(-1)).clamp_min(tiny)
    x = (g / bound[:, None, None]).contiguous()
    run = _purify_fused if fused else _purify_torch
    x = run(x, k, steps)
    return (x + x.mT) / 2


def _converged(occupation: torch.Tensor, k: int) -> bool:
    """trace(x − x²) = Σ λ(1 − λ), the fractional occupation, is at rounding level."""
    return bool((occupation <= PURIFY_TOL * max(k, 1)).all())


def _purify_torch(x: torch.Tensor, k: int, steps: int) -> torch.Tensor:
    for step in range(1, steps + 1):
        x2 = x @ x
        t1 = x.diagonal(dim1=-2, dim2=-1).sum(-1)
        t2 = x2.diagonal(dim1=-2, dim2=-1).sum(-1)
        up = ((2 * t1 - t2 - k).abs() < (t2 - k).abs()).to(x.dtype)[:, None, None]
        x = torch.addcmul(x2, up, x - x2, value=2.0)     # up: 2x − x², else x²
        if step % CHECK_EVERY == 0 and _converged((t1 - t2).abs(), k):
            break
    return x


def _purify_fused(x: torch.Tensor, k: int, steps: int) -> torch.Tensor:
    from .purify_triton import purify_step
    x2 = torch.empty_like(x)
    t1 = x.diagonal(dim1=-2, dim2=-1).sum(-1).contiguous()
    t1_next, occupation = torch.empty_like(t1), torch.empty_like(t1)
    for step in range(1, steps + 1):
        torch.bmm(x, x, out=x2)
        purify_step(x, x2, t1, t1_next, occupation, k)
        t1, t1_next = t1_next, t1
        if step % CHECK_EVERY == 0 and _converged(occupation, k):
            break
    return x
