"""Monarch (Dao et al., ICML 2022): replace linear layers by Monarch matrices.

Three workflows, one config: ``init="fresh"`` for sparse training from scratch (variance-matched
factors), ``init="project"`` for dense-to-sparse fine-tuning (the optimal projection of the
pretrained weight), and :func:`densify` for reverse sparsification (Monarch -> dense ``to_dense``
part-way through training). Paper claims: ViT / GPT-2 training 2x faster at comparable quality;
GPT-2 pretraining 2x faster via reverse sparsification; BERT GLUE fine-tuning 1.7x faster.
"""
from __future__ import annotations

import dataclasses
from typing import Any

from torch import nn

from ..structures import MonarchLinear
from ..structures.monarch_kernels import IMPLS
from ..surgery import SurgeryReport, linear_bias, linear_shape, linear_weight, replace_linears


@dataclasses.dataclass
class MonarchConfig:
    """nblocks: blocks per factor (int, or "sqrt" for the canonical √n form).
    init: "fresh" (variance-matched random factors) or "project" (optimal fit of the weight).
    include / exclude: module name patterns (see ``workbench.surgery``); default: every linear.
    min_features: skip layers whose smaller side is below this.
    impl: how the new layers multiply (``MonarchLinear``'s ``impl``; "dense" builds the weight
    and runs one GEMM, the faster choice for small layers under CUDA graphs)."""
    nblocks: int | str = 4
    init: str = "fresh"
    include: Any = None
    exclude: Any = None
    min_features: int = 0
    impl: str = "auto"

    def __post_init__(self):
        if self.init not in ("fresh", "project"):
            raise ValueError(f"monarch: init must be 'fresh' or 'project', got {self.init!r}")
        if self.impl not in IMPLS:
            raise ValueError(f"monarch: impl must be one of {IMPLS}, got {self.impl!r}")
        if self.nblocks != "sqrt" and (not isinstance(self.nblocks, int) or self.nblocks < 1):
            raise ValueError(f"monarch: nblocks must be a positive int or 'sqrt', "
                             f"got {self.nblocks!r}")


def apply(model: nn.Module, config: MonarchConfig) -> SurgeryReport:
    def factory(name: str, module: nn.Module) -> nn.Module:
        out_features, in_features = linear_shape(module)
        bias = linear_bias(module)
        if config.init == "project":
            try:
                return MonarchLinear.from_dense(linear_weight(module).detach(), config.nblocks,
                                                bias=None if bias is None else bias.detach(),
                                                impl=config.impl)
            except ValueError as err:
                raise ValueError(f"monarch: layer {name!r}: {err}") from err
        return MonarchLinear(in_features, out_features, config.nblocks, bias=bias is not None,
                             impl=config.impl)
    return replace_linears(model, factory, include=config.include, exclude=config.exclude,
                           min_features=config.min_features)


def densify(model: nn.Module) -> SurgeryReport:
    """Reverse sparsification: every MonarchLinear becomes the nn.Linear it equals."""
    return replace_linears(model, lambda name, m: m.to_linear(), types=(MonarchLinear,))
