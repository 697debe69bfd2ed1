"""Top-k singular triplets of a batch of matrices, exact or by randomized subspace iteration.

``topk_svd(A, k)`` with ``A`` (B, m, n) returns ``U`` (B, m, k), ``S`` (B, k) descending and
``V`` (B, n, k) with ``U·diag(S)·Vᵀ`` the best rank-k approximation of each matrix (exactly with
``method="exact"``; to working precision after a few subspace iterations with ``"randomized"``,
Halko, Martinsson & Tropp 2011). The randomized path never forms a full SVD: a QR per iteration
and a symmetric eigendecomposition of a small (k+oversample)² Gram matrix, so it is fast for
large batches of matrices on the GPU.
"""
from __future__ import annotations

import torch

METHODS = ("auto", "exact", "randomized")


def topk_svd(a: torch.Tensor, k: int, method: str = "auto", max_iters: int = 60,
             tol: float = 1e-6, oversample: int = 8,
             generator: torch.Generator | None = None):
    """Top ``k`` singular triplets of each matrix in ``a`` (B, m, n); see module docstring.

    Randomized: iterate until the energy the subspace captures, ``‖QᵀA‖²``, grows by less than
    ``tol`` times the energy still missed, for every matrix (at most ``max_iters`` rounds).
    """
    if a.ndim != 3:
        raise ValueError(f"topk_svd expects a batch of matrices (B, m, n), got {tuple(a.shape)}")
    if method not in METHODS:
        raise ValueError(f"topk_svd: method must be one of {METHODS}, got {method!r}")
    batch, m, n = a.shape
    k = max(0, min(k, m, n))
    if method == "auto":
        on_cpu = a.device.type == "cpu"
        method = "exact" if (on_cpu or k + oversample >= min(m, n)) else "randomized"
    if method == "exact" or k + oversample >= min(m, n):
        u, s, vh = torch.linalg.svd(a, full_matrices=False)
        return u[..., :k], s[..., :k], vh[..., :k, :].mT
    if m < n:  # iterate on the taller side
        v, s, u = _randomized(a.mT, k, max_iters, tol, oversample, generator)
        return u, s, v
    return _randomized(a, k, max_iters, tol, oversample, generator)


def _orth(y: torch.Tensor) -> torch.Tensor:
    return torch.linalg.qr(y).Q


def _randomized(a, k, max_iters, tol, oversample, generator):
    """Subspace iteration for (B, m, n) with m >= n."""
    batch, m, n = a.shape
    width = min(k + oversample, n)
    omega = torch.randn(batch, n, width, dtype=a.dtype, generator=generator).to(a.device)
    total = a.square().sum((-2, -1))
    q = _orth(a @ omega)                                  # (B, m, width)
    previous = None
    for _ in range(max_iters):
        z = a.mT @ q                                      # (B, n, width)
        captured = z.square().sum((-2, -1))               # ‖QᵀA‖²
        missed = (total - captured).clamp_min(torch.finfo(a.dtype).tiny)
        if previous is not None and bool(((captured - previous) <= tol * missed).all()):
            break
        previous = captured
        q = _orth(a @ _orth(z))
    small = q.mT @ a                                      # (B, width, n)
    evals, w = torch.linalg.eigh(small @ small.mT)        # ascending
    w = w[..., -k:].flip(-1) if k else w[..., :0]         # top k, descending
    s = evals[..., -k:].flip(-1).clamp_min(0).sqrt() if k else evals[..., :0]
    u = q @ w                                             # (B, m, k)
    v = small.mT @ w / torch.where(s > 0, s, torch.ones_like(s)).unsqueeze(-2)
    return u, s, v
