"""Building the engine, checking durability and integrity, running the migrations.

This is the one composition point for database connections: nothing here runs at import time.

SQLite: the driver's own implicit transactions are switched off (``isolation_level = None``) and the
``begin`` event emits ``BEGIN IMMEDIATE``, so every write transaction takes the write lock at its
start: read-then-write (quota check, chain head) cannot be overtaken by another writer. Read-only
sessions (exports, verification) bind with ``audit_read=True`` and get a plain deferred ``BEGIN``, so
a long QE report never blocks the writer (WAL readers do not block writers). Pragmas are set in the
``connect`` event and then checked, never assumed.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

from alembic import command
from alembic.config import Config
from sqlalchemy import Connection, Engine, create_engine, event, text
from sqlalchemy.engine import URL, make_url

DURABLE_PRAGMAS: Final[Mapping[str, str]] = {
    "journal_mode": "WAL",
    "synchronous": "FULL",
    "foreign_keys": "ON",
    "busy_timeout": "10000",
}
"""Set on every SQLite connection. ``synchronous=NORMAL`` in WAL can lose the last commits on power loss."""

READ_OPTION: Final = "audit_read"
"""Execution option: a read-only transaction (deferred BEGIN on SQLite)."""

MIGRATIONS_DIR: Final = Path(__file__).resolve().parent.parent / "migrations"

_MIGRATION_LOCK_KEY: Final = 0x5354_4155  # "STAU": serialises concurrent first opens on PostgreSQL


def to_url(url_or_path: str | os.PathLike[str] | URL) -> URL:
    """Accept a SQLAlchemy URL or a plain path to a SQLite file (a path is made absolute)."""
    if isinstance(url_or_path, URL):
        return url_or_path
    raw = os.fspath(url_or_path)
    if "://" in raw:
        url = make_url(raw)
        if url.drivername == "postgresql":  # the driver the station ships with, not psycopg2
            url = url.set(drivername="postgresql+psycopg")
        return url
    return URL.create("sqlite", database=str(Path(raw).resolve()))


def build_engine(url: URL, *, pragmas: Mapping[str, str] | None = None) -> Engine:
    """Create the engine with the station's transaction and durability settings."""
    if url.get_backend_name() == "sqlite":
        return _sqlite_engine(url, dict(DURABLE_PRAGMAS if pragmas is None else pragmas))
    if url.get_backend_name() == "postgresql":
        return create_engine(url, pool_pre_ping=True, pool_size=20, max_overflow=10)
    raise ValueError(f"unsupported audit database {url.get_backend_name()!r}: use SQLite or PostgreSQL")


def _sqlite_engine(url: URL, pragmas: dict[str, str]) -> Engine:
    if url.database in (None, "", ":memory:"):
        raise ValueError("the audit store needs a SQLite file, not an in-memory database")
    engine = create_engine(url, pool_size=20, max_overflow=10, connect_args={"check_same_thread": False})

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        dbapi_connection.isolation_level = None  # we emit BEGIN ourselves
        cursor = dbapi_connection.cursor()
        try:
            # busy_timeout first: switching to WAL itself needs a lock another process may hold.
            for name in sorted(pragmas, key=lambda n: n != "busy_timeout"):
                cursor.execute(f"PRAGMA {name}={pragmas[name]}")
        finally:
            cursor.close()

    @event.listens_for(engine, "begin")
    def _on_begin(conn: Connection) -> None:
        read_only = bool(conn.get_execution_options().get(READ_OPTION, False))
        conn.exec_driver_sql("BEGIN" if read_only else "BEGIN IMMEDIATE")

    return engine


@dataclass(frozen=True)
class OpenChecks:
    """What the store found at open: ``None`` means fine, otherwise the reason, in words."""

    durability_problem: str | None
    integrity_problem: str | None


def check_database(engine: Engine) -> OpenChecks:
    """Check durability settings and run a quick integrity check."""
    with engine.connect() as conn:
        if engine.dialect.name == "sqlite":
            return OpenChecks(_sqlite_durability(conn), _sqlite_quick_check(conn))
        conn.rollback()
        return OpenChecks(_postgres_durability(conn), None)


def _sqlite_durability(conn: Connection) -> str | None:
    journal = str(conn.exec_driver_sql("PRAGMA journal_mode").scalar()).lower()
    synchronous = int(conn.exec_driver_sql("PRAGMA synchronous").scalar() or 0)
    conn.rollback()
    problems = []
    if journal != "wal":
        problems.append(f"journal_mode={journal}, expected wal")
    if synchronous != 2:
        problems.append(f"synchronous={synchronous}, expected 2 (FULL)")
    return "; ".join(problems) or None


def _sqlite_quick_check(conn: Connection) -> str | None:
    try:
        rows = [str(r[0]) for r in conn.exec_driver_sql("PRAGMA quick_check").fetchall()]
    except Exception as exc:  # a corrupt file can fail the check itself
        return f"quick_check could not run: {exc}"
    finally:
        conn.rollback()
    if rows == ["ok"]:
        return None
    lines = [line for row in rows for line in row.splitlines() if line and not line.startswith("***")]
    more = f" (and {len(lines) - 3} more)" if len(lines) > 3 else ""
    return "quick_check: " + "; ".join(lines[:3]) + more


def _postgres_durability(conn: Connection) -> str | None:
    """PostgreSQL: commits must reach the disk before they return."""
    fsync = str(conn.exec_driver_sql("SHOW fsync").scalar())
    sync_commit = str(conn.exec_driver_sql("SHOW synchronous_commit").scalar())
    conn.rollback()
    problems = []
    if fsync != "on":
        problems.append(f"fsync={fsync}, expected on")
    if sync_commit == "off":
        problems.append("synchronous_commit=off, expected on")
    return "; ".join(problems) or None


def run_migrations(engine: Engine) -> None:
    """Bring the schema to head with Alembic, in one transaction (idempotent)."""
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS_DIR))
    with engine.begin() as conn:
        if conn.dialect.name == "postgresql":
            conn.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": _MIGRATION_LOCK_KEY})
        cfg.attributes["connection"] = conn
        command.upgrade(cfg, "head")
