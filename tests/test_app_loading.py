"""Reading the run store for the dashboard: the flat frame and its per-version cache."""
import sqlite3

import pandas as pd
import pytest

from workbench.app import data
from workbench.app.data import load_runs, read_frame, store_version
from workbench.runs.record import RunRecord
from workbench.runs.store import RunStore, resolve_store_url


@pytest.fixture
def store(tmp_path):
    path = tmp_path / "runs.sqlite"
    runs = RunStore(path)
    runs.add(RunRecord(method="monarch", model="mlp", parameters={"nblocks": 4, "dims": [2, 8],
                                                                   "opt": {"lr": 1e-3}},
                       metrics={"accuracy": 0.9, "split": "test"}, cost={"params": 10},
                       artifacts={"checkpoint": "x/model.pt"}, seed=1, duration_s=2.5,
                       created_at="2026-01-01T00:00:00+00:00"))
    runs.add(RunRecord(method="dense", metrics={"loss": float("nan")}, cost={"latency_ms": 1.5},
                       created_at="2026-01-02T00:00:00+00:00"))
    runs.add(RunRecord(method="gmp", status="failed", error="RuntimeError: boom",
                       created_at="2026-01-03T00:00:00+00:00"))
    with sqlite3.connect(path) as conn:
        for run_id, body in (("notjson", "{oops"), ("badfield", '{"method": "x", "extra": 1}')):
            conn.execute("INSERT INTO runs (run_id, created_at, status, method, schema_version,"
                         " body) VALUES (?, '2026-01-04', 'ok', 'x', 1, ?)", (run_id, body))
    return path


def test_read_frame_matches_the_store_frame(store):
    fast = read_frame(resolve_store_url(store))
    pd.testing.assert_frame_equal(fast, RunStore(store).frame())
    row = fast.set_index("run_id")
    assert row.loc["notjson", "status"] == "corrupt" and "JSONDecodeError" in row.loc[
        "notjson", "error"]
    assert "unknown fields" in row.loc["badfield", "error"]
    first = fast.iloc[0]
    assert first["param.dims"] == "[2, 8]" and first["param.opt"] == '{"lr": 0.001}'
    assert "checkpoint" not in fast.columns and "artifacts" not in fast.columns


def test_load_runs_reads_once_per_store_version(store, monkeypatch):
    reads = []
    original = data.read_frame
    monkeypatch.setattr(data, "read_frame", lambda url: reads.append(url) or original(url))
    load_runs(store, force=True)
    first = load_runs(store)
    assert len(reads) == 1 and len(first) == 5
    first.loc[0, "method"] = "changed"  # callers get a copy: the cached frame is untouched
    assert load_runs(store).loc[0, "method"] == "monarch" and len(reads) == 1

    version = store_version(resolve_store_url(store))
    RunStore(store).add(RunRecord(method="lowrank", created_at="2026-01-05T00:00:00+00:00"))
    assert store_version(resolve_store_url(store)) != version
    again = load_runs(store)
    assert len(reads) == 2 and "lowrank" in set(again["method"])
    load_runs(store, force=True)
    assert len(reads) == 3


def test_a_store_without_runs_table_loads_empty(tmp_path):
    path = tmp_path / "new.sqlite"
    assert store_version(resolve_store_url(path)) == (0, None)
    df = load_runs(path)
    assert df.empty and {"run_id", "status", "method", "duration_s"} <= set(df.columns)
