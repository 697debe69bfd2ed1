"""Comparison views: a run against a chosen baseline run (in the run detail), and the selected
runs side by side (the "Compare" tab). The frames come from ``workbench.app.compare``.
"""
from __future__ import annotations

import html

import pandas as pd
import panel as pn
import param
from panel.viewable import Viewer

from .compare import baseline_candidates, compare_frame, diff_vs_baseline
from .data import higher_is_better
from .detail import TABLE_CSS, format_value
from .explorer import RunsExplorer
from .pareto import key_params

MAX_BASELINES = 200  # newest candidates offered in the baseline selector
MAX_COMPARED = 12    # runs side by side; more would not fit a screen
BETTER, WORSE = "#2e7d32", "#c62828"
COMPARE_HINT = ("### Nothing to compare yet\nSelect two or more runs — tick rows in the runs "
                "table, or drag a box or lasso in the Pareto plot — then open this tab.")


def _cell(value) -> str:
    return "" if value is None or (isinstance(value, float) and pd.isna(value)) else html.escape(
        format_value(value), quote=False)


def _change_cell(section: str, name: str, change: float) -> str:
    """``+3.1 %`` coloured green when the run is better than the baseline, red when worse."""
    if pd.isna(change):
        return ""
    better = (change > 0) == (higher_is_better(name) if section == "metric" else False)
    colour = BETTER if (better and change != 0) else (WORSE if change != 0 else "#555")
    return f'<span style="color:{colour}">{change:+.1%}</span>'


def diff_html(diff: pd.DataFrame) -> str:
    """The baseline diff as an HTML table: section, name, run, baseline, change."""
    rows = "".join(
        f"<tr><th>{html.escape(r.section)}</th><th>{html.escape(str(r.name))}</th>"
        f"<td>{_cell(r.run)}</td><td>{_cell(r.baseline)}</td>"
        f"<td>{_change_cell(r.section, str(r.name), r.change)}</td></tr>"
        for r in diff.itertuples())
    return ("<table><thead><tr><th></th><th></th><th>this run</th><th>baseline</th>"
            f"<th>change</th></tr></thead><tbody>{rows}</tbody></table>")


class BaselineDiff(Viewer):
    """What differs between the run shown and a baseline run chosen from runs of the same model
    and dataset (dense runs first): parameters, run fields, metrics and cost with the change."""

    explorer = param.ClassSelector(class_=RunsExplorer)
    run_id = param.String(default="")
    baseline = param.Selector(default=None, objects=[], allow_None=True, label="Baseline run")

    def __init__(self, **params):
        super().__init__(**params)
        self._select = pn.widgets.Select.from_param(self.param.baseline, width=420)
        self._layout = pn.Column(
            pn.pane.Markdown("#### Against a baseline run", margin=(0, 10)), self._select,
            pn.bind(self.view, self.param.run_id, self.param.baseline),
            sizing_mode="stretch_width", visible=False)
        self.explorer.param.watch(lambda _: self._choices(), ["runs"])
        self._choices()

    @param.depends("run_id", watch=True)
    def _choices(self) -> None:
        runs = self.explorer.runs
        if not self.run_id or runs.empty or self.run_id not in set(runs["run_id"]):
            self.param.baseline.objects, self.baseline = [], None
            self._layout.visible = False
            return
        candidates = baseline_candidates(runs, self.run_id).head(MAX_BASELINES)
        params = key_params(candidates, 3)
        labels = candidates["run_id"] + " · " + candidates["method"].astype(str)
        for column in params:
            labels = labels + (" · " + column[6:] + "=" + candidates[column].astype(str)).where(
                candidates[column].notna(), "")
        options = dict(zip(labels, candidates["run_id"]))
        keep = self.baseline in options.values()
        self.param.baseline.objects = options
        if not keep:
            self.baseline = next(iter(options.values()), None)
        self._layout.visible = bool(options)

    def view(self, run_id: str, baseline: str | None):
        if not run_id or not baseline:
            return pn.Spacer(height=0)
        try:
            diff = diff_vs_baseline(self.explorer.runs, run_id, baseline)
        except KeyError as exc:
            return pn.pane.Alert(html.escape(str(exc)), alert_type="warning")
        note = ("Same parameters; only the numbers differ." if not
                (diff["section"] == "parameter").any() else "")
        return pn.Column(pn.pane.HTML(diff_html(diff), stylesheets=[TABLE_CSS],
                                      sizing_mode="stretch_width"),
                         pn.pane.Markdown(note, visible=bool(note)), sizing_mode="stretch_width")

    def __panel__(self):
        return self._layout


def compare_html(frame: pd.DataFrame, methods: dict[str, str]) -> str:
    """Runs as columns (headed by id and method), fields as rows grouped by section; the best
    value of each metric and cost row in bold."""
    head = "".join(f"<th><code>{html.escape(r)}</code><br>{html.escape(methods.get(r, ''))}</th>"
                   for r in frame.columns)
    body, last = [], None
    for (section, name), values in frame.iterrows():
        if section != last:
            body.append(f'<tr><th colspan="{len(frame.columns) + 1}" style="padding-top:8px;'
                        f'font-weight:600;color:#333">{html.escape(section)}</th></tr>')
            last = section
        numbers = pd.to_numeric(values, errors="coerce")
        best = None
        if section in ("metric", "cost") and numbers.notna().sum() > 1:
            best = numbers.idxmax() if section == "metric" and higher_is_better(name) else (
                numbers.idxmin())
        cells = "".join(f"<td>{'<b>' if r == best else ''}{_cell(v)}{'</b>' if r == best else ''}"
                        "</td>" for r, v in values.items())
        body.append(f"<tr><th>{html.escape(str(name))}</th>{cells}</tr>")
    return f"<table><thead><tr><th></th>{head}</tr></thead><tbody>{''.join(body)}</tbody></table>"


class CompareView(Viewer):
    """The selected runs side by side: run fields and parameters that differ, metrics, cost."""

    explorer = param.ClassSelector(class_=RunsExplorer)
    only_differences = param.Boolean(default=True, label="Only parameters that differ")

    def __init__(self, **params):
        super().__init__(**params)
        self._layout = pn.Column(
            pn.widgets.Checkbox.from_param(self.param.only_differences),
            pn.bind(self.view, self.explorer.param.selected, self.param.only_differences),
            sizing_mode="stretch_width")

    def view(self, selected: list[str], only_differences: bool):
        if len(selected) < 2:
            return pn.pane.Markdown(COMPARE_HINT, sizing_mode="stretch_width")
        shown = selected[:MAX_COMPARED]
        frame = compare_frame(self.explorer.runs, shown, only_differences)
        methods = dict(zip(self.explorer.runs["run_id"], self.explorer.runs["method"].astype(str)))
        note = (f"Showing the first {MAX_COMPARED} of {len(selected)} selected runs."
                if len(selected) > MAX_COMPARED else f"{len(shown)} runs.")
        return pn.Column(
            pn.pane.Markdown(f"### Comparing selected runs\n{note} Best metric and cost in "
                             "**bold**.", sizing_mode="stretch_width"),
            pn.pane.HTML(compare_html(frame, methods), stylesheets=[TABLE_CSS, COMPARE_CSS],
                         sizing_mode="stretch_width", css_classes=["wb-compare"]),
            sizing_mode="stretch_width")

    def __panel__(self):
        return self._layout


COMPARE_CSS = "table { width: auto; } td { min-width: 110px; } thead th { text-align: right; }"
