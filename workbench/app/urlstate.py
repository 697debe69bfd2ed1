"""The dashboard view as URL query parameters, so a view can be shared as a link.

``?x=latency_ms&y=accuracy&logx=1&method=monarch,dense&param.nblocks=4,8&group=method&runs=ab12``

* ``x`` / ``y``: the cost and quality columns, short (``latency_ms``) or full (``cost.latency_ms``);
* ``logx`` / ``logy``: ``1`` for a log axis;
* ``method``, ``model``, ``dataset``, ``device``, ``status`` and ``param.<name>``: a filter, as
  comma-separated value labels, or ``low..high`` for a parameter range;
* ``group``: ``method``, ``setting`` or a parameter column; ``runs``: the selected run ids.

Each value in a list is percent-encoded on its own, so a label holding a comma survives.
``encode_query`` leaves out what equals the default, so the plain URL stays plain.
"""
from __future__ import annotations

from urllib.parse import quote, unquote_plus

from .filters import IDENTITY_COLUMNS

RANGE = ".."
MAX_URL_RUNS = 500  # a larger selection is not written into the URL (it would be huge)
DEFAULTS = {"quality": None, "cost": None, "log_x": False, "log_y": False, "filters": {},
            "group_by": "", "selected": []}


def _short(column: str) -> str:
    return column.split(".", 1)[1] if column.startswith(("metric.", "cost.")) else column


def _join(values) -> str:
    return ",".join(quote(str(v), safe="") for v in values)


def _split(text: str) -> list[str]:
    return [unquote_plus(v) for v in text.split(",") if v != ""]


def _number(value) -> str:
    return f"{float(value):.12g}"


def encode_query(state: dict, defaults: dict | None = None) -> str:
    """``state`` (keys as in ``DEFAULTS``) as a query string starting with ``?``, or ``""``
    when everything is at its default (``defaults`` overrides ``DEFAULTS``, e.g. the axes a
    fresh page would pick)."""
    defaults = {**DEFAULTS, **(defaults or {})}
    parts = []
    for key, name in (("cost", "x"), ("quality", "y")):
        value = state.get(key)
        if value and value != defaults[key]:
            parts.append(f"{name}={quote(_short(value), safe='')}")
    for key, name in (("log_x", "logx"), ("log_y", "logy")):
        if bool(state.get(key)) != bool(defaults[key]):
            parts.append(f"{name}={int(bool(state.get(key)))}")
    for column, allowed in sorted((state.get("filters") or {}).items()):
        if isinstance(allowed, tuple):
            value = f"{_number(allowed[0])}{RANGE}{_number(allowed[1])}"
        elif allowed:
            value = _join(allowed)
        else:
            continue
        parts.append(f"{quote(column, safe='.')}={value}")
    if state.get("group_by"):
        parts.append(f"group={quote(state['group_by'], safe='.')}")
    selected = state.get("selected") or []
    if selected and len(selected) <= MAX_URL_RUNS:
        parts.append(f"runs={_join(selected)}")
    return "?" + "&".join(parts) if parts else ""


def parse_query(search: str) -> dict[str, str]:
    """``?a=1&b=x%2Cy`` -> ``{"a": "1", "b": "x%2Cy"}``: names decoded, values left encoded
    (``decode_query`` splits them on commas first)."""
    pairs = {}
    for item in search.lstrip("?").split("&"):
        if item:
            name, _, value = item.partition("=")
            pairs[unquote_plus(name)] = value
    return pairs


def _resolve(name: str, columns: list[str], prefix: str) -> str | None:
    for candidate in (name, f"{prefix}.{name}"):
        if candidate in columns:
            return candidate
    return None


def decode_query(search: str, quality: list[str], cost: list[str],
                 filterable: list[str] | None = None) -> tuple[dict, list[str]]:
    """(state, problems) from a query string. ``quality`` / ``cost`` are the columns the axes
    may take and ``filterable`` the columns a filter may name; what names something else is
    left out of ``state`` and explained in ``problems`` (shown to the user), never raised."""
    state: dict = {}
    problems: list[str] = []
    for name, value in parse_query(search).items():
        text = unquote_plus(value)
        if name in ("x", "y"):
            key, columns, prefix = (("cost", cost, "cost") if name == "x"
                                    else ("quality", quality, "metric"))
            column = _resolve(text, columns, prefix)
            if column:
                state[key] = column
            else:
                problems.append(f"{name}={text}: no such {key} column in these runs")
        elif name in ("logx", "logy"):
            state["log_" + name[-1]] = text.lower() in ("1", "true", "yes", "on")
        elif name == "group":
            state["group_by"] = text
        elif name == "runs":
            state["selected"] = _split(value)
        elif name in IDENTITY_COLUMNS or name.startswith("param."):
            if filterable is not None and name not in filterable:
                problems.append(f"{name}: no runs have this field, so it cannot filter")
                continue
            low, sep, high = text.partition(RANGE)
            if sep and name.startswith("param."):
                try:
                    state.setdefault("filters", {})[name] = (float(low), float(high))
                except ValueError:
                    problems.append(f"{name}={text}: a range needs two numbers, low..high")
            else:
                state.setdefault("filters", {})[name] = _split(value)
        else:
            problems.append(f"{name}: not a dashboard setting (ignored)")
    return state, problems
