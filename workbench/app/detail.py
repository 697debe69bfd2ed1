"""Run detail: one run's header, its numbers, its output notebook and its inspector figures.

``RunDetail(store=url, run_id=...)`` is a ``pn.viewable.Viewer``; setting ``run_id`` reloads it.
Every file is opened through ``RunStore.artifact`` (which refuses paths outside the store's
artifacts folder), and every failure — unknown run, missing or corrupt checkpoint, unreadable
notebook — shows as an alert while the rest of the page keeps working.
"""
from __future__ import annotations

import functools
import html
import json
from pathlib import Path
from typing import Callable

import panel as pn
import param
import plotly.graph_objects as go
from panel.viewable import Viewer

from .inspectors import checkpoint_layers, describe_layer, figure_builders, model_figure_builders
from workbench.runs.record import RunRecord
from workbench.runs.store import RunStore

NOTEBOOK_HEIGHT = 640  # px: the output notebook scrolls inside a box this tall
FIGURE_HEIGHT = 400
HINT = ("### No run selected\nClick a point in the Pareto plot, or a row of the runs table, "
        "to see that run here.")
TABLE_CSS = """
.grid { display: grid; grid-template-columns: repeat(auto-fill, minmax(260px, 1fr));
        gap: 8px 32px; align-items: start; }
table { border-collapse: collapse; font-size: 13px; width: 100%; }
caption { text-align: left; font-weight: 600; padding: 0 0 4px 0; color: #333; }
th, td { padding: 3px 10px 3px 0; border-bottom: 1px solid #eee; vertical-align: top; }
th { text-align: left; font-weight: normal; color: #555; white-space: nowrap; }
td { text-align: right; font-family: ui-monospace, monospace; overflow-wrap: anywhere; }
"""
STATUS_COLOURS = {"ok": "#2e7d32", "failed": "#c62828"}


def _text(value) -> str:
    """Record or error text for Markdown / HTML: escaped (records are data, not markup)."""
    return html.escape(str(value), quote=False)


def _code(value) -> str:
    return f"<code>{_text(value)}</code>"


@functools.lru_cache(maxsize=8)
def open_store(url: str) -> RunStore:
    """One RunStore (engine) per store URL and process."""
    return RunStore(url)


def format_value(value) -> str:
    """A table cell: thousands separators for big numbers, 4 significant digits otherwise."""
    if isinstance(value, bool) or value is None:
        return str(value)
    if isinstance(value, int):
        return f"{value:,}"
    if isinstance(value, float):
        if value.is_integer() and abs(value) < 1e15:
            return f"{value:,.0f}"
        return f"{value:,.1f}" if abs(value) >= 1e4 else f"{value:.4g}"
    return str(value)


def key_value_tables(groups: dict[str, dict]) -> pn.pane.HTML:
    """Compact two-column tables (name, value), one per non-empty group, side by side in a
    grid that wraps on narrow screens."""
    tables = []
    for title, values in groups.items():
        if values:
            rows = "".join(f"<tr><th>{_text(k)}</th><td>{_text(format_value(v))}</td></tr>"
                           for k, v in values.items())
            tables.append(f"<table><caption>{html.escape(title)}</caption>{rows}</table>")
    return pn.pane.HTML(f'<div class="grid">{"".join(tables)}</div>', stylesheets=[TABLE_CSS],
                        sizing_mode="stretch_width")


# ---- the output notebook ------------------------------------------------------------------------
PLOTLY_MIME = "application/vnd.plotly.v1+json"
# Plotly's bundle registers as an AMD module when require.js (which the lab template loads) is
# present, so hide ``define`` while it loads to get the usual global ``Plotly``.
PLOTLY_LOADER = ('<script>window._wbDefine = window.define; window.define = undefined;</script>'
                 '<script src="{src}"></script><script>window.define = window._wbDefine;</script>')


def plotly_js_url() -> str:
    """Where the served page gets plotly.js: Panel's bundled copy (else the CDN)."""
    try:
        from panel.models.plotly import PlotlyPlot
        return PlotlyPlot.__javascript__[0]
    except (ImportError, AttributeError, IndexError):
        from plotly.offline import get_plotlyjs_version
        return f"https://cdn.plot.ly/plotly-{get_plotlyjs_version()}.min.js"


def _script_json(value) -> str:
    return json.dumps(value).replace("</", "<\\/")  # never close the <script> early


def render_plotly_outputs(nb) -> int:
    """Give every Plotly figure output (JSON only, which nbconvert cannot show) an HTML version
    that draws it with plotly.js; returns how many were added."""
    count = 0
    for cell in nb.cells:
        for output in cell.get("outputs", []):
            data = output.get("data", {})
            if PLOTLY_MIME not in data or "text/html" in data:
                continue
            fig, div = data[PLOTLY_MIME], f"wb-plotly-{count}"
            height = fig.get("layout", {}).get("height") or 450
            data["text/html"] = (
                (PLOTLY_LOADER.format(src=plotly_js_url()) if count == 0 else "")
                + f'<div id="{div}" style="height:{height}px"></div><script>Plotly.newPlot('
                f'"{div}", {_script_json(fig.get("data", []))}, '
                f'{_script_json(fig.get("layout", {}))}, {{"displaylogo": false}});</script>')
            count += 1
    return count


@pn.cache(max_items=16)
def _notebook_html(path: str, mtime_ns: int) -> str:
    import nbformat
    from nbconvert import HTMLExporter
    nb = nbformat.read(path, as_version=4)
    render_plotly_outputs(nb)
    body, _ = HTMLExporter(template_name="lab").from_notebook_node(nb)
    return body


def notebook_html(path: Path) -> str:
    """The notebook at ``path`` as a standalone HTML page (cached until the file changes)."""
    return _notebook_html(str(path), path.stat().st_mtime_ns)


def _figure_pane(title: str, build: Callable[[], go.Figure]):
    try:
        fig = build()
    except Exception as exc:  # one bad figure shows its error; the others still draw
        return pn.pane.Alert(f"**{title}** could not be drawn: {type(exc).__name__}: "
                             f"{_text(exc)}",
                             alert_type="warning", sizing_mode="stretch_width")
    fig.update_layout(height=FIGURE_HEIGHT, margin=dict(l=50, r=20, t=60, b=45),
                      title_font_size=13, title_x=0.01)
    return pn.pane.Plotly(fig, sizing_mode="stretch_width", height=FIGURE_HEIGHT,
                          config={"displaylogo": False, "responsive": True})


# ---- the view ----------------------------------------------------------------------------------
class RunDetail(Viewer):
    """One run: header, parameter / metric / cost tables, inspectors and output notebook."""

    run_id = param.String(default="", doc="The run shown; empty shows a hint")
    store = param.String(doc="SQLAlchemy URL of the run store")
    record = param.ClassSelector(class_=RunRecord, default=None, allow_None=True,
                                 doc="The loaded record (None: nothing selected, or problem)")
    problem = param.String(default="", doc="Why the run could not be loaded")
    layers = param.Dict(default={}, doc="Structured layers of the run's checkpoint")
    inspector_note = param.String(default="", doc="Why there are no inspector figures")
    inspector_error = param.Boolean(default=False, doc="inspector_note is an error")
    layer = param.Selector(default=None, objects=[], allow_None=True, label="Layer")

    def __init__(self, extras=(), **params):
        """``extras``: more views shown under the run's tables (e.g. a baseline diff)."""
        super().__init__(**params)
        self._extras = list(extras)
        self._layout = self._build()

    @property
    def run_store(self) -> RunStore:
        return open_store(self.store)

    # ---- state -----------------------------------------------------------------------------
    @param.depends("run_id", watch=True, on_init=True)
    def _load(self) -> None:
        record, problem = None, ""
        if self.run_id:
            try:
                record = self.run_store.get(self.run_id)
            except KeyError:
                problem = f"There is no run {_code(self.run_id)} in this store."
            except Exception as exc:  # a corrupt record, an unreachable database
                problem = (f"Run {_code(self.run_id)} cannot be read: "
                           f"{type(exc).__name__}: {_text(exc)}")
        layers, note, is_error = self._load_layers(record)
        with param.parameterized.batch_call_watchers(self):
            self.record, self.problem = record, problem
            self.layers, self.inspector_note, self.inspector_error = layers, note, is_error
            self.param.layer.objects = {f"{name or '(model)'} · {describe_layer(m)}": name
                                        for name, m in layers.items()}
            self.layer = next(iter(layers), None)

    def _load_layers(self, record: RunRecord | None) -> tuple[dict, str, bool]:
        """(layers, note, note is an error) for the record's checkpoint artifact."""
        if record is None:
            return {}, "", False
        relative = record.artifacts.get("checkpoint")
        shown = _code(relative)
        if not relative:
            return {}, "This run saved no checkpoint, so there is nothing to inspect.", False
        try:
            layers = checkpoint_layers(self.run_store.artifact(relative))
        except Exception as exc:  # missing, corrupt, refused: say so, never a traceback
            return {}, f"The checkpoint {shown} cannot be inspected: {_text(exc)}", True
        if not layers:
            return {}, (f"The checkpoint {shown} has no structured layers (Monarch or "
                        "low-rank): nothing to inspect."), False
        return layers, "", False

    # ---- views -----------------------------------------------------------------------------
    def header(self, record: RunRecord | None, problem: str):
        if problem:
            return pn.pane.Alert(problem, alert_type="danger", sizing_mode="stretch_width")
        if record is None:
            return pn.pane.Markdown(HINT, sizing_mode="stretch_width")
        r = record
        colour = STATUS_COLOURS.get(r.status, "#555")
        badge = (f'<span style="background:{colour};color:white;border-radius:4px;'
                 f'padding:1px 8px;font-size:0.8em;vertical-align:middle">{html.escape(r.status)}'
                 "</span>")
        facts = [("model", r.model), ("dataset", r.dataset), ("device", r.device),
                 ("created", r.created_at[:19].replace("T", " ")),
                 ("duration", f"{r.duration_s:.1f} s" if r.duration_s is not None else ""),
                 ("seed", r.seed), ("torch", r.torch_version), ("commit", r.git_commit[:10]),
                 ("notebook", r.notebook)]
        line = " · ".join(f"{k} <b>{_text(v)}</b>" for k, v in facts if v not in ("", None))
        parts = [pn.pane.HTML(
            f'<h2 style="margin:0 0 4px 0">Run <code>{html.escape(r.run_id)}</code> · '
            f"{html.escape(r.method)} {badge}</h2>"
            f'<div style="color:#555;font-size:0.9em">{line}</div>', sizing_mode="stretch_width")]
        if r.status == "failed":
            error = _text(r.error or "(no error text)")
            parts.append(pn.pane.Alert(f"**This run failed.**<pre>{error}</pre>",
                                       alert_type="danger", sizing_mode="stretch_width"))
        return pn.Column(*parts, sizing_mode="stretch_width")

    def tables(self, record: RunRecord | None):
        if record is None:
            return pn.Spacer(height=0)
        return key_value_tables({
            "Parameters": record.parameters, "Metrics": record.metrics, "Cost": record.cost,
            "Artifacts": {k: v for k, v in {**record.artifacts,
                                            "output notebook": record.output_notebook}.items()
                          if v}})

    def notebook(self, record: RunRecord | None):
        if record is None:
            return pn.Spacer(height=0)
        if not record.output_notebook:
            return pn.pane.Alert("This run has no output notebook.", alert_type="info")
        try:
            path = self.run_store.artifact(record.output_notebook)
            page = notebook_html(path)
        except Exception as exc:
            return pn.pane.Alert(f"The output notebook {_code(record.output_notebook)} cannot "
                                 f"be shown: {_text(exc)}", alert_type="warning",
                                 sizing_mode="stretch_width")
        frame = (f'<iframe title="output notebook" srcdoc="{html.escape(page, quote=True)}" '
                 'sandbox="allow-scripts allow-popups" style="width:100%;height:100%;'
                 'border:1px solid #ddd;border-radius:4px;background:white"></iframe>')
        download = pn.widgets.FileDownload(
            file=str(path), filename=f"{record.run_id}-{path.name}", embed=False,
            label=f"Download {path.name}", color="light", icon="download", width=260)
        return pn.Column(download, pn.pane.HTML(frame, height=NOTEBOOK_HEIGHT,
                                                sizing_mode="stretch_width"),
                         sizing_mode="stretch_width")

    def inspector_message(self, record, layers: dict, note: str, is_error: bool):
        """Why there is nothing to inspect, or which checkpoint the figures come from."""
        if record is None:
            return pn.Spacer(height=0)
        if note:
            return pn.pane.Alert(note, alert_type="danger" if is_error else "info",
                                 sizing_mode="stretch_width")
        return pn.pane.Markdown(
            f"Checkpoint {_code(record.artifacts.get('checkpoint'))} holds {len(layers)} "
            "structured layer(s); choose one to inspect.",
            sizing_mode="stretch_width", styles={"color": "#555"})

    def figures(self, layers: dict, layer_name):
        layer = layers.get(layer_name) if layer_name is not None else None
        if layer is None:
            return pn.Spacer(height=0)
        panes = [_figure_pane(t, b) for t, b in figure_builders(layer).items()]
        return pn.GridBox(*panes, ncols=2, sizing_mode="stretch_width")

    def model_figures(self, record: RunRecord | None):
        """Spectra, masks and attention of the whole model, from the run's artifacts."""
        if record is None:
            return pn.Spacer(height=0)
        try:
            builders = model_figure_builders(self.run_store.artifact, record.artifacts)
        except Exception as exc:  # a missing or refused artifact: say so, never a traceback
            return pn.pane.Alert(f"The run's artifacts cannot be inspected: {_text(exc)}",
                                 alert_type="danger", sizing_mode="stretch_width")
        if not builders:
            return pn.pane.Alert("This run saved no checkpoint, masks or attention maps.",
                                 alert_type="info", sizing_mode="stretch_width")
        panes = [_figure_pane(t, b) for t, b in builders.items()
                 if t not in ("Attention grid", "Token view")]
        grid = pn.GridBox(*panes, ncols=2, sizing_mode="stretch_width")
        attention = sorted(k for k in record.artifacts if k.startswith("attention"))
        if not attention:
            return grid
        from workbench.analysis.attention import AttentionMaps

        from .attention_explorer import AttentionExplorer
        maps = AttentionMaps.load(self.run_store.artifact(record.artifacts[attention[0]]))
        return pn.Column(AttentionExplorer(maps), grid, sizing_mode="stretch_width")

    def _build(self) -> pn.Column:
        p = self.param
        has_layers = pn.bind(bool, p.layers)
        inspectors = pn.Column(
            pn.bind(self.inspector_message, p.record, p.layers, p.inspector_note,
                    p.inspector_error),
            pn.widgets.Select.from_param(p.layer, width=420, visible=has_layers),
            pn.panel(pn.bind(self.figures, p.layers, p.layer), loading_indicator=True),
            sizing_mode="stretch_width")
        notebook = pn.panel(pn.bind(self.notebook, p.record), loading_indicator=True, lazy=True,
                            sizing_mode="stretch_width")
        model = pn.panel(pn.bind(self.model_figures, p.record), loading_indicator=True,
                         lazy=True, sizing_mode="stretch_width")
        sections = pn.Tabs(("Inspectors", inspectors), ("Model: spectra, masks, attention", model),
                           ("Output notebook", notebook),
                           dynamic=True, sizing_mode="stretch_width",
                           visible=pn.bind(lambda r: r is not None, p.record))
        return pn.Column(pn.bind(self.header, p.record, p.problem),
                         pn.bind(self.tables, p.record), *self._extras, sections,
                         sizing_mode="stretch_width")

    def __panel__(self):
        return self._layout
