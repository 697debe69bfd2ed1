"""Grouping runs: mean and spread (std, min, max) of quality and cost over the runs of a group.

``by`` names the grouping: ``"method"``, ``"setting"`` (method, model, dataset and every
parameter that varies, except the seed: runs that differ only by seed form one group) or a
parameter column such as ``"param.nblocks"`` (grouped within each method). One pandas
``groupby`` does the work, however many runs there are.
"""
from __future__ import annotations

import pandas as pd

from .filters import MISSING, parameter_columns, value_labels

SETTING = "setting"
SEED_COLUMNS = ("seed", "param.seed")
STATS = ("mean", "std", "min", "max")


def group_choices(df: pd.DataFrame) -> dict[str, str]:
    """Widget label -> ``by`` value: no grouping, method, setting, then each varying parameter."""
    choices = {"none": "", "method": "method", "setting (average over seeds)": SETTING}
    for column in parameter_columns(df):
        if column not in SEED_COLUMNS and df[column].astype(str).nunique() > 1:
            choices[f"method and {column.removeprefix('param.')}"] = column
    return choices


def group_columns(df: pd.DataFrame, by: str) -> list[str]:
    """The columns whose values define a group for ``by``."""
    if not by:
        return []
    if by == "method":
        return ["method"]
    if by == SETTING:
        varying = [c for c in parameter_columns(df)
                   if c not in SEED_COLUMNS and value_labels(df[c]).nunique() > 1]
        return ["method", "model", "dataset", *varying]
    if by not in df.columns:
        raise KeyError(f"cannot group by {by!r}: the runs have no such column")
    return ["method", by]


def group_labels(df: pd.DataFrame, by: str) -> pd.Series:
    """One label per run naming its group, e.g. ``monarch · nblocks=4`` (vectorised)."""
    columns = group_columns(df, by)
    if not columns:
        return df["run_id"].astype(str)
    label = value_labels(df[columns[0]])
    for column in columns[1:]:
        text = value_labels(df[column])
        if column in ("model", "dataset"):
            part = text.where(text != MISSING, "")
        else:
            part = column.removeprefix("param.") + "=" + text
        label = label + " · " + part
    return label.str.replace(r"( · )+$", "", regex=True).str.replace(r"( · ){2,}", " · ",
                                                                     regex=True)


def group_summary(df: pd.DataFrame, by: str, columns: list[str]) -> pd.DataFrame:
    """One row per group: ``group`` (its label), ``method``, ``runs`` (how many), ``run_ids``
    (a list), then ``<column> mean|std|min|max`` for each numeric column in ``columns``.
    Missing values are skipped; ``std`` is NaN for a group of one. Sorted by group label."""
    numeric = [c for c in dict.fromkeys(columns) if c and c in df.columns]
    out_columns = ["group", "method", "runs", "run_ids",
                   *[f"{c} {s}" for c in numeric for s in STATS]]
    if df.empty or not by:
        return pd.DataFrame(columns=out_columns)
    data = df[["run_id", "method", *numeric]].copy()
    for column in numeric:
        data[column] = pd.to_numeric(data[column], errors="coerce")
    data["group"] = group_labels(df, by).to_numpy()
    grouped = data.groupby("group", sort=True)
    stats = grouped[numeric].agg(list(STATS)) if numeric else pd.DataFrame(index=grouped.size().index)
    stats.columns = [f"{c} {s}" for c, s in stats.columns] if numeric else []
    summary = pd.DataFrame({
        "method": grouped["method"].first().astype(str),
        "runs": grouped.size(),
        "run_ids": grouped["run_id"].agg(list),
    }).join(stats)
    return summary.reset_index()[out_columns]
