"""Low-rank factorization: replace linear layers by ``U·V`` (truncated SVD when projecting).

``rank`` fixes the rank; ``match_monarch_nblocks`` instead picks, per layer, the largest rank
whose parameters do not exceed a Monarch layer's with that many blocks (for comparisons at equal
parameter count). A 2024 study found plain low-rank beating Monarch when compressing pretrained
transformers; the Monarch fine-tuning notebook tests it.
"""
from __future__ import annotations

import dataclasses
from typing import Any

from torch import nn

from ..structures import LowRankLinear, MonarchLinear, rank_for_params
from ..surgery import SurgeryReport, linear_bias, linear_shape, linear_weight, replace_linears


@dataclasses.dataclass
class LowRankConfig:
    """rank: the rank of every replaced layer, or None with match_monarch_nblocks set.
    init: "fresh" or "project" (truncated SVD of the weight). include / exclude / min_features
    as for Monarch."""
    rank: int | None = None
    match_monarch_nblocks: int | None = None
    init: str = "project"
    include: Any = None
    exclude: Any = None
    min_features: int = 0

    def __post_init__(self):
        if (self.rank is None) == (self.match_monarch_nblocks is None):
            raise ValueError("lowrank: give exactly one of rank and match_monarch_nblocks")
        if self.init not in ("fresh", "project"):
            raise ValueError(f"lowrank: init must be 'fresh' or 'project', got {self.init!r}")


def apply(model: nn.Module, config: LowRankConfig) -> SurgeryReport:
    def factory(name: str, module: nn.Module) -> nn.Module:
        out_features, in_features = linear_shape(module)
        rank = config.rank or rank_for_params(in_features, out_features, MonarchLinear(
            in_features, out_features, config.match_monarch_nblocks, bias=False,
            device="meta").num_params())
        bias = linear_bias(module)
        if config.init == "project":
            return LowRankLinear.from_dense(linear_weight(module).detach(), rank,
                                            bias=None if bias is None else bias.detach())
        return LowRankLinear(in_features, out_features, rank, bias=bias is not None)
    return replace_linears(model, factory, include=config.include, exclude=config.exclude,
                           min_features=config.min_features)
