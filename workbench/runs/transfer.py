"""Copy runs from one store to another, records and artifact folders together.

``import_store(source, target)`` is how a shipped store (``data/demo``: runs measured on the
team's H200 and on a CPU) joins a local one, and how the runs of a GPU machine come home.
Records keep their ids (so a second import skips them); each run's artifact folder (output
notebook, checkpoint, figures) is copied when its record is. Corrupt source records are counted
and skipped, never copied.
"""
from __future__ import annotations

import shutil
from collections.abc import Callable
from dataclasses import dataclass, field

from .record import RunRecord
from .store import CorruptRecord, RunStore, StoreError


@dataclass
class ImportReport:
    added: list[str] = field(default_factory=list)
    already_present: list[str] = field(default_factory=list)
    corrupt: list[str] = field(default_factory=list)

    def __str__(self) -> str:
        return (f"imported {len(self.added)} runs ({len(self.already_present)} already in the "
                f"store, {len(self.corrupt)} corrupt skipped)")


def import_store(source: RunStore | str, target: RunStore | str,
                 select: Callable[[RunRecord], bool] | None = None) -> ImportReport:
    """Add every readable record of ``source`` (those ``select`` accepts, if given) to
    ``target`` with its artifact folder."""
    source = source if isinstance(source, RunStore) else RunStore(source)
    target = target if isinstance(target, RunStore) else RunStore(target)
    if source.url == target.url:
        raise ValueError(f"import_store: source and target are the same store ({source.url})")
    report = ImportReport()
    existing = {r.run_id for r in target.records()}
    for record in source.records():
        if isinstance(record, CorruptRecord) or not isinstance(record, RunRecord):
            report.corrupt.append(getattr(record, "run_id", "?"))
            continue
        if select is not None and not select(record):
            continue
        if record.run_id in existing:
            report.already_present.append(record.run_id)
            continue
        folder = source.artifacts_root / record.run_id
        if folder.is_dir() and source.artifacts_root != target.artifacts_root:
            shutil.copytree(folder, target.artifacts_root / record.run_id, dirs_exist_ok=True)
        try:
            target.add(record)
        except StoreError:  # added by another writer meanwhile
            report.already_present.append(record.run_id)
            continue
        report.added.append(record.run_id)
    return report
