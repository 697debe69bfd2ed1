"""Figures of sparsity masks: plain ``plotly.graph_objects.Figure`` objects (template
"plotly_white"), the same in JupyterLab and Panel. Numbers come from
``workbench.analysis.masks``; a mask is a bool tensor (out, in), True = kept.

Big masks stay responsive: heatmaps show the kept fraction per k×k cell (integer block sums,
never one point per weight), at most ``max_size`` cells a side, so an 8192² mask becomes 512²
cells in well under a second; titles name k. :func:`mask_figures` gives the dashboard's run
detail every figure for a model, state dict, ``{name: mask}`` or checkpoint path.
"""
from __future__ import annotations

from collections.abc import Callable
from math import comb

import numpy as np
import pandas as pd
import plotly.graph_objects as go
import torch
from plotly.subplots import make_subplots

from ..analysis.masks import (_check_mask, block_density, cubic_schedule, mask_stats,
                              masks_from_model, nm_compliance)
from .monarch import TEMPLATE, _check_frame

MAX_SIZE = 512
KEPT = [[0, "#ffffff"], [1, "#08306b"]]       # white = pruned, dark blue = kept
VIOLATION = [[0, "#ffffff"], [1, "#d62728"]]  # white = compliant, red = too many kept
BAR = dict(x=0.57, thickness=12)               # colour bar between the two panels


def _cells(shape: tuple[int, int], max_size: int) -> int:
    """Cell side k so that a (R, C) grid becomes at most max_size cells a side."""
    if not isinstance(max_size, int) or max_size < 1:
        raise ValueError(f"max_size must be a positive int, got {max_size!r}")
    return max(1, -(-max(shape) // max_size))


def _density_trace(density: torch.Tensor, k: tuple[int, int], colorscale, label: str,
                   **kwargs) -> go.Heatmap:
    """Heatmap of a (r, c) cell grid, cells at the centres of the original index ranges."""
    z = density.numpy().astype(np.float32)
    y = np.arange(z.shape[0]) * k[0] + (k[0] - 1) / 2
    x = np.arange(z.shape[1]) * k[1] + (k[1] - 1) / 2
    return go.Heatmap(z=z, x=x, y=y, zmin=0, zmax=1, colorscale=colorscale,
                      hovertemplate=f"row ≈ %{{y}}, col ≈ %{{x}}: {label} %{{z:.3f}}"
                                    "<extra></extra>", **kwargs)


def _matrix_axes(fig: go.Figure, row=None, col=None, x_title="input") -> None:
    fig.update_yaxes(autorange="reversed", title="output", row=row, col=col)
    fig.update_xaxes(title=x_title, row=row, col=col)


def sparsity_bars(stats_df: pd.DataFrame) -> go.Figure:
    """Horizontal bars: sparsity (fraction pruned) per layer from ``mask_stats``, model order
    top to bottom; hover shows shape and nonzeros; the title gives the overall sparsity."""
    df = _check_frame(stats_df, ("layer", "sparsity", "nonzeros", "numel"), "sparsity_bars")
    overall = 1 - df["nonzeros"].sum() / df["numel"].sum()
    shape = df["shape"].map(lambda s: "×".join(map(str, s)) if isinstance(s, tuple) else s) \
        if "shape" in df else df["numel"]
    fig = go.Figure(go.Bar(
        x=df["sparsity"], y=df["layer"], orientation="h", marker_color="#4c78a8",
        customdata=np.stack([shape.astype(str), df["nonzeros"]], -1),
        hovertemplate="%{y}<br>%{customdata[0]}, %{customdata[1]} kept<br>sparsity %{x:.2%}"
                      "<extra></extra>"))
    fig.add_vline(x=overall, line_dash="dash", line_color="gray",
                  annotation_text=f"overall {overall:.1%}")
    fig.update_xaxes(title="sparsity (fraction pruned)", range=[0, 1], tickformat=".0%")
    fig.update_yaxes(autorange="reversed", automargin=True)
    fig.update_layout(template=TEMPLATE, height=max(300, 18 * len(df) + 140),
                      title=f"Sparsity per layer ({len(df)} layers, overall {overall:.1%})")
    return fig


def mask_heatmap(mask: torch.Tensor, max_size: int = MAX_SIZE, name: str = "") -> go.Figure:
    """Kept fraction per k×k cell of a bool (out, in) mask, k = ceil(max(out, in)/max_size):
    at most max_size² cells whatever the mask size (k = 1: one cell per weight)."""
    mask = _check_mask(mask, "mask_heatmap")
    k = _cells(mask.shape, max_size)
    fig = go.Figure(_density_trace(block_density(mask, k), (k, k), KEPT, "density",
                                   colorbar=dict(title="kept")))
    _matrix_axes(fig)
    sparsity = 1 - int(mask.count_nonzero()) / mask.numel()
    fig.update_layout(template=TEMPLATE, title=f"Mask {name + ' ' if name else ''}"
                      f"{mask.shape[0]}×{mask.shape[1]}, sparsity {sparsity:.1%}: "
                      f"density per {k}×{k} cell")
    return fig


def nm_compliance_figure(mask: torch.Tensor, n: int, m: int, max_size: int = MAX_SIZE,
                         name: str = "") -> go.Figure:
    """Left: groups of ``m`` inputs holding more than ``n`` kept weights, in red, as the
    violating fraction per k×k cell of the (out, in/m) group grid. Right: how many groups hold
    0..m kept weights, beside the count expected if kept weights fell independently at the
    mask's density (binomial)."""
    counts, fraction = nm_compliance(mask, n, m)
    k = _cells(counts.shape, max_size)
    fig = make_subplots(1, 2, column_widths=[0.65, 0.35], horizontal_spacing=0.14, subplot_titles=(
        f"groups with > {n} kept (share per {k} rows × {k} groups)", "kept weights per group"))
    fig.add_trace(_density_trace(block_density(counts > n, k), (k, k * m), VIOLATION,
                                 "violating share", colorbar=dict(title="> n", **BAR)), 1, 1)
    hist = torch.bincount(counts.flatten(), minlength=m + 1).numpy()
    density, groups = counts.sum().item() / (counts.numel() * m), counts.numel()
    expected = [groups * comb(m, j) * density ** j * (1 - density) ** (m - j)
                for j in range(m + 1)]
    fig.add_trace(go.Bar(x=np.arange(m + 1), y=hist, name="measured", showlegend=False,
                         marker_color=["#7f7f7f" if j <= n else "#d62728" for j in range(m + 1)],
                         hovertemplate="%{x} kept: %{y} groups<extra></extra>"), 1, 2)
    fig.add_trace(go.Scatter(x=np.arange(m + 1), y=expected, mode="markers", name="independent",
                             marker=dict(symbol="x", color="black"),
                             hovertemplate="%{x} kept: %{y:.0f} expected<extra></extra>"), 1, 2)
    _matrix_axes(fig, 1, 1, x_title="input (group start)")
    fig.update_xaxes(title="kept in a group", dtick=1, row=1, col=2)
    fig.update_yaxes(title="groups", row=1, col=2)
    fig.update_layout(template=TEMPLATE, legend=dict(x=1, y=1, xanchor="right"),
                      title=f"{n}:{m} compliance{' of ' + name if name else ''}: {fraction:.1%} "
                            f"of {groups:,} groups hold ≤ {n} kept")
    return fig


def block_structure_figure(mask: torch.Tensor, block: int | tuple[int, int] = (32, 32),
                           max_size: int = MAX_SIZE, name: str = "") -> go.Figure:
    """Left: kept fraction per bh×bw block (cells merge f×f blocks when there are more than
    ``max_size`` a side). Right: histogram of block densities; the title gives the share of
    empty blocks (which a block-sparse kernel skips) and of full ones."""
    mask = _check_mask(mask, "block_structure_figure")
    bh, bw = (block, block) if isinstance(block, int) else tuple(block)
    per_block = block_density(mask, (bh, bw))
    f = _cells(per_block.shape, max_size)
    cells = per_block if f == 1 else block_density(mask, (bh * f, bw * f))
    empty, full = float((per_block == 0).double().mean()), float((per_block == 1).double().mean())
    fig = make_subplots(1, 2, column_widths=[0.65, 0.35], horizontal_spacing=0.14, subplot_titles=(
        f"density per {bh}×{bw} block" + (f" ({f}×{f} blocks per cell)" if f > 1 else ""),
        "blocks by density"))
    fig.add_trace(_density_trace(cells, (bh * f, bw * f), KEPT, "density",
                                 colorbar=dict(title="kept", **BAR)), 1, 1)
    hist, edges = np.histogram(per_block.numpy(), bins=20, range=(0, 1))
    fig.add_trace(go.Bar(x=(edges[:-1] + edges[1:]) / 2, y=hist, width=0.05, showlegend=False,
                         marker_color="#4c78a8",
                         hovertemplate="density %{x:.3f}: %{y} blocks<extra></extra>"), 1, 2)
    _matrix_axes(fig, 1, 1)
    fig.update_xaxes(title="block density", range=[0, 1], row=1, col=2)
    fig.update_yaxes(title="blocks", row=1, col=2)
    fig.update_layout(template=TEMPLATE, title=f"Block structure{' of ' + name if name else ''}"
                      f" ({bh}×{bw}): {empty:.1%} of blocks empty, {full:.1%} full")
    return fig


def mask_evolution_figure(evolution_df: pd.DataFrame, max_layers: int = 48) -> go.Figure:
    """Three panels over steps, one line per layer (``mask_evolution`` rows) plus the mean over
    layers in black: sparsity, IoU with the previous checkpoint, IoU with the final one.
    Clicking a legend entry toggles a layer in all panels."""
    df = _check_frame(evolution_df, ("layer", "step", "sparsity", "iou_prev", "iou_final"),
                      "mask_evolution_figure")
    columns = {"sparsity": "sparsity", "iou_prev": "IoU with previous", "iou_final":
               "IoU with final"}
    fig = make_subplots(1, 3, subplot_titles=list(columns.values()), horizontal_spacing=0.07)
    layers = list(dict.fromkeys(df["layer"]))[:max_layers]
    groups = [(layer, df[df["layer"] == layer], dict(width=1), 0.6) for layer in layers]
    mean = df.groupby("step", sort=True)[list(columns)].mean().reset_index()
    groups.append(("mean of layers", mean, dict(width=3, color="black"), 1.0))
    traces, cols = [], []
    for layer, rows, line, opacity in groups:
        for c, column in enumerate(columns, start=1):
            traces.append(go.Scatter(
                x=rows["step"], y=rows[column], mode="lines+markers", name=str(layer),
                legendgroup=str(layer), showlegend=c == 1, line=line, opacity=opacity,
                marker=dict(size=4), hovertemplate=f"{layer}<br>step %{{x}}: "
                                                   f"{columns[column]} %{{y:.3f}}<extra></extra>"))
            cols.append(c)
    fig.add_traces(traces, rows=[1] * len(cols), cols=cols)  # one call: far faster than many
    fig.update_xaxes(title="step")
    fig.update_yaxes(range=[0, 1.02])
    more = f" (first {max_layers} of {df['layer'].nunique()} layers)" \
        if df["layer"].nunique() > max_layers else ""
    fig.update_layout(template=TEMPLATE, height=450,
                      title=f"Mask evolution over {df['step'].nunique()} checkpoints{more}")
    return fig


def schedule_figure(s_i: float, s_f: float, t0: int, n: int, dt: int, total_steps: int,
                    measured: pd.DataFrame | None = None) -> go.Figure:
    """``cubic_schedule`` over 0..total_steps, markers at the pruning steps t0 + kΔt, and,
    optionally, ``measured`` sparsity (a DataFrame with step and sparsity) as points."""
    t = np.unique(np.linspace(0, total_steps, min(total_steps + 1, 1001)).round())
    fig = go.Figure(go.Scatter(x=t, y=cubic_schedule(t, s_i, s_f, t0, n, dt), mode="lines",
                               name="s_t (cubic)", line=dict(color="#4c78a8")))
    prune_at = np.array([t0 + k * dt for k in range(n + 1) if t0 + k * dt <= total_steps])
    fig.add_trace(go.Scatter(x=prune_at, y=cubic_schedule(prune_at, s_i, s_f, t0, n, dt),
                             mode="markers", name="pruning steps", marker=dict(color="#4c78a8")))
    if measured is not None:
        m = _check_frame(measured, ("step", "sparsity"), "schedule_figure")
        fig.add_trace(go.Scatter(x=m["step"], y=m["sparsity"], mode="markers", name="measured",
                                 marker=dict(symbol="x", size=9, color="#d62728")))
    for x in (t0, t0 + n * dt):
        fig.add_vline(x=x, line_dash="dot", line_color="gray")
    fig.update_xaxes(title="step")
    fig.update_yaxes(title="sparsity", tickformat=".0%", range=[0, 1])
    fig.update_layout(template=TEMPLATE, title=f"Sparsity schedule (Zhu & Gupta): {s_i:.0%} → "
                      f"{s_f:.0%} over steps {t0}–{t0 + n * dt}, every {dt}")
    return fig


def mask_figures(source, n: int = 2, m: int = 4, block: int | tuple[int, int] = 32,
                 include=None) -> dict[str, Callable[[], go.Figure]]:
    """Title -> figure builder (lazy, so one failing figure leaves the others) for a model, a
    state dict, ``{name: bool mask}`` or a checkpoint path: sparsity bars, then heatmap, N:M
    compliance (if its width divides by m) and block view of the largest mask with zeros (of
    the largest mask if none has any)."""
    masks = masks_from_model(source, include)  # bool tensors of a state dict are masks
    name = max(masks, key=lambda k: (not bool(masks[k].all()), masks[k].numel()))
    builders = {"Sparsity per layer": lambda: sparsity_bars(mask_stats(masks)),
                f"Mask: {name}": lambda: mask_heatmap(masks[name], name=name)}
    if masks[name].shape[1] % m == 0:
        builders[f"{n}:{m} compliance: {name}"] = lambda: nm_compliance_figure(
            masks[name], n, m, name=name)
    builders[f"Block structure: {name}"] = lambda: block_structure_figure(masks[name], block,
                                                                           name=name)
    return builders
