"""`workbench run`: parameters checked before any kernel, failures recorded with their notebook."""
import json
import signal
import subprocess
import time

import nbformat
import pytest

from conftest import FIXTURES, cli_env, workbench_cmd
from workbench.runs import RunRecord, RunStore

TINY = str(FIXTURES / "tiny.ipynb")
pytestmark = pytest.mark.notebook


def run_cli(*args, timeout=300):
    return subprocess.run(workbench_cmd(*args), capture_output=True, text=True, timeout=timeout,
                          env=cli_env())


def test_ok_run_writes_record_and_output_notebook():
    result = run_cli("run", TINY, "-p", "x", "3", "-p", "mode", "slow", "--no-progress")
    assert result.returncode == 0, result.stderr
    run_id = result.stdout.strip().splitlines()[-1]
    record = RunStore().get(run_id)
    assert record.status == "ok" and record.method == "tiny" and record.seed == 3
    assert record.parameters == {"x": 3, "rate": 0.5, "name": "a", "flag": False,
                                 "mode": "slow", "fail": False, "die": False, "stall": 0.0}
    assert record.metrics == {"accuracy": 1.5, "split": "test"}
    assert record.torch_version and record.device and record.duration_s > 0
    variant = [r for r in RunStore().records() if r.method == "tiny-dense"]
    assert len(variant) == 1 and variant[0].parameters["parent_run"] == run_id
    assert variant[0].parameters["variant"] == "dense" and variant[0].cost == {"params": 30}
    assert variant[0].output_notebook == record.output_notebook
    out = nbformat.read(RunStore().artifact(record.output_notebook), as_version=4)
    printed = [o.get("text", "") for c in out.cells if c.cell_type == "code" for o in c.outputs]
    assert "finished a False slow\n" in printed


def test_run_lands_in_the_store_named_by_store_even_when_it_is_empty(tmp_path):
    """`--store` names where the record goes; a new, empty store must not fall back to the
    default one (an empty RunStore has length 0, so `store or default` once did)."""
    other = tmp_path / "other.sqlite"
    result = run_cli("--store", str(other), "run", TINY, "--no-progress")
    assert result.returncode == 0, result.stderr
    run_id = result.stdout.strip().splitlines()[-1]
    assert RunStore(str(other)).get(run_id).status == "ok"
    assert run_id not in {r.run_id for r in RunStore().records()}


@pytest.mark.parametrize("args, message", [
    (("-p", "xx", "1"), "unknown parameter 'xx'"),
    (("-p", "x", "one"), "parameter 'x' expects int"),
    (("-p", "mode", "warp"), "'mode' must be one of fast, slow"),
])
def test_bad_parameters_exit_2_before_any_kernel(args, message):
    started = time.perf_counter()
    result = run_cli("run", TINY, *args)
    assert result.returncode == 2
    assert message in result.stderr
    assert len(RunStore()) == 0  # nothing ran, nothing recorded
    assert time.perf_counter() - started < 30


def test_missing_notebook_is_a_clear_error():
    result = run_cli("run", "no/such.ipynb")
    assert result.returncode == 2 and "notebook not found: no/such.ipynb" in result.stderr


def test_failing_cell_records_failed_run_with_partial_notebook():
    result = run_cli("run", TINY, "-p", "fail", "true", "-p", "x", "4", "--no-progress")
    assert result.returncode == 1
    run_id = result.stdout.strip().splitlines()[-1]
    record = RunStore().get(run_id)
    assert record.status == "failed"
    assert "ValueError" in record.error and "asked to fail with x=4" in record.error
    assert record.metrics["accuracy"] == 2.0  # what it logged before failing is kept
    out = nbformat.read(RunStore().artifact(record.output_notebook), as_version=4)
    errors = [o for c in out.cells if c.cell_type == "code" for o in c.outputs
              if o.output_type == "error"]
    assert errors and errors[0].ename == "ValueError"


def test_dead_kernel_records_failed_run():
    result = run_cli("run", TINY, "-p", "die", "true", "--no-progress")
    assert result.returncode == 1
    run_id = result.stdout.strip().splitlines()[-1]
    record = RunStore().get(run_id)
    assert record.status == "failed" and "kernel died" in record.error
    assert record.output_notebook and record.metrics["accuracy"] == 0.5


def test_sigterm_records_the_run_before_a_slow_kernel_stops():
    """A scheduler's SIGTERM, then SIGKILL 3 s later (``timeout -k 3``), while the kernel sits
    in a cell that ignores signals (like a long GPU call): the failed run is stored at the
    SIGTERM, not only after papermill has shut the kernel down (which takes >= 5 s here)."""
    store = RunStore()
    before = {r.run_id for r in store.records()}
    proc = subprocess.Popen(workbench_cmd("run", TINY, "-p", "stall", "120", "--no-progress"),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env=cli_env())
    try:
        deadline = time.time() + 120
        while time.time() < deadline and not list(
                store.artifacts_root.glob("*/results.json")):  # the notebook logged: stalling
            time.sleep(0.5)
        time.sleep(1.0)
        proc.terminate()
        try:
            proc.wait(timeout=3)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    finally:
        if proc.poll() is None:
            proc.kill()
    new = [r for r in store.records() if r.run_id not in before and r.method == "tiny"]
    assert len(new) == 1, "the interrupted run was not recorded"
    assert new[0].status == "failed" and "interrupted" in new[0].error
    assert new[0].metrics["accuracy"] == 0.5  # what it logged before the signal is kept


def test_runs_list_show_export(tmp_path):
    assert run_cli("run", TINY, "--no-progress").returncode == 0
    assert run_cli("run", TINY, "-p", "fail", "true", "--no-progress").returncode == 1
    listing = run_cli("runs", "list").stdout
    assert listing.count("tiny ") == 2 and listing.count("tiny-dense") == 2 and "failed" in listing and "accuracy=0.5" in listing
    run_id = RunStore().frame()["run_id"].iloc[0]
    shown = json.loads(run_cli("runs", "show", run_id).stdout)
    assert shown["run_id"] == run_id
    assert run_cli("runs", "show", "nope").returncode == 1
    for fmt in ("csv", "parquet"):
        out = tmp_path / f"runs.{fmt}"
        assert run_cli("runs", "export", "--format", fmt, "-o", str(out)).returncode == 0
        import pandas as pd
        frame = pd.read_csv(out) if fmt == "csv" else pd.read_parquet(out)
        assert sorted(frame["status"]) == ["failed", "ok", "ok", "ok"]


def test_sweep_runs_grid_and_skips_existing():
    result = run_cli("sweep", TINY, "-g", "x", "1,2", "-p", "mode", "slow", "--skip-existing")
    assert result.returncode == 0, result.stderr
    assert sorted(r.parameters["x"] for r in RunStore().records(method="tiny")) == [1, 2]
    again = run_cli("sweep", TINY, "-g", "x", "1,2,3", "-p", "mode", "slow", "--skip-existing")
    assert again.returncode == 0 and again.stderr.count("already done") == 2
    assert sorted(r.parameters["x"] for r in RunStore().records(method="tiny")) == [1, 2, 3]


def test_sweep_checks_every_setting_first():
    result = run_cli("sweep", TINY, "-g", "x", "1,two")
    assert result.returncode == 2 and "'x' expects int" in result.stderr
    assert len(RunStore()) == 0


def test_import_benchmark_results_once(tmp_path):
    from conftest import ROOT
    result_file = ROOT / "benchmarks" / "results" / "monarch_h200.json"
    first = run_cli("runs", "import-benchmark", str(result_file))
    assert first.returncode == 0, first.stderr
    records = list(RunStore().records())
    assert {r.method for r in records} == {"dense", "monarch-plain", "monarch"}
    dense = [r for r in records if r.method == "dense"]
    assert all(r.metrics["fwd_bwd_speedup_vs_dense"] == 1.0 for r in dense)
    assert all(r.device == "NVIDIA H200" for r in records)
    # device time under CUDA graphs, where the file has it: the fast path's ratio to dense
    rows = {(row["n"], row["nblocks"]): row for row in json.loads(result_file.read_text())["rows"]}
    fast = [r for r in records if r.method == "monarch"]
    assert fast and all("fwd_bwd_graph_ms" in r.cost for r in fast)
    for r in fast:
        times = rows[(r.parameters["n"], r.parameters["nblocks"])]["times"]
        want = (times["dense"]["fwd_bwd_graph"]["median_ms"]
                / times["fast"]["fwd_bwd_graph"]["median_ms"])
        assert r.metrics["fwd_bwd_graph_speedup_vs_dense"] == pytest.approx(want)
    again = run_cli("runs", "import-benchmark", str(result_file))
    assert "imported 0 runs" in again.stdout and len(RunStore()) == len(records)
    (tmp_path / "bad.json").write_text("{}")
    bad = run_cli("runs", "import-benchmark", str(tmp_path / "bad.json"))
    assert bad.returncode == 2 and "workbench: error:" in bad.stderr
    assert "not a Monarch benchmark result" in bad.stderr and "Traceback" not in bad.stderr


@pytest.mark.parametrize("body, message", [
    ({"benchmark": "semi_structured", "environment": {}, "rows": [
        {"model": "m", "layer": "l", "out_features": 4, "in_features": 4, "tokens": 8}]},
     "is not a semi-structured benchmark result: a row has no field 'ms_dense'"),
    ({"environment": {}, "rows": [{"n": 4}]},
     "is not a Monarch benchmark result: a row has no field 'nblocks'"),
    ({"environment": {}, "rows": [3]}, "is not a Monarch benchmark result: a row is malformed"),
])
def test_import_benchmark_names_the_file_and_field_of_an_incomplete_row(tmp_path, body, message):
    """Once only "workbench: error: 'ms_dense'" (a bare KeyError), exit 1."""
    path = tmp_path / "result.json"
    path.write_text(json.dumps(body))
    bad = run_cli("runs", "import-benchmark", str(path))
    assert bad.returncode == 2 and f"workbench: error: {path} {message}" in bad.stderr, bad.stderr
    assert len(RunStore()) == 0


def test_a_missing_run_is_named_without_quotes():
    missing = run_cli("runs", "show", "nope")
    assert missing.returncode == 1
    assert missing.stderr.startswith("workbench: error: no run 'nope' in store"), missing.stderr


def test_sweep_skips_runs_whose_notebook_resolved_or_logged_other_values(tmp_path):
    """A notebook may log resolved parameters (depth 0 -> 4) over its inputs; --skip-existing
    reads the inputs from the output notebook, and matches runs copied from another checkout
    by the notebook's file name."""
    store = RunStore(tmp_path / "runs.sqlite")
    record = RunRecord(method="tiny", notebook="/elsewhere/checkout/tiny.ipynb",
                       parameters={"x": 7, "mode": "resolved"})
    out = store.run_dir(record.run_id) / "output.ipynb"
    out.write_text(json.dumps({"metadata": {"papermill": {"parameters": {
        "x": 2, "rate": 0.5, "name": "a", "flag": False, "mode": "fast", "fail": False,
        "die": False, "stall": 0.0}}}}))
    record.output_notebook = store.relative_artifact(out)
    store.add(record)
    result = run_cli("--store", str(tmp_path / "runs.sqlite"), "sweep", TINY, "--skip-existing",
                     "-g", "x", "2")
    assert result.returncode == 0 and "already done, skipped" in result.stderr, result.stderr
    assert len(list(store.records())) == 1


def test_sweep_skip_existing_compares_every_parameter_not_only_the_given_ones(tmp_path):
    """A run with mode=slow does not cover a setting that leaves mode at its default (fast):
    --skip-existing once compared only the names given on the command line."""
    store = RunStore(tmp_path / "runs.sqlite")
    record = RunRecord(method="tiny", notebook=TINY, parameters={
        "x": 1, "rate": 0.5, "name": "a", "flag": False, "mode": "slow", "fail": False,
        "die": False, "stall": 0.0})
    store.add(record)
    given_store = ("--store", str(tmp_path / "runs.sqlite"))
    covered = run_cli(*given_store, "sweep", TINY, "--skip-existing", "-g", "x", "1",
                      "-p", "mode", "slow")
    assert covered.returncode == 0 and "already done, skipped" in covered.stderr
    default_mode = run_cli(*given_store, "sweep", TINY, "--skip-existing", "-g", "x", "1")
    assert default_mode.returncode == 0, default_mode.stderr
    assert "already done" not in default_mode.stderr
    assert sorted(r.parameters["mode"] for r in store.records(method="tiny")) == ["fast", "slow"]


def _notebook(folder, name, code):
    """A one-cell notebook (after a parameters cell ``x = 1``) in ``folder``."""
    nb = nbformat.v4.new_notebook()
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3",
                                 "language": "python"}
    params = nbformat.v4.new_code_cell("x = 1  # an integer")
    params.metadata["tags"] = ["parameters"]
    nb.cells = [params, nbformat.v4.new_code_cell(code)]
    path = folder / name
    nbformat.write(nb, path)
    return str(path)


@pytest.mark.parametrize("code, message", [
    ("from workbench.runs import log_results\n"
     "log_results(method='bad', metrics={'curve': [1, 2], 'accuracy': 0.5})",
     "unusable results logged by the notebook: run record: metric/cost 'curve' must be a "
     "number or string, got list"),
    ("import os, pathlib\n"
     "pathlib.Path(os.environ['WORKBENCH_RUN_DIR'], 'results.json').write_text('[1, 2]')",
     "results.json holds a list, not a JSON object"),
    ("import os, pathlib\n"
     "pathlib.Path(os.environ['WORKBENCH_RUN_DIR'], 'results.json').write_text('{oops')",
     "results.json is not valid JSON"),
])
def test_unusable_logged_results_fail_the_run_but_keep_it(tmp_path, code, message):
    """A run whose logged results cannot make a record was once lost (exit 2 as if the command
    line were wrong, or a traceback); it is stored failed, naming the problem, with its
    output notebook."""
    result = run_cli("run", _notebook(tmp_path, "bad.ipynb", code), "-p", "x", "3",
                     "--no-progress")
    assert result.returncode == 1 and "Traceback" not in result.stderr, result.stderr
    record = RunStore().get(result.stdout.strip().splitlines()[-1])
    assert record.status == "failed" and message in record.error
    assert not record.error.startswith(";")
    assert record.parameters == {"x": 3} and record.metrics == {}
    assert RunStore().artifact(record.output_notebook).exists()


def test_an_unusable_variant_is_left_out_and_named_in_the_run_error(tmp_path):
    code = ("from workbench.runs import log_results, log_variant\n"
            "log_results(method='parent', metrics={'accuracy': 0.5})\n"
            "log_variant(method='', metrics={'accuracy': 0.9})\n"
            "log_variant(method='dense', metrics={'accuracy': 0.7})")
    result = run_cli("run", _notebook(tmp_path, "variants.ipynb", code), "--no-progress")
    assert result.returncode == 1 and "Traceback" not in result.stderr, result.stderr
    records = {r.method: r for r in RunStore().records()}
    assert sorted(records) == ["dense", "parent"]
    assert records["parent"].status == "failed" and records["parent"].metrics["accuracy"] == 0.5
    assert "variant 1 not recorded" in records["parent"].error
    assert "'method' must be a non-empty string" in records["parent"].error
    assert records["dense"].status == "ok" and records["dense"].device


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_a_signalled_sweep_stops_its_running_setting_and_names_those_not_run(signum):
    """SIGTERM (or Ctrl-C) once ended the sweep alone: its running child went on and was
    recorded ok later. The signal is passed on to the child, which records its run as failed;
    the sweep waits for it, names the settings it did not start and exits non-zero."""
    store = RunStore()
    sweep = subprocess.Popen(workbench_cmd("sweep", TINY, "-g", "x", "1,2,3", "-p", "stall", "15"),
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                             env=cli_env())
    try:
        deadline = time.time() + 120
        while time.time() < deadline and not list(
                store.artifacts_root.glob("*/results.json")):  # the first setting is stalling
            time.sleep(0.3)
        time.sleep(1.0)
        sweep.send_signal(signum)
        _, stderr = sweep.communicate(timeout=120)
    finally:
        if sweep.poll() is None:
            sweep.kill()
    assert sweep.returncode == 128 + signum, stderr
    assert "2 settings not run" in stderr, stderr
    assert "[2/3] {'stall': '15', 'x': '2'}" in stderr and "[3/3]" in stderr
    runs = list(store.records(method="tiny"))  # the sweep ended after its child: all is stored
    assert len(runs) == 1 and runs[0].parameters["x"] == 1, [r.flat() for r in runs]
    assert runs[0].status == "failed" and "interrupted" in runs[0].error


def test_a_notebook_without_kernel_or_language_metadata_runs(tmp_path):
    """Once failed with "No language found in notebook": the runner picks the kernel, so it
    tells papermill the language too."""
    path = _notebook(tmp_path, "bare.ipynb", "print('ran', x)")
    nb = nbformat.read(path, as_version=4)
    nb.metadata = {}
    nbformat.write(nb, path)
    result = run_cli("run", path, "-p", "x", "2", "--no-progress")
    assert result.returncode == 0, result.stderr
    record = RunStore().get(result.stdout.strip().splitlines()[-1])
    assert record.status == "ok" and record.parameters == {"x": 2}


def test_a_relative_sqlite_store_url_names_the_same_store_in_the_kernel(tmp_path):
    """The kernel runs in the notebook's folder; a relative --store sqlite:///... URL once
    reached it as written, so RunStore() in the notebook opened another file there."""
    (tmp_path / "sub").mkdir()
    code = ("from workbench.runs import RunStore, log_results\n"
            "log_results(method='where', metrics={'store': RunStore().url})")
    path = _notebook(tmp_path / "sub", "where.ipynb", code)
    result = subprocess.run(workbench_cmd("--store", "sqlite:///rel.sqlite", "run", path,
                                          "--no-progress"),
                            capture_output=True, text=True, timeout=300, env=cli_env(),
                            cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    store = RunStore(tmp_path / "rel.sqlite")
    record = store.get(result.stdout.strip().splitlines()[-1])
    assert record.metrics["store"] == store.url
    assert not (tmp_path / "sub" / "rel.sqlite").exists()
