"""Sparsity mask makers, pure and CPU-testable: which weights to keep.

A *mask* is a bool tensor shaped like the weight it belongs to, (out, in), True = kept. The
makers here are the one implementation every sparsity method and inspector uses:

- :func:`magnitude_mask`: keep the largest |w| of one layer (exact count, deterministic ties)
- :func:`global_magnitude_masks`: one |w| threshold over many layers (global magnitude pruning)
- :func:`nm_mask`: N:M sparsity along the input dimension (at most N kept per M consecutive)
- :func:`cubic_schedule`: the gradual-pruning sparsity schedule of Zhu & Gupta (2017)
"""
from __future__ import annotations

from collections.abc import Mapping
from numbers import Real

import numpy as np
import torch


def check_weight(weight, where: str) -> torch.Tensor:
    """``weight`` detached, after checking it is a non-empty, finite, floating (out, in)."""
    if not isinstance(weight, torch.Tensor) or weight.ndim != 2 or 0 in weight.shape:
        shape = tuple(weight.shape) if hasattr(weight, "shape") else type(weight).__name__
        raise ValueError(f"{where}: weight must be a non-empty 2-D tensor (out, in), got {shape}")
    if not weight.is_floating_point() or not torch.isfinite(weight.detach().abs().amax()):
        raise ValueError(f"{where}: weight must be floating point and finite (no NaN or inf)")
    return weight.detach()


def check_sparsity(sparsity, where: str, upper_inclusive: bool = True) -> float:
    """``sparsity`` as a float after checking it lies in [0, 1] (or [0, 1))."""
    ok = isinstance(sparsity, Real) and not isinstance(sparsity, bool) and (
        0 <= sparsity <= 1 if upper_inclusive else 0 <= sparsity < 1)
    if not ok:
        interval = "[0, 1]" if upper_inclusive else "[0, 1)"
        raise ValueError(f"{where}: sparsity must be a number in {interval}, got {sparsity!r}")
    return float(sparsity)


def check_nm(n, m, width: int, where: str) -> None:
    """Raise ValueError unless 0 <= n <= m, m >= 1 are ints and ``width`` is divisible by m."""
    if not all(isinstance(v, int) and not isinstance(v, bool) for v in (n, m)) or m < 1 or n < 0:
        raise ValueError(f"{where}: n and m must be ints with m >= 1 and n >= 0, got {n!r}, {m!r}")
    if n > m:
        raise ValueError(f"{where}: n={n} > m={m}: at most m weights fit in a group of m")
    if width % m:
        raise ValueError(f"{where}: in_features={width} is not divisible by m={m}; N:M groups "
                         f"of m consecutive inputs must tile each row")


def keep_largest(scores: torch.Tensor, keep: int) -> torch.Tensor:
    """Bool (N,) keeping exactly ``keep`` of the largest ``scores`` (N,); ties go to the
    earlier positions, so the count is exact and the result deterministic. O(N)."""
    if keep <= 0 or keep >= scores.numel():
        return torch.full_like(scores, keep > 0, dtype=torch.bool)
    t = torch.kthvalue(scores, scores.numel() - keep + 1).values  # smallest kept score
    mask, tied = scores > t, scores == t
    need, n_tied = keep - int(mask.count_nonzero()), int(tied.count_nonzero())
    return mask | (tied if need == n_tied else tied & (tied.cumsum(0) <= need))


def magnitude_mask(weight: torch.Tensor, sparsity: float) -> torch.Tensor:
    """Bool (out, in) keeping the ``round((1-sparsity)·numel)`` largest |w|: exactly that many,
    ties broken by position (row-major, earlier kept)."""
    w = check_weight(weight, "magnitude_mask")
    keep = w.numel() - round(check_sparsity(sparsity, "magnitude_mask") * w.numel())
    return keep_largest(w.abs().flatten().float(), keep).view(w.shape)


def global_magnitude_masks(weights: Mapping[str, torch.Tensor],
                           sparsity: float) -> dict[str, torch.Tensor]:
    """One |w| threshold over all ``weights`` ({name: (out, in)}): exactly
    ``round(sparsity·total)`` zeros overall, layers pruned unevenly (global magnitude pruning).
    All weights must be on one device."""
    if not weights:
        raise ValueError("global_magnitude_masks: no weights given")
    ws = {n: check_weight(w, f"global_magnitude_masks[{n!r}]") for n, w in weights.items()}
    flat = torch.cat([w.abs().flatten().float() for w in ws.values()])
    keep = flat.numel() - round(check_sparsity(sparsity, "global_magnitude_masks") * flat.numel())
    parts = keep_largest(flat, keep).split([w.numel() for w in ws.values()])
    return {n: p.view(w.shape) for (n, w), p in zip(ws.items(), parts)}


def nm_mask(weight: torch.Tensor, n: int, m: int) -> torch.Tensor:
    """Bool (out, in) N:M mask: in each group of ``m`` consecutive inputs of a row keep the
    ``n`` largest |w| (ties: earlier input kept). Sparsity exactly 1 - n/m.
    ValueError for n > m, m < 1, or in_features not divisible by m."""
    w = check_weight(weight, "nm_mask")
    check_nm(n, m, w.shape[1], "nm_mask")
    groups = w.abs().float().view(w.shape[0], -1, m)                  # (out, in/m, m)
    order = groups.argsort(dim=-1, descending=True, stable=True)[..., :n]
    return torch.zeros_like(groups, dtype=torch.bool).scatter_(-1, order, True).view(w.shape)


def cubic_schedule(step, s_i: float, s_f: float, t0: int, n: int, dt: int):
    """Zhu & Gupta (2017) gradual pruning: s_t = s_f + (s_i - s_f)·(1 - (t - t0)/(n·Δt))³ for
    t in [t0, t0 + n·Δt], s_i before, s_f after (pruning happens at t0 + kΔt, k = 0..n).
    ``step``: a number (-> float) or array-like (-> float64 numpy array of the same shape)."""
    if n < 1 or dt <= 0:
        raise ValueError(f"cubic_schedule: need n >= 1 and dt > 0, got n={n}, dt={dt}")
    for s in (s_i, s_f):
        check_sparsity(s, "cubic_schedule")
    t = np.asarray(step, dtype=np.float64)
    progress = np.clip((t - t0) / (n * dt), 0.0, 1.0)
    s = s_f + (s_i - s_f) * (1 - progress) ** 3
    return float(s) if s.ndim == 0 else s
