"""Random pruning at initialization (Liu et al., "The unreasonable effectiveness of random
pruning: return of the most naive baseline for sparse training", ICLR 2022).

Each selected layer gets a fixed random mask before training. Layer-wise densities are either
``uniform`` (every layer at the global density) or ``erk`` (Erdős–Rényi-Kernel, Evci et al.
2020: density ∝ (n_in + n_out)/(n_in·n_out), scaled so the kept weights meet the global budget;
a layer whose density would exceed 1 stays dense and the rest is redistributed). Claim: with wide
enough networks, sparse training from a random mask matches dense training.
"""
from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from typing import Any

import torch
from torch import nn

from ..structures.mask_makers import check_sparsity
from ..structures.masked import MaskReport, mask_linears

DISTRIBUTIONS = ("uniform", "erk")


@dataclasses.dataclass
class RandomPruningConfig:
    """sparsity: fraction of the selected layers' weights pruned, in [0, 1). distribution:
    "uniform" (each layer exactly at ``sparsity``) or "erk" (layer densities ∝ (n_in + n_out) /
    (n_in·n_out), capped at 1; exactly ``sparsity`` over all layers). seed: the masks' random
    seed. include / exclude / min_features: which linear layers (see ``workbench.surgery``)."""
    sparsity: float = 0.9
    distribution: str = "erk"
    seed: int = 0
    include: Any = None
    exclude: Any = None
    min_features: int = 0

    def __post_init__(self):
        check_sparsity(self.sparsity, "random_pruning", upper_inclusive=False)
        if self.distribution not in DISTRIBUTIONS:
            raise ValueError(f"random_pruning: distribution must be one of {DISTRIBUTIONS}, "
                             f"got {self.distribution!r}")
        if not isinstance(self.seed, int) or isinstance(self.seed, bool):
            raise ValueError(f"random_pruning: seed must be an int, got {self.seed!r}")


def erk_densities(shapes: Mapping[str, tuple[int, int]], density: float) -> dict[str, float]:
    """ERK layer densities for ``shapes`` ({name: (out, in)}) at global ``density`` in [0, 1]:
    d_l = min(1, ε·(n_in + n_out)/(n_in·n_out)), ε chosen so Σ d_l·n_in·n_out = density·Σ n_in·n_out.
    Layers that would exceed 1 are set dense one at a time (the densest first) and ε recomputed."""
    if not shapes:
        raise ValueError("erk_densities: no layers given")
    if not 0 <= density <= 1:
        raise ValueError(f"erk_densities: density must be in [0, 1], got {density!r}")
    size = {n: out * inp for n, (out, inp) in shapes.items()}
    raw = {n: (out + inp) / (out * inp) for n, (out, inp) in shapes.items()}
    budget, dense = density * sum(size.values()), set()
    while True:
        free = [n for n in shapes if n not in dense]
        left = budget - sum(size[n] for n in dense)
        eps = left / sum(raw[n] * size[n] for n in free) if free else 0.0
        over = [n for n in free if eps * raw[n] > 1]
        if not over:
            return {n: 1.0 if n in dense else eps * raw[n] for n in shapes}
        dense.add(max(over, key=raw.get))


def keep_counts(sizes: Mapping[str, int], densities: Mapping[str, float], total: int) -> dict:
    """Integer kept weights per layer, each near density·size, summing exactly to ``total``
    (largest remainders round up)."""
    exact = {n: densities[n] * sizes[n] for n in sizes}
    counts = {n: min(sizes[n], math.floor(v)) for n, v in exact.items()}
    order = sorted(sizes, key=lambda n: counts[n] - exact[n])  # largest remainder first
    for n in order[: max(0, total - sum(counts.values()))]:
        counts[n] = min(sizes[n], counts[n] + 1)
    return counts


def random_masks(shapes: Mapping[str, tuple[int, int]], sparsity: float,
                 distribution: str = "erk", seed: int = 0) -> dict[str, torch.Tensor]:
    """{name: bool (out, in)} random masks: "uniform" keeps exactly round((1-s)·numel) per
    layer; "erk" keeps exactly round((1-s)·total) over all layers, spread by :func:`erk_densities`."""
    sizes = {n: out * inp for n, (out, inp) in shapes.items()}
    if distribution == "uniform":
        counts = {n: size - round(sparsity * size) for n, size in sizes.items()}
    elif distribution == "erk":
        total = sum(sizes.values())
        counts = keep_counts(sizes, erk_densities(shapes, 1 - sparsity),
                             total - round(sparsity * total))
    else:
        raise ValueError(f"random_masks: unknown distribution {distribution!r}")
    gen = torch.Generator().manual_seed(seed)
    masks = {}
    for n, shape in shapes.items():
        mask = torch.zeros(sizes[n], dtype=torch.bool)
        mask[torch.randperm(sizes[n], generator=gen)[: counts[n]]] = True
        masks[n] = mask.view(shape)
    return masks


def apply(model: nn.Module, config: RandomPruningConfig) -> MaskReport:
    """Mask the selected layers with fixed random masks (drawn on the CPU, then moved)."""
    report = mask_linears(model, include=config.include, exclude=config.exclude,
                          min_features=config.min_features)
    shapes = {n: tuple(layer.weight.shape) for n, layer in report.layers.items()}
    masks = random_masks(shapes, config.sparsity, config.distribution, config.seed)
    for name, layer in report.layers.items():
        layer.set_mask(masks[name].to(layer.weight.device))
    return report
