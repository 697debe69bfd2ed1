"""Runs as a pandas frame for the dashboard, and the Pareto front (pure pandas).

Column conventions follow ``RunRecord.flat``: quality metrics are ``metric.<name>``, cost numbers
are ``cost.<name>`` (plus the run's wall time ``duration_s``), parameters are ``param.<name>``.
"""
from __future__ import annotations

import functools
import json
import threading

import numpy as np
import pandas as pd
import sqlalchemy as sa

from workbench.runs.record import RecordError, RunRecord
from workbench.runs.store import CorruptRecord, RunStore, resolve_store_url, runs_table

# Columns every frame has, even an empty one or one holding only corrupt rows.
BASE_COLUMNS = ("run_id", "created_at", "status", "error", "method", "notebook", "model",
                "dataset", "device", "seed", "duration_s")
# Quality metrics where a smaller number is better; everything else counts as higher-is-better.
LOWER_IS_BETTER = ("loss", "bits_per_byte", "perplexity", "error", "error_rate", "mse", "nll")
# Cost columns where a larger number is better (everything else: smaller is cheaper).
HIGHER_COST_IS_BETTER = ("cost.throughput_per_s",)
# Flat column prefix -> nested group of a record body (``artifacts`` is not flattened).
NESTED = {"param": "parameters", "metric": "metrics", "cost": "cost"}
LABELS = {
    "cost.params": "parameters", "cost.nonzeros": "nonzero weights",
    "cost.flops_per_sample": "FLOPs per sample", "cost.latency_ms": "latency (ms)",
    "cost.latency_ms_iqr": "latency IQR (ms)", "cost.peak_memory_mb": "peak memory (MB)",
    "cost.throughput_per_s": "throughput (samples/s)", "duration_s": "duration (s)",
    "cost.train_step_ms": "training step (ms, compile included)",
    "cost.train_step_ms_steady": "training step (ms, steady)",
    "metric.bits_per_byte": "bits per byte",
}
MAX_CACHED_STORES = 8
_frames: dict[str, tuple[tuple, pd.DataFrame]] = {}  # store URL -> (version, runs frame)
_lock = threading.Lock()


def load_runs(store=None, force: bool = False) -> pd.DataFrame:
    """The store's runs, one row per run, oldest first.

    ``store`` is a path, an SQLAlchemy URL or None (``WORKBENCH_STORE`` / the default store).
    The frame is read once per process and store version (see ``store_version``) and shared by
    every session until a run is added; ``force=True`` reads it again regardless.
    """
    url = resolve_store_url(store)
    version = store_version(url)
    with _lock:
        cached = _frames.get(url)
    if force or cached is None or cached[0] != version:
        cached = (version, normalize_frame(read_frame(url)))
        with _lock:  # one frame per store: an older version is dropped, not kept beside it
            _frames[url] = cached
    return cached[1].copy()


def store_version(url: str) -> tuple:
    """A value that changes whenever a run is added: the run count and newest ``created_at``
    (records are append-only). One indexed query, about a millisecond; a file's modification
    time would be cheaper but can miss a write (SQLite writes go to its WAL file first, and
    timestamps are only as fine as the kernel's clock tick)."""
    query = sa.select(sa.func.count(), sa.func.max(runs_table.c.created_at))
    try:
        with _version_engine(url).connect() as conn:
            return tuple(conn.execute(query).one())
    except sa.exc.OperationalError:  # no runs table yet: RunStore creates it on the next read
        return (0, None)


@functools.lru_cache(maxsize=MAX_CACHED_STORES)
def _version_engine(url: str) -> sa.engine.Engine:
    # No pool: no connection outlives a query, so the engine is safe to share across a fork.
    return sa.create_engine(url, poolclass=sa.pool.NullPool)


def read_frame(url: str) -> pd.DataFrame:
    """All runs as flat rows (``RunRecord.flat`` columns), oldest first; a row whose body cannot
    be read as a record becomes a ``corrupt`` row with its error. Reads only the run ids and
    bodies and flattens the parsed JSON directly (no record objects are kept)."""
    store = RunStore(url)
    query = sa.select(runs_table.c.run_id, runs_table.c.body).order_by(
        runs_table.c.created_at, runs_table.c.run_id)
    try:
        with store.engine.connect() as conn:
            rows = conn.execute(query).all()
    finally:
        store.engine.dispose()  # no pooled connection outlives the read (nor a fork)
    return pd.DataFrame([_flat_row(run_id, body) for run_id, body in rows])


def _flat_row(run_id: str, body: str) -> dict:
    try:
        data = json.loads(body)
        RunRecord.from_dict(data)  # validates: a record the store would call corrupt is one here
    except (ValueError, TypeError, RecordError) as exc:
        return CorruptRecord(run_id=run_id, error=f"{type(exc).__name__}: {exc}").flat()
    row = {k: v for k, v in data.items() if k not in NESTED.values() and k != "artifacts"}
    for prefix, group in NESTED.items():
        for key, value in (data.get(group) or {}).items():
            row[f"{prefix}.{key}"] = json.dumps(value) if type(value) in (list, dict) else value
    return row


def normalize_frame(df: pd.DataFrame) -> pd.DataFrame:
    """Add missing base columns and coerce metric/cost columns that hold numbers to numeric."""
    df = df.copy()
    for col in BASE_COLUMNS:
        if col not in df.columns:
            df[col] = pd.Series(dtype="object" if col != "duration_s" else "float64")
    for col in df.columns:
        if col.startswith(("metric.", "cost.")) or col == "duration_s":
            numeric = pd.to_numeric(df[col], errors="coerce")
            if numeric.notna().sum() == df[col].notna().sum():  # all values were numbers
                df[col] = numeric.astype("float64")
    return df


def _numeric(df: pd.DataFrame, col: str) -> bool:
    return pd.api.types.is_numeric_dtype(df[col]) and df[col].notna().any()


def quality_columns(df: pd.DataFrame) -> list[str]:
    """Numeric ``metric.*`` columns with at least one value (``metric.split`` is text: left out)."""
    return [c for c in df.columns if c.startswith("metric.") and _numeric(df, c)]


def cost_columns(df: pd.DataFrame) -> list[str]:
    """Numeric ``cost.*`` columns with at least one value, then ``duration_s`` if present."""
    cols = [c for c in df.columns if c.startswith("cost.") and _numeric(df, c)]
    if "duration_s" in df.columns and _numeric(df, "duration_s"):
        cols.append("duration_s")
    return cols


def higher_is_better(metric: str) -> bool:
    """Whether a larger value of a quality metric is better (accuracy: yes; loss: no)."""
    name = metric.split(".", 1)[-1].lower()
    return not any(name == key or name.endswith("_" + key) for key in LOWER_IS_BETTER)


def minimize_cost(col: str) -> bool:
    """Whether a smaller value of a cost column is better (throughput is the exception)."""
    return col not in HIGHER_COST_IS_BETTER


def column_label(col: str) -> str:
    """A readable axis/widget label: ``cost.latency_ms`` -> ``latency (ms)``."""
    return LABELS.get(col, col.split(".", 1)[-1].replace("_", " "))


def pareto_front(df: pd.DataFrame, x: str, y: str, minimize_x: bool = True,
                 maximize_y: bool | None = None) -> pd.DataFrame:
    """The rows of ``df`` not dominated in (x, y), sorted by x ascending.

    A row dominates another when it is at least as good in both x and y and strictly better in
    one. By default x is a cost (smaller is better) and the direction of y comes from its name
    (``higher_is_better``). Rows with NaN in x or y are ignored; exact duplicates of a front point
    do not dominate each other, so both are kept.
    """
    if maximize_y is None:
        maximize_y = higher_is_better(y)
    if df.empty or x not in df.columns or y not in df.columns:
        return df.iloc[0:0]
    xs = pd.to_numeric(df[x], errors="coerce").to_numpy(dtype=float)
    ys = pd.to_numeric(df[y], errors="coerce").to_numpy(dtype=float)
    # Orient both axes so that "smaller is better", then sweep from the best x.
    gx, gy = (xs if minimize_x else -xs), (-ys if maximize_y else ys)
    valid = ~(np.isnan(gx) | np.isnan(gy))
    keep, best, last = [], np.inf, None
    for pos in np.lexsort((gy, gx)):  # by gx, ties by gy (best first)
        if not valid[pos]:
            continue
        point = (gx[pos], gy[pos])
        if point[1] < best or point == last:
            keep.append(pos)
            best, last = point[1], point
    return df.iloc[keep].sort_values(x, kind="mergesort")
