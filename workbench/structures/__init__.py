"""Structured matrix families, each an nn.Module with from_dense, to_dense, num_params, flops."""
from .lowrank import LowRankLinear, rank_for_params
from .mask_makers import cubic_schedule, global_magnitude_masks, magnitude_mask, nm_mask
from .masked import MaskedLinear, MaskReport, Sparsifier, apply_masks, mask_linears, \
    masked_layers
from .monarch import MonarchLinear, monarch_multiply, monarch_weight
from .monarch_fit import MonarchFit, project as project_monarch
from .sparse_ift import SparseDopedLinear, SparseFactorizedLinear, SparseParallelLinear
from .topk_svd import topk_svd

__all__ = ["LowRankLinear", "rank_for_params", "MonarchLinear", "MonarchFit", "monarch_multiply",
           "monarch_weight", "project_monarch", "topk_svd", "MaskedLinear", "MaskReport", "Sparsifier",
           "apply_masks", "mask_linears", "masked_layers", "magnitude_mask",
           "global_magnitude_masks", "nm_mask", "cubic_schedule", "SparseParallelLinear",
           "SparseFactorizedLinear", "SparseDopedLinear"]
