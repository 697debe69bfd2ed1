"""Figures of attention maps (from ``workbench.analysis.attention``): plain Plotly figures, the
same in JupyterLab and Panel; export with ``export_figure`` (HTML, or PNG/SVG with kaleido).

Long inputs stay responsive: the layers × heads grid block-averages each map to at most
``max_tokens`` cells a side (512 tokens -> 64² cells of 8×8 means) and the token view shows a
window of at most ``max_tokens`` tokens; titles say when either happened.
"""
from __future__ import annotations

from typing import Callable

import numpy as np
import pandas as pd
import plotly.graph_objects as go
import torch
from plotly.subplots import make_subplots

from ..analysis.attention import AttentionMaps
from .monarch import TEMPLATE, _check_frame, _downsample_note, downsample, export_figure


def _check_maps(maps, where: str) -> AttentionMaps:
    if not isinstance(maps, AttentionMaps):
        raise TypeError(f"{where}: expected AttentionMaps, got {type(maps).__name__}")
    return maps


def _colours(maps: AttentionMaps, values: np.ndarray) -> dict:
    """Diverging and centred on 0 for a difference; else 0 .. 99th percentile (attention to
    [CLS] / [SEP] would otherwise wash every other weight out)."""
    if maps.kind == "difference":
        zmax = max(float(np.abs(values).max()), 1e-12)
        return dict(colorscale="RdBu_r", cmin=-zmax, cmax=zmax, cmid=0)
    return dict(colorscale="Viridis", cmin=0, cmax=max(float(np.quantile(values, 0.99)), 1e-12))


def attention_grid(maps: AttentionMaps, max_tokens: int = 64) -> go.Figure:
    """Small multiples: one heatmap per (layer, head), rows = layers, columns = heads, one
    shared colour scale. Trace ``k`` is row ``k // len(heads)``, column ``k % len(heads)``; its
    ``meta`` is ``{"layer": l, "head": h}`` for drill-down from Plotly click data."""
    maps = _check_maps(maps, "attention_grid")
    n_l, n_h = len(maps.layers), len(maps.heads)
    fig = make_subplots(n_l, n_h, horizontal_spacing=0.1 / n_h, vertical_spacing=0.1 / n_l,
                        shared_xaxes=True, shared_yaxes=True)
    cells, traces, rows, cols = [], [], [], []
    for i, layer in enumerate(maps.layers):
        for j, head in enumerate(maps.heads):
            z, (f, _) = downsample(maps.attn[i, j], max_tokens)
            centres = np.arange(z.shape[0]) * f + (f - 1) / 2
            cells.append(z)
            traces.append(go.Heatmap(
                z=z.astype(np.float32), x=centres, y=centres, coloraxis="coloraxis",
                meta={"layer": layer, "head": head}, name=f"layer {layer}, head {head}",
                hovertemplate=f"layer {layer}, head {head}<br>query %{{y}} → key %{{x}}: "
                              f"%{{z:.3g}}<extra></extra>"))
            rows.append(i + 1)
            cols.append(j + 1)
    fig.add_traces(traces, rows=rows, cols=cols)  # one call: far faster than one per trace
    fig.update_xaxes(showticklabels=False)
    fig.update_yaxes(showticklabels=False, autorange="reversed")
    for j, head in enumerate(maps.heads):
        fig.update_xaxes(title_text=f"h{head}", title_standoff=2, row=n_l, col=j + 1)
    for i, layer in enumerate(maps.layers):
        fig.update_yaxes(title_text=f"L{layer}", title_standoff=2, row=i + 1, col=1)
    what = "attention difference" if maps.kind == "difference" else "attention"
    L = maps.attn.shape[-1]
    fig.update_layout(template=TEMPLATE, coloraxis=_colours(maps, np.stack(cells)),
                      height=max(300, 90 * n_l + 120), margin=dict(l=50, r=20, t=60, b=40),
                      title=f"{what.capitalize()}, layers × heads ({L} tokens; rows: query, "
                            f"columns: key)" + _downsample_note((f, f)))
    return fig


def attention_heatmap(maps: AttentionMaps, layer: int | None = None, head: int | None = None,
                      max_tokens: int = 96, start: int = 0) -> go.Figure:
    """Token view of one head: query rows, key columns, hover naming both tokens and the
    weight. Inputs longer than ``max_tokens`` show the window ``start .. start+max_tokens`` on
    both axes (the title says so; rows then need not sum to 1 within the window)."""
    maps = _check_maps(maps, "attention_heatmap")
    layer = maps.layers[0] if layer is None else layer
    head = maps.heads[0] if head is None else head
    full = maps.map(layer, head)
    L = full.shape[-1]
    if not 0 <= start < L:
        raise ValueError(f"attention_heatmap: start must be in 0..{L - 1}, got {start}")
    stop = min(start + max_tokens, L)
    z = full[start:stop, start:stop].numpy()
    pos = np.arange(start, stop)
    labels = [f"{i}: {maps.tokens[i]}" for i in pos]
    custom = np.stack(np.broadcast_arrays(np.array(labels)[:, None], np.array(labels)[None, :]),
                      -1)
    fig = go.Figure(go.Heatmap(
        z=z, x=pos, y=pos, customdata=custom, coloraxis="coloraxis",
        hovertemplate="query %{customdata[0]}<br>key %{customdata[1]}<br>weight %{z:.4f}"
                      "<extra></extra>"))
    step = max(1, len(pos) // 48)  # keep tick labels legible
    ticks = dict(tickvals=pos[::step], ticktext=[maps.tokens[i] for i in pos[::step]])
    fig.update_xaxes(title="key token", tickangle=-60, **ticks)
    fig.update_yaxes(title="query token", autorange="reversed", **ticks)
    note = f" — window: tokens {start}–{stop - 1} of {L}" if stop - start < L else ""
    fig.update_layout(template=TEMPLATE, coloraxis=_colours(maps, z),
                      height=min(1100, max(450, 16 * len(pos) + 220)),
                      title=f"Layer {layer} ({maps.layer_names[maps.layers.index(layer)]}), "
                            f"head {head}{note}")
    return fig


SUMMARY_COLUMNS = {"entropy": "entropy (nats)", "mean_distance": "mean distance (tokens)",
                   "first_token": "attention to token 0"}


def head_summary_figure(df: pd.DataFrame) -> go.Figure:
    """Three layer × head heatmaps from ``AttentionMaps.head_summary()``: entropy, mean
    attention distance and attention to the first token, each with its own colour bar."""
    df = _check_frame(df, ("layer", "head", *SUMMARY_COLUMNS), "head_summary_figure")
    fig = make_subplots(1, 3, horizontal_spacing=0.1, subplot_titles=list(SUMMARY_COLUMNS.values()))
    for c, column in enumerate(SUMMARY_COLUMNS):
        table = df.pivot_table(index="layer", columns="head", values=column, aggfunc="first")
        axis = "coloraxis" if c == 0 else f"coloraxis{c + 1}"
        fig.add_trace(go.Heatmap(
            z=table.to_numpy(float), x=[str(h) for h in table.columns],
            y=[str(l) for l in table.index], coloraxis=axis,
            texttemplate="%{z:.2f}" if table.size <= 150 else None,
            hovertemplate=f"layer %{{y}}, head %{{x}}<br>{SUMMARY_COLUMNS[column]}: %{{z:.4g}}"
                          "<extra></extra>"), 1, c + 1)
        fig.update_layout({axis: dict(colorscale="Viridis", colorbar=dict(
            x=0.27 + 0.365 * c, thickness=10, len=0.9))})
    fig.update_xaxes(title="head")
    fig.update_yaxes(title="layer", autorange="reversed", type="category")
    fig.update_layout(template=TEMPLATE, title="Per-head attention summaries",
                      height=max(360, 36 * df["layer"].nunique() + 200))
    return fig


def attention_difference_figure(maps_a: AttentionMaps, maps_b: AttentionMaps,
                                labels: tuple[str, str] = ("dense", "compressed")) -> go.Figure:
    """Layer × head heatmap of the mean total-variation distance between the two models'
    attention rows, ½ Σ_j |a_ij − b_ij| averaged over queries i (0 = same, 1 = disjoint);
    hover adds the largest |a − b|. ``attention_grid(a.difference(b))`` draws the maps."""
    a, b = _check_maps(maps_a, "attention_difference_figure"), maps_b
    tv = a.tv_distance(_check_maps(b, "attention_difference_figure")).numpy()  # (layers, heads)
    peak = a.difference(b).attn.abs().amax((-1, -2)).numpy()
    fig = go.Figure(go.Heatmap(
        z=tv, x=[str(h) for h in a.heads], y=[str(l) for l in a.layers], customdata=peak,
        colorscale="Reds", zmin=0, texttemplate="%{z:.3f}" if tv.size <= 150 else None,
        colorbar=dict(title="mean TV"),
        hovertemplate="layer %{y}, head %{x}<br>mean TV distance %{z:.4g}<br>max |Δ| "
                      "%{customdata:.4g}<extra></extra>"))
    changed = [l for l, row in zip(a.layers, tv) if row.max() > 1e-6]
    first = f"first changed layer {changed[0]}" if changed else "no layer changed"
    fig.update_xaxes(title="head")
    fig.update_yaxes(title="layer", autorange="reversed", type="category")
    fig.update_layout(template=TEMPLATE, height=max(320, 30 * len(a.layers) + 200),
                      title=f"Attention change, {labels[0]} vs {labels[1]}: mean TV "
                            f"{tv.mean():.4f} ({first})")
    return fig


def patch_attention_figure(maps: AttentionMaps, layer: int, head: int,
                           grid: tuple[int, int], query_patch: int | None = 0) -> go.Figure:
    """One query's attention over a ViT's patch grid ``(h, w)``, patches in row-major order
    after ``L − h·w`` prefix tokens ([CLS], registers). ``query_patch``: a patch index in
    0..h·w−1 (marked with ×), or None for the first token ([CLS]). Attention to the prefix
    tokens is not drawn; the title gives its share."""
    maps = _check_maps(maps, "patch_attention_figure")
    h, w = grid
    full = maps.map(layer, head)
    prefix = full.shape[-1] - h * w
    if prefix < 0:
        raise ValueError(f"patch_attention_figure: grid {h}×{w} needs at least {h * w} tokens, "
                         f"the maps have {full.shape[-1]}")
    if query_patch is not None and not 0 <= query_patch < h * w:
        raise ValueError(f"patch_attention_figure: query_patch must be in 0..{h * w - 1}")
    row = full[0 if query_patch is None else prefix + query_patch]
    z = row[prefix:].reshape(h, w).numpy()
    fig = go.Figure(go.Heatmap(z=z, colorscale="Viridis", zmin=0, colorbar=dict(title="weight"),
                               hovertemplate="patch row %{y}, col %{x}: %{z:.4f}<extra></extra>"))
    who = "[CLS] (token 0)" if query_patch is None else f"patch {query_patch}"
    if query_patch is not None:
        fig.add_trace(go.Scatter(x=[query_patch % w], y=[query_patch // w], mode="markers",
                                 marker=dict(symbol="x", size=14, color="red"), name="query",
                                 hoverinfo="skip"))
    share = f"; {float(row[:prefix].sum()):.1%} on the {prefix} prefix token(s)" if prefix else ""
    fig.update_yaxes(autorange="reversed", scaleanchor="x", title="patch row")
    fig.update_xaxes(title="patch column", constrain="domain")
    fig.update_layout(template=TEMPLATE, showlegend=False,
                      title=f"Layer {layer}, head {head}: attention of {who}{share}")
    return fig


def attention_figures(maps: AttentionMaps, other: AttentionMaps | None = None,
                      labels: tuple[str, str] = ("dense", "compressed"),
                      ) -> dict[str, Callable[[], go.Figure]]:
    """Title -> builder of every attention figure for ``maps`` (and the comparison with
    ``other`` when given), built lazily: what a dashboard calls with a run's saved maps
    (``AttentionMaps.load(path)``)."""
    builders = {"Attention grid": lambda: attention_grid(maps),
                "Token view": lambda: attention_heatmap(maps),
                "Head summaries": lambda: head_summary_figure(maps.head_summary())}
    if other is not None:
        builders["Attention change"] = lambda: attention_difference_figure(maps, other, labels)
        builders["Difference grid"] = lambda: attention_grid(maps.difference(other))
    return builders


__all__ = ["attention_difference_figure", "attention_figures", "attention_grid",
           "attention_heatmap", "export_figure", "head_summary_figure", "patch_attention_figure"]
