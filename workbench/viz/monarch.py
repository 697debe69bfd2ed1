"""Figures of Monarch fits: plain ``plotly.graph_objects.Figure`` objects (template
"plotly_white"), so the same figure shows in JupyterLab (``fig.show()``) and Panel
(``pn.pane.Plotly(fig)``). Numbers come from ``workbench.analysis.monarch_fit`` and
``MonarchLinear.from_dense(...).fit``; index conventions as in ``workbench.structures.monarch``.

Large matrices are block-averaged to at most ``max_size`` cells a side (a 4096² weight becomes
256² cells of 16×16 means), and the title says so; hover shows original row/column indices.
"""
from __future__ import annotations

import importlib.util
import math
from pathlib import Path

import numpy as np
import pandas as pd
import plotly.graph_objects as go
import torch
import torch.nn.functional as F
from plotly.subplots import make_subplots

from ..structures.monarch import MonarchLinear
from ..structures.monarch_fit import MonarchFit

TEMPLATE = "plotly_white"
MAX_SIZE = 256
EXPORT_SUFFIXES = (".html", ".png", ".svg", ".pdf")


# ---- helpers ---------------------------------------------------------------------------------
def _check_layer(layer, where: str) -> MonarchLinear:
    if not isinstance(layer, MonarchLinear):
        raise TypeError(f"{where}: expected a MonarchLinear, got {type(layer).__name__}")
    return layer


def _as_matrix(weight, where: str) -> torch.Tensor:
    if not isinstance(weight, torch.Tensor) or weight.ndim != 2 or 0 in weight.shape:
        shape = tuple(weight.shape) if hasattr(weight, "shape") else type(weight).__name__
        raise ValueError(f"{where}: weight must be a non-empty 2-D tensor (out, in), got {shape}")
    return weight.detach().to("cpu", torch.float32)


def downsample(matrix: torch.Tensor, max_size: int = MAX_SIZE):
    """(R, C) -> (ceil(R/fr), ceil(C/fc)) block means over fr×fc windows, with
    fr = ceil(R/max_size), fc = ceil(C/max_size); edge windows average their real entries only.
    Returns (numpy array, (fr, fc))."""
    if not isinstance(max_size, int) or max_size < 1:
        raise ValueError(f"downsample: max_size must be a positive int, got {max_size!r}")
    z = matrix.detach().to("cpu", torch.float32)
    rows, cols = z.shape
    fr, fc = math.ceil(rows / max_size), math.ceil(cols / max_size)
    if fr == fc == 1:
        return z.numpy(), (1, 1)
    r, c = math.ceil(rows / fr), math.ceil(cols / fc)
    if (r * fr, c * fc) != (rows, cols):
        z = F.pad(z, (0, c * fc - cols, 0, r * fr - rows))
    sums = z.view(r, fr, c, fc).sum((1, 3), dtype=torch.float64)
    row_n = (rows - torch.arange(r) * fr).clamp(max=fr)  # real (unpadded) entries per window
    col_n = (cols - torch.arange(c) * fc).clamp(max=fc)
    return (sums / torch.outer(row_n, col_n)).numpy(), (fr, fc)


def _heatmap(matrix: torch.Tensor, max_size: int, **kwargs):
    """A go.Heatmap of ``matrix`` downsampled, cells placed at original index centres."""
    z, (fr, fc) = downsample(matrix, max_size)
    y = np.arange(z.shape[0]) * fr + (fr - 1) / 2
    x = np.arange(z.shape[1]) * fc + (fc - 1) / 2
    return go.Heatmap(z=z, x=x, y=y, hovertemplate="row %{y}, col %{x}: %{z:.4g}<extra></extra>",
                      **kwargs), (fr, fc)


def _downsample_note(factors) -> str:
    fr, fc = factors
    return f" — downsampled: each cell is the mean of a {fr}×{fc} block" if fr * fc > 1 else ""


def _check_frame(df, columns, where: str) -> pd.DataFrame:
    if not isinstance(df, pd.DataFrame):
        raise TypeError(f"{where}: expected a pandas DataFrame, got {type(df).__name__}")
    missing = sorted(set(columns) - set(df.columns))
    if missing:
        raise ValueError(f"{where}: DataFrame lacks columns {missing} (has {list(df.columns)})")
    if df.empty:
        raise ValueError(f"{where}: DataFrame is empty")
    return df


# ---- figures ---------------------------------------------------------------------------------
def weight_heatmaps(weight: torch.Tensor, layer: MonarchLinear,
                    max_size: int = MAX_SIZE) -> go.Figure:
    """Dense ``weight`` (out, in) | ``layer.to_dense()`` | difference, one shared diverging
    colour scale centred on 0; three heatmap traces."""
    where = "weight_heatmaps"
    w, layer = _as_matrix(weight, where), _check_layer(layer, where)
    if tuple(w.shape) != (layer.out_features, layer.in_features):
        raise ValueError(f"{where}: weight shape {tuple(w.shape)} does not match the layer's "
                         f"(out, in) = ({layer.out_features}, {layer.in_features})")
    m = layer.to_dense().to("cpu", torch.float32)
    diff = w - m
    rel = float(diff.norm() / w.norm()) if w.norm() > 0 else 0.0
    zmax = max(float(w.abs().max()), float(m.abs().max()), 1e-12)
    fig = make_subplots(1, 3, shared_yaxes=True, horizontal_spacing=0.03,
                        subplot_titles=("dense W", "Monarch M", "difference W − M"))
    for col, matrix in enumerate((w, m, diff), start=1):
        trace, factors = _heatmap(matrix, max_size, coloraxis="coloraxis")
        fig.add_trace(trace, 1, col)
    fig.update_yaxes(autorange="reversed")
    fig.update_layout(template=TEMPLATE, coloraxis=dict(colorscale="RdBu_r", cmin=-zmax,
                                                        cmax=zmax, cmid=0),
                      title=f"{w.shape[0]}×{w.shape[1]} weight vs Monarch (nblocks="
                            f"{layer.nblocks}), relative error {rel:.3g}"
                            + _downsample_note(factors))
    return fig


def block_residual_heatmap(fit: MonarchFit) -> go.Figure:
    """b×b heatmap [l, k] of √(residual²/‖sub-block‖²); hover: rank kept, residual², norm²."""
    fit = getattr(fit, "fit", fit)  # a projected MonarchLinear works too
    if not isinstance(fit, MonarchFit):
        raise TypeError(f"block_residual_heatmap: expected a MonarchFit (layer.fit), "
                        f"got {type(fit).__name__}")
    res, norm = fit.block_residual_sq.double(), fit.block_norm_sq.double()
    rel = torch.where(norm > 0, (res / norm.clamp_min(1e-300)).sqrt(), torch.nan)
    custom = torch.stack([fit.ranks.double(), res, norm], -1).numpy()
    fig = go.Figure(go.Heatmap(
        z=rel.numpy(), customdata=custom, colorscale="Viridis", zmin=0, zmax=1,
        colorbar=dict(title="relative<br>residual"),
        hovertemplate="output class l=%{y}, input block k=%{x}<br>relative residual %{z:.3g}"
                      "<br>rank kept %{customdata[0]}<br>residual² %{customdata[1]:.4g} of "
                      "%{customdata[2]:.4g}<extra></extra>"))
    fig.update_yaxes(autorange="reversed", title="output class l (rows l::b)")
    fig.update_xaxes(title="input block k")
    fig.update_layout(template=TEMPLATE, title=f"Residual per sub-block (nblocks={fit.nblocks}), "
                                               f"overall relative error {fit.relative_error:.3g}")
    return fig


def sub_block_spectra_figure(spectra_df: pd.DataFrame, max_blocks: int = 16) -> go.Figure:
    """Singular-value decay per sub-block (from ``sub_block_spectra``), log y; filled markers are
    kept, open ones discarded, a dashed line marks each kept rank. At most ``max_blocks``
    sub-blocks, evenly spaced in (l, k) order; one trace each."""
    df = _check_frame(spectra_df, ("l", "k", "index", "sigma", "kept"), "sub_block_spectra_figure")
    if not isinstance(max_blocks, int) or max_blocks < 1:
        raise ValueError(f"sub_block_spectra_figure: max_blocks must be a positive int, "
                         f"got {max_blocks!r}")
    groups = df.sort_values(["l", "k", "index"]).groupby(["l", "k"], sort=True)
    keys = list(groups.groups)
    chosen = sorted({keys[int(i)] for i in np.linspace(0, len(keys) - 1, min(max_blocks,
                                                                              len(keys))).round()})
    fig, ranks = go.Figure(), set()
    for l, k in chosen:
        g = groups.get_group((l, k))
        kept = g["kept"].to_numpy(bool)
        ranks.add(int(kept.sum()))
        fig.add_trace(go.Scatter(
            x=g["index"] + 1, y=g["sigma"].where(g["sigma"] > 0), mode="lines+markers",
            name=f"l={l}, k={k}", marker=dict(symbol=np.where(kept, "circle", "circle-open")),
            hovertemplate=f"l={l}, k={k}<br>σ_%{{x}} = %{{y:.4g}}<extra></extra>"))
    for r in sorted(ranks - {0}):
        fig.add_vline(x=r + 0.5, line_dash="dash", line_color="gray",
                      annotation_text=f"kept rank {r}")
    shown = f"{len(chosen)} of {len(keys)} sub-blocks" if len(chosen) < len(keys) \
        else f"{len(keys)} sub-blocks"
    fig.update_yaxes(type="log", title="singular value σ")
    fig.update_xaxes(title="component (1 = largest)")
    fig.update_layout(template=TEMPLATE, title=f"Sub-block spectra ({shown}; filled = kept)")
    return fig


def projection_error_figure(curve_df: pd.DataFrame, x: str = "param_fraction") -> go.Figure:
    """Relative error vs ``x`` ("param_fraction" or "nblocks") from ``projection_error_curve``:
    Monarch, and low-rank at equal params when present (one or two traces). Skipped rows
    (NaN) are left out."""
    if x not in ("param_fraction", "nblocks"):
        raise ValueError(f"projection_error_figure: x must be 'param_fraction' or 'nblocks', "
                         f"got {x!r}")
    df = _check_frame(curve_df, ("nblocks", "relative_error", x), "projection_error_figure")
    df = df[df["relative_error"].notna()]
    if df.empty:
        raise ValueError("projection_error_figure: every row was skipped (see the note column)")
    fig = go.Figure(go.Scatter(x=df[x], y=df["relative_error"], mode="lines+markers+text",
                               name="Monarch", text=[f"b={b}" for b in df["nblocks"]],
                               textposition="top center"))
    if "lowrank_relative_error" in df:
        ranks = df["rank"] if "rank" in df else df["nblocks"] * np.nan
        fig.add_trace(go.Scatter(x=df[x], y=df["lowrank_relative_error"], mode="lines+markers",
                                 name="low-rank, equal params", text=[f"rank {r}" for r in ranks],
                                 line_dash="dot"))
    fig.update_xaxes(type="log", title="parameters / dense" if x == "param_fraction"
                     else "nblocks")
    fig.update_yaxes(title="relative error ‖W − W̃‖_F / ‖W‖_F", rangemode="tozero")
    fig.update_layout(template=TEMPLATE, title="Projection error vs size")
    return fig


def model_projection_figure(df: pd.DataFrame) -> go.Figure:
    """Heatmap layer × nblocks of relative error (from ``model_projection_errors``)."""
    df = _check_frame(df, ("layer", "nblocks", "relative_error"), "model_projection_figure")
    table = df.pivot_table(index="layer", columns="nblocks", values="relative_error",
                           aggfunc="first", dropna=False).reindex(pd.unique(df["layer"]))
    shapes = df.groupby("layer", sort=False)["shape"].first() if "shape" in df else None
    custom = np.array([[shapes[n] if shapes is not None else ""] * table.shape[1]
                       for n in table.index])
    fig = go.Figure(go.Heatmap(
        z=table.to_numpy(float), x=[f"b={b}" for b in table.columns], y=list(table.index),
        customdata=custom, colorscale="Viridis", zmin=0, zmax=1,
        texttemplate="%{z:.2f}" if table.size <= 400 else None,
        colorbar=dict(title="relative<br>error"),
        hovertemplate="%{y} (%{customdata})<br>%{x}: relative error %{z:.4g}<extra></extra>"))
    fig.update_yaxes(autorange="reversed")
    fig.update_layout(template=TEMPLATE, title="Monarch projection error per layer",
                      height=max(320, 22 * len(table) + 160))
    return fig


def factor_heatmaps(layer: MonarchLinear, max_size: int = MAX_SIZE) -> go.Figure:
    """blockdiag(w1) (b·q, b·p) and blockdiag(w2) (b·s, b·q), each with its own colour scale."""
    layer = _check_layer(layer, "factor_heatmaps")
    b, p, q, s = layer.nblocks, layer.in_block, layer.mid_block, layer.out_block
    mats = [torch.block_diag(*layer.w1.detach().float().cpu()),
            torch.block_diag(*layer.w2.detach().float().cpu())]
    fig = make_subplots(1, 2, horizontal_spacing=0.12, subplot_titles=(
        f"w1: {b} blocks of {q}×{p}", f"w2: {b} blocks of {s}×{q}"))
    for col, (matrix, axis) in enumerate(zip(mats, ("coloraxis", "coloraxis2")), start=1):
        trace, factors = _heatmap(matrix, max_size, coloraxis=axis)
        fig.add_trace(trace, 1, col)
        zmax = max(float(matrix.abs().max()), 1e-12)
        fig.update_layout({axis: dict(colorscale="RdBu_r", cmin=-zmax, cmax=zmax, colorbar=dict(
            x=0.44 if col == 1 else 1.0, len=0.9))})
    fig.update_yaxes(autorange="reversed")
    fig.update_layout(template=TEMPLATE, title=f"Monarch factors (nblocks={b})"
                      + _downsample_note(factors))
    return fig


def permutation_figure(layer: MonarchLinear, mode: str = "auto", max_lines: int = 64,
                       max_size: int = MAX_SIZE) -> go.Figure:
    """P1: middle unit ``j = k·q + i`` (w1 block k, row i) goes to w2 block ``l = j mod b``,
    position ``r = j div b`` (flat ``l·q + r``). ``mode="lines"``: one line per unit, one trace
    per w1 block; ``"matrix"``: the permutation matrix (counts per cell when downsampled);
    ``"auto"``: lines up to ``max_lines`` units."""
    layer = _check_layer(layer, "permutation_figure")
    if mode not in ("auto", "lines", "matrix"):
        raise ValueError(f"permutation_figure: mode must be auto, lines or matrix, got {mode!r}")
    b, q = layer.nblocks, layer.mid_block
    n = b * q
    j = torch.arange(n)
    dest = (j % b) * q + j // b
    title = f"P1 (nblocks={b}, {n} middle units): unit k·q+i → block j mod b, position j div b"
    if mode == "lines" or (mode == "auto" and n <= max_lines):
        fig = go.Figure()
        for k in range(b):
            src = j[k * q:(k + 1) * q]
            xs = np.tile([0.0, 1.0, np.nan], len(src))
            ys = np.stack([src.numpy(), dest[src].numpy(), np.full(len(src), np.nan)], 1).ravel()
            fig.add_trace(go.Scatter(x=xs, y=ys, mode="lines+markers", name=f"w1 block {k}",
                                     hovertemplate="unit %{y}<extra>w1 block " + str(k) +
                                                   "</extra>"))
        fig.update_xaxes(tickvals=[0, 1], ticktext=["w1 output j", "w2 input l·q + r"],
                         range=[-0.2, 1.2])
    else:
        f = math.ceil(n / max_size)  # units per cell side; counts never build the n×n matrix
        size = math.ceil(n / f)
        counts = torch.zeros(size, size).index_put_((dest // f, j // f), torch.ones(n),
                                                    accumulate=True)
        fig = go.Figure(go.Heatmap(
            z=counts.numpy(), x=np.arange(size) * f, y=np.arange(size) * f,
            colorscale="Greys", colorbar=dict(title="units"),
            hovertemplate="from unit %{x} to %{y}: %{z}<extra></extra>"))
        fig.update_xaxes(title="w1 output unit j")
        fig.update_yaxes(title="w2 input l·q + r")
        if f > 1:
            title += f" — downsampled: each cell counts a {f}×{f} window"
    fig.update_yaxes(autorange="reversed")
    fig.update_layout(template=TEMPLATE, title=title)
    return fig


def _has_kaleido() -> bool:
    return importlib.util.find_spec("kaleido") is not None


def export_figure(fig: go.Figure, path, include_plotlyjs=True) -> list[Path]:
    """Write ``fig`` as self-contained HTML next to ``path`` (always), and as ``path`` itself
    when it ends in .png/.svg/.pdf (needs the kaleido package). Returns the paths written."""
    if not isinstance(fig, go.Figure):
        raise TypeError(f"export_figure: expected a plotly Figure, got {type(fig).__name__}")
    path = Path(path)
    if path.suffix.lower() not in EXPORT_SUFFIXES:
        raise ValueError(f"export_figure: path must end in one of {EXPORT_SUFFIXES}, got {path}")
    path.parent.mkdir(parents=True, exist_ok=True)
    html = path.with_suffix(".html")
    fig.write_html(html, include_plotlyjs=include_plotlyjs)
    if path.suffix.lower() == ".html":
        return [html]
    if not _has_kaleido():
        raise RuntimeError(f"export_figure: writing {path.suffix} images needs the 'kaleido' "
                           f"package (pip install kaleido; kaleido>=1 also needs Chrome or "
                           f"Chromium); the HTML version was written to {html}")
    fig.write_image(path)
    return [html, path]
