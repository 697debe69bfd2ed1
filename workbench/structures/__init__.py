"""Structured matrix families, each an nn.Module with from_dense, to_dense, num_params, flops."""
from .lowrank import LowRankLinear, rank_for_params
from .monarch import MonarchLinear, monarch_multiply
from .monarch_fit import MonarchFit, project as project_monarch
from .topk_svd import topk_svd

__all__ = ["LowRankLinear", "rank_for_params", "MonarchLinear", "MonarchFit", "monarch_multiply", "project_monarch", "topk_svd"]
