"""N:M sparsity (e.g. 2:4): at most N nonzeros in each group of M consecutive weights along the
input dimension, chosen by magnitude.

Two modes: ``"magnitude"`` fixes the N:M magnitude mask of the current weights (one-shot pruning,
then fine-tune); ``"srste"`` trains the dense weights with the sparse-refined straight-through
estimator (Zhou et al., ICLR 2021; see ``workbench.structures.nm``), the mask recomputed every
forward; :func:`freeze` ends it. On GPU, 2:4 (and 1:4) masks run on PyTorch's semi-structured
kernels through :func:`to_semi_structured`; on our H200 those were slower than dense (0.89×) for a
large matmul, so measure before expecting a speed-up.
"""
from __future__ import annotations

import dataclasses
from typing import Any

from torch import nn

from ..structures.nm import NMLinear
from ..structures.semi_structured import to_semi_structured as layer_to_semi_structured
from ..structures.masked import MaskReport, mask_linears
from ..surgery import SurgeryReport, find_linears, linear_shape, replace_linears

MODES = ("magnitude", "srste")


@dataclasses.dataclass
class NMConfig:
    """n, m: keep at most ``n`` of every ``m`` consecutive inputs of each row (0 <= n <= m,
    ``in_features % m == 0``). mode: "magnitude" (fixed mask of the current weights) or "srste"
    (SR-STE training). decay: SR-STE's refine decay λ (paper: 2e-4). include / exclude /
    min_features: which linear layers (see ``workbench.surgery``)."""
    n: int = 2
    m: int = 4
    mode: str = "magnitude"
    decay: float = 2e-4
    include: Any = None
    exclude: Any = None
    min_features: int = 0

    def __post_init__(self):
        for name in ("n", "m"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool):
                raise ValueError(f"nm: {name} must be an int, got {value!r}")
        if self.m < 1 or self.n < 0:
            raise ValueError(f"nm: need m >= 1 and n >= 0, got n={self.n}, m={self.m}")
        if self.n > self.m:
            raise ValueError(f"nm: n={self.n} > m={self.m}: at most m weights fit in a group "
                             f"of m")
        if self.mode not in MODES:
            raise ValueError(f"nm: mode must be one of {MODES}, got {self.mode!r}")
        if not isinstance(self.decay, (int, float)) or self.decay < 0:
            raise ValueError(f"nm: decay must be a number >= 0, got {self.decay!r}")


def apply(model: nn.Module, config: NMConfig) -> MaskReport:
    """Replace the selected layers by :class:`NMLinear`; every one needs in_features % m == 0
    (ValueError naming the first that does not)."""
    for name, module in find_linears(model, config.include, config.exclude):
        in_features = linear_shape(module)[1]
        if in_features % config.m and min(linear_shape(module)) >= config.min_features:
            raise ValueError(f"nm: layer {name!r} has in_features={in_features}, not divisible "
                             f"by m={config.m}; exclude it or pick another m")

    def make_layer(module: nn.Module) -> NMLinear:
        return NMLinear.from_dense(module, n=config.n, m=config.m,
                                   refine=config.mode == "srste", decay=config.decay)
    return mask_linears(model, include=config.include, exclude=config.exclude,
                        min_features=config.min_features, make_layer=make_layer)


def freeze(model: nn.Module) -> int:
    """End SR-STE training in ``model``: every refining NMLinear fixes its mask and zeroes the
    dropped weights. Returns how many layers were frozen."""
    layers = [m for m in model.modules() if isinstance(m, NMLinear) and m.refine]
    for layer in layers:
        layer.freeze_()
    return len(layers)


def to_semi_structured(model: nn.Module) -> SurgeryReport:
    """Inference on GPU: every NMLinear whose mask is 2:4-compliant becomes a
    :class:`SemiStructuredLinear` (CUDA, fp16 / bf16; errors name what is missing)."""
    freeze(model)
    return replace_linears(model, lambda name, layer: layer_to_semi_structured(layer),
                           types=(NMLinear,))
