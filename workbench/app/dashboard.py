"""The dashboard: a runs explorer with a Pareto plot and a runs table, plus a run detail tab.

State lives in one ``RunsExplorer`` (a ``param.Parameterized``) per session; the views are
``pn.viewable.Viewer`` components that bind to its parameters. ``create_app(store)`` builds a
fresh template for each browser session, so nothing is shared between sessions but the cached
runs frame. Clicking a point in the plot or a row of the table opens that run in the "Run detail"
tab (``workbench.app.detail.RunDetail``).
"""
from __future__ import annotations

import pandas as pd
import panel as pn
import param
import sqlalchemy as sa
from bokeh.models.widgets.tables import NumberFormatter
from panel.viewable import Viewer

from .data import column_label, cost_columns, load_runs, quality_columns
from .detail import RunDetail
from .pareto import pareto_figure
from workbench.runs.store import resolve_store_url

TITLE = "Structured-matrix workbench"
STATUSES = ["ok", "failed", "corrupt"]
PREFERRED_QUALITY = ("metric.accuracy", "metric.bits_per_byte", "metric.perplexity", "metric.loss")
PREFERRED_COST = ("cost.flops_per_sample", "cost.params", "cost.latency_ms")
TABLE_COLUMNS = ("run_id", "created_at", "method", "status")
DETAIL_COLUMNS = ("model", "dataset", "device", "duration_s")
EMPTY_STORE = """### No runs in this store yet
Each notebook execution logs one run. Create some with

```bash
workbench run notebooks/baseline.ipynb     # one run
make demo                                  # a small demo sweep
```
then press **Reload runs**. Store: `{store}`"""


def _first(preferred, available):
    return next((c for c in preferred if c in available), available[0] if available else None)


class RunsExplorer(param.Parameterized):
    """One session's view of the run store: the loaded runs, the filters and the axes."""

    store = param.String(doc="SQLAlchemy URL of the run store")
    runs = param.DataFrame(default=pd.DataFrame(), doc="All runs in the store, oldest first")
    filtered = param.DataFrame(default=pd.DataFrame(), doc="The runs passing the filters")
    quality = param.Selector(default=None, objects=[], allow_None=True, label="Quality (y)")
    cost = param.Selector(default=None, objects=[], allow_None=True, label="Cost (x)")
    log_x = param.Boolean(default=False, label="log x")
    log_y = param.Boolean(default=False, label="log y")
    methods = param.ListSelector(default=[], objects=[], label="Methods (none = all)")
    statuses = param.ListSelector(default=list(STATUSES), objects=list(STATUSES), label="Status")
    reload = param.Event(label="Reload runs", doc="Re-read the store, bypassing the cache")

    def load(self, force: bool = False) -> None:
        """Read the store (cached for a few seconds unless ``force``) and refresh the choices."""
        df = load_runs(self.store, force=force)
        with param.parameterized.batch_call_watchers(self):
            self._set_choices("quality", quality_columns(df), PREFERRED_QUALITY)
            self._set_choices("cost", cost_columns(df), PREFERRED_COST)
            methods = sorted(df["method"].dropna().astype(str).unique())
            self.param.methods.objects = methods
            self.methods = [m for m in self.methods if m in methods]
            self.runs = df

    @param.depends("reload", watch=True)
    def _reload(self) -> None:
        self.load(force=True)

    def _set_choices(self, name: str, columns: list[str], preferred) -> None:
        self.param[name].objects = {column_label(c): c for c in columns}
        if getattr(self, name) not in columns:
            setattr(self, name, _first(preferred, columns))

    @param.depends("runs", "methods", "statuses", watch=True, on_init=True)
    def _apply_filters(self) -> None:
        df = self.runs
        if not df.empty:
            if self.methods:
                df = df[df["method"].isin(self.methods)]
            df = df[df["status"].isin(self.statuses)]
        self.filtered = df

    @property
    def store_label(self) -> str:
        """The store for display: a file path, or the URL without its password."""
        url = sa.engine.make_url(self.store)
        if url.get_backend_name() == "sqlite":
            return url.database or ":memory:"
        return url.render_as_string(hide_password=True)

    def summary(self) -> str:
        """One line on what is loaded: counts per status."""
        counts = self.runs["status"].value_counts() if not self.runs.empty else {}
        parts = [f"{counts[s]} {s}" for s in STATUSES if s in counts]
        return f"**{len(self.runs)} runs** ({', '.join(parts) or 'none'})"


class ParetoPlot(Viewer):
    """Quality against cost for the filtered runs, with each method's Pareto front."""

    explorer = param.ClassSelector(class_=RunsExplorer)

    def __init__(self, **params):
        super().__init__(**params)
        e = self.explorer
        figure = pn.bind(pareto_figure, e.param.filtered, e.param.quality, e.param.cost,
                         log_x=e.param.log_x, log_y=e.param.log_y)
        self.pane = pn.pane.Plotly(figure, sizing_mode="stretch_width", min_height=480,
                                   config={"displaylogo": False, "responsive": True})

    def __panel__(self):
        return self.pane


def table_frame(df: pd.DataFrame, quality: str | None, cost: str | None) -> pd.DataFrame:
    """The table's columns: identity, the error (when a run has one), the plotted quality and
    cost, then the details. Newest runs first."""
    errors = ["error"] if "error" in df and df["error"].notna().any() else []
    wanted = [*TABLE_COLUMNS, *errors, quality, cost, *DETAIL_COLUMNS]
    cols = list(dict.fromkeys(c for c in wanted if c and c in df.columns))
    table = df[cols].copy()
    if "created_at" in table:
        table["created_at"] = table["created_at"].astype(str).str.slice(0, 16).str.replace("T", " ")
    for col in table.select_dtypes("number").columns:
        table[col] = table[col].map(lambda v: float(f"{v:.4g}") if pd.notna(v) else v)
    labels = {c: column_label(c) for c in (quality, cost, "duration_s") if c}
    return table.iloc[::-1].rename(columns=labels)


def number_formats(df: pd.DataFrame) -> dict:
    """Table formatters for every numeric column (under its name and its label):
    thousands separators, at most four decimals, blank for missing values."""
    fmt = NumberFormatter(format="0,0.[0000]", nan_format="", text_align="right")
    numeric = df.select_dtypes("number").columns
    return {name: fmt for c in numeric for name in (c, column_label(c))}


class RunsTable(Viewer):
    """The filtered runs, newest first, paginated; corrupt records show their error."""

    explorer = param.ClassSelector(class_=RunsExplorer)
    page_size = param.Integer(default=15, bounds=(5, 200))

    def __init__(self, **params):
        super().__init__(**params)
        e = self.explorer
        rows = pn.bind(table_frame, e.param.filtered, e.param.quality, e.param.cost)
        self.widget = pn.widgets.Tabulator(
            rows, pagination="remote", page_size=self.page_size, show_index=False,
            disabled=True, selectable=1, sizing_mode="stretch_width", layout="fit_data_stretch",
            formatters=pn.bind(number_formats, e.param.runs), frozen_columns=["run_id"],
            widths={"error": 220}, configuration={"columnDefaults": {"tooltip": True}})

    def __panel__(self):
        return self.widget


class Dashboard(Viewer):
    """Sidebar controls plus two tabs over one run store: "Runs" (Pareto plot and runs table)
    and "Run detail" (the run last clicked in either)."""

    def __init__(self, store=None, **params):
        super().__init__(**params)
        self.explorer = RunsExplorer(store=resolve_store_url(store))
        self.explorer.load()
        self.plot = ParetoPlot(explorer=self.explorer)
        self.table = RunsTable(explorer=self.explorer)
        self.detail = RunDetail(store=self.explorer.store)
        self.sidebar = self._controls()
        self.main = self._content()
        self.tabs = pn.Tabs(("Runs", self.main), ("Run detail", self.detail), dynamic=True,
                            sizing_mode="stretch_width")
        pn.bind(self._on_point_click, self.plot.pane.param.click_data, watch=True)
        pn.bind(self._on_row_select, self.table.widget.param.selection, watch=True)

    def show_run(self, run_id: str) -> None:
        """Open ``run_id`` in the "Run detail" tab."""
        self.detail.run_id = str(run_id)
        self.tabs.active = 1

    def _on_point_click(self, click_data) -> None:
        points = (click_data or {}).get("points") or []
        custom = points[0].get("customdata") if points else None
        if custom:
            self.show_run(custom[0])
            self.plot.pane.click_data = None  # so a second click on the same point fires too

    def _on_row_select(self, selection) -> None:
        rows = self.table.widget.selected_dataframe if selection else None
        if rows is not None and len(rows):
            self.show_run(rows["run_id"].iloc[0])

    def _controls(self) -> pn.Column:
        e = self.explorer
        return pn.Column(
            pn.pane.Markdown(pn.bind(lambda _: e.summary(), e.param.runs)),
            pn.pane.Markdown(f"Store: `{e.store_label}`", styles={"font-size": "0.8em", "color": "#666",
                                                             "overflow-wrap": "anywhere"}),
            "### Axes",
            pn.widgets.Select.from_param(e.param.quality),
            pn.widgets.Select.from_param(e.param.cost),
            pn.Row(pn.widgets.Checkbox.from_param(e.param.log_x),
                   pn.widgets.Checkbox.from_param(e.param.log_y)),
            "### Filters",
            pn.widgets.MultiChoice.from_param(e.param.methods, placeholder="all methods"),
            pn.widgets.CheckButtonGroup.from_param(e.param.statuses, color="primary",
                                                   variant="outline"),
            pn.widgets.Button.from_param(e.param.reload, color="primary", icon="refresh"),
            sizing_mode="stretch_width")

    def _content(self) -> pn.Column:
        e = self.explorer
        empty = pn.bind(lambda df: df.empty, e.param.runs)
        n_corrupt = pn.bind(lambda df: int((df.get("status") == "corrupt").sum())
                            if not df.empty else 0, e.param.runs)
        return pn.Column(
            pn.pane.Alert(EMPTY_STORE.format(store=e.store_label), alert_type="info", visible=empty),
            pn.pane.Alert(pn.bind(lambda n: f"{n} record(s) could not be read; they are listed "
                                  "in the table with status *corrupt* and their error.", n_corrupt),
                          alert_type="warning", visible=pn.bind(bool, n_corrupt)),
            pn.Card(self.plot, title="Pareto front · click a point to open its run",
                    collapsible=False, sizing_mode="stretch_width",
                    visible=pn.bind(lambda x: not x, empty)),
            pn.Card(self.table, title="Runs · click a row to open it", collapsible=False,
                    sizing_mode="stretch_width", visible=pn.bind(lambda x: not x, empty)),
            sizing_mode="stretch_width")

    def __panel__(self):
        return pn.Row(pn.Column(self.sidebar, width=300), self.tabs, sizing_mode="stretch_width")

    def template(self) -> pn.template.FastListTemplate:
        """The full page: title bar, sidebar of controls, the runs and run detail tabs."""
        return pn.template.FastListTemplate(
            title=TITLE, sidebar=[self.sidebar], main=[self.tabs], sidebar_width=320,
            accent="#3b6ea8", main_layout=None)


def create_app(store=None) -> pn.template.FastListTemplate:
    """A fresh dashboard for one session over ``store`` (path, URL, or None for the default)."""
    pn.extension("plotly", "tabulator", notifications=False)
    return Dashboard(store=store).template()
