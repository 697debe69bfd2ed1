"""The dashboard: runs explorer (filters, grouping, Pareto plot, parallel coordinates, runs
table), run detail (with a baseline diff) and a compare tab, over one run store.

State lives in one ``RunsExplorer`` per session (``create_app`` builds a fresh ``Dashboard`` for
each browser session, so filters and selections are never shared between users); the views in
``views.py`` bind to it, which links their selections. The view is mirrored in the URL's query
(``urlstate.py``): a link opens the same axes, filters, grouping and selection.
"""
from __future__ import annotations

import datetime as _dt

import panel as pn
from panel.viewable import Viewer

from .compare_view import BaselineDiff, CompareView
from .detail import RunDetail
from .explorer import STATUSES, RunsExplorer  # noqa: F401  (STATUSES: public)
from .export import export_csv, export_filename
from .filters_panel import FilterPanel
from .views import GroupsTable, ParallelPlot, ParetoPlot, RunsTable
from workbench.runs.store import resolve_store_url

TITLE = "Structured-matrix workbench"
RUNS_TAB, DETAIL_TAB, COMPARE_TAB = 0, 1, 2
URL_PARAMETERS = ["quality", "cost", "log_x", "log_y", "filters", "group_by", "selected"]
EMPTY_STORE = """### No runs in this store yet
Each notebook execution logs one run. Create some with

```bash
workbench run notebooks/baseline.ipynb     # one run
make demo                                  # a small demo sweep
```
then press **Reload runs**. Store: `{store}`"""
PLOT_TITLE = ("Pareto front · drag to select runs (box or lasso) · click a point to open its run "
              "· double-click to clear")


def _card(content, title: str, **kwargs) -> pn.Card:
    return pn.Card(content, title=title, collapsible=False, sizing_mode="stretch_width", **kwargs)


class Dashboard(Viewer):
    """Sidebar controls plus three tabs over one run store: "Runs", "Run detail" (the run last
    clicked) and "Compare" (the selected runs side by side)."""

    def __init__(self, store=None, location=None, **params):
        super().__init__(**params)
        e = self.explorer = RunsExplorer(store=resolve_store_url(store))
        e.load()
        self.plot = ParetoPlot(explorer=e)
        self.parallel = ParallelPlot(explorer=e)
        self.table = RunsTable(explorer=e)
        self.groups = GroupsTable(explorer=e)
        self.filters = FilterPanel(explorer=e)
        self.baseline = BaselineDiff(explorer=e)
        self.detail = RunDetail(store=e.store, extras=[self.baseline])
        self.detail.param.watch(lambda ev: setattr(self.baseline, "run_id", ev.new), "run_id")
        self.compare = CompareView(explorer=e)
        self.download = pn.widgets.FileDownload(
            callback=self._export, filename=self._export_name(), label=self._export_label(),
            embed=False, color="primary", variant="outline", icon="download",
            sizing_mode="stretch_width")
        self.sidebar = self._controls()
        self.main = self._content()
        self.tabs = pn.Tabs(("Runs", self.main), ("Run detail", self.detail),
                            ("Compare", self.compare), dynamic=True, sizing_mode="stretch_width")
        self.plot.pane.param.watch(self._on_point_click, "click_data")
        self.table.widget.on_click(self._on_row_click)
        e.param.watch(self._on_selection, "selected")
        self.location = location if location is not None else pn.state.location
        if self.location is not None:
            if self.location.search:
                e.apply_query(self.location.search)
            e.param.watch(self._sync_url, URL_PARAMETERS)
            self._sync_url()
            # A served page's browser then sets the location from its address bar, undoing the
            # rewrite above: write the canonical query again once the page has loaded.
            pn.state.onload(self._sync_url)

    # ---- navigation ------------------------------------------------------------------------
    def show_run(self, run_id: str) -> None:
        """Open ``run_id`` in the "Run detail" tab."""
        self.detail.run_id = str(run_id)
        self.tabs.active = DETAIL_TAB

    def _on_point_click(self, event) -> None:
        points = (event.new or {}).get("points") or []
        custom = points[0].get("customdata") if points else None
        if not custom:
            return
        if self.explorer.group_by:  # a point is a group: select its runs
            self.explorer.select_groups([custom[0]])
        else:
            self.show_run(custom[0])
        self.plot.pane.click_data = None  # so a second click on the same point fires too

    def _on_row_click(self, event) -> None:
        if event.column == "_index" or event.column is None:
            return  # the selection checkbox
        run_id = self.table.run_at(event.row)
        if run_id:
            self.show_run(run_id)

    # ---- selection and export --------------------------------------------------------------
    def _export_label(self) -> str:
        selected, n = self.explorer.selected, len(self.explorer.filtered)
        return (f"Export {len(selected)} selected runs (CSV)" if selected
                else f"Export {n} filtered runs (CSV)")

    def _export_name(self) -> str:
        return export_filename(self.explorer.selected, _dt.date.today().isoformat())

    def _export(self):
        """The CSV download: the selected runs, or every filtered run when none is selected."""
        return export_csv(self.explorer.filtered, self.explorer.selected)

    def _on_selection(self, _=None) -> None:
        self.download.param.update(label=self._export_label(), filename=self._export_name())

    def _sync_url(self, *_) -> None:
        query = self.explorer.to_query()
        if query != self.location.search:
            self.location.search = query

    # ---- layout ------------------------------------------------------------------------------
    def _controls(self) -> pn.Column:
        e = self.explorer
        n_selected = pn.bind(lambda s: f"**{len(s)} selected**" if s else "No runs selected: "
                             "drag in the plot, brush an axis or tick table rows.", e.param.selected)
        compare = pn.widgets.Button(label="Compare selected", icon="columns", color="primary",
                                    disabled=pn.bind(lambda s: len(s) < 2, e.param.selected))
        compare.on_click(lambda _: setattr(self.tabs, "active", COMPARE_TAB))
        clear = pn.widgets.Button(label="Clear", icon="x", disabled=pn.bind(
            lambda s: not s, e.param.selected))
        clear.on_click(lambda _: e.select([]))
        self.filters.explorer.param.watch(lambda _: self._on_selection(), "filtered")
        return pn.Column(
            pn.pane.Markdown(pn.bind(lambda _: e.summary(), e.param.runs)),
            pn.pane.Markdown(f"Store: `{e.store_label}`", styles={
                "font-size": "0.8em", "color": "#666", "overflow-wrap": "anywhere"}),
            "### Axes",
            pn.widgets.Select.from_param(e.param.quality),
            pn.widgets.Select.from_param(e.param.cost),
            pn.Row(pn.widgets.Checkbox.from_param(e.param.log_x),
                   pn.widgets.Checkbox.from_param(e.param.log_y)),
            pn.widgets.Select.from_param(e.param.group_by),
            "### Filters", self.filters,
            "### Selection", pn.pane.Markdown(n_selected), pn.Row(compare, clear),
            self.download,
            pn.widgets.Button.from_param(e.param.reload, color="primary", icon="refresh"),
            sizing_mode="stretch_width")

    def _content(self) -> pn.Column:
        e = self.explorer
        empty = pn.bind(lambda df: df.empty, e.param.runs)
        shown = pn.bind(lambda x: not x, empty)
        n_corrupt = pn.bind(lambda df: int((df.get("status") == "corrupt").sum())
                            if not df.empty else 0, e.param.runs)
        return pn.Column(
            pn.pane.Alert(EMPTY_STORE.format(store=e.store_label), alert_type="info", visible=empty),
            pn.pane.Alert(pn.bind(lambda n: f"{n} record(s) could not be read; they are listed "
                                  "in the table with status *corrupt* and their error.", n_corrupt),
                          alert_type="warning", visible=pn.bind(bool, n_corrupt)),
            pn.pane.Alert(pn.bind(lambda p: "This link asks for things these runs lack:\n\n"
                                  + "\n".join(f"* {x}" for x in p), e.param.url_problems),
                          alert_type="warning", visible=pn.bind(bool, e.param.url_problems)),
            _card(self.plot, PLOT_TITLE, visible=shown),
            _card(self.parallel, "Parallel coordinates · drag along an axis to select runs",
                  visible=shown),
            _card(self.groups, "Groups · mean, std, min and max over each group's runs "
                  "(click a row to select its runs)",
                  visible=pn.bind(lambda g, x: bool(g) and not x, e.param.group_by, empty)),
            _card(self.table, "Runs · click a row to open it, tick rows to select them",
                  visible=shown),
            sizing_mode="stretch_width")

    def __panel__(self):
        return pn.Row(pn.Column(self.sidebar, width=300), self.tabs, sizing_mode="stretch_width")

    def template(self) -> pn.template.FastListTemplate:
        """The full page: title bar, sidebar of controls, the tabs."""
        return pn.template.FastListTemplate(
            title=TITLE, sidebar=[self.sidebar], main=[self.tabs], sidebar_width=320,
            accent="#3b6ea8", main_layout=None)


def create_app(store=None) -> pn.template.FastListTemplate:
    """A fresh dashboard for one session over ``store`` (path, URL, or None for the default)."""
    pn.extension("plotly", "tabulator", notifications=False)
    return Dashboard(store=store).template()
