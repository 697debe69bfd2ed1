"""Dynamic sparse training: prune and regrow during training at a constant parameter budget.

SET (Mocanu et al., Nature Comm. 2018) regrows at random; RigL (Evci et al., ICML 2020, "Rigging
the Lottery") regrows where the dense gradient is largest; DSL names the family. Every
``update_every`` (Δt) steps until ``end_step``, each masked layer drops the
``floor(f_t·nonzeros)`` active weights of smallest |w| and regrows as many among the entries
inactive after the drop, so its nonzero count never changes. The drop fraction decays as RigL's
cosine, ``f_t = α/2·(1 + cos(π·t/T_end))``. Regrown weights start at zero, and so does the
optimizer's state (AdamW moments) of every moved weight. Start: random masks at
uniform or ERK layer densities (``workbench.methods.random_pruning``).
Claim (RigL): sparse networks trained this way reach the accuracy of dense-to-sparse pruning and
beat static sparse training at the same parameter count and training FLOPs; a 90%-sparse
ResNet-50 comes within a few points of dense.

``apply`` returns a ``MaskReport`` whose ``sparsifier`` must be passed to training:
``train(..., on_step=report.sparsifier.step)``. It keeps a snapshot of the masks at the start
and after every update (``snapshots``), from which :meth:`DynamicSparsifier.evolution` gives the
mask-evolution table and :meth:`DynamicSparsifier.save` the run artifacts.
"""
from __future__ import annotations

import dataclasses
import math
import os
from pathlib import Path
from typing import Any

import pandas as pd
import torch
from torch import nn

from ..analysis.masks import mask_evolution, mask_iou
from ..structures.mask_makers import check_sparsity, keep_largest
from ..structures.masked import MaskedLinear, MaskReport, Sparsifier
from . import random_pruning

REGROW = ("gradient", "random")


@dataclasses.dataclass
class DynamicSparseConfig:
    """sparsity: fraction of the masked weights kept at zero, in [0, 1), constant throughout.
    distribution: layer densities of the budget, "uniform" or "erk" (Erdős–Rényi-kernel).
    regrow: "gradient" (RigL: largest |∂L/∂w| of the masked weight) or "random" (SET).
    update_every: Δt, optimizer steps between mask updates.
    drop_fraction: α, the fraction of each layer's nonzeros moved at the first update, in (0, 1].
    end_step: T_end, the last step that changes masks (RigL: 3/4 of training); > 0.
    seed: the initial random masks and random regrowth.
    include / exclude / min_features: which linears (``workbench.surgery`` patterns)."""
    sparsity: float = 0.9
    distribution: str = "uniform"
    regrow: str = "gradient"
    update_every: int = 100
    drop_fraction: float = 0.3
    end_step: int = 0
    seed: int = 0
    include: Any = None
    exclude: Any = None
    min_features: int = 0

    def __post_init__(self):
        self.sparsity = check_sparsity(self.sparsity, "dynamic_sparse", upper_inclusive=False)
        if self.distribution not in random_pruning.DISTRIBUTIONS:
            raise ValueError(f"dynamic_sparse: distribution must be one of "
                             f"{random_pruning.DISTRIBUTIONS}, got {self.distribution!r}")
        if self.regrow not in REGROW:
            raise ValueError(f"dynamic_sparse: regrow must be 'gradient' (RigL) or 'random' "
                             f"(SET), got {self.regrow!r}")
        if not isinstance(self.drop_fraction, (int, float)) or isinstance(
                self.drop_fraction, bool) or not 0 < self.drop_fraction <= 1:
            raise ValueError(f"dynamic_sparse: drop_fraction must be in (0, 1], got "
                             f"{self.drop_fraction!r}")
        for name in ("update_every", "end_step"):  # end_step last: it has no usable default
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ValueError(f"dynamic_sparse: {name} must be a positive int, got {value!r}"
                                 + (" (the last step that changes masks; RigL uses 3/4 of the "
                                    "training steps)" if name == "end_step" else ""))


def cosine_drop_fraction(step: int, alpha: float, end_step: int) -> float:
    """RigL's schedule ``α/2·(1 + cos(π·t/T_end))`` for t <= T_end, 0 after."""
    return alpha / 2 * (1 + math.cos(math.pi * step / end_step)) if step <= end_step else 0.0


@torch.no_grad()
def prune_and_regrow(weight: torch.Tensor, mask: torch.Tensor, n: int,
                     grow_scores: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """One update of one layer: (new mask, grown) as bool (out, in).

    Drops the ``n`` kept entries of ``mask`` with the smallest |``weight``|, then keeps the
    ``n`` entries with the largest ``grow_scores`` among those not kept after the drop (a
    just-dropped entry may come back); ties go to the earlier position. The count of kept
    entries is unchanged. ``grown`` marks the regrown entries, whose weights should restart at 0.
    """
    if mask.dtype != torch.bool or mask.shape != weight.shape or grow_scores.shape != mask.shape:
        raise ValueError(f"prune_and_regrow: need a bool mask and scores shaped like the weight "
                         f"{tuple(weight.shape)}, got {mask.dtype} {tuple(mask.shape)} and "
                         f"{tuple(grow_scores.shape)}")
    kept = int(mask.count_nonzero())
    if not 0 <= n <= kept:
        raise ValueError(f"prune_and_regrow: cannot move {n} of {kept} kept weights")
    if not torch.isfinite(grow_scores).all():
        raise ValueError("prune_and_regrow: regrowth scores contain NaN or infinite values")
    low = torch.finfo(torch.float64).min
    magnitude = torch.where(mask, weight.detach().abs().double(), low).flatten()
    survivors = keep_largest(magnitude, kept - n)
    candidates = torch.where(survivors, low, grow_scores.double().flatten())
    grown = keep_largest(candidates, n) & ~survivors
    return (survivors | grown).view(mask.shape), grown.view(mask.shape)


class DynamicSparsifier(Sparsifier):
    """Prune-and-regrow for ``layers`` ({name: MaskedLinear}), called as ``step(t)`` after each
    optimizer step. ``snapshots``: [(step, {name: bool mask (out, in) on the CPU})], the start
    (step 0) and every update; ``updates``: one dict per layer and update (step, layer,
    drop_fraction, moved, regrown_dropped: moved entries that came straight back). Regrown
    weights restart at zero with zeroed optimizer state (``step(t, optimizer)``, as ``train``
    calls it), and dropped weights' state is zeroed too, so no stale moment drives them."""

    def __init__(self, layers: dict[str, MaskedLinear], config: DynamicSparseConfig):
        super().__init__(layers)
        self.config = config
        self.generator = torch.Generator().manual_seed(config.seed + 1)  # random regrowth
        self.snapshots: list[tuple[int, dict[str, torch.Tensor]]] = [(0, self._cpu_masks())]
        self.updates: list[dict[str, Any]] = []
        self._track_gradients(1)

    def _cpu_masks(self) -> dict[str, torch.Tensor]:
        return {n: m.cpu() for n, m in self.masks().items()}

    def is_update_step(self, step: int) -> bool:
        return step % self.config.update_every == 0 and step <= self.config.end_step

    def _track_gradients(self, next_step: int) -> None:
        """RigL needs the dense gradient only on update steps: keep it for the next one."""
        track = self.config.regrow == "gradient" and self.is_update_step(next_step)
        for layer in self.layers.values():
            layer.track_dense_grad = track
            if not track:
                layer.dense_grad = None

    def _grow_scores(self, name: str, layer: MaskedLinear) -> torch.Tensor:
        if self.config.regrow == "random":
            return torch.rand(layer.weight.shape, generator=self.generator).to(layer.weight.device)
        if layer.dense_grad is None:
            raise RuntimeError(f"dynamic_sparse: no gradient for {name!r} at an update step; "
                               f"call step(t) after loss.backward() and optimizer.step()")
        return layer.dense_grad.abs()

    @torch.no_grad()
    def update(self, step: int) -> bool:
        if not self.is_update_step(step):
            return False
        fraction = cosine_drop_fraction(step, self.config.drop_fraction, self.config.end_step)
        for name, layer in self.layers.items():
            n = math.floor(fraction * layer.nnz)
            old = layer.weight_mask.clone()
            new, grown = prune_and_regrow(layer.weight, old, n, self._grow_scores(name, layer))
            self.restart(name, grown)  # regrown weights start at zero, optimizer state too
            layer.set_mask(new)
            self.updates.append({"step": step, "layer": name, "drop_fraction": fraction,
                                 "moved": n, "regrown_dropped": int((grown & old).sum())})
        self.snapshots.append((step, self._cpu_masks()))
        return True

    def step(self, step: int, optimizer: torch.optim.Optimizer | None = None) -> None:
        super().step(step, optimizer)
        self._track_gradients(step + 1)

    def evolution(self) -> pd.DataFrame:
        """``mask_evolution`` of the snapshots, plus per (layer, step): ``iou_initial`` (with the
        step-0 mask), ``regrown`` (share of the kept weights that were not kept at the previous
        snapshot) and ``ever_active`` (share of all entries kept at some snapshot so far)."""
        steps = [s for s, _ in self.snapshots]
        table = mask_evolution([m for _, m in self.snapshots], steps)
        extra = []
        for name in self.layers:
            masks = [m[name] for _, m in self.snapshots]
            seen = torch.zeros_like(masks[0])
            for i, (step, mask) in enumerate(zip(steps, masks)):
                seen |= mask
                kept = max(int(mask.count_nonzero()), 1)
                extra.append({"iou_initial": mask_iou(masks[0], mask),
                              "regrown": int((mask & ~masks[i - 1]).count_nonzero()) / kept
                              if i else float("nan"),
                              "ever_active": int(seen.count_nonzero()) / mask.numel()})
        return pd.concat([table, pd.DataFrame(extra)], axis=1)

    def save(self, prefix: str = "", folder: str | os.PathLike | None = None) -> dict[str, str]:
        """Write ``<prefix>masks.pt`` (final {name: mask}), ``<prefix>mask_history.pt``
        ({"steps", "masks"}) and ``<prefix>mask_evolution.csv`` into ``folder`` (default: the
        run's artifact folder, ``workbench.runs.log.artifact_path``); returns {artifact key:
        path} for ``log_results(artifacts=...)``: the dashboard draws "masks" and
        "mask_evolution"."""
        def path(name: str) -> Path:
            if folder is None:
                from ..runs.log import artifact_path  # lazily: workbench.runs imports SQL
                return artifact_path(prefix + name)
            Path(folder).mkdir(parents=True, exist_ok=True)
            return Path(folder) / (prefix + name)
        paths = {"masks": path("masks.pt"), "mask_history": path("mask_history.pt"),
                 "mask_evolution": path("mask_evolution.csv")}
        torch.save(self.snapshots[-1][1], paths["masks"])
        torch.save({"steps": [s for s, _ in self.snapshots],
                    "masks": [m for _, m in self.snapshots]}, paths["mask_history"])
        self.evolution().to_csv(paths["mask_evolution"], index=False)
        return {key: str(p) for key, p in paths.items()}


def apply(model: nn.Module, config: DynamicSparseConfig) -> MaskReport:
    """Random masks at the configured layer densities (as ``random_pruning``), plus the
    :class:`DynamicSparsifier` in ``report.sparsifier``."""
    report = random_pruning.apply(model, random_pruning.RandomPruningConfig(
        sparsity=config.sparsity, distribution=config.distribution, seed=config.seed,
        include=config.include, exclude=config.exclude, min_features=config.min_features))
    report.sparsifier = DynamicSparsifier(report.layers, config)
    return report
