"""What keeps the dashboard usable with many runs (the timings are in benchmarks/dashboard.py)."""
from workbench.app import views
from workbench.runs.record import RunRecord
from workbench.runs.store import RunStore


def test_parallel_coordinates_of_many_runs_wait_for_draw(tmp_path, monkeypatch):
    from workbench.app.dashboard import Dashboard

    store = RunStore(tmp_path / "runs.sqlite")
    for i in range(4):
        store.add(RunRecord(method="gmp", parameters={"sparsity": i / 4},
                            metrics={"accuracy": 0.9 - i / 100}, cost={"params": 100 - i}))
    monkeypatch.setattr(views, "AUTO_DRAW_RUNS", 3)
    parallel = Dashboard(store=store.url).parallel
    assert parallel.draw is False and not parallel.pane.visible
    assert len(parallel.pane.object.data) == 0  # nothing for the browser to draw

    parallel.draw = True
    assert parallel.pane.visible
    (trace,) = parallel.pane.object.data
    assert trace.type == "parcoords" and len(trace.dimensions[0].values) == 4

    monkeypatch.setattr(views, "AUTO_DRAW_RUNS", 4)
    assert Dashboard(store=store.url).parallel.draw is True
