"""Comparing runs (pure pandas): what differs from a baseline run, and runs side by side.

Both work on rows of the dashboard's runs frame (``param.*``, ``metric.*``, ``cost.*`` columns),
comparing values by their labels (``filters.value_labels``), so ``64`` and ``64.0`` are equal.
"""
from __future__ import annotations

import numpy as np
import pandas as pd

from .data import column_label
from .filters import MISSING, value_labels

IDENTITY = ("method", "model", "dataset", "device", "status", "seed")
SECTIONS = (("run", IDENTITY), ("parameter", "param."), ("metric", "metric."),
            ("cost", "cost."))


def _section_columns(df: pd.DataFrame, section: str, spec) -> list[str]:
    if section == "run":
        return [c for c in spec if c in df.columns]
    columns = [c for c in df.columns if c.startswith(spec)]
    if section == "cost" and "duration_s" in df.columns:
        columns.append("duration_s")
    return columns


def _name(column: str, section: str) -> str:
    if section in ("metric", "cost"):
        return column_label(column)
    return column.removeprefix("param.")


def baseline_candidates(runs: pd.DataFrame, run_id: str) -> pd.DataFrame:
    """Runs that make sense as a baseline for ``run_id``: other runs of the same model and
    dataset, newest first, dense runs before the rest."""
    row = runs[runs["run_id"] == run_id]
    others = runs[runs["run_id"] != run_id]
    if not row.empty:
        same = np.ones(len(others), dtype=bool)
        for column in ("model", "dataset"):
            value = row[column].iloc[0]
            if pd.notna(value) and value != "":
                same &= (others[column] == value).to_numpy()
        others = others[same]
    dense = (others["method"] == "dense").to_numpy()
    order = np.lexsort((-np.arange(len(others)), ~dense))  # dense first, then newest first
    return others.iloc[order]


def diff_vs_baseline(runs: pd.DataFrame, run_id: str, baseline_id: str) -> pd.DataFrame:
    """One row per field where ``run_id`` and ``baseline_id`` differ (run identity and
    parameters), plus every metric and cost either has: columns ``section``, ``name``, ``run``,
    ``baseline`` and ``change`` (run / baseline - 1, for numbers; NaN otherwise).
    KeyError if either run is not in ``runs``."""
    pair = runs.set_index("run_id").reindex([run_id, baseline_id])
    missing = [r for r, ok in zip((run_id, baseline_id), pair.index.isin(runs["run_id"])) if not ok]
    if missing:
        raise KeyError(f"no such run: {', '.join(missing)}")
    pair = pair.reset_index()
    rows = []
    for section, spec in SECTIONS:
        for column in _section_columns(pair, section, spec):
            a, b = pair[column].iloc[0], pair[column].iloc[1]
            if pd.isna(a) and pd.isna(b):
                continue
            la, lb = value_labels(pair[column]).tolist()
            if section in ("run", "parameter") and la == lb:
                continue
            change = np.nan
            if section in ("metric", "cost"):
                x, y = pd.to_numeric(pd.Series([a, b]), errors="coerce")
                if pd.notna(x) and pd.notna(y) and y != 0:
                    change = x / y - 1
            rows.append({"section": section, "name": _name(column, section),
                         "run": None if la == MISSING else a,
                         "baseline": None if lb == MISSING else b, "change": change})
    return pd.DataFrame(rows, columns=["section", "name", "run", "baseline", "change"])


def compare_frame(runs: pd.DataFrame, run_ids: list[str], only_differences: bool = True
                  ) -> pd.DataFrame:
    """The runs ``run_ids`` side by side: one column per run (named by its id, in the given
    order), one row per field, indexed by (section, name). Identity and parameter rows are kept
    only where the runs differ when ``only_differences``; metric and cost rows always show.
    Unknown ids are left out."""
    rows = runs.set_index("run_id")
    rows = rows.loc[[r for r in dict.fromkeys(run_ids) if r in rows.index]]
    index, values = [], []
    for section, spec in SECTIONS:
        for column in _section_columns(rows.reset_index(), section, spec):
            series = rows[column]
            if series.isna().all():
                continue
            if (only_differences and section in ("run", "parameter")
                    and value_labels(series).nunique() < 2):
                continue
            index.append((section, _name(column, section)))
            values.append(series.where(series.notna(), None).tolist())
    frame = pd.DataFrame(values, columns=list(rows.index), dtype=object)
    frame.index = pd.MultiIndex.from_tuples(index, names=["section", "name"]) if index else (
        pd.MultiIndex.from_tuples([], names=["section", "name"]))
    return frame
