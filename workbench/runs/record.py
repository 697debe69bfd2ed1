"""The run record: what one notebook execution produced.

A record is written once, when a run ends (``ok`` or ``failed``), and never changed afterwards.
Nested groups (``parameters``, ``metrics``, ``cost``, ``artifacts``) are plain dicts of JSON
values so any method can add its own keys; the store flattens them to ``param.<name>``,
``metric.<name>`` and ``cost.<name>`` columns for tables and plots.
"""
from __future__ import annotations

import dataclasses
import datetime as _dt
import json
import math
import uuid
from typing import Any

SCHEMA_VERSION = 1
STATUSES = ("ok", "failed")

# The cost keys the cost meter fills (units in the name); methods may add more.
COST_KEYS = (
    "params", "nonzeros", "flops_per_sample", "latency_ms", "latency_ms_iqr",
    "peak_memory_mb", "throughput_per_s",
)
# Fields that hold text ("" when unknown), never None: tables and listings format them as text.
_TEXT_FIELDS = ("notebook", "model", "dataset", "device", "torch_version", "git_commit",
                "output_notebook")


class RecordError(ValueError):
    """A run record that is malformed (bad field, wrong type, not JSON-serialisable)."""


def new_run_id() -> str:
    """A short, unique, sortable-enough id: 12 hex digits."""
    return uuid.uuid4().hex[:12]


def utc_now() -> str:
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="microseconds")


@dataclasses.dataclass
class RunRecord:
    """One notebook execution. ``metrics`` holds quality numbers (accuracy, loss, ...) plus
    ``split`` naming the split they were measured on; ``cost`` holds the cost meter's numbers."""

    method: str
    notebook: str = ""
    status: str = "ok"
    error: str | None = None
    parameters: dict[str, Any] = dataclasses.field(default_factory=dict)
    model: str = ""
    dataset: str = ""
    metrics: dict[str, Any] = dataclasses.field(default_factory=dict)
    cost: dict[str, Any] = dataclasses.field(default_factory=dict)
    device: str = ""
    torch_version: str = ""
    git_commit: str = ""
    seed: int | None = None
    duration_s: float | None = None
    output_notebook: str = ""
    artifacts: dict[str, str] = dataclasses.field(default_factory=dict)
    run_id: str = dataclasses.field(default_factory=new_run_id)
    created_at: str = dataclasses.field(default_factory=utc_now)
    schema_version: int = SCHEMA_VERSION

    def __post_init__(self) -> None:
        self.validate()

    def validate(self) -> None:
        if not isinstance(self.method, str) or not self.method:
            raise RecordError("run record: 'method' must be a non-empty string")
        for name in ("run_id", "created_at"):
            if not isinstance(getattr(self, name), str) or not getattr(self, name):
                raise RecordError(f"run record: {name!r} must be a non-empty string")
        for name in _TEXT_FIELDS:
            if not isinstance(getattr(self, name), str):
                raise RecordError(f"run record: {name!r} must be a string, got "
                                  f"{type(getattr(self, name)).__name__}")
        if self.error is not None and not isinstance(self.error, str):
            raise RecordError(f"run record: 'error' must be a string or None, got "
                              f"{type(self.error).__name__}")
        if self.status not in STATUSES:
            raise RecordError(f"run record: status {self.status!r} is not one of {STATUSES}")
        for group in ("parameters", "metrics", "cost", "artifacts"):
            value = getattr(self, group)
            if not isinstance(value, dict):
                raise RecordError(f"run record: {group!r} must be a dict, got {type(value).__name__}")
            try:
                json.dumps(value, allow_nan=True)
            except (TypeError, ValueError) as exc:
                raise RecordError(f"run record: {group!r} is not JSON-serialisable: {exc}") from exc
        for key, value in {**self.metrics, **self.cost}.items():
            if isinstance(value, bool) or not isinstance(value, (int, float, str, type(None))):
                raise RecordError(f"run record: metric/cost {key!r} must be a number or string, "
                                  f"got {type(value).__name__}")

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "RunRecord":
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = set(data) - known
        if unknown:
            raise RecordError(f"run record: unknown fields {sorted(unknown)}")
        return cls(**data)

    def flat(self) -> dict[str, Any]:
        """One table row: scalar fields plus ``param.*``, ``metric.*``, ``cost.*`` columns."""
        row = {k: v for k, v in self.to_dict().items()
               if k not in ("parameters", "metrics", "cost", "artifacts")}
        for prefix, group in (("param", self.parameters), ("metric", self.metrics),
                              ("cost", self.cost)):
            for key, value in group.items():
                row[f"{prefix}.{key}"] = _scalar(value)
        return row


def _scalar(value: Any) -> Any:
    """Lists and dicts become JSON text so a table column holds one scalar type."""
    if isinstance(value, (list, dict)):
        return json.dumps(value)
    if isinstance(value, float) and math.isnan(value):
        return None
    return value
