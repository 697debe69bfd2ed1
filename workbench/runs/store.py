"""The run store: append-only run records in SQLite (default) or any SQLAlchemy database.

``RunStore()`` opens the store named by ``WORKBENCH_STORE`` (a file path or an SQLAlchemy URL such
as ``postgresql+psycopg://user@host/db``), defaulting to ``data/store/runs.sqlite`` in a source
checkout. SQLite runs in WAL mode with a long busy timeout, and writes retry on lock contention,
so many notebooks can log at once. A record that cannot be parsed is reported, not dropped:
``records()`` yields a ``CorruptRecord`` for it and the rest of the store stays readable.
"""
from __future__ import annotations

import dataclasses
import json
import os
import random
import time
from pathlib import Path
from typing import Iterator

import sqlalchemy as sa
from sqlalchemy.exc import IntegrityError, OperationalError, SQLAlchemyError

from .record import SCHEMA_VERSION, RecordError, RunRecord

_meta = sa.MetaData()
runs_table = sa.Table(
    "runs", _meta,
    sa.Column("run_id", sa.String(64), primary_key=True),
    sa.Column("created_at", sa.String(40), nullable=False, index=True),
    sa.Column("status", sa.String(16), nullable=False, index=True),
    sa.Column("method", sa.String(128), nullable=False, index=True),
    sa.Column("notebook", sa.String(512)),
    sa.Column("model", sa.String(256)),
    sa.Column("dataset", sa.String(256)),
    sa.Column("device", sa.String(256)),
    sa.Column("schema_version", sa.Integer, nullable=False),
    sa.Column("body", sa.Text, nullable=False),  # the whole record as JSON
)
meta_table = sa.Table(
    "workbench_meta", _meta,
    sa.Column("key", sa.String(64), primary_key=True),
    sa.Column("value", sa.String(256), nullable=False),
)


class StoreError(RuntimeError):
    """The store cannot be opened or used (newer schema, unreachable database, ...)."""


@dataclasses.dataclass
class CorruptRecord:
    """A stored row whose body could not be read back as a RunRecord."""
    run_id: str
    error: str
    status: str = "corrupt"

    def flat(self) -> dict:
        return {"run_id": self.run_id, "status": self.status, "error": self.error,
                "method": "?"}


def default_store_path() -> Path:
    """``data/store/runs.sqlite`` beside the package in a source checkout, else ~/.workbench."""
    checkout = Path(__file__).resolve().parents[2]
    if (checkout / "pyproject.toml").exists() and (checkout / "data").is_dir():
        return checkout / "data" / "store" / "runs.sqlite"
    return Path.home() / ".workbench" / "store" / "runs.sqlite"


def resolve_store_url(store: "str | os.PathLike | RunStore | None" = None) -> str:
    """An SQLAlchemy URL from an explicit value (a path, a URL or an open RunStore),
    ``WORKBENCH_STORE``, or the default path."""
    if isinstance(store, RunStore):
        return store.url
    if store is not None and not isinstance(store, (str, os.PathLike)):
        raise TypeError(f"a run store is a path, an SQLAlchemy URL or a RunStore, "
                        f"not {type(store).__name__}")
    value = str(store) if store is not None else os.environ.get("WORKBENCH_STORE", "")
    if not value:
        value = str(default_store_path())
    if "://" in value:
        return _absolute_sqlite(value)
    path = Path(value).expanduser().resolve()
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise StoreError(f"cannot open run store {path}: cannot create its folder: {exc}") from exc
    return f"sqlite:///{path}"


def _absolute_sqlite(url: str) -> str:
    """``url`` with a relative SQLite database path (``sqlite:///runs.sqlite``) made absolute,
    so that it names the same file from any folder, as in a notebook kernel, which runs in the
    notebook's folder; other URLs (in-memory, ``file:`` URIs, other databases) unchanged."""
    try:
        parsed = sa.engine.make_url(url)
    except sa.exc.ArgumentError:  # not a URL: left for create_engine to refuse
        return url
    database = parsed.database
    if (parsed.get_backend_name() != "sqlite" or not database or database == ":memory:"
            or database.startswith("file:") or Path(database).is_absolute()):
        return url
    return parsed.set(database=str(Path(database).resolve())).render_as_string(
        hide_password=False)


class RunStore:
    """Append-only run records. ``add`` writes, ``get``/``records``/``frame`` read."""

    def __init__(self, store: str | os.PathLike | None = None):
        """Open (creating when new) the store; StoreError naming it when it cannot be opened
        (a folder, a file that is not a database, an unknown dialect, a missing driver, an
        unreachable server)."""
        self.url = resolve_store_url(store)
        self.is_sqlite = self.url.startswith("sqlite")
        kwargs = {"connect_args": {"timeout": 60}} if self.is_sqlite else {"pool_pre_ping": True}
        try:
            self.engine = sa.create_engine(self.url, **kwargs)
            if self.is_sqlite:
                sa.event.listen(self.engine, "connect", _sqlite_pragmas)
            self._retry(self._init_schema)
        except (SQLAlchemyError, ImportError) as exc:
            reason = getattr(exc, "orig", None) or exc  # the driver's words, not SQLAlchemy's
            raise StoreError(f"cannot open run store {_shown(self.url)}: {reason}") from exc

    # ---- locations -------------------------------------------------------------------------
    @property
    def artifacts_root(self) -> Path:
        """Folder for output notebooks, checkpoints and figures (one subfolder per run)."""
        if os.environ.get("WORKBENCH_ARTIFACTS"):
            root = Path(os.environ["WORKBENCH_ARTIFACTS"])
        elif self.is_sqlite and self.engine.url.database:
            root = Path(self.engine.url.database).parent / "artifacts"
        else:
            root = Path.home() / ".workbench" / "artifacts"
        return root.resolve()

    def run_dir(self, run_id: str) -> Path:
        path = self.artifacts_root / run_id
        path.mkdir(parents=True, exist_ok=True)
        return path

    def relative_artifact(self, path: str | os.PathLike) -> str:
        """``path`` relative to the artifacts root when it lies inside it (records stay valid
        when a store folder is moved or shipped), else unchanged."""
        try:
            return str(Path(path).resolve().relative_to(self.artifacts_root))
        except ValueError:
            return str(path)

    def artifact(self, relative: str) -> Path:
        """The file a record's artifact path names; refuses paths that leave the artifacts
        root (``..``, absolute paths elsewhere, symlinks out)."""
        root = self.artifacts_root
        path = (root / relative).resolve()
        if not path.is_relative_to(root):
            raise StoreError(f"artifact path {relative!r} is outside the store's artifacts")
        return path

    # ---- schema ----------------------------------------------------------------------------
    def _init_schema(self) -> None:
        with self.engine.begin() as conn:
            _meta.create_all(conn, checkfirst=True)
            found = conn.execute(sa.select(meta_table.c.value)
                                 .where(meta_table.c.key == "schema_version")).scalar()
            if found is None:
                try:
                    with conn.begin_nested():
                        conn.execute(meta_table.insert().values(key="schema_version",
                                                                value=str(SCHEMA_VERSION)))
                except IntegrityError:  # another process wrote it first
                    pass
            elif int(found) > SCHEMA_VERSION:
                raise StoreError(f"store {self.url} has schema version {found}, newer than this "
                                 f"workbench ({SCHEMA_VERSION}); upgrade the workbench package")

    @property
    def schema_version(self) -> int:
        with self.engine.connect() as conn:
            return int(conn.execute(sa.select(meta_table.c.value)
                                    .where(meta_table.c.key == "schema_version")).scalar())

    # ---- writing ---------------------------------------------------------------------------
    def add(self, record: RunRecord) -> str:
        """Insert one record (validated first); returns its run id. Existing ids are refused."""
        record.validate()
        body = json.dumps(record.to_dict(), allow_nan=True)
        row = dict(run_id=record.run_id, created_at=record.created_at, status=record.status,
                   method=record.method, notebook=record.notebook, model=record.model,
                   dataset=record.dataset, device=record.device,
                   schema_version=record.schema_version, body=body)

        def insert():
            with self.engine.begin() as conn:
                conn.execute(runs_table.insert().values(**row))
        try:
            self._retry(insert)
        except IntegrityError as exc:
            raise StoreError(f"run {record.run_id} is already in the store (records are "
                             f"append-only)") from exc
        return record.run_id

    # ---- reading ---------------------------------------------------------------------------
    def records(self, status: str | None = None, method: str | None = None
                ) -> Iterator[RunRecord | CorruptRecord]:
        """All records, oldest first; rows that fail to parse come back as CorruptRecord."""
        query = sa.select(runs_table.c.run_id, runs_table.c.body).order_by(
            runs_table.c.created_at, runs_table.c.run_id)
        if status:
            query = query.where(runs_table.c.status == status)
        if method:
            query = query.where(runs_table.c.method == method)
        with self.engine.connect() as conn:
            rows = conn.execute(query).all()
        for run_id, body in rows:
            yield _parse(run_id, body)

    def get(self, run_id: str) -> RunRecord:
        with self.engine.connect() as conn:
            body = conn.execute(sa.select(runs_table.c.body)
                                .where(runs_table.c.run_id == run_id)).scalar()
        if body is None:
            raise KeyError(f"no run {run_id!r} in store {self.url}")
        record = _parse(run_id, body)
        if isinstance(record, CorruptRecord):
            raise StoreError(f"run {run_id} is corrupt: {record.error}")
        return record

    def frame(self, **filters):
        """A pandas DataFrame, one flattened row per record (see RunRecord.flat)."""
        import pandas as pd
        rows = [r.flat() for r in self.records(**filters)]
        return pd.DataFrame(rows)

    def __len__(self) -> int:
        with self.engine.connect() as conn:
            return conn.execute(sa.select(sa.func.count()).select_from(runs_table)).scalar()

    # ---- helpers ---------------------------------------------------------------------------
    def _retry(self, fn, attempts: int = 50):
        for attempt in range(attempts):
            try:
                return fn()
            except OperationalError as exc:
                # "already exists": another process created the tables between check and create
                transient = any(word in str(exc) for word in ("locked", "busy", "already exists"))
                if not transient or attempt == attempts - 1:
                    raise
                time.sleep(min(0.05 * 2 ** min(attempt, 5), 1.0) * (0.5 + random.random()))


def _parse(run_id: str, body: str) -> RunRecord | CorruptRecord:
    try:
        return RunRecord.from_dict(json.loads(body))
    except (ValueError, TypeError, RecordError) as exc:
        return CorruptRecord(run_id=run_id, error=f"{type(exc).__name__}: {exc}")


def _shown(url: str) -> str:
    """``url`` with any password hidden, for messages."""
    try:
        return sa.engine.make_url(url).render_as_string(hide_password=True)
    except Exception:  # noqa: BLE001 - a URL SQLAlchemy cannot parse has no password to hide
        return url


def _sqlite_pragmas(dbapi_conn, _record) -> None:
    cur = dbapi_conn.cursor()
    cur.execute("PRAGMA journal_mode=WAL")
    cur.execute("PRAGMA busy_timeout=60000")
    cur.execute("PRAGMA synchronous=NORMAL")
    cur.close()
