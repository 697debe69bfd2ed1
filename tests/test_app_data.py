"""Dashboard data helpers, the Pareto figure and the Dashboard object, without a browser."""
import math
import sqlite3

import pandas as pd
import pytest

from workbench.app.data import (cost_columns, higher_is_better, load_runs, pareto_front,
                                quality_columns)
from workbench.app.pareto import pareto_figure
from workbench.runs.record import RunRecord
from workbench.runs.store import RunStore


def ids(df):
    return list(df["run_id"])


def frame(points, y="metric.accuracy"):
    """Test frame from (run_id, cost, quality[, method]) tuples."""
    rows = [dict(run_id=p[0], **{"cost.flops": p[1], y: p[2]},
                 method=p[3] if len(p) > 3 else "m") for p in points]
    return pd.DataFrame(rows)


# ---- pareto_front ----------------------------------------------------------------------------
def test_front_drops_dominated_points_and_sorts_by_cost():
    df = frame([("c", 3, 0.9), ("a", 1, 0.5), ("x", 2, 0.4), ("b", 2, 0.7), ("y", 4, 0.8)])
    assert ids(pareto_front(df, "cost.flops", "metric.accuracy")) == ["a", "b", "c"]


def test_front_ties():
    # Same cost: only the best quality survives; same quality: only the cheapest.
    df = frame([("a", 1, 0.5), ("a2", 1, 0.4), ("b", 2, 0.7), ("b2", 3, 0.7)])
    assert ids(pareto_front(df, "cost.flops", "metric.accuracy")) == ["a", "b"]
    # Exact duplicates do not dominate each other: both stay on the front.
    df = frame([("a", 1, 0.5), ("b", 2, 0.7), ("b_again", 2, 0.7)])
    assert ids(pareto_front(df, "cost.flops", "metric.accuracy")) == ["a", "b", "b_again"]


def test_front_ignores_nan_rows():
    df = frame([("a", 1, 0.5), ("nan_q", 0.5, math.nan), ("nan_c", None, 0.99), ("b", 2, 0.6)])
    assert ids(pareto_front(df, "cost.flops", "metric.accuracy")) == ["a", "b"]
    assert pareto_front(df.iloc[0:0], "cost.flops", "metric.accuracy").empty


@pytest.mark.parametrize("metric", ["metric.loss", "metric.bits_per_byte", "metric.perplexity"])
def test_front_lower_is_better_metrics(metric):
    assert not higher_is_better(metric) and higher_is_better("metric.accuracy")
    df = frame([("a", 1, 3.0), ("b", 2, 2.0), ("worse", 3, 2.5), ("c", 4, 1.0)], y=metric)
    assert ids(pareto_front(df, "cost.flops", metric)) == ["a", "b", "c"]
    # Overriding the direction flips the answer.
    assert ids(pareto_front(df, "cost.flops", metric, maximize_y=True)) == ["a"]


def test_front_maximized_cost_axis():
    df = frame([("slow", 10, 0.9), ("fast", 100, 0.8), ("bad", 50, 0.7)])
    assert ids(pareto_front(df, "cost.flops", "metric.accuracy", minimize_x=False)) == [
        "slow", "fast"]


# ---- the figure --------------------------------------------------------------------------------
def test_figure_has_one_point_per_run_and_one_trace_per_method():
    df = frame([("a", 1, 0.5, "gmp"), ("b", 2, 0.7, "gmp"), ("c", 3, 0.8, "monarch"),
                ("d", 4, None, "monarch"), ("e", 5, 0.9, "dense")])
    fig = pareto_figure(df, "metric.accuracy", "cost.flops", log_x=True)
    markers = [t for t in fig.data if t.mode == "markers"]
    assert sorted(t.name for t in markers) == ["dense", "gmp", "monarch"]
    assert sum(len(t.x) for t in markers) == 4  # "d" has no accuracy
    assert sorted(t.customdata[i][0] for t in markers for i in range(len(t.x))) == list("abce")
    assert all(t.mode == "lines" for t in fig.data if t not in markers)
    assert fig.layout.xaxis.type == "log" and fig.layout.yaxis.type == "linear"


@pytest.mark.parametrize("df", [pd.DataFrame(), frame([("a", None, 0.5)])])
def test_figure_for_nothing_to_plot_explains_why(df):
    fig = pareto_figure(df, "metric.accuracy", "cost.flops")
    assert len(fig.data) == 0 and fig.layout.annotations[0].text


# ---- store -> frame -> dashboard --------------------------------------------------------------
@pytest.fixture
def store_path(tmp_path):
    path = tmp_path / "runs.sqlite"
    store = RunStore(path)
    for i, (method, acc, flops) in enumerate([("dense", 0.91, 2.1e6), ("gmp", 0.9, 1.1e6),
                                              ("gmp", 0.86, 2.3e5), ("monarch", 0.88, 5.2e5)]):
        store.add(RunRecord(method=method, model="mlp", dataset="mnist1d", seed=i,
                            parameters={"lr": 1e-3, "sparsity": i / 4},
                            metrics={"accuracy": acc, "loss": 1 - acc, "split": "test"},
                            cost={"flops_per_sample": flops, "params": flops / 4},
                            duration_s=3.0 + i, created_at=f"2026-01-0{i + 1}T00:00:00+00:00"))
    store.add(RunRecord(method="gmp", status="failed", error="RuntimeError: boom"))
    with sqlite3.connect(path) as conn:  # a row whose JSON body is broken
        conn.execute("INSERT INTO runs (run_id, created_at, status, method, schema_version, body)"
                     " VALUES ('badbody', '2026-01-09', 'ok', 'gmp', 1, '{not json')")
    return path


def test_load_runs_and_column_helpers(store_path):
    df = load_runs(store_path, force=True)
    assert len(df) == 6
    assert quality_columns(df) == ["metric.accuracy", "metric.loss"]  # split is text
    assert cost_columns(df) == ["cost.flops_per_sample", "cost.params", "duration_s"]
    bad = df.set_index("run_id").loc["badbody"]
    assert bad["status"] == "corrupt" and bad["method"] == "?" and bad["error"]


def test_dashboard_on_a_seeded_store(store_path):
    import panel as pn

    from workbench.app.dashboard import Dashboard, create_app

    dash = Dashboard(store=store_path)
    e = dash.explorer
    assert (e.quality, e.cost) == ("metric.accuracy", "cost.flops_per_sample")
    assert set(e.runs["status"]) == {"ok", "failed", "corrupt"}
    points = lambda: sum(len(t.x) for t in dash.plot.pane.object.data if t.mode == "markers")
    assert points() == 4
    table = dash.table.widget.value
    assert len(table) == 6 and "corrupt" in set(table["status"])
    assert table["error"].str.contains("boom").any()

    e.set_filter("method", ["gmp"])  # the corrupt row's method is unknown ("?"): it drops out
    assert points() == 2 and len(dash.table.widget.value) == 3
    e.set_filter("status", ["ok"])
    assert len(dash.table.widget.value) == 2
    e.param.update(quality="metric.loss", cost="cost.params", log_x=True)
    fig = dash.plot.pane.object
    assert fig.layout.xaxis.type == "log" and "loss" in fig.layout.yaxis.title.text
    assert "loss" in dash.table.widget.value.columns

    # Reload picks up a run written after the dashboard opened.
    RunStore(store_path).add(RunRecord(method="gmp", metrics={"loss": 0.2}, cost={"params": 9.0}))
    (button,) = [b for b in dash.sidebar.select(pn.widgets.Button) if b.label == "Reload runs"]
    button.param.trigger("value")  # what a click in the browser does
    assert len(e.runs) == 7 and points() == 3
    assert create_app(store_path) is not None


def test_dashboard_on_an_empty_store(tmp_path):
    from workbench.app.dashboard import Dashboard

    dash = Dashboard(store=tmp_path / "empty.sqlite")
    alert = dash.main[0]
    assert alert.visible and "workbench run notebooks/baseline.ipynb" in alert.object
    assert dash.explorer.quality is None and len(dash.table.widget.value) == 0
