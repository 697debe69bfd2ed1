"""The Pareto plot: quality against cost, one colour per method, each method's front drawn.

``pareto_figure`` (one point per run) and ``grouped_pareto_figure`` (one point per group at its
mean, with std error bars) return plain Plotly figures, so the same figure shows in JupyterLab
(``fig.show()``), in Panel (``pn.pane.Plotly(fig)``) and exports with ``fig.write_image``.
Every point carries ``customdata[0]`` = its run id (or group label) for click and selection;
selected runs are drawn opaque, the rest faded. Above ``WEBGL_POINTS`` points the traces are
``Scattergl`` (WebGL), which keeps 10,000 runs responsive.
"""
from __future__ import annotations

import numpy as np
import pandas as pd
import plotly.graph_objects as go
from plotly.colors import qualitative

from .data import column_label, higher_is_better, minimize_cost, pareto_front

PALETTE = qualitative.D3
HOVER_FIELDS = ("model", "dataset", "device")
MAX_HOVER_PARAMS = 5
WEBGL_POINTS = 1000
EMPTY_HINT = ("No runs yet: create some with <b>workbench run notebooks/baseline.ipynb</b> "
              "or <b>make demo</b>")


def key_params(df: pd.DataFrame, limit: int = MAX_HOVER_PARAMS) -> list[str]:
    """The ``param.*`` columns that tell runs apart (values differ), else the first few."""
    params = [c for c in df.columns if c.startswith("param.") and df[c].notna().any()]
    varying = [c for c in params if df[c].astype(str).nunique() > 1]
    return (varying or params)[:limit]


def hover_text(df: pd.DataFrame, params: list[str]) -> pd.Series:
    """Per run: bold id and method, model / dataset / device, then ``name=value`` for each of
    ``params`` the run has (vectorised string concatenation, no per-row Python)."""
    text = "<b>" + df["run_id"].astype(str) + "</b> · " + df["method"].fillna("?").astype(str)
    for field in HOVER_FIELDS:
        if field in df:
            text = text + f"<br>{field}: " + df[field].fillna("").astype(str)
    for column in params:
        value = df[column]
        part = f"<br>{column[6:]}=" + value.astype(str)
        text = text + part.where(value.notna(), "")
    return text


def empty_figure(message: str) -> go.Figure:
    """A blank figure with a centred explanatory message."""
    fig = go.Figure()
    fig.add_annotation(text=message, x=0.5, y=0.5, xref="paper", yref="paper",
                       showarrow=False, font=dict(size=15, color="#555"))
    fig.update_layout(template="plotly_white", height=480, margin=dict(l=40, r=20, t=40, b=40),
                      xaxis=dict(visible=False), yaxis=dict(visible=False))
    return fig


def _layout(fig, quality, cost, n, log_x, log_y, title_extra="", legend="method"):
    up, cheap = higher_is_better(quality), minimize_cost(cost)
    xlabel, ylabel = column_label(cost), column_label(quality)
    better = "higher is better" if up else "lower is better"
    fig.update_layout(
        template="plotly_white", height=480, hovermode="closest", dragmode="select",
        uirevision=f"{quality}|{cost}|{log_x}|{log_y}",  # keep zoom across selection updates
        margin=dict(l=60, r=20, t=50, b=50), legend=dict(title=dict(text=legend)),
        title=dict(text=f"{ylabel} vs {xlabel} · {n}{title_extra}", x=0.01, font=dict(size=16)),
        xaxis=dict(title=xlabel + ("" if cheap else " (higher is better)"),
                   type="log" if log_x else "linear"),
        yaxis=dict(title=f"{ylabel} ({better})", type="log" if log_y else "linear"))
    return fig


def _front_trace(group, x, y, cheap, up, colour, name):
    front = pareto_front(group, x, y, minimize_x=cheap, maximize_y=up)
    if len(front) < 2:
        return None
    return go.Scatter(x=front[x], y=front[y], mode="lines", name=f"{name} front",
                      legendgroup=name, showlegend=False, hoverinfo="skip",
                      line=dict(color=colour, width=2, dash="dot", shape="hv" if cheap else "vh"))


def _selected_points(ids: pd.Series, selected) -> list[int] | None:
    if not selected:
        return None
    return np.flatnonzero(ids.isin(list(selected)).to_numpy()).tolist()


def _numeric_rows(df: pd.DataFrame, columns: list[str]) -> pd.DataFrame:
    data = df.copy()
    for column in columns:
        data[column] = pd.to_numeric(data[column], errors="coerce")
    return data.dropna(subset=columns)


def pareto_figure(df: pd.DataFrame, quality: str | None, cost: str | None, color: str = "method",
                  log_x: bool = False, log_y: bool = False, selected=None) -> go.Figure:
    """Scatter of ``quality`` (y) against ``cost`` (x) for the runs in ``df``, one trace per value
    of ``color``, plus that group's Pareto front as a dashed step line (no markers, so the
    scatter traces hold exactly one point per plotted run). ``selected`` run ids are drawn
    opaque and the others faded. Rows missing either value are left out; an empty selection
    gives a figure that says why."""
    if df is None or df.empty:
        return empty_figure(EMPTY_HINT)
    if quality not in df.columns or cost not in df.columns:
        return empty_figure("These runs have no numeric quality metric or cost to plot yet")
    data = _numeric_rows(df, [quality, cost])
    if data.empty:
        return empty_figure(f"No runs have both {column_label(quality)} and {column_label(cost)}")

    data["_hover"] = hover_text(data, key_params(data))
    up, cheap = higher_is_better(quality), minimize_cost(cost)
    scatter = go.Scattergl if len(data) > WEBGL_POINTS else go.Scatter
    hover = (f"%{{hovertext}}<br>{column_label(cost)}: %{{x:,.4~r}}<br>"
             f"{column_label(quality)}: %{{y:,.4~r}}<extra></extra>")
    fig = go.Figure()
    groups = data[color].fillna("?").astype(str) if color in data else pd.Series("runs", data.index)
    for i, (name, group) in enumerate(data.groupby(groups, sort=True)):
        colour = PALETTE[i % len(PALETTE)]
        ok = group["status"].eq("ok").to_numpy() if "status" in group else np.ones(len(group), bool)
        # numpy arrays of text (not lists, not a uniform list): Plotly validates those at once
        symbol = "circle" if ok.all() else np.where(ok, "circle", "x").tolist()
        fig.add_trace(scatter(
            x=group[cost].to_numpy(), y=group[quality].to_numpy(), mode="markers", name=name,
            legendgroup=name, customdata=group["run_id"].to_numpy(dtype=str)[:, None],
            hovertext=group["_hover"].to_numpy(dtype=str),
            hovertemplate=hover, selectedpoints=_selected_points(group["run_id"], selected),
            selected=dict(marker=dict(opacity=1.0)), unselected=dict(marker=dict(opacity=0.15)),
            marker=dict(color=colour, size=11 if len(data) <= WEBGL_POINTS else 7, opacity=0.9,
                        symbol=symbol,
                        line=dict(color="white", width=1))))
        front = _front_trace(group, cost, quality, cheap, up, colour, name)
        if front is not None:
            fig.add_trace(front)
    extra = f" runs · {len(selected)} selected" if selected else " runs"
    return _layout(fig, quality, cost, len(data), log_x, log_y, extra, legend=color)


def grouped_pareto_figure(summary: pd.DataFrame, quality: str | None, cost: str | None,
                          log_x: bool = False, log_y: bool = False, selected=None) -> go.Figure:
    """One point per group of ``grouping.group_summary`` at its (mean cost, mean quality), with
    std error bars in both directions, coloured by method, plus each method's front over the
    group means. ``customdata[0]`` is the group label; a group is drawn selected when any of its
    runs is in ``selected``."""
    if summary is None or summary.empty:
        return empty_figure(EMPTY_HINT)
    qm, cm = f"{quality} mean", f"{cost} mean"
    if qm not in summary.columns or cm not in summary.columns:
        return empty_figure("These runs have no numeric quality metric or cost to plot yet")
    data = _numeric_rows(summary, [qm, cm])
    if data.empty:
        return empty_figure(f"No groups have both {column_label(quality)} and {column_label(cost)}")
    up, cheap = higher_is_better(quality), minimize_cost(cost)
    chosen = set(selected or ())
    hit = data["run_ids"].map(lambda ids: not chosen.isdisjoint(ids)) if chosen else None
    fig = go.Figure()
    for i, (name, group) in enumerate(data.groupby("method", sort=True)):
        colour = PALETTE[i % len(PALETTE)]
        stats = [f"{c} {s}" for c in (cost, quality) for s in ("std", "min", "max")]
        custom = group[["group", "runs", *stats]].to_numpy(dtype=object)
        fig.add_trace(go.Scatter(
            x=group[cm], y=group[qm], mode="markers", name=name, legendgroup=name,
            customdata=custom,
            error_x=dict(type="data", array=group[f"{cost} std"].fillna(0), thickness=1),
            error_y=dict(type="data", array=group[f"{quality} std"].fillna(0), thickness=1),
            selectedpoints=np.flatnonzero(hit[group.index]).tolist() if chosen else None,
            selected=dict(marker=dict(opacity=1.0)), unselected=dict(marker=dict(opacity=0.2)),
            hovertemplate=("<b>%{customdata[0]}</b><br>%{customdata[1]} runs<br>"
                           f"{column_label(cost)}: %{{x:,.4~r}} ± %{{customdata[2]:,.3~r}} "
                           "(%{customdata[3]:,.4~r} to %{customdata[4]:,.4~r})<br>"
                           f"{column_label(quality)}: %{{y:,.4~r}} ± %{{customdata[5]:,.3~r}} "
                           "(%{customdata[6]:,.4~r} to %{customdata[7]:,.4~r})<extra></extra>"),
            marker=dict(color=colour, size=12, opacity=0.9, line=dict(color="white", width=1))))
        front = _front_trace(group, cm, qm, cheap, up, colour, name)
        if front is not None:
            fig.add_trace(front)
    n_runs = int(data["runs"].sum())
    return _layout(fig, quality, cost, len(data), log_x, log_y,
                   f" groups (means ± std of {n_runs} runs)", legend="method")
