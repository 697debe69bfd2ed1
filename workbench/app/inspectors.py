"""Inspector figures for a run's checkpoint: its structured layers and their figures.

``checkpoint_layers(path)`` loads the Monarch / low-rank layers of a checkpoint (cached per file
version); ``figure_builders(layer)`` names the figures for one layer. Monarch layers reuse
``workbench.viz.monarch``; the dense-weight heatmap and low-rank spectra are drawn here.
"""
from __future__ import annotations

from pathlib import Path
from typing import Callable

import numpy as np
import panel as pn
import plotly.graph_objects as go
import torch

from workbench.analysis.monarch_fit import sub_block_spectra
from workbench.checkpoint import load_structured_layers
from workbench.structures import LowRankLinear, MonarchLinear
from workbench.viz.monarch import (TEMPLATE, downsample, factor_heatmaps, permutation_figure,
                                   sub_block_spectra_figure)


# ---- layers ------------------------------------------------------------------------------------
@pn.cache(max_items=8)
def _structured_layers(path: str, mtime_ns: int) -> dict:
    return load_structured_layers(path)


def checkpoint_layers(path: Path) -> dict:
    """``{module name: MonarchLinear | LowRankLinear}`` from a checkpoint (cached per file
    version); FileNotFoundError / ValueError for a missing / unreadable file."""
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint not found: {path}")
    return _structured_layers(str(path), path.stat().st_mtime_ns)


def describe_layer(layer) -> str:
    """'Monarch 64×32, nblocks=4' / 'low-rank 64×32, rank 8'."""
    shape = f"{layer.out_features}×{layer.in_features}"
    if isinstance(layer, MonarchLinear):
        return f"Monarch {shape}, nblocks={layer.nblocks}"
    return f"low-rank {shape}, rank {layer.rank}"


# ---- figures -----------------------------------------------------------------------------------
def dense_weight_figure(layer) -> go.Figure:
    """Heatmap of ``layer.to_dense()`` (out, in), diverging colours centred on 0."""
    w = layer.to_dense().detach().float().cpu()
    z, (fr, fc) = downsample(w)
    zmax = max(float(w.abs().max()), 1e-12)
    fig = go.Figure(go.Heatmap(
        z=z, x=np.arange(z.shape[1]) * fc + (fc - 1) / 2,
        y=np.arange(z.shape[0]) * fr + (fr - 1) / 2,
        colorscale="RdBu_r", zmin=-zmax, zmax=zmax, zmid=0,
        hovertemplate="out %{y}, in %{x}: %{z:.4g}<extra></extra>"))
    fig.update_yaxes(autorange="reversed", title="output")
    fig.update_xaxes(title="input")
    note = f" (cells: {fr}×{fc} means)" if fr * fc > 1 else ""
    fig.update_layout(template=TEMPLATE, title=f"Dense weight {w.shape[0]}×{w.shape[1]}{note}")
    return fig


def lowrank_spectra_figure(layer: LowRankLinear) -> go.Figure:
    """Singular values of the weight U·V and of each factor, log y."""
    fig = go.Figure()
    for name, matrix in (("weight U·V", layer.to_dense()), ("U", layer.u), ("V", layer.v)):
        sigma = torch.linalg.svdvals(matrix.detach().float().cpu()).numpy()
        fig.add_trace(go.Scatter(x=np.arange(1, len(sigma) + 1),
                                 y=np.where(sigma > 0, sigma, None), mode="lines+markers",
                                 name=name))
    fig.add_vline(x=layer.rank + 0.5, line_dash="dash", line_color="gray",
                  annotation_text=f"rank {layer.rank}")
    fig.update_yaxes(type="log", title="singular value σ")
    fig.update_xaxes(title="component (1 = largest)")
    fig.update_layout(template=TEMPLATE, title=f"Singular values (rank {layer.rank})")
    return fig


def _fit_half_width(fig: go.Figure) -> go.Figure:
    """Two heatmaps with colour bars (``factor_heatmaps``) in half a page: thinner bars and
    more room between the panels, so the first bar's labels clear the second panel."""
    bar = dict(thickness=10, tickfont=dict(size=10))
    fig.update_layout(xaxis_domain=[0, 0.38], xaxis2_domain=[0.58, 0.95],
                      coloraxis_colorbar=dict(x=0.4, **bar),
                      coloraxis2_colorbar=dict(x=0.97, **bar))
    for note, x in zip(fig.layout.annotations, (0.19, 0.765)):  # the subplot titles
        note.x = x
    return fig


def figure_builders(layer) -> dict[str, Callable[[], go.Figure]]:
    """The inspector figures for one structured layer, as title -> builder (built lazily, so
    one failing figure does not take the others down)."""
    if isinstance(layer, MonarchLinear):
        return {
            "Factors": lambda: _fit_half_width(factor_heatmaps(layer)),
            "Dense weight": lambda: dense_weight_figure(layer),
            "Sub-block spectra": lambda: sub_block_spectra_figure(
                sub_block_spectra(layer.to_dense(), layer.nblocks)),
            "Permutation": lambda: permutation_figure(layer)}
    if isinstance(layer, LowRankLinear):
        return {"Singular values": lambda: lowrank_spectra_figure(layer),
                "Dense weight": lambda: dense_weight_figure(layer)}
    raise TypeError(f"no inspector for {type(layer).__name__}")


def layer_figures(layer) -> dict[str, go.Figure]:
    """Every inspector figure for ``layer`` (errors propagate)."""
    return {title: build() for title, build in figure_builders(layer).items()}


# ---- whole-model inspectors ------------------------------------------------------------------
def model_figure_builders(artifact: Callable[[str], Path], artifacts: dict[str, str]
                          ) -> dict[str, Callable[[], go.Figure]]:
    """Title -> builder of the whole-model figures a run's artifacts allow: weight spectra and
    masks from its checkpoint (or saved masks), attention maps (and their change) from saved
    ``AttentionMaps``. ``artifact`` resolves a record's relative path (refusing escapes)."""
    from workbench.analysis.attention import AttentionMaps
    from workbench.viz.attention import attention_figures
    from workbench.viz.masks import mask_figures
    from workbench.viz.spectra import spectra_summary_figure

    builders: dict[str, Callable[[], go.Figure]] = {}
    if artifacts.get("checkpoint"):
        path = artifact(artifacts["checkpoint"])

        def table():
            return _spectra_table(str(path), path.stat().st_mtime_ns)
        builders["Weight spectra: α per layer"] = lambda: spectra_summary_figure(table(), "alpha")
        builders["Weight spectra: stable rank per layer"] = lambda: spectra_summary_figure(
            table(), "stable_rank")
    mask_source = artifacts.get("masks") or artifacts.get("checkpoint")
    if mask_source:
        builders.update(mask_figures(str(artifact(mask_source))))
    if artifacts.get("mask_evolution"):
        import pandas as pd

        from workbench.viz.masks import mask_evolution_figure
        evolution = artifact(artifacts["mask_evolution"])
        builders["Mask evolution across checkpoints"] = lambda: mask_evolution_figure(
            pd.read_csv(evolution))
    attention = sorted(k for k in artifacts if k.startswith("attention"))
    if attention:
        maps = [AttentionMaps.load(artifact(artifacts[k])) for k in attention[:2]]
        labels = tuple(k.removeprefix("attention_") for k in attention[:2])
        builders.update(attention_figures(maps[0], maps[1] if len(maps) > 1 else None,
                                          labels=labels if len(labels) == 2 else
                                          ("dense", "compressed")))
    return builders


@pn.cache(max_items=8)
def _spectra_table(path: str, mtime_ns: int):
    from workbench.analysis.spectra_io import spectra_from_checkpoint
    return spectra_from_checkpoint(path, progress=False)
