"""Top-k singular triplets of a batch of matrices, exact or by randomized subspace iteration.

``topk_svd(A, k)`` with ``A`` (B, m, n) returns ``U`` (B, m, k), ``S`` (B, k) descending and
``V`` (B, n, k) with ``U·diag(S)·Vᵀ`` the best rank-k approximation of each matrix (exactly with
``method="exact"``; to working precision after a few subspace iterations with ``"randomized"``,
Halko, Martinsson & Tropp 2011). The randomized path never forms a full SVD: a QR per iteration
and a symmetric eigendecomposition of a small (k+oversample)² Gram matrix, so it is fast for
large batches of matrices on the GPU.

Variants of the randomized path (``variant=``):
- ``"householder"`` (the default off CUDA): Householder QR, oversample ``oversample``;
- ``"fast"``: orthonormalisation by Cholesky-QR twice (batched GEMMs and a batched Cholesky
  instead of a Householder QR, which is slow for batches on the GPU), one orthonormalisation per
  iteration instead of two, a wider subspace (``k + max(oversample, k // 2)``: sub-block spectra
  of real and random weights are flat, and oversampling is what makes the top ``k`` converge),
  a Rayleigh-Ritz step by batched ``eigh``, and for ``k == 1`` power iteration by repeated
  squaring of the Gram matrix (2^j power steps for j batched GEMMs of the small side);
- ``"projector"`` (the default on CUDA for ``k > 1``): the same wide subspace iteration in
  float64 (the H200's float64 matrix units run as fast as its float32 SIMT GEMMs, and float32
  cannot resolve the small sub-block singular values of steep spectra), Cholesky-QR once per
  iteration (every other iteration where the last one measured its Gram well conditioned,
  ``SKIP_DEV``: flat spectra), started on flat spectra from a few bfloat16 power steps
  (``_warm_start``), one host sync per iteration, and a Rayleigh-Ritz step
  without an eigensolver: the projector onto the top ``k`` eigenvectors of the small Gram
  matrix by trace-correcting purification (GEMMs only; Niklasson 2002; ``purification``), then
  an orthonormal basis of its range. It returns the best rank-k approximation in
  the subspace as ``U`` (orthonormal), ``S`` = the norms of the rows of ``UᵀA`` (descending) and
  ``V`` = those rows normalised: ``U·diag(S)·Vᵀ = U·Uᵀ·A`` and ``ΣS² = ‖UᵀA‖²`` exactly, but
  ``S`` are not singular values and ``V`` is not orthogonal (for m < n the roles swap: ``V``
  is the orthonormal factor, ``U·diag(S)·Vᵀ = A·V·Vᵀ``). Stopping: ``tol`` is the target
  relative excess of the residual over the optimum. Once the subspace's captured energy grows by
  at most ``√(tol/10)`` of the missed energy per iteration (a trigger only: for small k or
  slowly decaying spectra that alone left 10x the target, benchmarks/NOTES.md), the
  Rayleigh-Ritz energy of the best k directions is computed at consecutive iterations, and the
  iteration stops when it grows by at most ``tol/5`` of the energy it misses. With
  ``variant="auto"`` the target is at least ``AUTO_EXCESS`` (1e-4), the accuracy the GPU
  projection promises (``monarch_fit.project`` passes 1e-6); ask ``variant="projector"`` or
  ``method="exact"`` for tighter fits.
"""
from __future__ import annotations

import math

import torch

from .purification import PURIFY_STEPS, top_projector

METHODS = ("auto", "exact", "randomized")
VARIANTS = ("auto", "fast", "householder", "projector")
AUTO_EXCESS = 1e-4        # excess target of the default GPU path (projector variant)


def topk_svd(a: torch.Tensor, k: int, method: str = "auto", max_iters: int = 60,
             tol: float = 1e-6, oversample: int = 8,
             generator: torch.Generator | None = None, variant: str = "auto"):
    """Top ``k`` singular triplets of each matrix in ``a`` (B, m, n); see module docstring.

    ``variant``: ``"auto"`` (``"projector"`` on CUDA for k > 1, ``"fast"`` on CUDA for k = 1,
    ``"householder"`` elsewhere), ``"fast"``, ``"householder"`` or ``"projector"``.
    Randomized, ``fast``/``householder``: iterate until the energy the subspace captures,
    ``‖QᵀA‖²``, grows by less than ``tol`` times the energy still missed, for every matrix (at
    most ``max_iters`` rounds). ``projector``: see the module docstring.
    """
    if a.ndim != 3:
        raise ValueError(f"topk_svd expects a batch of matrices (B, m, n), got {tuple(a.shape)}")
    if method not in METHODS:
        raise ValueError(f"topk_svd: method must be one of {METHODS}, got {method!r}")
    if variant not in VARIANTS:
        raise ValueError(f"topk_svd: variant must be one of {VARIANTS}, got {variant!r}")
    batch, m, n = a.shape
    k = max(0, min(k, m, n))
    if method == "auto":
        on_cpu = a.device.type == "cpu"
        method = "exact" if (on_cpu or k + oversample >= min(m, n)) else "randomized"
    if method == "exact" or k + oversample >= min(m, n):
        return _exact(a, k)
    chosen = variant
    if variant == "auto":
        chosen = ("fast" if k == 1 else "projector") if a.is_cuda else "householder"
    fast = chosen in ("fast", "projector")
    if fast and k == 1 and chosen == "fast":
        return _rank_one_by_squaring(a, max_iters, tol)
    if fast:
        oversample = max(oversample, k // 2)
        if k + oversample >= min(m, n):
            return _exact(a, k)
    if chosen == "projector":
        target = max(tol, AUTO_EXCESS) if variant == "auto" else tol
        run = lambda t: _projector(t, k, max_iters, target, k + oversample,  # noqa: E731
                                   generator)
    else:
        run = lambda t: _randomized(t, k, max_iters, tol, oversample,  # noqa: E731
                                    generator, fast)
    if m < n:  # iterate on the taller side
        v, s, u = run(a.mT)
        return u, s, v
    return run(a)


def _exact(a, k):
    u, s, vh = torch.linalg.svd(a, full_matrices=False)
    return u[..., :k], s[..., :k], vh[..., :k, :].mT


def _gaussian(batch, rows, cols, like, generator):
    if generator is None or generator.device == like.device:
        return torch.randn(batch, rows, cols, dtype=like.dtype, device=like.device,
                           generator=generator)
    return torch.randn(batch, rows, cols, dtype=like.dtype, generator=generator).to(like.device)


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


# ---- the projector variant -------------------------------------------------------------------
def _cholqr(y: torch.Tensor):
    """One Cholesky-QR pass: (q, t) with q = y·t orthonormal up to rounding × cond(y)² (the
    span is exact); a tiny diagonal shift keeps zero or rank-deficient blocks finite."""
    q, t, health = _cholqr_deferred(y)
    if bool(health[0]):  # numerically rank deficient beyond the shift: Householder
        return torch.linalg.qr(y).Q, None
    return q, t


def _cholqr_deferred(y: torch.Tensor):
    """``_cholqr`` without its host sync: (q, t, health), health (2,) = (1 if the Cholesky
    failed for any matrix, else 0; the largest deviation of a column's squared norm from 1,
    ``max |‖q_j‖² − 1|``, over the matrices with a nonzero Gram: a measured stand-in for the
    orthogonality lost, ~ eps·cond(yᵀy)). Where it failed q is garbage: the caller checks
    ``health`` at its next sync and redoes that pass by Householder."""
    gram = y.mT @ y
    eye = torch.eye(gram.shape[-1], device=y.device, dtype=y.dtype)
    trace = gram.diagonal(dim1=-2, dim2=-1).sum(-1)
    shift = (10 * torch.finfo(y.dtype).eps * trace / gram.shape[-1]).clamp_min(
        torch.finfo(y.dtype).tiny)
    chol, info = torch.linalg.cholesky_ex(gram + shift[:, None, None] * eye)
    t = torch.linalg.solve_triangular(chol, eye, upper=False).mT     # L⁻ᵀ
    q = y @ t
    dev = (q.square().sum(-2) - 1).abs().amax(-1)
    dev = torch.where(trace > 0, dev, torch.zeros_like(dev)).amax().nan_to_num(math.inf)
    failed = (info != 0).any().to(y.dtype)
    return q, t, torch.stack([failed, dev])


# Orthogonality measured after a Cholesky-QR pass (max |‖q_j‖² − 1|, ~ eps·cond(yᵀy)):
ORTHO_DEV = 1e-12     # at most this: q counts as orthonormal (cond(yᵀy) below ~1e4)
SKIP_DEV = 1e-12      # at most this: the next step may skip its QR (its Gram then stays
                      # conditioned below ~1e12, where Cholesky still succeeds)


def _orthonormal(q, dev, z=None, a=None):
    """q -> q·t orthonormal to rounding: Cholesky-QR passes (at most 3) until the last one's
    measured deviation is at most ``ORTHO_DEV`` (``dev``: that of the pass that made q, ``inf``
    if none did). With ``z`` = Aᵀq (and ``a`` = A) also returns Aᵀ of the new q."""
    for _ in range(3):
        if dev <= ORTHO_DEV:
            break
        q_new, t, health = _cholqr_deferred(q)
        failed, dev = health.tolist()
        if failed:
            q = torch.linalg.qr(q).Q
            return q, (a.mT @ q if z is not None else None)
        q, z = q_new, (z @ t if z is not None else None)
    return q, z


WARM_STEPS = 6        # bfloat16 power steps that start the float64 iteration on flat spectra
WARM_QR_EVERY = 3     # with a Newton-Schulz orthogonalisation after every this many
WARM_SPREAD = 4.0     # flat: w·Σλ²/(Σλ)² of the sketch's Gram at most this (1 = all equal)


def _spread(y: torch.Tensor) -> float:
    """The largest w·Σλ²/(Σλ)² over the batch for the Gram matrices yᵀy of y (B, m, w): 1 when
    the block's singular values are all equal, ~w when one dominates (one host sync)."""
    gram = y.mT @ y
    trace = gram.diagonal(dim1=-2, dim2=-1).sum(-1)
    spread = y.shape[-1] * gram.square().sum((-2, -1)) / trace.square().clamp_min(
        torch.finfo(y.dtype).tiny)
    return float(torch.where(trace > 0, spread, torch.ones_like(spread)).amax())


def _warm_start(a: torch.Tensor, q: torch.Tensor, steps: int,
                qr_every: int | None = None) -> torch.Tensor:
    """A basis (B, m, w) of about span((A·Aᵀ)^steps·q), computed entirely in bfloat16 (float32
    accumulation): power steps with the columns rescaled, and after every ``qr_every``-th
    step but the last (default ``WARM_QR_EVERY``) an approximate orthogonalisation by
    ``_newton_schulz`` (batched GEMMs only; a cuSOLVER Cholesky-QR costs 1.2-1.6 ms on these
    blocks). The result is not orthonormal: the float64 iteration's first QR makes it so.
    bfloat16 keeps the directions a step scales by more than ~1/100 of the largest, so this
    starts flat spectra only (``_spread``); the float64 iteration refines the result and
    decides when to stop."""
    qr_every = qr_every or WARM_QR_EVERY
    a16 = a.to(torch.bfloat16)
    y = q.to(torch.bfloat16)
    for step in range(1, steps + 1):
        y = a16 @ (a16.mT @ y)
        if step % qr_every == 0 and step < steps:
            y = _newton_schulz(y)
        else:
            y = y / y.float().norm(dim=-2, keepdim=True).clamp_min(1e-30).to(y.dtype)
    return y.to(a.dtype)


NS_COEFFS = (3.4445, -4.7750, 2.0315)   # quintic Newton-Schulz (as in the Muon optimiser)
NS_STEPS = 5


def _newton_schulz(y: torch.Tensor) -> torch.Tensor:
    """y (B, m, w), m >= w -> y·p(yᵀy) with the same column span and singular values pushed
    towards [0.7, 1.2]: y is scaled by the square root of a Gershgorin bound of its Gram's
    largest eigenvalue (so σ <= 1), then ``NS_STEPS`` quintic steps x ↦ a·x + b·x³ + c·x⁵ act
    on the singular values, each three batched GEMMs."""
    ca, cb, cc = NS_COEFFS
    g = (y.mT @ y).float()
    bound = g.abs().sum(-1).amax(-1).clamp_min(1e-30).sqrt()          # >= σ_max(y)
    x = y / bound[:, None, None].to(y.dtype)
    for _ in range(NS_STEPS):
        g = x.mT @ x                                                   # (B, w, w)
        h = torch.baddbmm(g, g, g, beta=cb, alpha=cc)                  # b·g + c·g²
        x = torch.baddbmm(x, x, h, beta=ca)                            # a·x + x·h
    return x


def _projector(a, k, max_iters, target, width, generator, check=True,
               steps=PURIFY_STEPS, skip_qr=True, warm=None):
    """Subspace iteration (float64) for (B, m, n), m >= n, with a purification Rayleigh-Ritz
    step; returns the best rank-k approximation in the subspace as (U, S, V), see the module
    docstring. ``check``: confirm the stop by the Rayleigh-Ritz energy of consecutive
    iterations (one more iteration and one more purification), else stop on the subspace's
    energy growth alone. ``skip_qr``: where the last Cholesky-QR came out orthonormal to
    ``SKIP_DEV`` (its Gram conditioned below ~1e4: flat spectra), the next power step skips
    its QR and only rescales by the last triangular factor (q = A·z·t; its Gram then stays
    conditioned below ~1e12), so every other step needs no orthonormalisation; the energy
    trigger is read at orthonormal steps only. Steep spectra keep a QR every step.
    ``warm``: bfloat16 power steps before the float64 iteration (``_warm_start``; default
    ``WARM_STEPS`` on CUDA where the sketch's spectrum is flat, else none)."""
    out_dtype = a.dtype
    work = a if a.dtype == torch.float64 else a.double()
    batch, m, n = work.shape
    width = min(width, n)
    tiny = torch.finfo(work.dtype).tiny
    total = work.square().sum((-2, -1))
    y = work @ _gaussian(batch, n, width, work, generator)
    q, t_iter = _cholqr(y)
    if warm is None:
        warm = WARM_STEPS if work.is_cuda and _spread(y) <= WARM_SPREAD else 0
    if warm:
        q, t_iter = _warm_start(work, q, warm), None
    step_tol = math.sqrt(max(target, 0.0) / 10)
    previous = energy = health = y = None
    skipped, since = False, 0      # q is y·t_iter, not orthonormal; steps since `previous`
    dev = math.inf                 # no skip before a QR of A·Aᵀ·q has been measured

    def settled(captured):  # energy grew by at most its share of the missed, since `previous`
        return ((captured - previous) <= since * step_tol
                * (total - captured).clamp_min(tiny)).all()

    for it in range(max_iters + 1):
        z = work.mT @ q                                   # (B, n, width)
        captured = z.square().sum((-2, -1))
        last = it == max_iters
        # one host sync per step: the last QR's health and the energy trigger
        trigger = torch.zeros((), dtype=work.dtype, device=work.device)
        if previous is not None and not skipped:
            trigger = settled(captured).to(work.dtype)
        pending = health if health is not None else trigger.new_tensor([0.0, dev])
        failed, dev, fired = torch.cat([pending, trigger[None]]).tolist()
        health = None
        q_dev = math.inf if skipped else dev              # the pass that made q, if any
        if failed:                                        # redo the last QR by Householder
            q, t_iter, q_dev = torch.linalg.qr(y).Q, None, 0.0
            z = work.mT @ q
            captured = z.square().sum((-2, -1))
            fired = previous is not None and bool(settled(captured))
        if energy is not None or fired:
            # candidate stop: the Rayleigh-Ritz energy of this subspace, against the last one
            q, z = _orthonormal(q, q_dev, z, work)
            proj = top_projector(z.mT @ z, k, steps)      # (B, width, width)
            now = (proj * (z.mT @ z)).sum((-2, -1))       # trace(P G): energy of the best k
            if not check or last or (energy is not None and bool(
                    ((now - energy) <= 0.2 * target * (total - now).clamp_min(tiny)).all())):
                break
            energy = now
        elif last:
            q, z = _orthonormal(q, q_dev, z, work)
            proj = top_projector(z.mT @ z, k, steps)
            break
        if not skipped and not (warm and it == 0):   # a warm start's q is not orthonormal
            previous, since = captured, 0
        since += 1
        y = work @ z
        if skip_qr and not skipped and t_iter is not None and dev <= SKIP_DEV:
            q, skipped = y @ t_iter, True
        else:
            q, t_iter, health = _cholqr_deferred(y)
            skipped = False
    pick = proj.diagonal(dim1=-2, dim2=-1).topk(k, dim=-1).indices.sort(-1).values
    basis = torch.take_along_dim(proj, pick[:, None, :], dim=-1)      # (B, width, k)
    basis, _ = _orthonormal(basis, math.inf)
    u = q @ basis                                         # (B, m, k)
    zk = z @ basis                                        # (B, n, k) = Aᵀ U
    s = zk.norm(dim=-2)                                   # (B, k)
    s, order = s.sort(-1, descending=True)
    u = torch.take_along_dim(u, order[:, None, :], dim=-1)
    zk = torch.take_along_dim(zk, order[:, None, :], dim=-1)
    v = zk / torch.where(s > 0, s, torch.ones_like(s)).unsqueeze(-2)
    return u.to(out_dtype), s.to(out_dtype), v.to(out_dtype)


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
