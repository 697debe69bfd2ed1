"""Figures only (Plotly), built from ``workbench.analysis`` results; the same figure object
works in JupyterLab (``fig.show()``) and Panel (``pn.pane.Plotly(fig)``)."""
from .monarch import (block_residual_heatmap, downsample, export_figure, factor_heatmaps,
                      model_projection_figure, permutation_figure, projection_error_figure,
                      sub_block_spectra_figure, weight_heatmaps)

__all__ = ["block_residual_heatmap", "downsample", "export_figure", "factor_heatmaps",
           "model_projection_figure", "permutation_figure", "projection_error_figure",
           "sub_block_spectra_figure", "weight_heatmaps"]
