"""Runs as a pandas frame for the dashboard, and the Pareto front (pure pandas).

Column conventions follow ``RunRecord.flat``: quality metrics are ``metric.<name>``, cost numbers
are ``cost.<name>`` (plus the run's wall time ``duration_s``), parameters are ``param.<name>``.
"""
from __future__ import annotations

import numpy as np
import pandas as pd
import panel as pn

from workbench.runs.store import RunStore, resolve_store_url

# Columns every frame has, even an empty one or one holding only corrupt rows.
BASE_COLUMNS = ("run_id", "created_at", "status", "error", "method", "notebook", "model",
                "dataset", "device", "seed", "duration_s")
# Quality metrics where a smaller number is better; everything else counts as higher-is-better.
LOWER_IS_BETTER = ("loss", "bits_per_byte", "perplexity", "error", "error_rate", "mse", "nll")
# Cost columns where a larger number is better (everything else: smaller is cheaper).
HIGHER_COST_IS_BETTER = ("cost.throughput_per_s",)
LABELS = {
    "cost.params": "parameters", "cost.nonzeros": "nonzero weights",
    "cost.flops_per_sample": "FLOPs per sample", "cost.latency_ms": "latency (ms)",
    "cost.latency_ms_iqr": "latency IQR (ms)", "cost.peak_memory_mb": "peak memory (MB)",
    "cost.throughput_per_s": "throughput (samples/s)", "duration_s": "duration (s)",
    "metric.bits_per_byte": "bits per byte",
}
CACHE_SECONDS = 5.0


def load_runs(store=None, force: bool = False) -> pd.DataFrame:
    """The store's runs, one row per run, oldest first (cached for a few seconds per store).

    ``store`` is a path, an SQLAlchemy URL or None (``WORKBENCH_STORE`` / the default store);
    ``force=True`` drops the cached copy first, e.g. for a reload button.
    """
    url = resolve_store_url(store)
    if force:
        _load_frame.clear()
    return _load_frame(url).copy()


@pn.cache(ttl=CACHE_SECONDS, max_items=16)
def _load_frame(url: str) -> pd.DataFrame:
    return normalize_frame(RunStore(url).frame())


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
