"""Gradual magnitude pruning (Zhu & Gupta, "To prune, or not to prune", 2017).

Sparsity follows the cubic schedule s_t = s_f + (s_i − s_f)(1 − (t − t0)/(t_end − t0))³ (the
paper's n·Δt is ``end_step − start_step``); every ``frequency`` steps from ``start_step`` on, and at
``end_step``, the smallest-|w| weights are pruned to reach s_t, per layer or with one global
threshold. Pruned weights stay pruned. Claim: large-sparse models beat small-dense ones with the
same number of nonzero parameters.

Use: ``report = apply_method("gmp", model, final_sparsity=0.9, end_step=800)`` masks the
layers (at ``initial_sparsity``), then ``train(model, ..., on_step=report.sparsifier.step)``.
"""
from __future__ import annotations

import dataclasses
from typing import Any

import torch
from torch import nn

from ..structures.mask_makers import check_sparsity, cubic_schedule, keep_largest
from ..structures.masked import MaskedLinear, MaskReport, Sparsifier, mask_linears

SCOPES = ("global", "layer")


@dataclasses.dataclass
class GMPConfig:
    """final_sparsity: s_f in [0, 1), reached at ``end_step``. initial_sparsity: s_i in
    [0, s_f], applied at once (one-shot magnitude pruning) and held until ``start_step``.
    start_step / end_step: optimizer steps (1-based) of the first and the last pruning.
    frequency: Δt, steps between prunings. scope: "global" (one |w| threshold over all layers)
    or "layer" (every layer at the same sparsity). include / exclude / min_features: which
    linear layers (see ``workbench.surgery``)."""
    final_sparsity: float = 0.9
    initial_sparsity: float = 0.0
    start_step: int = 0
    end_step: int = 1000
    frequency: int = 100
    scope: str = "global"
    include: Any = None
    exclude: Any = None
    min_features: int = 0

    def __post_init__(self):
        check_sparsity(self.final_sparsity, "gmp: final_sparsity", upper_inclusive=False)
        check_sparsity(self.initial_sparsity, "gmp: initial_sparsity", upper_inclusive=False)
        if self.initial_sparsity > self.final_sparsity:
            raise ValueError(f"gmp: initial_sparsity {self.initial_sparsity} exceeds "
                             f"final_sparsity {self.final_sparsity}")
        for name in ("start_step", "end_step", "frequency"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 0:
                raise ValueError(f"gmp: {name} must be an int >= 0, got {value!r}")
        if self.end_step <= self.start_step:
            raise ValueError(f"gmp: end_step {self.end_step} must be after start_step "
                             f"{self.start_step}")
        if self.frequency < 1:
            raise ValueError(f"gmp: frequency must be >= 1, got {self.frequency}")
        if self.scope not in SCOPES:
            raise ValueError(f"gmp: scope must be one of {SCOPES}, got {self.scope!r}")

    def sparsity_at(self, step):
        """s_t after optimizer step ``step`` (number or array-like)."""
        return cubic_schedule(step, self.initial_sparsity, self.final_sparsity,
                              self.start_step, 1, self.end_step - self.start_step)

    def pruning_steps(self) -> list[int]:
        """The steps after which masks change: start, start + Δt, ..., and end."""
        return sorted({*range(self.start_step, self.end_step, self.frequency), self.end_step})


@torch.no_grad()
def prune(layers: dict[str, MaskedLinear], sparsity: float, scope: str = "global") -> None:
    """Prune ``layers`` to ``sparsity`` by |w| (exactly: per layer, or over all together for
    "global"), never reviving a pruned weight."""
    def scores(layer):  # pruned weights rank below every kept one, zeros included
        return layer.weight.detach().abs().float().masked_fill(~layer.weight_mask, -1).flatten()
    groups = [list(layers.values())] if scope == "global" else [[l] for l in layers.values()]
    for group in groups:
        flat = torch.cat([scores(layer) for layer in group])
        keep = flat.numel() - round(sparsity * flat.numel())
        parts = keep_largest(flat, keep).split([layer.weight.numel() for layer in group])
        for layer, part in zip(group, parts):
            layer.set_mask(part.view_as(layer.weight_mask))


class GradualPruner(Sparsifier):
    """The GMP training hook: prunes ``layers`` to ``config.sparsity_at(t)`` after each of
    ``config.pruning_steps()``."""

    def __init__(self, layers: dict[str, MaskedLinear], config: GMPConfig):
        super().__init__(layers)
        self.config, self._due = config, set(config.pruning_steps())

    def update(self, step: int) -> bool:
        if step not in self._due:
            return False
        prune(self.layers, self.config.sparsity_at(step), self.config.scope)
        return True


def apply(model: nn.Module, config: GMPConfig) -> MaskReport:
    """Mask the selected layers at ``initial_sparsity``; ``report.sparsifier`` prunes on."""
    report = mask_linears(model, include=config.include, exclude=config.exclude,
                          min_features=config.min_features)
    prune(report.layers, config.initial_sparsity, config.scope)
    report.sparsifier = GradualPruner(report.layers, config)
    return report
