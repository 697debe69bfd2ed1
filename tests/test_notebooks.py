"""Every notebook runs headless through `workbench run` with preset=ci and logs an ok run."""
import subprocess
from pathlib import Path

import pytest

from conftest import ROOT, cli_env, workbench_cmd
from workbench.runs import RunStore

NOTEBOOKS = sorted((ROOT / "notebooks").glob("*.ipynb"))
# Extra settings per notebook, beyond preset=ci, so each code path runs at least once.
VARIANTS = {
    "baseline": [{}, {"model": "mixer", "width": "32"}, {"model": "gpt", "dataset": "bytes",
                                                          "width": "64", "depth": "2"}],
    "monarch_train": [{}, {"model": "gpt", "dataset": "bytes", "nblocks": "[4]"}],
    "monarch_finetune": [{"nblocks": "[4]"}],
    "inspect_attention": [{}, {"model": "gpt", "layers": "[0, -1]"}],
    "dynamic_sparse": [{}, {"model": "mixer", "layers": "hidden", "distribution": "uniform"}],
    "sparse_ift": [{}, {"model": "mixer", "layers": "hidden", "masks": "static",
                        "sparsities": "[0.75]"}],
}
# How many run records one execution writes (the main run plus its logged variants).
RECORDS = {"monarch_train": lambda p: 1 + len(eval(p.get("nblocks", "[4, 16]"))),
           "monarch_finetune": lambda p: 1 + 2 * len(eval(p["nblocks"])),
           "monarch_reverse": lambda p: 3,
           "gmp": lambda p: 1 + 2 * len(eval(p.get("sparsities", "[0.75, 0.9]"))),
           "random_pruning": lambda p: len(eval(p.get("widths", "[32, 64]"))) * (  # ci widths
               1 + len(eval(p.get("sparsities", "[0.8, 0.95]")))
               * len(eval(p.get("distributions", "['erk', 'uniform']")))),
           "nm_sparsity": lambda p: 1 + len(eval(p.get("patterns", "['1:4', '2:4', '4:8']")))
           + len(eval(p.get("srste_patterns", "['2:4']"))),
           "dynamic_sparse": lambda p: 5,  # dense, small-dense, static, set, rigl
           "sparse_ift": lambda p: 1 + len(eval(p.get("sparsities", "[0.5, 0.75, 0.9]")))
           * len(eval(p.get("variants", "['wide', 'parallel', 'factorized', 'doped']")))}
CASES = [(nb, params) for nb in NOTEBOOKS for params in VARIANTS.get(nb.stem, [{}])]
pytestmark = pytest.mark.notebook


def test_every_notebook_is_covered():
    assert NOTEBOOKS, "no notebooks found"
    assert {nb.stem for nb in NOTEBOOKS} >= set(VARIANTS)


@pytest.mark.parametrize("notebook, params", CASES,
                         ids=[f"{nb.stem}-{'-'.join(p.values()) or 'default'}" for nb, p in CASES])
def test_notebook_runs_with_ci_preset(notebook: Path, params: dict):
    args = ["run", str(notebook), "-p", "preset", "ci", "--no-progress"]
    for name, value in params.items():
        args += ["-p", name, value]
    result = subprocess.run(workbench_cmd(*args), capture_output=True, text=True, timeout=600,
                            env=cli_env())
    run_id = result.stdout.strip().splitlines()[-1] if result.stdout.strip() else ""
    assert result.returncode == 0, f"{notebook.name} failed:\n{result.stderr[-3000:]}"
    record = RunStore().get(run_id)
    assert record.status == "ok"
    assert record.metrics, "the notebook logged no quality metrics"
    assert record.cost.get("params", 0) > 0 and record.cost.get("latency_ms", 0) > 0
    assert RunStore().artifact(record.output_notebook).exists()
    expected = RECORDS.get(notebook.stem, lambda p: 1)(params)
    records = list(RunStore().records())
    assert len(records) == expected
    assert all(r.status == "ok" and r.cost.get("flops_per_sample", 0) > 0 for r in records)
