"""Top-k singular triplets of a batch of matrices, exact or by randomized subspace iteration.

``topk_svd(A, k)`` with ``A`` (B, m, n) returns ``U`` (B, m, k), ``S`` (B, k) descending and
``V`` (B, n, k) with ``U·diag(S)·Vᵀ`` the best rank-k approximation of each matrix (exactly with
``method="exact"``; to working precision after a few subspace iterations with ``"randomized"``,
Halko, Martinsson & Tropp 2011). The randomized path never forms a full SVD: a QR per iteration
and a symmetric eigendecomposition of a small (k+oversample)² Gram matrix, so it is fast for
large batches of matrices on the GPU.

GPU variant (``variant="fast"``, the default for CUDA tensors): orthonormalisation by
Cholesky-QR twice (batched GEMMs and a batched Cholesky instead of a Householder QR, which is
slow for batches on the GPU), one orthonormalisation per iteration instead of two, a wider
subspace (``k + max(oversample, k // 2)``: sub-block spectra of real and random weights are
flat, and oversampling is what makes the top ``k`` converge), and for
``k == 1`` power iteration by repeated squaring of the Gram matrix (2^j power steps for j
batched GEMMs of the small side). Timings in benchmarks/NOTES.md.
"""
from __future__ import annotations

import torch

METHODS = ("auto", "exact", "randomized")


def topk_svd(a: torch.Tensor, k: int, method: str = "auto", max_iters: int = 60,
             tol: float = 1e-6, oversample: int = 8,
             generator: torch.Generator | None = None, variant: str = "auto"):
    """Top ``k`` singular triplets of each matrix in ``a`` (B, m, n); see module docstring.

    ``variant``: ``"auto"`` (``"fast"`` on CUDA, ``"householder"`` elsewhere), ``"fast"`` or
    ``"householder"`` (see module docstring).
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
    if variant not in ("auto", "fast", "householder"):
        raise ValueError(
            f"topk_svd: variant must be auto, fast or householder, got {variant!r}")
    fast = variant == "fast" or (variant == "auto" and a.is_cuda)
    if fast and k == 1:
        return _rank_one_by_squaring(a, max_iters, tol)
    if fast:
        oversample = max(oversample, k // 2)
        if k + oversample >= min(m, n):
            return topk_svd(a, k, method="exact")
    if m < n:  # iterate on the taller side
        v, s, u = _randomized(a.mT, k, max_iters, tol, oversample, generator, fast)
        return u, s, v
    return _randomized(a, k, max_iters, tol, oversample, generator, fast)


def _orth(y: torch.Tensor, fast: bool = False) -> torch.Tensor:
    if not fast:
        return torch.linalg.qr(y).Q
    for _ in range(2):  # Cholesky-QR twice: the second pass repairs the first's rounding
        gram = y.mT @ y
        eye = torch.eye(gram.shape[-1], device=y.device, dtype=y.dtype)
        shift = 100 * torch.finfo(y.dtype).eps * gram.diagonal(dim1=-2, dim2=-1).mean(-1)
        chol, info = torch.linalg.cholesky_ex(gram + shift[:, None, None] * eye)
        if bool(info.any()):  # numerically rank deficient: Householder instead
            return torch.linalg.qr(y).Q
        # y ← y L⁻ᵀ, as a GEMM with the small triangular inverse (faster than a batched trsm)
        y = y @ torch.linalg.solve_triangular(chol, eye, upper=False).mT
    return y


def _randomized(a, k, max_iters, tol, oversample, generator, fast=False):
    """Subspace iteration for (B, m, n) with m >= n."""
    batch, m, n = a.shape
    width = min(k + oversample, n)
    omega = torch.randn(batch, n, width, dtype=a.dtype, generator=generator).to(a.device)
    total = a.square().sum((-2, -1))
    q = _orth(a @ omega, fast)                            # (B, m, width)
    previous = None
    for _ in range(max_iters):
        z = a.mT @ q                                      # (B, n, width)
        captured = z.square().sum((-2, -1))               # ‖QᵀA‖²
        missed = (total - captured).clamp_min(torch.finfo(a.dtype).tiny)
        if previous is not None and bool(((captured - previous) <= tol * missed).all()):
            break
        previous = captured
        # fast: A Aᵀ Q is well conditioned (flat spectra), so one orthonormalisation suffices
        q = _orth(a @ z, fast) if fast else _orth(a @ _orth(z))
    small = q.mT @ a                                      # (B, width, n)
    evals, w = _eigh(small @ small.mT, fast)              # ascending
    w = w[..., -k:].flip(-1) if k else w[..., :0]         # top k, descending
    s = evals[..., -k:].flip(-1).clamp_min(0).sqrt() if k else evals[..., :0]
    u = q @ w                                             # (B, m, k)
    v = small.mT @ w / torch.where(s > 0, s, torch.ones_like(s)).unsqueeze(-2)
    return u, s, v


def _rank_one_by_squaring(a, max_squarings, tol):
    """Top singular triplet of each (B, m, n) matrix: square the Gram matrix of the smaller side
    (trace-normalised) until the captured energy ‖A v‖² stops growing by ``tol`` × missed."""
    batch, m, n = a.shape
    tall = m >= n
    gram = a.mT @ a if tall else a @ a.mT                 # (B, d, d), d = min(m, n)
    total = a.square().sum((-2, -1))
    h = gram / gram.diagonal(dim1=-2, dim2=-1).sum(-1).clamp_min(torch.finfo(a.dtype).tiny)[
        :, None, None]
    previous = None
    for step in range(max(4, min(max_squarings, 16))):
        h = h @ h
        h = h / h.diagonal(dim1=-2, dim2=-1).sum(-1).clamp_min(torch.finfo(a.dtype).tiny)[
            :, None, None]
        if step < 3:
            continue
        # h ≈ v vᵀ: its column with the largest diagonal is the best-conditioned copy of v
        pick = h.diagonal(dim1=-2, dim2=-1).argmax(-1)
        vec = torch.take_along_dim(h, pick[:, None, None], dim=-1)          # (B, d, 1)
        vec = gram @ vec                                  # one more power step
        vec = vec / vec.norm(dim=-2, keepdim=True).clamp_min(torch.finfo(a.dtype).tiny)
        other = a @ vec if tall else a.mT @ vec           # (B, max side, 1)
        captured = other.square().sum((-2, -1))
        missed = (total - captured).clamp_min(torch.finfo(a.dtype).tiny)
        if previous is not None and bool(((captured - previous) <= tol * missed).all()):
            break
        previous = captured
    s = other.norm(dim=-2)                                # (B, 1)
    other = other / torch.where(s > 0, s, torch.ones_like(s)).unsqueeze(-1)
    return (other, s, vec) if tall else (vec, s, other)


def _eigh(gram: torch.Tensor, fast: bool):
    """Batched symmetric eigendecomposition (ascending). On CUDA with ``fast``, CuPy's batched
    Jacobi solver when CuPy is installed: 5.5x faster than ``torch.linalg.eigh`` (cuSOLVER
    syevd, one matrix at a time) for 16 matrices of 384² on an H200 (benchmarks/NOTES.md)."""
    if fast and gram.is_cuda and gram.dtype in (torch.float32, torch.float64):
        try:
            import cupy
        except ImportError:
            cupy = None
        if cupy is not None:
            stream = torch.cuda.current_stream(gram.device).cuda_stream
            with cupy.cuda.Device(gram.device.index), cupy.cuda.ExternalStream(stream):
                evals, vecs = cupy.linalg.eigh(cupy.from_dlpack(gram.contiguous()))
            return torch.from_dlpack(evals), torch.from_dlpack(vecs)
    return torch.linalg.eigh(gram)
