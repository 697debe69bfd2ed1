"""Filters over the runs frame: which columns can be filtered, and applying a filter (pure pandas).

A filter maps a column to either a list of allowed *value labels* (``["monarch", "dense"]``;
labels are the text a widget and a URL show, see ``value_labels``) or a ``(low, high)`` range
for a numeric parameter with many distinct values. Everything is vectorised: filtering 10,000
runs costs a few ``isin`` calls, not a Python loop over rows.
"""
from __future__ import annotations

import dataclasses

import numpy as np
import pandas as pd

# Run identity columns that always get a filter (when the store has values for them).
IDENTITY_COLUMNS = ("method", "model", "dataset", "device", "status")
MISSING = "(none)"  # the label of a missing value
MAX_CHOICES = 40    # a numeric parameter with more distinct values gets a range filter


@dataclasses.dataclass(frozen=True)
class FilterSpec:
    """What one filter widget offers: ``kind`` is "choice" (``options``: value labels, sorted)
    or "range" (``bounds``: (min, max) of a numeric column)."""

    column: str
    kind: str
    options: tuple[str, ...] = ()
    bounds: tuple[float, float] = (0.0, 0.0)

    @property
    def label(self) -> str:
        return self.column.removeprefix("param.")


def value_labels(values: pd.Series) -> pd.Series:
    """Each value as the text a filter compares: whole floats without ``.0`` (a parameter
    column holding ints and gaps is float), missing values as ``MISSING``."""
    missing = values.isna()
    if pd.api.types.is_bool_dtype(values):
        labels = values.astype(str)
    elif pd.api.types.is_numeric_dtype(values):
        labels = values.astype(str)
        whole = ~missing & (values % 1 == 0) & (values.abs() < 1e15)
        if whole.any():
            labels = labels.where(~whole, values.where(whole, 0).astype("int64").astype(str))
    else:
        labels = values.astype(str)
    return labels.where(~missing, MISSING).astype(object)


def _sort_key(label: str):
    try:
        return (0, float(label), label)
    except ValueError:
        return (1 if label != MISSING else 2, 0.0, label)


def sorted_labels(labels) -> list[str]:
    """Labels in a natural order: numbers by value, then text, ``MISSING`` last."""
    return sorted(set(labels), key=_sort_key)


def parameter_columns(df: pd.DataFrame) -> list[str]:
    """The ``param.*`` columns that hold at least one value, in frame order."""
    return [c for c in df.columns if c.startswith("param.") and df[c].notna().any()]


def filter_specs(df: pd.DataFrame, labels: dict[str, pd.Series] | None = None) -> list[FilterSpec]:
    """One spec per filterable column of ``df``: the identity columns, then every parameter
    whose value differs between runs (a constant parameter filters nothing, so it is left out).
    ``labels`` may hold precomputed ``value_labels`` per column."""
    labels = labels or {}
    specs = []
    for column in [*IDENTITY_COLUMNS, *parameter_columns(df)]:
        if column not in df.columns or not df[column].notna().any():
            continue
        text = labels.get(column)
        text = value_labels(df[column]) if text is None else text
        options = text.unique()
        if column.startswith("param.") and len(options) < 2:
            continue
        numeric = pd.api.types.is_numeric_dtype(df[column]) and not pd.api.types.is_bool_dtype(
            df[column])
        if column.startswith("param.") and numeric and len(options) > MAX_CHOICES:
            bounds = (float(df[column].min()), float(df[column].max()))
            specs.append(FilterSpec(column, "range", bounds=bounds))
        else:
            specs.append(FilterSpec(column, "choice", options=tuple(sorted_labels(options))))
    return specs


def filter_mask(df: pd.DataFrame, filters: dict, labels: dict[str, pd.Series] | None = None
                ) -> np.ndarray:
    """Boolean mask of the rows of ``df`` passing every filter. An empty choice list or a
    column the frame lacks filters nothing (so a shared link never hides everything because a
    store lacks a column); a range keeps rows with ``low <= value <= high``."""
    labels = labels or {}
    mask = np.ones(len(df), dtype=bool)
    for column, allowed in filters.items():
        if column not in df.columns or allowed is None:
            continue
        if isinstance(allowed, tuple):
            low, high = allowed
            values = pd.to_numeric(df[column], errors="coerce")
            mask &= ((values >= low) & (values <= high)).to_numpy()
        elif allowed:
            text = labels.get(column)
            text = value_labels(df[column]) if text is None else text
            mask &= text.isin(list(allowed)).to_numpy()
    return mask


def apply_filters(df: pd.DataFrame, filters: dict,
                  labels: dict[str, pd.Series] | None = None) -> pd.DataFrame:
    """The rows of ``df`` passing ``filters`` (see ``filter_mask``)."""
    if df.empty or not filters:
        return df
    return df[filter_mask(df, filters, labels)]
