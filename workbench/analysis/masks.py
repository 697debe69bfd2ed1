"""Sparsity masks, numbers only: read masks off a model, make reference masks, measure them.

A *mask* is a bool tensor shaped like the weight it belongs to, (out, in), True = kept. Nothing
here depends on how a mask was made (GMP, N:M, dynamic sparse, ``torch.nn.utils.prune``): the
inspectors read plain masks, or the nonzero pattern of plain weights.

- :func:`masks_from_model` / :func:`weights_from_model`: ``{module name: (out, in)}``
- :func:`magnitude_mask`, :func:`global_magnitude_masks`, :func:`nm_mask_of` (= ``nm_mask``),
  :func:`cubic_schedule`: the makers, re-exported from ``workbench.structures.mask_makers``
- :func:`mask_stats`, :func:`nm_compliance` (vs :func:`independent_nm_compliance`),
  :func:`block_density`: one mask or a set of them
- :func:`mask_iou`, :func:`mask_evolution`: masks across checkpoints of one run
"""
from __future__ import annotations

import os
from math import comb
from collections.abc import Mapping, Sequence
from typing import NamedTuple

import pandas as pd
import torch
import torch.nn.functional as F
from torch import nn

from ..structures.mask_makers import (check_nm as _check_nm, cubic_schedule,
                                      global_magnitude_masks, magnitude_mask, nm_mask)
from ..surgery import CONV1D, Pattern, _is_type, _matcher

nm_mask_of = nm_mask  # the older name; one implementation in workbench.structures.mask_makers

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
