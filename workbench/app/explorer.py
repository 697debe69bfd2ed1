"""One browser session's view of the run store: the runs, filters, axes, grouping, selection.

``RunsExplorer`` is plain ``param`` state, no widgets: the views in ``workbench.app.views`` bind
to it and write back to it, which is what links them (a box selected in the Pareto plot sets
``selected``; the table and the parallel coordinates follow). The dashboard creates one per
session, so one user's filters and selection never leak to another.
"""
from __future__ import annotations

import pandas as pd
import param
import sqlalchemy as sa

from . import urlstate
from .data import column_label, cost_columns, load_runs, quality_columns
from .filters import FilterSpec, apply_filters, filter_specs, value_labels
from .grouping import group_choices, group_summary

STATUSES = ["ok", "failed", "corrupt"]
PREFERRED_QUALITY = ("metric.accuracy", "metric.bits_per_byte", "metric.perplexity", "metric.loss")
PREFERRED_COST = ("cost.flops_per_sample", "cost.params", "cost.latency_ms")


def _first(preferred, available):
    return next((c for c in preferred if c in available), available[0] if available else None)


class RunsExplorer(param.Parameterized):
    """The loaded runs and what this session looks at; ``filtered`` and ``groups`` follow the
    filters and grouping, ``selected`` holds run ids (always a subset of ``filtered``)."""

    store = param.String(doc="SQLAlchemy URL of the run store")
    runs = param.DataFrame(default=pd.DataFrame(), doc="All runs in the store, oldest first")
    filtered = param.DataFrame(default=pd.DataFrame(), doc="The runs passing the filters")
    groups = param.DataFrame(default=pd.DataFrame(), doc="group_summary of filtered (or empty)")
    specs = param.List(default=[], item_type=FilterSpec, doc="The filters these runs allow")
    quality = param.Selector(default=None, objects=[], allow_None=True, label="Quality (y)")
    cost = param.Selector(default=None, objects=[], allow_None=True, label="Cost (x)")
    log_x = param.Boolean(default=False, label="log x")
    log_y = param.Boolean(default=False, label="log y")
    filters = param.Dict(default={}, doc="column -> allowed value labels, or (low, high)")
    group_by = param.Selector(default="", objects={"none": ""}, label="Group runs by")
    selected = param.List(default=[], item_type=str, doc="Selected run ids")
    url_problems = param.List(default=[], doc="What a deep link named that these runs lack")
    reload = param.Event(label="Reload runs", doc="Re-read the store, bypassing the cache")

    def __init__(self, **params):
        self._labels: dict[str, pd.Series] = {}
        super().__init__(**params)

    # ---- loading ---------------------------------------------------------------------------
    def load(self, force: bool = False) -> None:
        """Read the store (cached for a few seconds unless ``force``) and refresh the choices."""
        df = load_runs(self.store, force=force).reset_index(drop=True)
        labels = {c: value_labels(df[c]) for c in ("method", "model", "dataset", "device",
                                                   "status") if c in df.columns}
        specs = filter_specs(df, labels)
        labels.update({s.column: value_labels(df[s.column]) for s in specs
                       if s.column not in labels and s.kind == "choice"})
        self._labels = labels
        with param.parameterized.batch_call_watchers(self):
            self._set_choices("quality", quality_columns(df), PREFERRED_QUALITY)
            self._set_choices("cost", cost_columns(df), PREFERRED_COST)
            choices = group_choices(df)
            self.param.group_by.objects = choices
            if self.group_by not in choices.values():
                self.group_by = ""
            if specs != self.specs:
                self.specs = specs
            self.runs = df

    @param.depends("reload", watch=True)
    def _reload(self) -> None:
        self.load(force=True)

    def _set_choices(self, name: str, columns: list[str], preferred) -> None:
        self.param[name].objects = {column_label(c): c for c in columns}
        if getattr(self, name) not in columns:
            setattr(self, name, _first(preferred, columns))

    def default_axes(self) -> dict:
        """The axes a fresh page picks for these runs (left out of a deep link)."""
        return {"quality": _first(PREFERRED_QUALITY, quality_columns(self.runs)),
                "cost": _first(PREFERRED_COST, cost_columns(self.runs))}

    # ---- derived frames ----------------------------------------------------------------------
    @param.depends("runs", "filters", watch=True, on_init=True)
    def _apply_filters(self) -> None:
        filtered = apply_filters(self.runs, self.filters, self._labels)
        with param.parameterized.batch_call_watchers(self):
            self.filtered = filtered
            if self.selected:  # what is filtered out is no longer selected
                kept = set(filtered["run_id"])
                self.selected = [r for r in self.selected if r in kept]

    @param.depends("filtered", "group_by", "quality", "cost", watch=True, on_init=True)
    def _group(self) -> None:
        if not self.group_by or self.filtered.empty:
            if not self.groups.empty:  # (an unchanged empty frame would redraw the views)
                self.groups = pd.DataFrame()
            return
        self.groups = group_summary(self.filtered, self.group_by, [self.quality, self.cost])

    # ---- selection ---------------------------------------------------------------------------
    def select(self, run_ids) -> None:
        """Select ``run_ids`` (those among the filtered runs; order of the frame)."""
        wanted = set(run_ids)
        ids = [r for r in self.filtered["run_id"] if r in wanted] if wanted else []
        if ids != self.selected:
            self.selected = ids

    def select_groups(self, labels) -> None:
        """Select every run of the groups named by ``labels`` (``groups["group"]`` values)."""
        if self.groups.empty:
            return
        rows = self.groups[self.groups["group"].isin(list(labels))]
        self.select([r for ids in rows["run_ids"] for r in ids])

    def set_filter(self, column: str, allowed) -> None:
        """Set (or, with an empty value, drop) the filter on ``column``."""
        filters = {k: v for k, v in self.filters.items() if k != column}
        if allowed:
            filters[column] = tuple(allowed) if isinstance(allowed, tuple) else list(allowed)
        if filters != self.filters:
            self.filters = filters

    # ---- deep links --------------------------------------------------------------------------
    def url_state(self) -> dict:
        return {"quality": self.quality, "cost": self.cost, "log_x": self.log_x,
                "log_y": self.log_y, "filters": self.filters, "group_by": self.group_by,
                "selected": self.selected}

    def to_query(self) -> str:
        """This view as a query string (``urlstate.encode_query``)."""
        return urlstate.encode_query(self.url_state(), defaults=self.default_axes())

    def apply_query(self, search: str) -> None:
        """Set axes, filters, grouping and selection from a query string; what does not fit
        these runs goes to ``url_problems``."""
        filterable = [s.column for s in self.specs] + ["status"]
        state, problems = urlstate.decode_query(search, list(self.param.quality.objects),
                                                list(self.param.cost.objects), filterable)
        options = {s.column: set(s.options) for s in self.specs if s.kind == "choice"}
        for column, allowed in state.get("filters", {}).items():
            if isinstance(allowed, list) and column in options:
                unknown = [v for v in allowed if v not in options[column]]
                if unknown:
                    problems.append(f"{column}: no runs have {', '.join(unknown)}")
                    state["filters"][column] = [v for v in allowed if v in options[column]]
        group = state.pop("group_by", None)
        if group is not None and group not in self.param.group_by.objects:
            problems.append(f"group={group}: these runs cannot be grouped by it")
            group = None
        selected = state.pop("selected", None)
        with param.parameterized.batch_call_watchers(self):
            self.param.update(**{k: v for k, v in state.items()})
            if group is not None:
                self.group_by = group
        if selected:
            self.select(expand_ids(self.filtered["run_id"], selected))
        self.url_problems = problems

    # ---- text ----------------------------------------------------------------------------------
    @property
    def store_label(self) -> str:
        """The store for display: a file path, or the URL without its password."""
        url = sa.engine.make_url(self.store)
        if url.get_backend_name() == "sqlite":
            return url.database or ":memory:"
        return url.render_as_string(hide_password=True)

    def summary(self) -> str:
        """One line on what is loaded: counts per status."""
        counts = self.runs["status"].value_counts() if not self.runs.empty else {}
        parts = [f"{counts[s]} {s}" for s in STATUSES if s in counts]
        return f"**{len(self.runs)} runs** ({', '.join(parts) or 'none'})"


def expand_ids(run_ids: pd.Series, tokens: list[str]) -> list[str]:
    """The run ids named by ``tokens``: each token is a whole id or a prefix of ids."""
    ids = run_ids.astype(str)
    exact = set(tokens) & set(ids)
    prefixes = [t for t in tokens if t not in exact]
    hits = ids.isin(exact)
    for prefix in prefixes:
        hits |= ids.str.startswith(prefix)
    return ids[hits].tolist()
