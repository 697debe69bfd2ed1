"""How well Monarch matrices fit dense weights: numbers only (figures in ``workbench.viz``).

All three functions use the block structure of ``workbench.structures.monarch_fit``: for
``b = nblocks`` a dense (out, in) weight splits into ``b²`` sub-blocks ``W[l::b, k·p:(k+1)·p]``
(shape (s, p), ``s = ceil(out/b)``, ``p = ceil(in/b)``, zero-padded); the best Monarch keeps the
top ``ranks[l, k]`` singular values of each, so ``relative_error = √(Σ discarded σ² / ‖W‖²)``.
Only singular *values* are needed, so these use ``torch.linalg.svdvals`` (cheaper than the
full projection, and an independent check of ``project``). Low-rank baselines keep the rank
whose factors fit in the same parameter count (``rank_for_params``).
"""
from __future__ import annotations

import math
from collections.abc import Sequence

import pandas as pd
import torch
from torch import nn

from ..structures.lowrank import rank_for_params
from ..structures.monarch_fit import sub_block_ranks, sub_blocks

DEFAULT_NBLOCKS = (1, 2, 4, 8, 16, 32, 64)


def _check_weight(weight, where: str) -> torch.Tensor:
    if not isinstance(weight, torch.Tensor) or weight.ndim != 2 or 0 in weight.shape:
        shape = tuple(weight.shape) if isinstance(weight, torch.Tensor) else type(weight).__name__
        raise ValueError(f"{where}: weight must be a non-empty 2-D tensor (out, in), got {shape}")
    if not torch.isfinite(weight).all():
        raise ValueError(f"{where}: weight contains NaN or infinite values")
    return weight.detach().double() if weight.dtype == torch.float64 else weight.detach().float()


def _check_nblocks(nblocks, where: str) -> int:
    if not isinstance(nblocks, int) or isinstance(nblocks, bool) or nblocks < 1:
        raise ValueError(f"{where}: nblocks must be a positive int, got {nblocks!r}")
    return nblocks


def monarch_sizes(out_features: int, in_features: int, nblocks: int) -> dict:
    """Block sizes and parameter count (no bias) of ``MonarchLinear(in, out, nblocks)``:
    p (input block), q (middle block), s (output block), params = b·q·(p + s)."""
    p, s = math.ceil(in_features / nblocks), math.ceil(out_features / nblocks)
    q = min(p, s)
    return {"p": p, "q": q, "s": s, "params": nblocks * q * (p + s)}


def _too_many_blocks(out_features: int, in_features: int, nblocks: int) -> str:
    """A note if ``nblocks`` exceeds what the matrix allows, else ''."""
    if nblocks > min(out_features, in_features):
        return (f"skipped: nblocks={nblocks} > min(out, in) = {min(out_features, in_features)} "
                "(blocks would hold only padding)")
    return ""


def _block_svdvals(work: torch.Tensor, nblocks: int):
    """σ (b, b, min(s, p)) descending per sub-block [l, k], and ranks (b, b) kept."""
    sizes = monarch_sizes(*work.shape, nblocks)
    sigma = torch.linalg.svdvals(sub_blocks(work, nblocks).contiguous())  # strided: slow
    return sigma, sub_block_ranks(nblocks, sizes["q"]).to(sigma.device), sizes


def _monarch_error(work: torch.Tensor, nblocks: int, total_sq: float) -> float:
    sigma, ranks, _ = _block_svdvals(work, nblocks)
    keep = torch.arange(sigma.shape[-1], device=sigma.device) < ranks[..., None]
    residual_sq = float((sigma.square() * ~keep).sum())
    return math.sqrt(residual_sq / total_sq) if total_sq > 0 else 0.0


@torch.no_grad()
def sub_block_spectra(weight: torch.Tensor, nblocks: int) -> pd.DataFrame:
    """Singular values of every Monarch sub-block of ``weight`` (out, in) at ``nblocks``.

    One row per (l, k, index): ``l`` output residue class (rows l::b), ``k`` input block,
    ``index`` 0-based position in the descending spectrum, ``sigma``, ``kept`` (True for the
    top ``ranks[l, k]`` the optimal Monarch keeps) and ``energy_fraction`` σ²/‖sub-block‖²
    (0 for an all-zero sub-block). b²·min(s, p) rows.
    """
    where = "sub_block_spectra"
    work = _check_weight(weight, where)
    b = _check_nblocks(nblocks, where)
    note = _too_many_blocks(*work.shape, b)
    if note:
        raise ValueError(f"{where}: {note}")
    sigma, ranks, _ = _block_svdvals(work, b)
    sigma, ranks = sigma.cpu(), ranks.cpu()
    energy = sigma.square()
    total = energy.sum(-1, keepdim=True)
    fraction = torch.where(total > 0, energy / total.clamp_min(1e-300), torch.zeros_like(energy))
    l, k, idx = torch.meshgrid(torch.arange(b), torch.arange(b), torch.arange(sigma.shape[-1]),
                               indexing="ij")
    return pd.DataFrame({
        "l": l.reshape(-1).numpy(), "k": k.reshape(-1).numpy(), "index": idx.reshape(-1).numpy(),
        "sigma": sigma.reshape(-1).double().numpy(),
        "kept": (idx < ranks[..., None]).reshape(-1).numpy(),
        "energy_fraction": fraction.reshape(-1).double().numpy()})


@torch.no_grad()
def projection_error_curve(weight: torch.Tensor, nblocks_list: Sequence[int] = DEFAULT_NBLOCKS,
                           include_lowrank: bool = True) -> pd.DataFrame:
    """Relative Frobenius error of the optimal Monarch projection of ``weight`` (out, in) for
    each ``nblocks``, optionally beside the optimal low-rank layer with at most as many params.

    Columns: nblocks, params (Monarch, no bias), param_fraction (params / (out·in)),
    relative_error, and with ``include_lowrank``: rank, lowrank_params, lowrank_relative_error;
    ``note`` says why a row was skipped (nblocks > min(out, in): numbers are NaN) or that the
    matrix was zero-padded to (b·s, b·p).
    """
    where = "projection_error_curve"
    work = _check_weight(weight, where)
    nblocks_list = [_check_nblocks(b, where) for b in nblocks_list]
    if not nblocks_list:
        raise ValueError(f"{where}: nblocks_list is empty")
    out, inp = work.shape
    total_sq = float(work.square().sum())
    full_sigma = torch.linalg.svdvals(work) if include_lowrank else None
    rows = []
    for b in nblocks_list:
        row = {"nblocks": b, "params": math.nan, "param_fraction": math.nan,
               "relative_error": math.nan, "note": _too_many_blocks(out, inp, b)}
        if include_lowrank:
            row.update(rank=math.nan, lowrank_params=math.nan, lowrank_relative_error=math.nan)
        if not row["note"]:
            sizes = monarch_sizes(out, inp, b)
            if (b * sizes["s"], b * sizes["p"]) != (out, inp):
                empty = b - math.ceil(inp / sizes["p"])  # input blocks past in_features
                row["note"] = (f"zero-padded to {b * sizes['s']}x{b * sizes['p']}"
                               + (f"; {empty} input blocks all padding" if empty else ""))
            row.update(params=sizes["params"], param_fraction=sizes["params"] / (out * inp),
                       relative_error=_monarch_error(work, b, total_sq))
            if include_lowrank:
                rank = min(rank_for_params(inp, out, sizes["params"]), out, inp)
                tail = float(full_sigma[rank:].square().sum())
                row.update(rank=rank, lowrank_params=rank * (inp + out),
                           lowrank_relative_error=math.sqrt(tail / total_sq) if total_sq else 0.)
        rows.append(row)
    frame = pd.DataFrame(rows)
    ints = ["params", "rank", "lowrank_params"] if include_lowrank else ["params"]
    return frame.astype({c: "Int64" for c in ints})


def _linear_layers(model: nn.Module, include):
    """(name, (out, in) weight) of each linear layer: ``workbench.surgery`` when present
    (also finds GPT-2 Conv1D), otherwise every ``nn.Linear`` whose name matches ``include``."""
    try:
        from ..surgery import find_linears, linear_weight
    except ImportError:
        import fnmatch
        found = [(n, m.weight) for n, m in model.named_modules() if isinstance(m, nn.Linear)
                 and (include is None or fnmatch.fnmatchcase(n, include))]
        if not found:
            raise ValueError(f"model has no linear layer (nn.Linear) matching {include!r}")
        return found
    return [(n, linear_weight(m)) for n, m in find_linears(model, include=include)]


@torch.no_grad()
def model_projection_errors(model: nn.Module, nblocks_list: Sequence[int] = (2, 4, 8, 16),
                            include=None, progress: bool = True) -> pd.DataFrame:
    """Monarch projection error of every linear layer of ``model`` at every ``nblocks``.

    ``include``: a name pattern as in ``workbench.surgery`` (glob, ``"re:..."``, list, or
    callable); None takes all. One row per layer × nblocks: layer, shape ("out x in"),
    out_features, in_features, nblocks, params, param_fraction, relative_error, note (why a
    row is NaN). A tqdm bar counts layers.
    """
    from tqdm.auto import tqdm

    if not isinstance(model, nn.Module):
        raise ValueError(f"model_projection_errors: model must be an nn.Module, "
                         f"got {type(model).__name__}")
    layers = _linear_layers(model, include)
    rows = []
    for name, weight in tqdm(layers, desc="Monarch fit", unit="layer", disable=not progress):
        curve = projection_error_curve(weight, nblocks_list, include_lowrank=False)
        out, inp = weight.shape
        curve.insert(0, "layer", name)
        curve.insert(1, "shape", f"{out} x {inp}")
        curve.insert(2, "out_features", out)
        curve.insert(3, "in_features", inp)
        rows.append(curve)
    return pd.concat(rows, ignore_index=True)
