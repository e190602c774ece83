"""The audit store: a durable, hash-chained production log on SQLite (default) or PostgreSQL.

Open it with :func:`open_audit_store`; it implements :class:`station.ports.AuditStore` and adds the
queries the CLI and GUI need. :func:`verify_chain` checks the log; :mod:`station.audit.cli` adds the
``station audit`` commands.
"""

from __future__ import annotations

import os
from collections.abc import Mapping

from alembic.util import CommandError
from sqlalchemy.engine import URL
from sqlalchemy.exc import SQLAlchemyError

from station.audit.engine import DURABLE_PRAGMAS, build_engine, check_database, run_migrations, to_url
from station.audit.pins import check_pin, hash_pin
from station.audit.store import (
    REDACTED,
    EventRecord,
    OperatorInfo,
    SqlAuditStore,
    WorkOrderCounts,
    describe_db_error,
    redact_commissioning,
    redact_detail,
)
from station.audit.verify import VerifyResult, verify_chain
from station.errors import AuditWriteFailed

__all__ = [
    "DURABLE_PRAGMAS",
    "REDACTED",
    "EventRecord",
    "OperatorInfo",
    "SqlAuditStore",
    "VerifyResult",
    "WorkOrderCounts",
    "check_pin",
    "hash_pin",
    "open_audit_store",
    "redact_commissioning",
    "redact_detail",
    "verify_chain",
]


def open_audit_store(
    url_or_path: str | os.PathLike[str] | URL,
    *,
    station_id: str,
    pragmas: Mapping[str, str] | None = None,
) -> SqlAuditStore:
    """Open (and migrate) the audit database; the one place the station builds its engine.

    ``url_or_path`` is a SQLAlchemy URL (``sqlite:///...``, ``postgresql+psycopg://...``) or a path to
    a SQLite file. ``pragmas`` replaces the durable SQLite pragmas (for tests and diagnostics only;
    anything less durable makes the store refuse to issue). A file that fails ``PRAGMA quick_check``
    opens read-only: reads work, writes raise :class:`AuditIntegrityError`. A database that cannot be
    opened or migrated raises :class:`AuditWriteFailed`.
    """
    engine = build_engine(to_url(url_or_path), pragmas=pragmas)
    try:
        checks = check_database(engine)
        if checks.integrity_problem is None:
            run_migrations(engine)
    except CommandError as exc:  # e.g. a database written by a newer station
        engine.dispose()
        raise AuditWriteFailed(f"cannot migrate the audit database: {exc}") from exc
    except (SQLAlchemyError, OSError) as exc:
        engine.dispose()
        raise AuditWriteFailed(f"cannot open the audit database: {describe_db_error(exc)}") from exc
    return SqlAuditStore(engine, station_id=station_id, checks=checks)


