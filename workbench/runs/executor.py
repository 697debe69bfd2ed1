"""Execute a notebook with papermill and turn the execution into one run record.

``execute(notebook, {"width": "64"})`` checks the parameters against the notebook's parameters
cell (raising ParameterError before any kernel starts), runs it in the ``workbench`` Jupyter
kernel with the run folder in ``WORKBENCH_RUN_DIR``, saves the output notebook there, and adds a
record to the store: ``ok``, or ``failed`` with the error and the partial output notebook when a
cell raises, the kernel dies, a cell times out or the run is interrupted.
"""
from __future__ import annotations

import contextlib
import functools
import os
import signal
import sys
import time
from pathlib import Path
from typing import Any

from ..environment import environment_info
from .log import RESULTS_FILE, read_results
from .parameters import read_parameters, resolve_parameters
from .record import RunRecord
from .store import RunStore

KERNEL_NAME = "workbench"
OUTPUT_NOTEBOOK = "output.ipynb"


def ensure_kernel(name: str = KERNEL_NAME) -> str:
    """Register a Jupyter kernel ``name`` for this Python (in its prefix) unless it exists."""
    from jupyter_client.kernelspec import KernelSpecManager, NoSuchKernel
    try:
        KernelSpecManager().get_kernel_spec(name)
        return name
    except NoSuchKernel:
        pass
    from ipykernel.kernelspec import install
    install(kernel_name=name, display_name=f"Python ({name})", prefix=sys.prefix)
    return name


def execute(notebook: str | Path, given: dict[str, Any] | None = None, *,
            store: RunStore | None = None, kernel: str = KERNEL_NAME,
            cell_timeout: float | None = None, progress: bool = True) -> RunRecord:
    """Run ``notebook`` with parameters ``given`` and return the stored record."""
    notebook = Path(notebook).resolve()
    values = resolve_parameters(read_parameters(notebook), dict(given or {}), notebook.name)
    store = RunStore() if store is None else store  # an empty store is falsy (len 0)
    record = RunRecord(method=notebook.stem, notebook=str(notebook), parameters=values,
                       seed=values.get("seed") if isinstance(values.get("seed"), int) else None)
    folder = store.run_dir(record.run_id)
    output = folder / OUTPUT_NOTEBOOK
    env = {"WORKBENCH_RUN_DIR": str(folder), "WORKBENCH_RUN_ID": record.run_id,
           "WORKBENCH_STORE": store.url}
    started = time.perf_counter()
    stored = []

    def store_once(error: str | None = None) -> None:
        if stored:
            return
        stored.append(True)
        if error:
            record.status, record.error = "failed", error
        record.duration_s = round(time.perf_counter() - started, 3)
        _finish(record, folder, output, store)

    # On SIGTERM the failed record is stored at once, before papermill shuts the kernel down
    # (a GPU kernel can take longer to stop than a scheduler waits before SIGKILL).
    on_term = functools.partial(store_once, "interrupted (SIGTERM) before the notebook finished")
    try:
        with _environment(env), _sigterm_as_interrupt(on_term):
            _papermill(notebook, output, values, ensure_kernel(kernel), cell_timeout, progress)
    except BaseException as exc:  # noqa: BLE001 - every failure must be recorded
        record.status = "failed"
        record.error = record.error or _describe(exc)
        if not isinstance(exc, (Exception, KeyboardInterrupt)):
            store_once()
            raise
    finally:
        store_once()
    return record


def _papermill(notebook: Path, output: Path, values: dict, kernel: str,
               cell_timeout: float | None, progress: bool) -> None:
    """Execute ``notebook`` into ``output``. The language is given, not read from the
    notebook's metadata (which may have none): the kernel is always a Python one."""
    import papermill
    papermill.execute_notebook(
        str(notebook), str(output), parameters=values, kernel_name=kernel, language="python",
        cwd=str(notebook.parent), progress_bar=progress, request_save_on_cell_execute=True,
        execution_timeout=cell_timeout, log_output=False)


def _finish(record: RunRecord, folder: Path, output: Path, store: RunStore) -> None:
    """Fold the notebook's logged results into the record (and its variants) and store them.

    Results that cannot make a valid record (``results.json`` not JSON or not an object, a
    metric that is a list or a bool, a variant without a method) fail the run with an error
    naming the problem instead of losing it: the record keeps its parameters and output
    notebook, drops the unusable results (``results.json`` stays in the run folder) and is
    stored; an unusable variant is left out and named in the run's error."""
    given = dict(record.parameters)
    try:
        results = read_results(folder / RESULTS_FILE)
        _apply(record, results, store)
        record.validate()
    except (ValueError, TypeError, AttributeError) as exc:  # RecordError is a ValueError
        results = {}
        record.parameters, record.metrics, record.cost, record.artifacts = given, {}, {}, {}
        _fail(record, f"unusable results logged by the notebook: {exc}")
    _apply_environment(record)
    if output.exists():
        record.output_notebook = store.relative_artifact(output)
    elif record.status == "ok":
        _fail(record, "papermill wrote no output notebook")
    children = []
    for i, variant in enumerate(results.get("variants", []), 1):
        try:
            child = RunRecord(method=variant.get("method"), notebook=record.notebook,
                              parameters={**record.parameters, "parent_run": record.run_id},
                              seed=record.seed, output_notebook=record.output_notebook)
            _apply(child, variant, store)
            child.validate()
        except (ValueError, TypeError, AttributeError) as exc:
            _fail(record, f"variant {i} not recorded, its results are unusable: {exc}")
            continue
        _apply_environment(child)
        children.append(child)
    store.add(record)
    for child in children:
        store.add(child)


def _fail(record: RunRecord, error: str) -> None:
    """Mark ``record`` failed, adding ``error`` to any error it has."""
    record.status = "failed"
    record.error = f"{record.error}; {error}" if record.error else error


def _apply(record: RunRecord, results: dict, store: RunStore) -> None:
    for key in ("model", "dataset", "device"):
        if results.get(key):
            setattr(record, key, str(results[key]))
    if results.get("method"):
        record.method = str(results["method"])
    if isinstance(results.get("seed"), int):
        record.seed = results["seed"]
    record.metrics = results.get("metrics", {})
    record.cost = results.get("cost", {})
    record.artifacts = {name: store.relative_artifact(path)
                        for name, path in results.get("artifacts", {}).items()}
    record.parameters.update(results.get("parameters", {}))


def _apply_environment(record: RunRecord) -> None:
    env = environment_info()
    record.device = record.device or env["device"]
    record.torch_version, record.git_commit = env["torch_version"], env["git_commit"]


def _describe(exc: BaseException) -> str:
    name = type(exc).__name__
    if name == "PapermillExecutionError":
        return f"cell {exc.exec_count} raised {exc.ename}: {exc.evalue}"
    if name == "DeadKernelError":
        return f"the kernel died: {exc}"
    if isinstance(exc, KeyboardInterrupt):
        return "interrupted (SIGINT/SIGTERM) before the notebook finished"
    return f"{name}: {exc}"


@contextlib.contextmanager
def _environment(values: dict[str, str]):
    old = {k: os.environ.get(k) for k in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for key, value in old.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


@contextlib.contextmanager
def _sigterm_as_interrupt(before=None):
    """A SIGTERM (e.g. a job scheduler's kill) is handled like Ctrl-C, so the run is recorded;
    ``before()`` runs first, inside the handler."""
    def handler(signum, frame):
        if before is not None:
            before()
        raise KeyboardInterrupt
    try:
        previous = signal.signal(signal.SIGTERM, handler)
    except ValueError:  # not the main thread
        yield
        return
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)
