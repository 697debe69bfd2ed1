"""Parallel coordinates over method, the parameters that vary, cost and quality (Plotly).

One line per run (``go.Parcoords`` draws with WebGL, so 10,000 lines stay fast). A parameter
with few distinct values is an ordered categorical axis (ticks at its values); the cost and
quality axes may be log10-scaled to match a log Pareto plot. Lines are coloured by method, or,
when runs are selected, selected against the rest. Brushing an axis gives constraint ranges;
``runs_in_ranges`` turns them back into run ids, so a brush selects runs in the other views.
"""
from __future__ import annotations

import numpy as np
import pandas as pd
import plotly.graph_objects as go

from .data import column_label
from .filters import MAX_CHOICES, parameter_columns, sorted_labels, value_labels
from .pareto import PALETTE, empty_figure

MAX_PARAMETER_AXES = 8
SELECTED, UNSELECTED = "#d62728", "#d3d3d3"


def axis_columns(df: pd.DataFrame, quality: str, cost: str) -> list[str]:
    """The axes, left to right: method, up to ``MAX_PARAMETER_AXES`` parameters that vary
    between these runs (the seed left out), then cost, then quality."""
    params = [c for c in parameter_columns(df) if c != "param.seed"
              and value_labels(df[c]).nunique() > 1][:MAX_PARAMETER_AXES]
    return ["method", *params, cost, quality]


def plotted_rows(df: pd.DataFrame, quality: str, cost: str) -> pd.DataFrame:
    """The runs that get a line: those with both a numeric quality and cost (as in the plot)."""
    values = df[[quality, cost]].apply(pd.to_numeric, errors="coerce")
    return df[values.notna().all(axis=1).to_numpy()]


def axis_values(df: pd.DataFrame, column: str, log: bool = False):
    """(values, tickvals, ticktext) of one axis: numbers as they are (log10 when ``log``), or
    codes 0..k-1 of the naturally sorted value labels with the labels as ticks."""
    series = df[column]
    numeric = pd.api.types.is_numeric_dtype(series) and not pd.api.types.is_bool_dtype(series)
    if numeric and series.notna().all() and (
            not column.startswith("param.") or series.nunique() > MAX_CHOICES):
        values = series.to_numpy(dtype=float)
        if log:
            values = np.log10(np.where(values > 0, values, np.nan))
        return values, None, None
    labels = value_labels(series.fillna("?") if column == "method" else series)
    order = sorted_labels(labels.unique())
    codes = pd.Categorical(labels, categories=order).codes.astype(float)
    return codes, list(range(len(order))), order


def _colorscale(n: int) -> list:
    colours = [PALETTE[i % len(PALETTE)] for i in range(max(n, 1))]
    if len(colours) == 1:
        return [[0, colours[0]], [1, colours[0]]]
    return [[edge, c] for i, c in enumerate(colours) for edge in (i / n, (i + 1) / n)]


def _in_ranges(values: np.ndarray, ranges) -> np.ndarray:
    if ranges and not isinstance(ranges[0], (list, tuple)):
        ranges = [ranges]
    hit = np.zeros(len(values), dtype=bool)
    for low, high in ranges or []:
        hit |= (values >= low) & (values <= high)
    return hit


def runs_in_ranges(df: pd.DataFrame, quality: str, cost: str, ranges: dict,
                   log_x: bool = False, log_y: bool = False) -> list[str]:
    """The run ids whose lines pass every brushed axis: ``ranges`` maps a column to
    ``[low, high]`` or a list of them, in axis units (codes for categorical axes)."""
    rows = plotted_rows(df, quality, cost)
    mask = np.ones(len(rows), dtype=bool)
    for column, spans in ranges.items():
        if column in rows.columns and spans:
            log = (column == cost and log_x) or (column == quality and log_y)
            mask &= _in_ranges(axis_values(rows, column, log)[0], spans)
    return rows["run_id"].astype(str)[mask].tolist()


def parcoords_figure(df: pd.DataFrame, quality: str | None, cost: str | None, selected=None,
                     ranges: dict | None = None, log_x: bool = False, log_y: bool = False
                     ) -> go.Figure:
    """Parallel coordinates of the runs in ``df`` (see the module docstring); ``ranges`` are
    drawn as brushes. ``fig.layout.meta["columns"]`` lists the axis columns in order."""
    if df is None or df.empty or quality not in df.columns or cost not in df.columns:
        return empty_figure("Nothing to draw: no runs with both a quality and a cost")
    rows = plotted_rows(df, quality, cost)
    if rows.empty:
        return empty_figure(f"No runs have both {column_label(quality)} and {column_label(cost)}")
    columns = axis_columns(rows, quality, cost)
    ranges = ranges or {}
    dimensions = []
    for column in columns:
        log = (column == cost and log_x) or (column == quality and log_y)
        values, tickvals, ticktext = axis_values(rows, column, log)
        label = column_label(column) if column in (quality, cost) else column.removeprefix(
            "param.")
        dim = dict(label=("log₁₀ " if log else "") + label, values=values)
        if tickvals is not None:
            dim.update(tickvals=tickvals, ticktext=ticktext,
                       range=[-0.3, max(len(tickvals) - 0.7, 0.3)])
        if ranges.get(column):
            dim["constraintrange"] = ranges[column]
        dimensions.append(dim)
    if selected:
        colour = rows["run_id"].isin(list(selected)).to_numpy(dtype=float)
        line = dict(color=colour, colorscale=[[0, UNSELECTED], [1, SELECTED]], cmin=0, cmax=1)
    else:
        codes, tickvals, _ = axis_values(rows, "method")
        n = len(tickvals)
        line = dict(color=codes, colorscale=_colorscale(n), cmin=-0.5, cmax=n - 0.5)
    fig = go.Figure(go.Parcoords(dimensions=dimensions, line=line,
                                 unselected=dict(line=dict(opacity=0.05))))
    note = f" · {len(selected)} selected" if selected else " · coloured by method"
    # room on the left for the first axis' tick labels (the method names)
    left = min(160, 20 + 7 * max((len(t) for t in dimensions[0].get("ticktext") or [""]),
                                 default=0))
    fig.update_layout(template="plotly_white", height=380, meta={"columns": columns},
                      margin=dict(l=max(left, 60), r=60, t=80, b=30),
                      title=dict(text=f"Parallel coordinates · {len(rows)} runs{note}", x=0.01,
                                 font=dict(size=16)))
    return fig
