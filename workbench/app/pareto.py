"""The Pareto plot: quality against cost, one colour per method, each method's front drawn.

``pareto_figure`` returns a plain Plotly figure, so the same figure shows in JupyterLab
(``fig.show()``), in Panel (``pn.pane.Plotly(fig)``) and exports with ``fig.write_image``.
Every point carries ``customdata[0] = run_id`` for click drill-down.
"""
from __future__ import annotations

import pandas as pd
import plotly.graph_objects as go
from plotly.colors import qualitative

from .data import column_label, higher_is_better, minimize_cost, pareto_front

PALETTE = qualitative.D3
HOVER_FIELDS = ("run_id", "model", "dataset", "device")
MAX_HOVER_PARAMS = 5
EMPTY_HINT = ("No runs yet: create some with <b>workbench run notebooks/baseline.ipynb</b> "
              "or <b>make demo</b>")


def key_params(df: pd.DataFrame, limit: int = MAX_HOVER_PARAMS) -> list[str]:
    """The ``param.*`` columns that tell runs apart (values differ), else the first few."""
    params = [c for c in df.columns if c.startswith("param.") and df[c].notna().any()]
    varying = [c for c in params if df[c].astype(str).nunique() > 1]
    return (varying or params)[:limit]


def _params_text(df: pd.DataFrame, params: list[str]) -> pd.Series:
    def row_text(row):
        items = [f"{c[6:]}={row[c]}" for c in params if pd.notna(row[c])]
        return "<br>".join(items)
    return df.apply(row_text, axis=1) if params else pd.Series("", index=df.index)


def empty_figure(message: str) -> go.Figure:
    """A blank figure with a centred explanatory message."""
    fig = go.Figure()
    fig.add_annotation(text=message, x=0.5, y=0.5, xref="paper", yref="paper",
                       showarrow=False, font=dict(size=15, color="#555"))
    fig.update_layout(template="plotly_white", height=480, margin=dict(l=40, r=20, t=40, b=40),
                      xaxis=dict(visible=False), yaxis=dict(visible=False))
    return fig


def pareto_figure(df: pd.DataFrame, quality: str | None, cost: str | None, color: str = "method",
                  log_x: bool = False, log_y: bool = False) -> go.Figure:
    """Scatter of ``quality`` (y) against ``cost`` (x) for the runs in ``df``, one trace per value
    of ``color``, plus that group's Pareto front as a dashed step line (no markers, so the
    scatter traces hold exactly one point per plotted run). Rows missing either value are left
    out; an empty selection gives a figure that says why."""
    if df is None or df.empty:
        return empty_figure(EMPTY_HINT)
    if quality not in df.columns or cost not in df.columns:
        return empty_figure("These runs have no numeric quality metric or cost to plot yet")
    data = df.copy()
    data[quality] = pd.to_numeric(data[quality], errors="coerce")
    data[cost] = pd.to_numeric(data[cost], errors="coerce")
    data = data.dropna(subset=[quality, cost])
    if data.empty:
        return empty_figure(f"No runs have both {column_label(quality)} and {column_label(cost)}")

    for field in HOVER_FIELDS:
        data[field] = data[field].fillna("") if field in data else ""
    params = key_params(data)
    data["_params"] = _params_text(data, params)
    up, cheap = higher_is_better(quality), minimize_cost(cost)
    xlabel, ylabel = column_label(cost), column_label(quality)
    hover = ("<b>%{customdata[0]}</b> · {name}<br>"
             "model: %{customdata[1]}<br>dataset: %{customdata[2]}<br>"
             "device: %{customdata[3]}<br>%{customdata[4]}<br>"
             f"{xlabel}: %{{x:,.4~r}}<br>{ylabel}: %{{y:,.4~r}}<extra></extra>")

    fig = go.Figure()
    groups = data[color].fillna("?").astype(str) if color in data else pd.Series("runs", data.index)
    for i, (name, group) in enumerate(data.groupby(groups, sort=True)):
        colour = PALETTE[i % len(PALETTE)]
        custom = group[[*HOVER_FIELDS, "_params"]].astype(str).to_numpy()
        symbols = ["circle" if s == "ok" else "x" for s in group.get("status", ["ok"] * len(group))]
        fig.add_trace(go.Scatter(
            x=group[cost], y=group[quality], mode="markers", name=name, legendgroup=name,
            customdata=custom, hovertemplate=hover.replace("{name}", name),
            marker=dict(color=colour, size=11, opacity=0.9, symbol=symbols,
                        line=dict(color="white", width=1))))
        front = pareto_front(group, cost, quality, minimize_x=cheap, maximize_y=up)
        if len(front) > 1:
            fig.add_trace(go.Scatter(
                x=front[cost], y=front[quality], mode="lines", name=f"{name} front",
                legendgroup=name, showlegend=False, hoverinfo="skip",
                line=dict(color=colour, width=2, dash="dot", shape="hv" if cheap else "vh")))

    better = "higher is better" if up else "lower is better"
    fig.update_layout(
        template="plotly_white", height=480, hovermode="closest",
        margin=dict(l=60, r=20, t=50, b=50), legend=dict(title=dict(text=color)),
        title=dict(text=f"{ylabel} vs {xlabel} · {len(data)} runs", x=0.01, font=dict(size=16)),
        xaxis=dict(title=xlabel + ("" if cheap else " (higher is better)"),
                   type="log" if log_x else "linear"),
        yaxis=dict(title=f"{ylabel} ({better})", type="log" if log_y else "linear"))
    return fig
