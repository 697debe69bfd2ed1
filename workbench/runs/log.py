"""Logging a run's results from inside a notebook.

Under ``workbench run`` the runner sets ``WORKBENCH_RUN_DIR``; ``log_results`` then merges what
it is given into ``<run dir>/results.json`` and the runner turns it into the run record when the
notebook ends (so a run that crashes later still keeps what it logged). Run by hand (JupyterLab,
plain Python), ``log_results(..., standalone=True)`` writes a complete record to the store itself.
"""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from ..environment import environment_info
from .record import RunRecord

RESULTS_FILE = "results.json"
_GROUPS = ("metrics", "cost", "artifacts", "parameters")


def run_dir() -> Path | None:
    """The current run's artifact folder under ``workbench run``, else None."""
    value = os.environ.get("WORKBENCH_RUN_DIR")
    return Path(value) if value else None


def artifact_path(name: str) -> Path:
    """Where to save an artifact (checkpoint, figure) of the current run: the run folder under
    the runner, else ``./artifacts/``. Register it with ``log_results(artifacts={...})``."""
    folder = run_dir() or Path("artifacts")
    folder.mkdir(parents=True, exist_ok=True)
    return folder / name


def log_results(*, method: str | None = None, model: str | None = None,
                dataset: str | None = None, seed: int | None = None,
                metrics: dict[str, Any] | None = None, cost: dict[str, Any] | None = None,
                artifacts: dict[str, str] | None = None,
                parameters: dict[str, Any] | None = None,
                device: str | None = None, standalone: bool | None = None) -> dict[str, Any]:
    """Record results of the current run; later calls add to (and override) earlier ones.

    Returns the merged results. With ``standalone`` (default: when not under the runner) a run
    record with status ``ok`` is added to the store and its id is returned under ``run_id``.
    """
    update: dict[str, Any] = {k: v for k, v in dict(
        method=method, model=model, dataset=dataset, seed=seed, device=device).items()
        if v is not None}
    for name, group in zip(_GROUPS, (metrics, cost, artifacts, parameters)):
        if group:
            update[name] = {k: _plain(v) for k, v in group.items()}
    folder = run_dir()
    if standalone is None:
        standalone = folder is None
    if not standalone:
        path = (folder or Path(".")) / RESULTS_FILE
        merged = read_results(path)
        for key, value in update.items():
            if key in _GROUPS:
                merged.setdefault(key, {}).update(value)
            else:
                merged[key] = value
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(merged, indent=1, allow_nan=True))
        tmp.replace(path)  # atomic: a crash never leaves half a file
        return merged
    from .store import RunStore
    env = environment_info()
    record = RunRecord(method=update.pop("method", "manual"), notebook="(interactive)",
                       **{k: update.get(k, {}) for k in _GROUPS},
                       model=update.get("model", ""), dataset=update.get("dataset", ""),
                       seed=update.get("seed"), device=update.get("device", env["device"]),
                       torch_version=env["torch_version"], git_commit=env["git_commit"])
    RunStore().add(record)
    return {**update, "run_id": record.run_id}


def log_variant(*, method: str, model: str | None = None, dataset: str | None = None,
                seed: int | None = None, metrics: dict[str, Any] | None = None,
                cost: dict[str, Any] | None = None, artifacts: dict[str, str] | None = None,
                parameters: dict[str, Any] | None = None, device: str | None = None,
                standalone: bool | None = None) -> dict[str, Any]:
    """Record one more trained model of this run (e.g. the dense reference beside a Monarch
    model), measured side by side. Under the runner each variant becomes a run record of its
    own, with the notebook's parameters, ``parameters`` on top and ``parent_run`` set to this
    run's id; run by hand it is written to the store at once."""
    variant = {k: v for k, v in dict(method=method, model=model, dataset=dataset, seed=seed,
                                     device=device).items() if v is not None}
    for name, group in zip(_GROUPS, (metrics, cost, artifacts, parameters)):
        variant[name] = {k: _plain(v) for k, v in (group or {}).items()}
    folder = run_dir()
    if standalone is None:
        standalone = folder is None
    if standalone:
        return log_results(**{k: variant.get(k) for k in (
            "method", "model", "dataset", "seed", "device", *_GROUPS)}, standalone=True)
    path = folder / RESULTS_FILE
    merged = read_results(path)
    merged.setdefault("variants", []).append(variant)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(merged, indent=1, allow_nan=True))
    tmp.replace(path)
    return variant


def read_results(path: Path) -> dict[str, Any]:
    """The results logged so far ({} when none); ValueError naming the file when it is not
    JSON or holds something other than an object."""
    if not path.exists():
        return {}
    try:
        results = json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise ValueError(f"results file {path} is not valid JSON: {exc}") from exc
    if not isinstance(results, dict):
        raise ValueError(f"results file {path} holds a {type(results).__name__}, "
                         f"not a JSON object")
    return results


def _plain(value: Any) -> Any:
    """Tensors and numpy scalars to Python numbers, so results are JSON."""
    if hasattr(value, "item") and getattr(value, "ndim", 0) == 0:
        return value.item()
    return value
