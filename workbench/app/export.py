"""The CSV export: the selected runs (or, with nothing selected, the filtered ones), flat.

Columns follow ``workbench runs export``: the run's own fields, then ``param.*``, ``metric.*``
and ``cost.*``; columns with no value for any exported run are dropped.
"""
from __future__ import annotations

import io

import pandas as pd

FIRST_COLUMNS = ("run_id", "created_at", "status", "method", "model", "dataset", "device", "seed",
                 "duration_s", "notebook", "error")
GROUP_PREFIXES = ("param.", "metric.", "cost.")


def export_frame(runs: pd.DataFrame, selected: list[str] | None = None) -> pd.DataFrame:
    """The rows of ``runs`` whose ``run_id`` is in ``selected`` (all rows when ``selected`` is
    empty or None), in the frame's order, with the column order above."""
    rows = runs[runs["run_id"].isin(list(selected))] if selected else runs
    rows = rows.dropna(axis=1, how="all")
    first = [c for c in FIRST_COLUMNS if c in rows.columns]
    grouped = [c for p in GROUP_PREFIXES for c in rows.columns if c.startswith(p)]
    rest = [c for c in rows.columns if c not in first and c not in grouped]
    return rows[[*first, *grouped, *rest]].reset_index(drop=True)


def export_csv(runs: pd.DataFrame, selected: list[str] | None = None) -> io.StringIO:
    """``export_frame`` as CSV text, ready for ``pn.widgets.FileDownload``."""
    buffer = io.StringIO()
    export_frame(runs, selected).to_csv(buffer, index=False)
    buffer.seek(0)
    return buffer


def export_filename(selected: list[str] | None, today: str) -> str:
    """``runs-selected-3-2026-11-29.csv`` or ``runs-filtered-2026-11-29.csv``."""
    return (f"runs-selected-{len(selected)}-{today}.csv" if selected
            else f"runs-filtered-{today}.csv")
