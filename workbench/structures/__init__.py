"""Structured matrix families, each an nn.Module with from_dense, to_dense, num_params, flops."""
from .monarch import MonarchLinear, monarch_multiply
from .monarch_fit import MonarchFit, project as project_monarch
from .topk_svd import topk_svd

__all__ = ["MonarchLinear", "MonarchFit", "monarch_multiply", "project_monarch", "topk_svd"]
