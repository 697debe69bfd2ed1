"""The run detail view (no browser): header, tables, output notebook, inspectors, refusals."""
import html

import nbformat
import pytest
from torch import nn

from workbench.checkpoint import save_checkpoint
from workbench.methods import apply_method
from workbench.runs.record import RunRecord
from workbench.runs.store import RunStore, resolve_store_url

NOTEBOOK_MARKER = "Monarch fits the MLP"
SECRET = "root:x:0:0:SECRET"


def mlp() -> nn.Module:
    return nn.Sequential(nn.Linear(32, 64), nn.ReLU(), nn.Linear(64, 32))


def tiny_notebook(path):
    """A markdown title, a printed line and a Plotly figure saved as JSON only (as Plotly's
    notebook renderer saves it)."""
    nb = nbformat.v4.new_notebook()
    code = nbformat.v4.new_code_cell("print(1 + 1); fig", execution_count=1)
    figure = {"data": [{"type": "scatter", "x": [1, 2], "y": [3, 1], "name": "</script>"}],
              "layout": {"title": {"text": "error vs nblocks"}}}
    code.outputs = [nbformat.v4.new_output("stream", name="stdout", text="2\n"),
                    nbformat.v4.new_output("display_data", data={
                        "application/vnd.plotly.v1+json": figure, "text/plain": "Figure"})]
    nb.cells = [nbformat.v4.new_markdown_cell(f"# {NOTEBOOK_MARKER}"), code]
    nbformat.write(nb, path)


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    """A store at <tmp>/a/b/runs.sqlite with one run per case; a 'secret' file sits where
    ``../../etc/passwd`` would lead from the artifacts folder."""
    root = tmp_path_factory.mktemp("detail")
    store = RunStore(root / "a" / "b" / "runs.sqlite")
    (root / "a" / "etc").mkdir()
    (root / "a" / "etc" / "passwd").write_text(SECRET)

    def add(run_id, model=None, checkpoint=None, notebook="", **fields):
        folder = store.run_dir(run_id)
        artifacts = {}
        if model is not None:
            save_checkpoint(model, folder / "model.pt")
            artifacts["checkpoint"] = f"{run_id}/model.pt"
        if checkpoint is not None:
            artifacts["checkpoint"] = checkpoint
        if notebook == "tiny":
            tiny_notebook(folder / "output.ipynb")
            notebook = f"{run_id}/output.ipynb"
        store.add(RunRecord(run_id=run_id, method=fields.pop("method", "monarch"),
                            model="mlp-32-64", dataset="synthetic", device="cpu",
                            artifacts=artifacts, output_notebook=notebook, **fields))

    monarch = mlp()
    apply_method("monarch", monarch, nblocks=4)
    add("monarch", monarch, notebook="tiny", parameters={"nblocks": 4, "lr": 1e-3},
        metrics={"accuracy": 0.91, "split": "test"}, cost={"params": 1234567, "latency_ms": 0.123})
    lowrank = mlp()
    apply_method("lowrank", lowrank, rank=4)
    add("lowrank", lowrank, method="lowrank")
    add("dense", mlp(), method="dense")
    add("missing", checkpoint="missing/model.pt")
    (store.run_dir("corrupt") / "model.pt").write_bytes(b"definitely not a checkpoint")
    add("corrupt", checkpoint="corrupt/model.pt")
    add("escape", checkpoint="../../etc/passwd", notebook="../../etc/passwd")
    add("failed", status="failed", error="RuntimeError: CUDA out of memory <script>")
    return store


def detail_for(store, run_id):
    from workbench.app.detail import RunDetail
    return RunDetail(store=store.url, run_id=run_id)


def alert_text(view) -> str:
    import panel as pn
    return " ".join(a.object for a in view.select(pn.pane.Alert)) if view is not None else ""


def test_monarch_run_lists_layers_and_builds_figures(store):
    from workbench.app.inspectors import layer_figures

    d = detail_for(store, "monarch")
    assert d.record.run_id == "monarch" and not d.problem and not d.inspector_note
    assert list(d.layers) == ["0", "2"] and d.layer == "0"
    labels = list(d.param["layer"].names)  # label -> module name
    assert labels == ["0 · Monarch 64×32, nblocks=4", "2 · Monarch 32×64, nblocks=4"]
    figs = layer_figures(d.layers["2"])
    assert list(figs) == ["Factors", "Dense weight", "Sub-block spectra", "Permutation"]
    assert all(len(f.data) for f in figs.values())
    grid = d.figures(d.layers, "2")
    assert len(grid.objects) == 4 and not alert_text(grid)

    header = d.header(d.record, d.problem)
    text = " ".join(str(p.object) for p in header.objects)
    assert "monarch" in text and "mlp-32-64" in text and "synthetic" in text and "cpu" in text
    tables = d.tables(d.record).object
    assert "1,234,567" in tables and "0.123" in tables and "nblocks" in tables


def test_output_notebook_is_embedded(store):
    import panel as pn

    d = detail_for(store, "monarch")
    view = d.notebook(d.record)
    (frame,) = view.select(pn.pane.HTML)
    assert "<iframe" in frame.object and 'sandbox="allow-scripts' in frame.object
    page = html.unescape(frame.object)
    assert NOTEBOOK_MARKER in page
    # The JSON-only Plotly output is drawn by plotly.js, and its text cannot end the script.
    assert "Plotly.newPlot(" in page and "error vs nblocks" in page and "plotly" in page
    assert '"<\\/script>"' in page
    assert view.select(pn.widgets.FileDownload)


def test_lowrank_and_unstructured_checkpoints(store):
    from workbench.app.inspectors import layer_figures

    d = detail_for(store, "lowrank")
    assert list(d.layers) == ["0", "2"]
    figs = layer_figures(d.layers["0"])
    assert list(figs) == ["Singular values", "Dense weight"]
    assert len(figs["Singular values"].data) == 3  # weight, U, V

    d = detail_for(store, "dense")
    assert not d.layers and not d.inspector_error and "no structured layers" in d.inspector_note


@pytest.mark.parametrize("run_id, words", [("missing", "not found"), ("corrupt", "cannot be read")])
def test_missing_or_corrupt_checkpoint_shows_an_alert(store, run_id, words):
    d = detail_for(store, run_id)
    assert d.record is not None and not d.layers
    assert d.inspector_error and words in d.inspector_note
    alert = d.inspector_message(d.record, d.layers, d.inspector_note, d.inspector_error)
    assert alert.alert_type == "danger" and words in alert.object
    assert "Traceback" not in alert.object
    assert "monarch" in str(d.header(d.record, d.problem).objects[0].object)  # page still works


def test_artifact_paths_outside_the_store_are_refused(store):
    d = detail_for(store, "escape")
    assert d.inspector_error and "outside the store's artifacts" in d.inspector_note
    notebook = alert_text(d.notebook(d.record))
    assert "outside the store's artifacts" in notebook
    assert SECRET not in notebook + d.inspector_note


def test_failed_and_unknown_runs(store):
    d = detail_for(store, "failed")
    error = alert_text(d.header(d.record, d.problem))
    assert "CUDA out of memory &lt;script&gt;" in error and "<script>" not in error
    assert "no checkpoint" in d.inspector_note

    d.run_id = "nope"
    assert d.record is None and "no run <code>nope</code>" in d.problem
    assert d.header(d.record, d.problem).alert_type == "danger"
    d.run_id = ""
    assert d.record is None and not d.problem and "No run selected" in d.header(None, "").object


def test_dashboard_click_and_row_click_open_the_detail(store):
    from panel.models.tabulator import CellClickEvent

    from workbench.app.dashboard import Dashboard

    dash = Dashboard(store=store.url)
    assert dash.tabs.active == 0 and dash.detail.run_id == ""
    dash.plot.pane.click_data = {"points": [{"customdata": ["lowrank", "mlp-32-64"]}]}
    assert dash.detail.run_id == "lowrank" and dash.tabs.active == 1
    assert dash.plot.pane.click_data is None

    dash.tabs.active = 0
    rows = dash.table.widget.value
    row = int((rows["run_id"] == "monarch").to_numpy().argmax())
    dash.table.widget._process_event(CellClickEvent(model=None, column="method", row=row))
    assert dash.detail.run_id == "monarch" and dash.tabs.active == 1
    # Ticking a row selects the run (for comparing and exporting), it does not open it.
    dash.tabs.active = 0
    dash.table.widget.selection = [0]
    assert dash.explorer.selected == [rows["run_id"].iloc[0]] and dash.tabs.active == 0
    assert resolve_store_url(store.url) == dash.detail.store


def test_model_inspectors_spectra_masks_and_attention(store, tmp_path):
    import panel as pn
    import torch

    from workbench.analysis.attention import AttentionMaps
    from workbench.app.inspectors import model_figure_builders

    d = detail_for(store, "dense")
    grid = d.model_figures(d.record)
    titles = list(model_figure_builders(store.artifact, d.record.artifacts))
    assert titles[:2] == ["Weight spectra: α per layer", "Weight spectra: stable rank per layer"]
    assert "Sparsity per layer" in titles
    assert len(grid.objects) == len(titles) and not alert_text(grid)
    # attention maps saved by a run (dense and compressed) give the attention figures
    folder = store.run_dir("attention-run")
    attn = torch.softmax(torch.randn(2, 2, 5, 5), -1)
    for name, maps in (("dense", attn), ("monarch", torch.softmax(attn, -1))):
        AttentionMaps(attn=maps, tokens=list("abcde"), layer_names=["l0", "l1"],
                      layers=[0, 1], heads=[0, 1]).save(folder / f"{name}.pt")
    builders = model_figure_builders(store.artifact, {
        "attention_dense": "attention-run/dense.pt", "attention_monarch": "attention-run/monarch.pt"})
    assert {"Attention grid", "Head summaries", "Attention change"} <= set(builders)
    assert all(len(build().data) for build in builders.values())
    # a run's saved mask evolution (as inspect_masks writes it) is drawn
    import pandas as pd
    pd.DataFrame({"layer": ["a", "a", "b", "b"], "step": [0, 10, 0, 10],
                  "sparsity": [0.1, 0.5, 0.2, 0.5], "iou_prev": [None, 0.6, None, 0.7],
                  "iou_final": [0.6, 1.0, 0.7, 1.0], "flipped": [None, 0.3, None, 0.2]}
                 ).to_csv(folder / "evolution.csv", index=False)
    evolution = model_figure_builders(store.artifact, {"mask_evolution": "attention-run/evolution.csv"})
    assert len(evolution["Mask evolution across checkpoints"]().data) >= 2
    # nothing to show, and a refused path, are said, not raised
    assert "saved no checkpoint" in alert_text(d.model_figures(detail_for(store, "failed").record))
    escape = detail_for(store, "escape")
    assert "outside the store" in alert_text(escape.model_figures(escape.record))
    assert isinstance(grid, pn.GridBox)


def test_attention_grid_click_opens_that_heads_token_view():
    import torch

    from workbench.analysis.attention import AttentionMaps
    from workbench.app.attention_explorer import AttentionExplorer, clicked_head

    attn = torch.softmax(torch.randn(2, 3, 4, 4), -1)
    maps = AttentionMaps(attn=attn, tokens=list("abcd"), layer_names=["l0", "l1"],
                         layers=[0, 1], heads=[0, 1, 2])
    explorer = AttentionExplorer(maps)
    assert (explorer.layer, explorer.head) == (0, 0)
    trace = 1 * 3 + 2  # row 1 (layer 1), column 2 (head 2)
    assert clicked_head({"points": [{"curveNumber": trace}]}, explorer.grid) == (1, 2)
    explorer._grid_pane.click_data = {"points": [{"curveNumber": trace, "x": 1, "y": 2}]}
    assert (explorer.layer, explorer.head) == (1, 2)
    assert "Layer 1 (l1), head 2" in explorer.token_view().object.layout.title.text
    assert clicked_head(None, explorer.grid) is None
