"""Copying runs between stores: records, artifact folders, idempotence, corrupt rows."""
import sqlalchemy as sa
import pytest

from conftest import cli_env, workbench_cmd
from workbench.runs import RunRecord, RunStore
from workbench.runs.transfer import import_store


def _store_with_runs(folder, n, method="dense"):
    store = RunStore(folder / "runs.sqlite")
    ids = []
    for i in range(n):
        record = RunRecord(method=method, notebook="baseline.ipynb", parameters={"width": i},
                           metrics={"accuracy": 0.5 + i / 100}, cost={"params": 10 + i})
        out = store.run_dir(record.run_id) / "output.ipynb"
        out.write_text(f"notebook {i}")
        record.output_notebook = store.relative_artifact(out)
        ids.append(store.add(record))
    return store, ids


def test_import_copies_records_and_artifacts_once(tmp_path):
    source, ids = _store_with_runs(tmp_path / "src", 3)
    target, own = _store_with_runs(tmp_path / "dst", 1, method="monarch")
    report = import_store(source, target)
    assert sorted(report.added) == sorted(ids) and not report.already_present
    assert {r.run_id for r in target.records()} == set(ids) | set(own)
    for run_id in ids:
        copied = target.get(run_id)
        assert copied.parameters == source.get(run_id).parameters
        assert target.artifact(copied.output_notebook).read_text().startswith("notebook")
    again = import_store(source, target)
    assert not again.added and sorted(again.already_present) == sorted(ids)
    picked = import_store(source, tmp_path / "picked" / "runs.sqlite",
                          select=lambda r: r.parameters["width"] == 1)
    assert picked.added == [ids[1]]
    with pytest.raises(ValueError, match="same store"):
        import_store(source, source)


def test_corrupt_source_rows_are_skipped_and_counted(tmp_path):
    source, ids = _store_with_runs(tmp_path / "src", 2)
    with source.engine.begin() as conn:
        conn.execute(sa.text("UPDATE runs SET body = '{not json' WHERE run_id = :id"),
                     {"id": ids[0]})
    report = import_store(source, RunStore(tmp_path / "dst" / "runs.sqlite"))
    assert report.corrupt == [ids[0]] and report.added == [ids[1]]


def test_cli_import_store(tmp_path):
    import subprocess
    source, ids = _store_with_runs(tmp_path / "src", 2)
    target = tmp_path / "dst" / "runs.sqlite"
    cmd = workbench_cmd("--store", str(target), "runs", "import-store",
                        str(tmp_path / "src" / "runs.sqlite"))
    done = subprocess.run(cmd, capture_output=True, text=True, env=cli_env())
    assert done.returncode == 0 and "imported 2 runs" in done.stdout, done.stderr
    missing = subprocess.run(workbench_cmd("--store", str(target), "runs", "import-store",
                                           str(tmp_path / "nope.sqlite")),
                             capture_output=True, text=True, env=cli_env())
    assert missing.returncode == 2 and "no run store" in missing.stderr
