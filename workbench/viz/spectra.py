"""Figures of weight spectra: plain ``plotly.graph_objects.Figure`` objects (template
"plotly_white"), the same in JupyterLab and Panel. Numbers come from
``workbench.analysis.spectra`` (one row per weight matrix) and, for one layer's eigenvalues,
``workbench.analysis.spectra_io.layer_eigenvalues``.

- :func:`esd_figure`: log-log empirical spectral density of one layer, its fitted power-law tail
  and xmin.
- :func:`spectra_summary_figure`: one column (α by default) per layer, in model order, coloured
  by layer type, with the "well-trained" α band 2–6 (Martin & Mahoney) shaded.
- :func:`spectra_comparison_figure`: the same column for two versions of a model, layer by layer
  (e.g. dense vs Monarch-projected).
"""
from __future__ import annotations

import math
from collections.abc import Mapping

import numpy as np
import pandas as pd
import plotly.graph_objects as go
import torch

from ..analysis.spectra import FIT_THRESHOLD, MIN_FIT_EVALS, fit_power_law

TEMPLATE = "plotly_white"
ALPHA_BAND = (2.0, 6.0)  # α of well-trained layers (WeightWatcher's rule of thumb)
_HOVER_COLUMNS = ("type", "shape", "reason")


def _frame(df, metric: str, where: str) -> pd.DataFrame:
    """``df`` checked: a non-empty DataFrame with ``layer`` and a numeric ``metric`` column."""
    if not isinstance(df, pd.DataFrame):
        raise TypeError(f"{where}: expected a spectra DataFrame, got {type(df).__name__}")
    missing = [c for c in ("layer", metric) if c not in df.columns]
    if missing:
        raise ValueError(f"{where}: DataFrame lacks column(s) {missing}; available: "
                         f"{list(df.columns)}")
    if df.empty:
        raise ValueError(f"{where}: DataFrame is empty")
    if not pd.api.types.is_numeric_dtype(df[metric]):
        raise ValueError(f"{where}: column {metric!r} is not numeric ({df[metric].dtype})")
    return df


def _band(fig: go.Figure, metric: str) -> None:
    """Shade α's well-trained range on the value (x) axis; only for ``alpha``."""
    if metric == "alpha":
        fig.add_vrect(x0=ALPHA_BAND[0], x1=ALPHA_BAND[1], fillcolor="seagreen", opacity=0.12,
                      line_width=0, layer="below", annotation_text="well-trained 2–6",
                      annotation_position="outside top")


def _layout(fig: go.Figure, layers: list[str], metric: str, title: str,
            row_px: int = 20) -> go.Figure:
    fig.update_yaxes(categoryorder="array", categoryarray=layers, autorange="reversed",
                     title=None)
    fig.update_xaxes(title=metric)
    fig.update_layout(template=TEMPLATE, title=title, height=max(320, row_px * len(layers) + 180),
                      legend_title_text="", hoverlabel_namelength=-1)
    return fig


def _hover(df: pd.DataFrame) -> tuple[np.ndarray, str]:
    cols = [c for c in _HOVER_COLUMNS if c in df.columns]
    data = np.stack([df[c].astype(str).to_numpy() for c in cols], -1) if cols else None
    lines = "".join(f"<br>{c} %{{customdata[{i}]}}" for i, c in enumerate(cols))
    return data, lines


def spectra_summary_figure(df: pd.DataFrame, metric: str = "alpha",
                           title: str | None = None) -> go.Figure:
    """Horizontal bars of ``df[metric]``, one per layer in the frame's (model) order, one trace
    per layer ``type``; α's 2–6 band shaded. Layers without a value (skipped, no fit) keep their
    row, empty, and the title counts them."""
    df = _frame(df, metric, "spectra_summary_figure")
    layers = list(dict.fromkeys(df["layer"].astype(str)))
    types = df["type"].astype(str) if "type" in df.columns else pd.Series("layer", df.index)
    fig = go.Figure()
    for kind in dict.fromkeys(types):
        part = df[types == kind]
        custom, extra = _hover(part)
        fig.add_trace(go.Bar(x=part[metric], y=part["layer"].astype(str), orientation="h",
                             name=kind, customdata=custom,
                             hovertemplate=f"%{{y}}<br>{metric} %{{x:.4g}}{extra}<extra></extra>"))
    values = df[metric]
    empty = int(values.isna().sum())
    note = f" — {empty} of {len(df)} layers without a value" if empty else ""
    if title is None:
        title = f"{metric} per layer (mean {values.mean():.3g}){note}"
    _band(fig, metric)
    return _layout(fig, layers, metric, title)


def spectra_comparison_figure(df_a: pd.DataFrame, df_b: pd.DataFrame, metric: str = "alpha",
                              names: tuple[str, str] = ("dense", "compressed"),
                              changed_only: bool = False) -> go.Figure:
    """Grouped horizontal bars of ``metric`` per layer for two spectra frames, matched by layer
    name (order: ``df_a``'s, then layers only ``df_b`` has). ``changed_only`` keeps the layers
    whose value or type differs (e.g. only the projected ones). Two traces; α band shaded."""
    where = "spectra_comparison_figure"
    a, b = _frame(df_a, metric, where), _frame(df_b, metric, where)
    if len(names) != 2:
        raise ValueError(f"{where}: names must be two labels, got {names!r}")
    keep = [c for c in ("layer", metric, *_HOVER_COLUMNS) if c in a.columns or c in b.columns]
    merged = a.reindex(columns=keep).merge(b.reindex(columns=keep), on="layer", how="outer",
                                           suffixes=("_a", "_b"), sort=False)
    order = list(dict.fromkeys([*a["layer"].astype(str), *b["layer"].astype(str)]))
    merged = merged.set_index(merged["layer"].astype(str)).loc[order].reset_index(drop=True)
    if changed_only:
        va, vb = merged[f"{metric}_a"], merged[f"{metric}_b"]
        same = np.isclose(va, vb, rtol=1e-9, atol=0, equal_nan=True)
        if "type_a" in merged:
            same &= merged["type_a"].astype(str).to_numpy() == merged["type_b"].astype(str)
        merged = merged[~same]
        if merged.empty:
            raise ValueError(f"{where}: no layer's {metric} or type differs between the frames")
    fig = go.Figure()
    means = []
    for suffix, name in zip(("_a", "_b"), names):
        part = merged.rename(columns={f"{c}{suffix}": c for c in (metric, *_HOVER_COLUMNS)})
        custom, extra = _hover(part[[c for c in part.columns if c in _HOVER_COLUMNS]])
        fig.add_trace(go.Bar(x=part[metric], y=part["layer"].astype(str), orientation="h",
                             name=name, customdata=custom,
                             hovertemplate=f"{name}: %{{y}}<br>{metric} %{{x:.4g}}{extra}"
                                           f"<extra></extra>"))
        means.append(part[metric].mean())
    _band(fig, metric)
    fig.update_layout(barmode="group")
    title = (f"{metric} per layer: {names[0]} (mean {means[0]:.3g}) vs {names[1]} "
             f"(mean {means[1]:.3g})" + (", changed layers" if changed_only else ""))
    return _layout(fig, list(merged["layer"].astype(str)), metric, title, row_px=32)


def _fit_value(fit, key: str) -> float:
    value = np.asarray(fit[key].cpu() if isinstance(fit[key], torch.Tensor) else fit[key],
                       dtype=np.float64)
    if value.size != 1:
        raise ValueError(f"esd_figure: fit[{key!r}] holds {value.size} values; pass one layer's")
    return float(value.reshape(()))


def esd_figure(evals, fit: Mapping | pd.Series | None = None, layer: str = "",
               bins: int = 60) -> go.Figure:
    """Log-log histogram (probability density) of one layer's eigenvalues λ = σ² of WᵀW, the
    fitted tail p(λ) ∝ λ^-α from xmin (scaled to the fraction of λ in the tail) and xmin as a
    dashed line. ``fit``: a row of ``spectra(...)`` or ``fit_power_law(...)``'s dict for this
    layer (needs ``alpha`` and ``xmin``; ``D`` shown when present); None fits here. Two traces
    (one when there is no fit); λ ≤ 0 cannot sit on a log axis and are counted in the title."""
    lam = torch.as_tensor(np.asarray(evals, dtype=np.float64)).flatten()
    if lam.numel() == 0 or not torch.isfinite(lam).all():
        raise ValueError("esd_figure: evals must be a non-empty array of finite eigenvalues")
    if not isinstance(bins, int) or bins < 1:
        raise ValueError(f"esd_figure: bins must be a positive int, got {bins!r}")
    if fit is None:
        fit = fit_power_law(lam[None])
    missing = [k for k in ("alpha", "xmin") if k not in fit]
    if missing:
        raise ValueError(f"esd_figure: fit lacks {missing} (pass a spectra row or the dict of "
                         f"fit_power_law)")
    alpha, xmin = _fit_value(fit, "alpha"), _fit_value(fit, "xmin")
    D = _fit_value(fit, "D") if "D" in fit else math.nan
    pos = np.sort(lam[lam > 0].numpy())
    if len(pos) == 0:
        raise ValueError("esd_figure: no positive eigenvalue to draw (an all-zero matrix?)")
    lo, hi = pos[0], pos[-1]
    edges = np.logspace(np.log10(lo), np.log10(hi), bins + 1) if hi > lo \
        else np.array([lo / 1.1, hi * 1.1])
    edges[0], edges[-1] = min(edges[0], lo), max(edges[-1], hi)  # 10**log10(x) may miss x
    counts, _ = np.histogram(pos, edges)
    density = counts / (len(pos) * np.diff(edges))
    y = np.where(density > 0, density, np.nan).repeat(2)   # a flat step per bin, gaps at 0
    fig = go.Figure(go.Scatter(
        x=np.stack([edges[:-1], edges[1:]], 1).ravel(), y=y, mode="lines", name="ESD",
        hovertemplate="λ %{x:.4g}: density %{y:.4g}<extra></extra>"))
    if math.isfinite(alpha) and math.isfinite(xmin):
        tail = pos[pos >= xmin]
        x = np.logspace(np.log10(xmin), np.log10(max(hi, xmin)), 50)
        p = len(tail) / len(pos) * (alpha - 1) / xmin * (x / xmin) ** -alpha
        fig.add_trace(go.Scatter(x=x, y=p, mode="lines", name=f"power law α={alpha:.3g}",
                                 line=dict(color="firebrick", dash="dot", width=2.5)))
        fig.add_vline(x=xmin, line_dash="dash", line_color="gray")
        fig.add_annotation(x=np.log10(xmin), y=1, yref="y domain", text=f" xmin {xmin:.3g}",
                           showarrow=False, xanchor="left", yanchor="top")  # log axis: log10
        fit_note = f"α = {alpha:.3g}, D = {D:.3g}, {len(tail)} λ in the tail"
    else:
        fit_note = f"no power-law fit (needs {MIN_FIT_EVALS}+ λ > {FIT_THRESHOLD:g})"
    dropped = len(lam) - len(pos)
    note = f"; {dropped} λ ≤ 0 not drawn" if dropped else ""
    pad = 0.05 * max(np.log10(edges[-1] / edges[0]), 1.0)
    fig.update_xaxes(type="log", title="eigenvalue λ = σ² of WᵀW",
                     range=[np.log10(edges[0]) - pad, np.log10(edges[-1]) + pad])
    fig.update_yaxes(type="log", title="density")
    fig.update_layout(template=TEMPLATE, title=f"ESD{' of ' + layer if layer else ''}: "
                                               f"{fit_note}{note}")
    return fig
