"""Sparsity masks, numbers only: read masks off a model, make reference masks, measure them.

A *mask* is a bool tensor shaped like the weight it belongs to, (out, in), True = kept. Nothing
here depends on how a mask was made (GMP, N:M, dynamic sparse, ``torch.nn.utils.prune``): the
inspectors read plain masks, or the nonzero pattern of plain weights.

- :func:`masks_from_model` / :func:`weights_from_model`: ``{module name: (out, in)}``
- :func:`magnitude_mask`, :func:`global_magnitude_masks`, :func:`nm_mask_of`: reference makers
- :func:`mask_stats`, :func:`nm_compliance` (vs :func:`independent_nm_compliance`),
  :func:`block_density`: one mask or a set of them
- :func:`mask_iou`, :func:`mask_evolution`: masks across checkpoints of one run
- :func:`cubic_schedule`: the gradual-pruning sparsity schedule of Zhu & Gupta (2017)
"""
from __future__ import annotations

import os
from math import comb
from numbers import Real
from collections.abc import Mapping, Sequence
from typing import NamedTuple

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from torch import nn

from ..surgery import CONV1D, Pattern, _is_type, _matcher

_SUFFIXES = ("weight_mask", "weight_orig", "weight")


# ---- reading masks -----------------------------------------------------------------------------
def _from_module(model: nn.Module, include: Pattern) -> dict[str, tuple]:
    match, found = _matcher(include), {}
    for name, module in model.named_modules():
        w = getattr(module, "weight", None)  # a plain attribute under torch.nn.utils.prune
        if not isinstance(w, torch.Tensor) or w.ndim != 2 or not match(name, module):
            continue
        mask = getattr(module, "weight_mask", None)
        if _is_type(module, (CONV1D,)):  # transformers' Conv1D stores (in, out)
            w, mask = w.T, (mask.T if mask is not None else None)
        found[name or type(module).__name__] = (w.detach(), mask)
    return found


def _from_state_dict(state: Mapping, include: Pattern) -> dict[str, tuple]:
    match, found = _matcher(include), {}
    for key, t in state.items():
        if not torch.is_tensor(t) or t.ndim != 2:
            continue
        suffix = next((s for s in _SUFFIXES if key == s or key.endswith("." + s)), None)
        if suffix is None and t.dtype != torch.bool:
            continue  # neither a weight nor a mask (e.g. BERT's int position_ids)
        name = key[: -len(suffix)].rstrip(".") if suffix else key
        if not match(name, t):
            continue
        w, mask = found.get(name, (None, None))
        if suffix == "weight_mask" or t.dtype == torch.bool:
            mask = t
        elif w is None or suffix == "weight_orig":
            w = t.detach()
        found[name] = (w, mask)
    return found


def _collect(source, include: Pattern) -> dict[str, tuple]:
    if isinstance(source, (str, os.PathLike)):
        from ..checkpoint import load_checkpoint
        source = load_checkpoint(source)["state_dict"]
    if isinstance(source, nn.Module):
        found = _from_module(source, include)
    elif isinstance(source, Mapping):
        found = _from_state_dict(source, include)
    else:
        raise TypeError(f"expected an nn.Module, a state dict or a checkpoint path, "
                        f"got {type(source).__name__}")
    if not found:
        raise ValueError(f"no 2-D weight or mask found (include={include!r})")
    return found


def masks_from_model(model_or_state_dict, include: Pattern = None) -> dict[str, torch.Tensor]:
    """``{module name: bool mask (out, in)}`` for every module with a 2-D ``weight``.

    The mask is the module's ``weight_mask`` buffer where it has one (as
    ``torch.nn.utils.prune`` leaves), else the weight's nonzero pattern. Also reads a state dict
    (``X.weight``, ``X.weight_orig`` + ``X.weight_mask``, or bool 2-D tensors, which are taken as
    masks, e.g. a saved ``{name: mask}``) or a checkpoint path. State-dict tensors are read as
    stored (a transformers Conv1D weight then stays (in, out)). ``include``: surgery's patterns
    on the module name (glob, ``"re:..."``, a list or a callable).
    """
    return {name: (mask.detach().cpu() != 0) if mask is not None else (w.detach().cpu() != 0)
            for name, (w, mask) in _collect(model_or_state_dict, include).items()}


def weights_from_model(model_or_state_dict, include: Pattern = None) -> dict[str, torch.Tensor]:
    """``{module name: weight (out, in)}`` as applied (``weight_orig * weight_mask`` for a
    pruned module), same sources and names as :func:`masks_from_model`."""
    return {name: w if mask is None else w * mask.to(w.dtype)
            for name, (w, mask) in _collect(model_or_state_dict, include).items() if w is not None}


# ---- reference mask makers ---------------------------------------------------------------------
def _check_weight(weight, where: str) -> torch.Tensor:
    if not isinstance(weight, torch.Tensor) or weight.ndim != 2 or 0 in weight.shape:
        shape = tuple(weight.shape) if hasattr(weight, "shape") else type(weight).__name__
        raise ValueError(f"{where}: weight must be a non-empty 2-D tensor (out, in), got {shape}")
    if not weight.is_floating_point() or not torch.isfinite(weight.detach().abs().amax()):
        raise ValueError(f"{where}: weight must be floating point and finite")
    return weight.detach()


def _check_sparsity(sparsity, where: str) -> float:
    if not isinstance(sparsity, Real) or not 0 <= sparsity <= 1:
        raise ValueError(f"{where}: sparsity must be a number in [0, 1], got {sparsity!r}")
    return float(sparsity)


def _keep_largest(scores: torch.Tensor, keep: int) -> torch.Tensor:
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
    w = _check_weight(weight, "magnitude_mask")
    keep = w.numel() - round(_check_sparsity(sparsity, "magnitude_mask") * w.numel())
    return _keep_largest(w.abs().flatten().float(), keep).view(w.shape)


def global_magnitude_masks(weights: Mapping[str, torch.Tensor],
                           sparsity: float) -> dict[str, torch.Tensor]:
    """One |w| threshold over all ``weights`` ({name: (out, in)}): exactly
    ``round(sparsity·total)`` zeros overall, layers pruned unevenly (global magnitude pruning)."""
    if not weights:
        raise ValueError("global_magnitude_masks: no weights given")
    ws = {n: _check_weight(w, f"global_magnitude_masks[{n!r}]") for n, w in weights.items()}
    flat = torch.cat([w.abs().flatten().float() for w in ws.values()])
    keep = flat.numel() - round(_check_sparsity(sparsity, "global_magnitude_masks") * flat.numel())
    parts = _keep_largest(flat, keep).split([w.numel() for w in ws.values()])
    return {n: p.view(w.shape) for (n, w), p in zip(ws.items(), parts)}


def _check_nm(n, m, width: int, where: str) -> None:
    if not all(isinstance(v, int) and not isinstance(v, bool) for v in (n, m)) or m < 1 or n < 0:
        raise ValueError(f"{where}: n and m must be ints with m >= 1 and n >= 0, got {n!r}, {m!r}")
    if n > m:
        raise ValueError(f"{where}: n={n} > m={m}: at most m weights fit in a group of m")
    if width % m:
        raise ValueError(f"{where}: in_features={width} is not divisible by m={m}; N:M groups "
                         f"of m consecutive inputs must tile each row")


def nm_mask_of(weight: torch.Tensor, n: int, m: int) -> torch.Tensor:
    """Bool (out, in) N:M mask: in each group of ``m`` consecutive inputs of a row keep the
    ``n`` largest |w| (ties: earlier input kept). Sparsity exactly 1 - n/m."""
    w = _check_weight(weight, "nm_mask_of")
    _check_nm(n, m, w.shape[1], "nm_mask_of")
    groups = w.abs().float().view(w.shape[0], -1, m)                  # (out, in/m, m)
    order = groups.argsort(dim=-1, descending=True, stable=True)[..., :n]
    return torch.zeros_like(groups, dtype=torch.bool).scatter_(-1, order, True).view(w.shape)


# ---- measuring masks ---------------------------------------------------------------------------
def _check_mask(mask, where: str) -> torch.Tensor:
    if not isinstance(mask, torch.Tensor):
        raise TypeError(f"{where}: mask must be a torch.Tensor, got {type(mask).__name__}")
    if mask.dtype != torch.bool:
        raise ValueError(f"{where}: mask must be a bool tensor, got {mask.dtype} (for a "
                         f"weight's pattern pass weight != 0)")
    if mask.ndim != 2 or 0 in mask.shape:
        raise ValueError(f"{where}: mask must be non-empty 2-D (out, in), got {tuple(mask.shape)}")
    return mask.detach().cpu()


def mask_stats(masks: Mapping[str, torch.Tensor]) -> pd.DataFrame:
    """One row per mask: layer, shape (out, in), numel, nonzeros, sparsity (fraction pruned)."""
    rows = []
    for name, mask in masks.items():
        mask = _check_mask(mask, f"mask_stats[{name!r}]")
        nz = int(mask.count_nonzero())
        rows.append({"layer": name, "shape": tuple(mask.shape), "numel": mask.numel(),
                     "nonzeros": nz, "sparsity": 1 - nz / mask.numel()})
    return pd.DataFrame(rows, columns=["layer", "shape", "numel", "nonzeros", "sparsity"])


class NMCompliance(NamedTuple):
    counts: torch.Tensor  # (out, in/m) int32: kept weights per group of m inputs
    fraction: float       # share of groups with at most n kept


def nm_compliance(mask: torch.Tensor, n: int, m: int) -> NMCompliance:
    """Nonzeros per N:M group, (out, in/m), and the fraction of groups with at most ``n``."""
    mask = _check_mask(mask, "nm_compliance")
    _check_nm(n, m, mask.shape[1], "nm_compliance")
    counts = mask.view(torch.uint8).view(mask.shape[0], -1, m).sum(-1, dtype=torch.int32)
    return NMCompliance(counts, float((counts <= n).double().mean()))


def independent_nm_compliance(density: float, n: int, m: int) -> float:
    """P(at most ``n`` of ``m`` kept) if weights were kept independently at ``density``:
    the binomial baseline a mask's :func:`nm_compliance` fraction is compared with."""
    return sum(comb(m, j) * density ** j * (1 - density) ** (m - j) for j in range(n + 1))


def block_density(mask: torch.Tensor, block: int | tuple[int, int] = (32, 32)) -> torch.Tensor:
    """Float32 (ceil(out/bh), ceil(in/bw)): kept fraction per bh×bw block; edge blocks count
    their real entries only. Integer sums on a byte view: 8192² in ~0.1 s."""
    mask = _check_mask(mask, "block_density")
    bh, bw = (block, block) if isinstance(block, int) else tuple(block)
    if not all(isinstance(b, int) and b >= 1 for b in (bh, bw)):
        raise ValueError(f"block_density: block must be positive ints, got {block!r}")
    rows, cols = mask.shape
    r, c = -(-rows // bh), -(-cols // bw)
    z = mask.view(torch.uint8)
    if (r * bh, c * bw) != (rows, cols):
        z = F.pad(z, (0, c * bw - cols, 0, r * bh - rows))
    inner = torch.int16 if bw < 2 ** 15 else torch.int64
    sums = z.reshape(r * bh, c, bw).sum(-1, dtype=inner).view(r, bh, c).sum(1, dtype=torch.int64)
    row_n = (rows - torch.arange(r) * bh).clamp(max=bh)  # real (unpadded) entries per block
    col_n = (cols - torch.arange(c) * bw).clamp(max=bw)
    return (sums.double() / torch.outer(row_n, col_n)).float()


def mask_iou(a: torch.Tensor, b: torch.Tensor) -> float:
    """|a ∧ b| / |a ∨ b| of two same-shape masks (1.0 when both are empty)."""
    a, b = _check_mask(a, "mask_iou"), _check_mask(b, "mask_iou")
    if a.shape != b.shape:
        raise ValueError(f"mask_iou: shapes differ, {tuple(a.shape)} vs {tuple(b.shape)}")
    union = int((a | b).count_nonzero())
    return int((a & b).count_nonzero()) / union if union else 1.0


def mask_evolution(checkpoints: Sequence[Mapping[str, torch.Tensor]],
                   steps: Sequence[int]) -> pd.DataFrame:
    """Masks of one run across checkpoints, one row per (layer, step): sparsity, iou_prev (with
    the previous checkpoint's mask; NaN at the first), iou_final (with the last checkpoint's),
    flipped (fraction of entries that changed since the previous checkpoint; NaN at the first).
    ``checkpoints[i]`` is ``{layer: bool (out, in)}`` at ``steps[i]``; every checkpoint must hold
    the first one's layers with the same shapes."""
    if len(checkpoints) != len(steps) or not checkpoints:
        raise ValueError(f"mask_evolution: need one step per checkpoint and at least one, got "
                         f"{len(checkpoints)} checkpoints and {len(steps)} steps")
    for i, ck in enumerate(checkpoints):
        if missing := [n for n in checkpoints[0] if n not in ck]:
            raise ValueError(f"mask_evolution: checkpoint {i} (step {steps[i]}) lacks {missing}")
    rows, nan = [], float("nan")
    for name in checkpoints[0]:
        masks = [_check_mask(ck[name], f"mask_evolution[{name!r}]") for ck in checkpoints]
        for i, (step, mask) in enumerate(zip(steps, masks)):
            prev = masks[i - 1] if i else None
            rows.append({"layer": name, "step": step,
                         "sparsity": 1 - int(mask.count_nonzero()) / mask.numel(),
                         "iou_prev": mask_iou(prev, mask) if i else nan,
                         "iou_final": mask_iou(mask, masks[-1]),
                         "flipped": int((prev ^ mask).count_nonzero()) / mask.numel()
                         if i else nan})
    return pd.DataFrame(rows)


# ---- schedule ----------------------------------------------------------------------------------
def cubic_schedule(step, s_i: float, s_f: float, t0: int, n: int, dt: int):
    """Zhu & Gupta (2017) gradual pruning: s_t = s_f + (s_i - s_f)·(1 - (t - t0)/(n·Δt))³ for
    t in [t0, t0 + n·Δt], s_i before, s_f after (pruning happens at t0 + kΔt, k = 0..n).
    ``step``: a number (-> float) or array-like (-> float64 numpy array of the same shape)."""
    if n < 1 or dt <= 0:
        raise ValueError(f"cubic_schedule: need n >= 1 and dt > 0, got n={n}, dt={dt}")
    for s in (s_i, s_f):
        _check_sparsity(s, "cubic_schedule")
    t = np.asarray(step, dtype=np.float64)
    progress = np.clip((t - t0) / (n * dt), 0.0, 1.0)
    s = s_f + (s_i - s_f) * (1 - progress) ** 3
    return float(s) if s.ndim == 0 else s
