import json
import multiprocessing as mp

import pytest
import sqlalchemy as sa

from workbench.runs import CorruptRecord, RecordError, RunRecord, RunStore, StoreError
from workbench.runs.store import meta_table, runs_table


def _record(i=0, **kw):
    return RunRecord(method=kw.pop("method", "dense"), parameters={"width": 32 * (i + 1)},
                     metrics={"accuracy": 0.5 + i / 100, "split": "test"},
                     cost={"params": 1000 + i, "latency_ms": 1.5}, seed=i, **kw)


def test_add_and_read_back(isolated_store):
    store = RunStore()
    assert store.url.endswith(str(isolated_store))
    ids = [store.add(_record(i)) for i in range(3)]
    assert len(store) == 3
    got = store.get(ids[1])
    assert got.parameters == {"width": 64} and got.metrics["accuracy"] == pytest.approx(0.51)
    frame = store.frame()
    assert list(frame["run_id"]) == ids
    assert {"param.width", "metric.accuracy", "cost.params", "metric.split"} <= set(frame.columns)


def test_append_only_refuses_same_id():
    store = RunStore()
    record = _record()
    store.add(record)
    with pytest.raises(StoreError, match="append-only"):
        store.add(record)


def test_filters_and_missing_run():
    store = RunStore()
    store.add(_record(0, method="dense"))
    store.add(_record(1, method="monarch", status="failed", error="boom"))
    assert [r.method for r in store.records(method="monarch")] == ["monarch"]
    assert [r.error for r in store.records(status="failed")] == ["boom"]
    with pytest.raises(KeyError, match="no run 'nope'"):
        store.get("nope")


@pytest.mark.parametrize("bad, match", [
    (dict(method=""), "method"),
    (dict(method="x", status="done"), "status"),
    (dict(method="x", metrics={"acc": [1, 2]}), "number or string"),
    (dict(method="x", cost={"flops": object()}), "JSON"),
    (dict(method="x", model=None), "'model' must be a string, got NoneType"),
    (dict(method="x", device=["gpu"]), "'device' must be a string"),
    (dict(method="x", created_at=None), "'created_at' must be a non-empty string"),
    (dict(method="x", run_id=""), "'run_id' must be a non-empty string"),
    (dict(method="x", error=3), "'error' must be a string or None"),
])
def test_bad_records_are_refused(bad, match):
    with pytest.raises(RecordError, match=match):
        RunRecord(**bad)


def test_corrupt_row_is_reported_not_dropped():
    store = RunStore()
    good = store.add(_record())
    with store.engine.begin() as conn:
        conn.execute(runs_table.insert().values(
            run_id="broken", created_at="2026-01-01", status="ok", method="dense",
            schema_version=1, body="{not json"))
        conn.execute(runs_table.insert().values(
            run_id="alien", created_at="2026-01-02", status="ok", method="dense",
            schema_version=1, body=json.dumps({"method": "x", "surprise": 1})))
    records = list(store.records())
    corrupt = [r for r in records if isinstance(r, CorruptRecord)]
    assert [r.run_id for r in corrupt] == ["broken", "alien"]
    assert "JSONDecodeError" in corrupt[0].error and "surprise" in corrupt[1].error
    frame = store.frame()
    assert set(frame["status"]) == {"ok", "corrupt"} and good in set(frame["run_id"])
    with pytest.raises(StoreError, match="corrupt"):
        store.get("broken")


def test_schema_version_is_checked():
    store = RunStore()
    assert store.schema_version == 1
    with store.engine.begin() as conn:
        conn.execute(meta_table.update().values(value="99"))
    with pytest.raises(StoreError, match="schema version 99"):
        RunStore()


def _writer(path, worker, count):
    store = RunStore(path)
    for i in range(count):
        store.add(RunRecord(method=f"w{worker}", parameters={"i": i, "worker": worker},
                            metrics={"accuracy": i / count}))


def test_many_writers_lose_nothing(isolated_store):
    """8 processes each write 200 records at once; all 1,600 come back intact."""
    ctx = mp.get_context("spawn")
    procs = [ctx.Process(target=_writer, args=(str(isolated_store), w, 200)) for w in range(8)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(timeout=300)
    assert [p.exitcode for p in procs] == [0] * 8
    records = list(RunStore().records())
    assert len(records) == 1600
    assert not [r for r in records if isinstance(r, CorruptRecord)]
    seen = {(r.parameters["worker"], r.parameters["i"]) for r in records}
    assert seen == {(w, i) for w in range(8) for i in range(200)}


def test_store_accepts_sqlalchemy_url(tmp_path):
    store = RunStore(f"sqlite:///{tmp_path / 'other.db'}")
    store.add(_record())
    assert len(RunStore(str(tmp_path / "other.db"))) == 1
    assert store.artifacts_root == (tmp_path / "artifacts").resolve()


@pytest.mark.parametrize("given, absolute", [
    ("sqlite:///rel.sqlite", "sqlite:///{cwd}/rel.sqlite"),
    ("sqlite+pysqlite:///sub/rel.db?timeout=3", "sqlite+pysqlite:///{cwd}/sub/rel.db?timeout=3"),
    ("sqlite:///{cwd}/abs.sqlite", "sqlite:///{cwd}/abs.sqlite"),
    ("sqlite:///:memory:", "sqlite:///:memory:"),
    ("sqlite://", "sqlite://"),
])
def test_a_relative_sqlite_url_is_made_absolute(tmp_path, monkeypatch, given, absolute):
    """The store URL is handed to notebook kernels, which run in another folder: a relative
    SQLite URL once reached them as written and opened another file there."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "sub").mkdir()
    cwd = str(tmp_path.resolve())
    assert RunStore(given.format(cwd=cwd)).url == absolute.format(cwd=cwd)


def test_export_frame_roundtrip_csv_parquet(tmp_path):
    import pandas as pd
    store = RunStore()
    for i in range(4):
        store.add(_record(i))
    frame = store.frame()
    frame.to_parquet(tmp_path / "runs.parquet")
    back = pd.read_parquet(tmp_path / "runs.parquet")
    assert list(back["run_id"]) == list(frame["run_id"])
    assert back["metric.accuracy"].tolist() == pytest.approx([0.5, 0.51, 0.52, 0.53])


def test_artifact_paths_are_relative_and_confined(tmp_path):
    store = RunStore()
    inside = store.run_dir("abc") / "output.ipynb"
    inside.write_text("{}")
    assert store.relative_artifact(inside) == "abc/output.ipynb"
    assert store.artifact("abc/output.ipynb") == inside.resolve()
    assert store.relative_artifact(tmp_path / "elsewhere.txt") == str(tmp_path / "elsewhere.txt")
    for escape in ("../runs.sqlite", "/etc/passwd", "abc/../../x"):
        with pytest.raises(StoreError, match="outside the store"):
            store.artifact(escape)


def test_store_url_accepts_an_open_store_and_refuses_other_objects(tmp_path):
    from workbench.runs.store import resolve_store_url
    store = RunStore(tmp_path / "runs.sqlite")
    assert resolve_store_url(store) == store.url and RunStore(store).url == store.url
    with pytest.raises(TypeError, match="not int"):
        resolve_store_url(3)


@pytest.mark.parametrize("make, match", [
    (lambda tmp: tmp, "unable to open database file"),  # a folder
    (lambda tmp: (tmp / "notes.txt").write_text("hello") and tmp / "notes.txt",
     "file is not a database"),
    (lambda tmp: "nosuchdialect://host/db", "nosuchdialect"),
    (lambda tmp: (tmp / "file").write_text("") or tmp / "file" / "runs.sqlite", "its folder"),
    (lambda tmp: "postgresql://alice:s3cret@127.0.0.1:1/db", "cannot open run store"),
])
def test_a_store_that_cannot_be_opened_is_a_store_error_naming_it(tmp_path, make, match):
    """Not an SQLAlchemy or driver traceback; a password in the URL is not shown."""
    with pytest.raises(StoreError, match=match) as info:
        RunStore(make(tmp_path))
    assert "cannot open run store" in str(info.value) and "s3cret" not in str(info.value)


def test_cli_names_a_store_that_cannot_be_opened(tmp_path):
    import subprocess
    from conftest import cli_env, workbench_cmd
    (tmp_path / "notes.txt").write_text("hello")
    done = subprocess.run(workbench_cmd("--store", str(tmp_path / "notes.txt"), "runs", "list"),
                          capture_output=True, text=True, env=cli_env())
    assert done.returncode == 1 and "Traceback" not in done.stderr, done.stderr
    assert f"cannot open run store sqlite:///{tmp_path / 'notes.txt'}" in done.stderr


def test_cli_show_prints_strict_json_for_nan_and_infinity(capsys):
    """`runs show` once printed NaN and Infinity, which strict JSON readers refuse; they are
    printed as null, and the store keeps them."""
    import math
    from workbench.cli import main
    store = RunStore()
    record = RunRecord(method="dense", metrics={"loss": float("nan"), "accuracy": 0.5},
                       cost={"latency_ms": float("inf")},
                       parameters={"bounds": [float("-inf"), 1.0]})
    store.add(record)
    assert main(["runs", "show", record.run_id]) == 0

    def refuse(constant):
        raise ValueError(f"not strict JSON: {constant}")
    shown = json.loads(capsys.readouterr().out, parse_constant=refuse)
    assert shown["metrics"] == {"loss": None, "accuracy": 0.5}
    assert shown["cost"] == {"latency_ms": None} and shown["parameters"]["bounds"] == [None, 1.0]
    kept = store.get(record.run_id)
    assert math.isnan(kept.metrics["loss"]) and kept.cost["latency_ms"] == float("inf")


def test_cli_exports_parameters_of_mixed_types_to_parquet(tmp_path, capsys):
    """A parameter that is 4 in one run and [4, 16] in another (JSON text in the table) made
    pyarrow refuse the column, so the shipped demo store could not be exported to parquet."""
    import pandas as pd
    from workbench.cli import main
    store = RunStore()
    store.add(RunRecord(method="monarch", parameters={"nblocks": 4, "flag": True}))
    store.add(RunRecord(method="monarch", parameters={"nblocks": [4, 16], "flag": 1}))
    store.add(RunRecord(method="dense", parameters={}))
    out = tmp_path / "runs.parquet"
    assert main(["runs", "export", "--format", "parquet", "-o", str(out)]) == 0
    back = pd.read_parquet(out)
    assert back["param.nblocks"].tolist()[:2] == ["4", "[4, 16]"]
    assert back["param.nblocks"].isna().tolist() == [False, False, True]
    assert "wrote 3 runs" in capsys.readouterr().err


def test_a_stored_body_with_a_null_text_field_is_corrupt_and_listing_goes_on(capsys):
    """`runs list` once stopped with a TypeError traceback at a record whose model was null
    (and `add` called a record with created_at None "already in the store")."""
    from workbench.cli import main
    store = RunStore()
    odd = _record(0)
    body = {**odd.to_dict(), "model": None}
    with store.engine.begin() as conn:
        conn.execute(runs_table.insert().values(
            run_id=odd.run_id, created_at=odd.created_at, status="ok", method="dense",
            schema_version=1, body=json.dumps(body)))
    later = store.add(_record(1))
    assert [type(r) for r in store.records()] == [CorruptRecord, RunRecord]
    assert main(["runs", "list"]) == 0
    out = capsys.readouterr().out
    assert "'model' must be a string" in out and later in out


def test_listing_into_a_closed_pipe_is_not_a_traceback():
    """`workbench runs list | head -1`: the reader goes away; no BrokenPipeError traceback."""
    import subprocess
    from conftest import cli_env, workbench_cmd
    store = RunStore()
    for i in range(1500):  # more listing than a pipe buffers
        store.add(_record(i))
    proc = subprocess.Popen(workbench_cmd("runs", "list"), stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, env=cli_env())
    proc.stdout.readline()
    proc.stdout.close()
    stderr = proc.stderr.read().decode()
    assert proc.wait(timeout=60) == 0 and "Traceback" not in stderr, stderr
