"""The runs views, each bound to one session's ``RunsExplorer``: the Pareto plot, the parallel
coordinates, the groups table and the runs table. Each writes a selection back to the explorer
(box / lasso in the plot, a brush on an axis, ticked table rows) and draws the explorer's
selection, which links them.
"""
from __future__ import annotations

import re

import numpy as np
import pandas as pd
import panel as pn
import param
import plotly.graph_objects as go
from bokeh.models.widgets.tables import NumberFormatter
from panel.viewable import Viewer

from .data import column_label
from .explorer import RunsExplorer
from .parcoords import parcoords_figure, runs_in_ranges
from .pareto import grouped_pareto_figure, key_params, pareto_figure

PLOTLY_CONFIG = {"displaylogo": False, "responsive": True}
TABLE_COLUMNS = ("run_id", "created_at", "method", "status")
DETAIL_COLUMNS = ("model", "dataset", "device", "duration_s")
CONSTRAINT = re.compile(r"dimensions\[(\d+)\]\.constraintrange")
AUTO_DRAW_RUNS = 2000  # parallel coordinates are drawn at once up to this many runs


class ParetoPlot(Viewer):
    """Quality against cost for the filtered runs (or group means), each method's front, the
    selection opaque. Box or lasso select runs; ``click_data`` is left to the dashboard."""

    explorer = param.ClassSelector(class_=RunsExplorer)

    def __init__(self, **params):
        super().__init__(**params)
        e = self.explorer
        figure = pn.bind(self.figure, e.param.filtered, e.param.groups, e.param.quality,
                         e.param.cost, e.param.log_x, e.param.log_y, e.param.selected)
        self.pane = pn.pane.Plotly(figure, sizing_mode="stretch_width", min_height=480,
                                   config=PLOTLY_CONFIG)
        self.pane.param.watch(self._on_select, "selected_data")

    def figure(self, filtered, groups, quality, cost, log_x, log_y, selected):
        if self.explorer.group_by:
            return grouped_pareto_figure(groups, quality, cost, log_x, log_y, selected)
        return pareto_figure(filtered, quality, cost, log_x=log_x, log_y=log_y, selected=selected)

    def _on_select(self, event) -> None:
        if event.new is not None and not event.new.get("selector"):
            return  # Plotly re-announces a kept selection box after a redraw: not the user's
        points = (event.new or {}).get("points") or []
        keys = [p["customdata"][0] for p in points if p.get("customdata")]
        if self.explorer.group_by:
            self.explorer.select_groups(keys) if keys else self.explorer.select([])
        else:
            self.explorer.select(keys)

    def __panel__(self):
        return self.pane


def constraint_spans(value):
    """A parcoords ``constraintrange`` from a restyle event as a list of [low, high] spans, or
    None when the brush was removed. Plotly wraps values once per trace: ``[[lo, hi]]`` and
    ``[[[lo, hi], [lo2, hi2]]]`` both occur."""
    def depth(v):
        return 1 + depth(v[0]) if isinstance(v, list) and v else 0
    while isinstance(value, list) and depth(value) > 2:
        value = value[0]
    if not value or value == [None]:
        return None
    spans = [value] if depth(value) == 1 else value
    return [[float(lo), float(hi)] for lo, hi in (s for s in spans if s)] or None


class ParallelPlot(Viewer):
    """Parallel coordinates of the filtered runs; brushing axes selects the runs inside.
    Plotly draws them with WebGL, which without a GPU takes seconds for a few thousand runs
    (and blocks the page meanwhile), so above ``AUTO_DRAW_RUNS`` runs they wait for "Draw"."""

    explorer = param.ClassSelector(class_=RunsExplorer)
    draw = param.Boolean(default=None, allow_None=True, label="Draw parallel coordinates",
                         doc="Draw the plot; None: only when the store has few runs")

    def __init__(self, **params):
        super().__init__(**params)
        self._ranges: dict[str, list] = {}
        self._columns: list[str] = []
        self._brushed: list[str] = []
        e = self.explorer
        if self.draw is None:
            self.draw = len(e.runs) <= AUTO_DRAW_RUNS
        figure = pn.bind(self.figure, e.param.filtered, e.param.quality, e.param.cost,
                         e.param.log_x, e.param.log_y, e.param.selected, self.param.draw)
        self.pane = pn.pane.Plotly(figure, sizing_mode="stretch_width", min_height=380,
                                   config=PLOTLY_CONFIG, visible=self.param.draw)
        self.pane.param.watch(self._on_restyle, "restyle_data")

    def figure(self, filtered, quality, cost, log_x, log_y, selected, draw=True):
        if not draw:
            self._columns = []
            return go.Figure()
        if selected != self._brushed:  # selected elsewhere: the brushes no longer describe it
            self._ranges, self._brushed = {}, []
        fig = parcoords_figure(filtered, quality, cost, selected, self._ranges, log_x, log_y)
        self._columns = list((fig.layout.meta or {}).get("columns", []))
        return fig

    def _on_restyle(self, event) -> None:
        data = event.new
        if not data or not isinstance(data[0], dict):
            return
        changed = False
        for key, value in data[0].items():
            match = CONSTRAINT.fullmatch(key)
            if match and int(match.group(1)) < len(self._columns):
                column = self._columns[int(match.group(1))]
                spans = constraint_spans(value)
                if spans:
                    self._ranges[column] = spans
                else:
                    self._ranges.pop(column, None)
                changed = True
        if not changed:
            return
        e = self.explorer
        ids = (runs_in_ranges(e.filtered, e.quality, e.cost, self._ranges, e.log_x, e.log_y)
               if self._ranges else [])
        self._brushed = [r for r in e.filtered["run_id"] if r in set(ids)]
        e.select(self._brushed)

    def __panel__(self):
        return pn.Column(pn.widgets.Checkbox.from_param(self.param.draw), self.pane,
                         sizing_mode="stretch_width")


def round_significant(values: pd.Series, digits: int = 4) -> pd.Series:
    """Numbers rounded to ``digits`` significant digits, vectorised (NaN stays NaN)."""
    x = values.to_numpy(dtype=float)
    with np.errstate(divide="ignore", invalid="ignore"):
        scale = 10.0 ** (digits - 1 - np.floor(np.log10(np.abs(x))))
        rounded = np.where(np.isfinite(scale) & (x != 0), np.round(x * scale) / scale, x)
    return pd.Series(rounded, index=values.index)


def table_frame(df: pd.DataFrame, quality: str | None, cost: str | None) -> pd.DataFrame:
    """The table's columns: identity, the error (when a run has one), the plotted quality and
    cost, the details, then the parameters that vary. Newest runs first."""
    errors = ["error"] if "error" in df and df["error"].notna().any() else []
    wanted = [*TABLE_COLUMNS, *errors, quality, cost, *DETAIL_COLUMNS, *key_params(df, 8)]
    cols = list(dict.fromkeys(c for c in wanted if c and c in df.columns))
    table = df[cols].iloc[::-1].reset_index(drop=True)
    if "created_at" in table:
        table["created_at"] = table["created_at"].astype(str).str.slice(0, 16).str.replace("T", " ")
    for col in table.select_dtypes("number").columns:
        table[col] = round_significant(table[col])
    labels = {c: column_label(c) if not c.startswith("param.") else c[6:] for c in cols
              if c in (quality, cost, "duration_s") or c.startswith("param.")}
    names = [labels.get(c, c) for c in cols]
    clash = {n for n in names if names.count(n) > 1}  # e.g. param.model beside model
    return table.rename(columns={c: n for c, n in labels.items() if n not in clash})


def table_options(table: pd.DataFrame) -> tuple[dict, dict]:
    """(formatters, header filters) for the table's columns: numbers with thousands separators
    and at most four decimals, filtered by a minimum; text filtered by a substring."""
    fmt = NumberFormatter(format="0,0.[0000]", nan_format="", text_align="right")
    formatters, header = {}, {}
    for col in table.columns:
        if pd.api.types.is_numeric_dtype(table[col]):
            formatters[col] = fmt
            header[col] = {"type": "number", "func": ">=", "placeholder": "≥"}
        else:
            header[col] = {"type": "input", "func": "like", "placeholder": "filter"}
    return formatters, header


class RunsTable(Viewer):
    """The filtered runs, newest first, paginated, with header filters. Ticking rows selects
    those runs (and the plot and parallel coordinates show it); the dashboard opens a clicked
    row in the run detail."""

    explorer = param.ClassSelector(class_=RunsExplorer)
    page_size = param.Integer(default=15, bounds=(5, 200))
    only_selected = param.Boolean(default=False, label="Show only the selected runs")

    def __init__(self, **params):
        super().__init__(**params)
        self._syncing = False
        self.widget = pn.widgets.Tabulator(
            pd.DataFrame(), pagination="remote", page_size=self.page_size, show_index=False,
            disabled=True, selectable="checkbox", sizing_mode="stretch_width",
            layout="fit_data_stretch", frozen_columns=["run_id"], widths={"error": 220},
            configuration={"columnDefaults": {"tooltip": True}})
        e = self.explorer
        e.param.watch(self._refresh, ["filtered", "quality", "cost"])
        e.param.watch(self._on_explorer_selection, ["selected"])
        self.param.watch(self._refresh, ["only_selected"])
        self.widget.param.watch(self._on_selection, "selection")
        self._refresh()

    def _rows(self) -> pd.DataFrame:
        e = self.explorer
        if self.only_selected and e.selected:
            return e.filtered[e.filtered["run_id"].isin(e.selected)]
        return e.filtered

    def _refresh(self, *_) -> None:
        e, rows = self.explorer, self._rows()
        table = table_frame(rows, e.quality, e.cost) if not rows.empty else (
            pd.DataFrame(columns=list(TABLE_COLUMNS)))
        formatters, header = table_options(table)
        update = {"value": table}
        if header != self.widget.header_filters:  # new columns: redefine them, else keep them
            update.update(formatters=formatters, header_filters=header)
        self._syncing = True
        try:
            self.widget.param.update(**update)
        finally:
            self._syncing = False
        self._show_selection()

    def _on_explorer_selection(self, _) -> None:
        self._refresh() if self.only_selected else self._show_selection()

    def _show_selection(self) -> None:
        ids = pd.Index(self.widget.value["run_id"]) if "run_id" in self.widget.value else pd.Index([])
        positions = ids.get_indexer(self.explorer.selected)
        wanted = sorted(int(p) for p in positions if p >= 0)
        if sorted(self.widget.selection) != wanted:
            self._syncing = True
            try:
                self.widget.selection = wanted
            finally:
                self._syncing = False

    def _on_selection(self, event) -> None:
        if self._syncing:
            return
        rows = self.widget.value["run_id"].iloc[list(event.new)] if event.new else []
        self.explorer.select(list(rows))

    def run_at(self, row: int) -> str | None:
        """The run id in table row ``row`` (as a click event reports it)."""
        value = self.widget.value
        return str(value["run_id"].iloc[row]) if 0 <= row < len(value) else None

    def __panel__(self):
        return pn.Column(pn.widgets.Checkbox.from_param(self.param.only_selected), self.widget,
                         sizing_mode="stretch_width")


class GroupsTable(Viewer):
    """The groups' mean, std, min and max of the plotted quality and cost, one row per group;
    a click on a row selects that group's runs."""

    explorer = param.ClassSelector(class_=RunsExplorer)

    def __init__(self, **params):
        super().__init__(**params)
        self.widget = pn.widgets.Tabulator(
            pd.DataFrame(), show_index=False, disabled=True, selectable=False,
            pagination="remote", page_size=10, sizing_mode="stretch_width",
            layout="fit_data_stretch", frozen_columns=["group"])
        self.widget.on_click(self._on_click)
        self.explorer.param.watch(self._refresh, ["groups"])
        self._refresh()

    def _refresh(self, *_) -> None:
        table = group_table(self.explorer.groups)
        if table.equals(self.widget.value):
            return
        update = {"value": table}
        formatters = table_options(table)[0]
        if formatters != self.widget.formatters:  # redefining columns of a table that is not
            update["formatters"] = formatters     # shown (no grouping) raised in Tabulator
        self.widget.param.update(**update)

    def _on_click(self, event) -> None:
        groups = self.explorer.groups
        if 0 <= event.row < len(groups):
            self.explorer.select_groups([groups["group"].iloc[event.row]])

    def __panel__(self):
        return self.widget


def group_table(groups: pd.DataFrame) -> pd.DataFrame:
    """``group_summary`` for display: no run id lists, readable column names, 4 digits."""
    if groups.empty:
        return pd.DataFrame(columns=["group", "method", "runs"])
    table = groups.drop(columns=["run_ids"])
    stats = list(table.columns[3:])
    for col in stats:
        table[col] = round_significant(table[col])
    names = {c: f"{column_label(c.rsplit(' ', 1)[0])} {c.rsplit(' ', 1)[1]}" for c in stats}
    return table.rename(columns=names)
