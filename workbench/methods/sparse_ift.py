"""Sparse-IFT (Saxena et al., "Sparse Iso-FLOP Transformations for Maximizing Training
Efficiency", ICML 2024): at sparsity s, the same FLOPs as the dense model, more capacity.

Claim: the transformed networks reach **higher accuracy than dense at equal FLOPs** (ResNet-18
on CIFAR/ImageNet, ViT, GPT-3 Small), with no change to the training recipe.

Four variants. Three are layer-level and replace each selected linear in place (modules in
``workbench.structures.sparse_ift``): ``parallel``, ``factorized``, ``doped``. The fourth,
``wide``, changes the model: every width grows by √(1/(1-s)) (:func:`wide_width`), so it cannot be
done to a built model in place. Build the reference model twice, at ``width`` and at
``wide_width(width, s)`` (for the workbench's reference models: the MLP's hidden width, the
Mixer's channels with its FFN hidden 4× that, the GPT's embedding with its FFN), then
``apply_method("sparse_ift", wide, variant="wide", reference=dense, example=batch)`` masks each
linear of the wide model so that its FLOPs on ``example`` (``rows·(2·nonzeros + d_out)``, rows =
batch × tokens it multiplies) equal those of the same-named layer of the dense reference. The
density is then ≈ 1-s where both sides of a layer grew, ≈ √(1-s) where one did (the input and
output layers), and lower still where the rows grew too (the Mixer's token MLPs run once per
channel). Kept weights are rescaled to keep each layer's output variance. Parts that grow with
width but are not linears (LayerNorm, GELU, attention scores) are not FLOP-matched; the cost
meter reports the model's total honestly. All masks are static and random; a dynamic sparse
sparsifier (``workbench.methods.dynamic_sparse``) can move them while training.
"""
from __future__ import annotations

import dataclasses
import math
from typing import Any

import torch
from torch import nn

from ..structures.mask_makers import check_sparsity, keep_largest
from ..structures.masked import MaskedLinear, MaskReport
from ..structures.sparse_ift import VARIANTS
from ..surgery import Skip, find_linears, linear_bias, linear_shape, replace_linears

ALL_VARIANTS = (*VARIANTS, "wide")


@dataclasses.dataclass
class SparseIFTConfig:
    """variant: "parallel", "factorized", "doped" (layer-level) or "wide" (model-level).
    sparsity: s in [0, 1); the variant spends the freed FLOPs on width, branches or rank.
    seed: seeds the fresh sparse pieces and their random masks.
    reference / example (wide only): the dense model at the original width and an input batch
    on which per-layer FLOPs are matched.
    include / exclude / min_features: which linears (``workbench.surgery`` patterns)."""
    variant: str = "parallel"
    sparsity: float = 0.5
    seed: int = 0
    reference: Any = None
    example: Any = None
    include: Any = None
    exclude: Any = None
    min_features: int = 0

    def __post_init__(self):
        if self.variant not in ALL_VARIANTS:
            raise ValueError(f"sparse_ift: variant must be one of {', '.join(ALL_VARIANTS)}, "
                             f"got {self.variant!r}")
        self.sparsity = check_sparsity(self.sparsity, "sparse_ift", upper_inclusive=False)
        if self.variant == "wide":
            if not isinstance(self.reference, nn.Module):
                raise ValueError("sparse_ift: variant 'wide' needs reference=<the dense model "
                                 "at the original width> (see wide_width)")
            if not isinstance(self.example, (torch.Tensor, tuple)):
                raise ValueError("sparse_ift: variant 'wide' needs example=<an input batch> "
                                 "to match per-layer FLOPs on")
        elif self.reference is not None or self.example is not None:
            raise ValueError(f"sparse_ift: reference / example are for variant 'wide' only, "
                             f"not {self.variant!r}")


def wide_width(width: int, sparsity: float) -> int:
    """Sparse Wide's width, ``round(width·√(1/(1-s)))``."""
    s = check_sparsity(sparsity, "wide_width", upper_inclusive=False)
    return round(width * math.sqrt(1 / (1 - s)))


def apply(model: nn.Module, config: SparseIFTConfig) -> MaskReport:
    """Transform ``model`` in place. The report's ``replaced`` names the new modules; its
    ``layers`` are their masked pieces ({"blocks.0.mlp.fc.branches.1": MaskedLinear, ...}),
    the dense low-rank part of ``doped`` excluded."""
    generator = torch.Generator().manual_seed(config.seed)
    if config.variant == "wide":
        return sparse_wide(model, config.reference, config.example, include=config.include,
                           exclude=config.exclude, min_features=config.min_features,
                           generator=generator)
    cls = VARIANTS[config.variant]

    def factory(name: str, module: nn.Module) -> nn.Module:
        out_features, in_features = linear_shape(module)
        return cls(in_features, out_features, config.sparsity,
                   bias=linear_bias(module) is not None, generator=generator)
    report = MaskReport.of(replace_linears(model, factory, include=config.include,
                                           exclude=config.exclude,
                                           min_features=config.min_features), model)
    report.layers = {f"{r.name}.{name}": piece for r in report.replaced
                     for name, piece in model.get_submodule(r.name).named_modules()
                     if isinstance(piece, MaskedLinear)}
    return report


def linear_rows(model: nn.Module, example) -> dict[str, int]:
    """{linear name: rows it multiplies in one forward on ``example``} (batch × tokens etc.)."""
    rows: dict[str, int] = {}

    def count(name: str):
        def hook(module, args, output):
            rows[name] = rows.get(name, 0) + args[0].numel() // args[0].shape[-1]
        return hook
    hooks = [m.register_forward_hook(count(n)) for n, m in find_linears(model)]
    try:
        with torch.no_grad():
            model(*(example if isinstance(example, tuple) else (example,)))
    finally:
        for h in hooks:
            h.remove()
    return rows


def sparse_wide(wide: nn.Module, reference: nn.Module, example, include: Any = None,
                exclude: Any = None, min_features: int = 0,
                generator: torch.Generator | None = None) -> MaskReport:
    """Mask the linears of ``wide`` (in place, random static masks) so each spends the FLOPs
    of the same-named linear of ``reference`` on ``example`` (bias adds included). Layers whose
    FLOPs did not grow, or that ``reference`` lacks or never runs, are skipped with the reason.
    Kept weights are scaled by 1/√density, so each layer keeps its dense output variance."""
    ref_rows, wide_rows = linear_rows(reference, example), linear_rows(wide, example)
    ref_layers = dict(find_linears(reference))

    def factory(name: str, module: nn.Module) -> nn.Module:
        if name not in ref_layers or not ref_rows.get(name) or not wide_rows.get(name):
            raise Skip("no same-named layer run by the reference")
        (ro, ri), (wo, wi) = linear_shape(ref_layers[name]), linear_shape(module)
        bias = linear_bias(module) is not None
        budget = ref_rows[name] * (2 * ro * ri + (ro if bias else 0))  # the reference's FLOPs
        nonzeros = round((budget / wide_rows[name] - (wo if bias else 0)) / 2)
        if nonzeros >= wo * wi:
            raise Skip("FLOPs did not grow")
        layer = MaskedLinear.from_dense(module)
        scores = torch.rand(wo * wi, generator=generator)
        layer.set_mask(keep_largest(scores, max(nonzeros, 0)).view(wo, wi).to(layer.weight.device))
        with torch.no_grad():
            layer.weight.mul_(math.sqrt(wo * wi / max(nonzeros, 1)))
        return layer
    report = replace_linears(wide, factory, include=include, exclude=exclude,
                             min_features=min_features)
    return MaskReport.of(report, wide)
