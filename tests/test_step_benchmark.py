"""benchmarks/monarch_step.py end to end at toy size: its JSON becomes run records."""
import json

from benchmarks.monarch_step import main
from workbench.runs.benchmarks import benchmark_records
from workbench.runs.store import RunStore


def test_step_benchmark_json_imports_as_runs(tmp_path):
    out = tmp_path / "monarch_step_cpu.json"
    main(["--widths", "32", "--depth", "1", "--nblocks", "4", "--impls", "auto", "dense",
          "--modes", "none", "--steps", "8", "--batch-size", "4", "--out", str(out)])
    result = json.loads(out.read_text())
    assert result["benchmark"] == "monarch_step" and result["environment"]["torch"]
    rows = {row["variant"]: row for row in result["rows"]}
    assert set(rows) == {"dense", "monarch-b4", "monarch-b4-dense"}
    assert rows["dense"]["speedup_vs_dense"] == 1.0
    for row in rows.values():
        assert row["steady_step_ms"] > 0 and row["first_3_steps_s"] > 0
    # the Monarch FFNs hold fewer parameters than the dense ones, whichever product runs
    assert rows["monarch-b4"]["params"] == rows["monarch-b4-dense"]["params"] < rows[
        "dense"]["params"]

    records = benchmark_records(out)
    by_variant = {(r.method, r.parameters["impl"]): r for r in records}
    assert set(by_variant) == {("dense", "dense"), ("monarch", "auto"), ("monarch", "dense")}
    monarch = by_variant["monarch", "dense"]
    assert monarch.parameters["nblocks"] == 4 and monarch.parameters["compile"] == "none"
    assert monarch.cost["train_step_ms_steady"] == rows["monarch-b4-dense"]["steady_step_ms"]
    assert [r.run_id for r in benchmark_records(out)] == [r.run_id for r in records]
    store = RunStore(tmp_path / "runs.sqlite")  # the records pass the store's validation
    for record in records:
        store.add(record)
    assert sorted(r.run_id for r in store.records()) == sorted(r.run_id for r in records)
