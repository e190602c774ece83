"""The SQLAlchemy audit store: the durable, hash-chained production log.

Theory of operation
-------------------
Every public write is one transaction (a unit of work, :meth:`SqlAuditStore._write`) that changes the
unit row *and* appends the event that describes the change, so the two cannot disagree; it commits
before the method returns. On SQLite the transaction starts with ``BEGIN IMMEDIATE`` (see
:mod:`station.audit.engine`), which serialises writers, so the quota check and the chain head read
cannot be overtaken. On PostgreSQL the same code locks the work order row (``SELECT ... FOR UPDATE``)
for quota and serial counters, then the single ``chain_head`` row for the append, always in that order.

Quota: a unit consumes quota from its intent on and keeps consuming it whatever happens after, because
once the intent is durable the HSM may have signed. A unit that fails before its intent does not.

Errors from the database are translated in exactly one place, :meth:`SqlAuditStore._translate`: a
unique-index violation is an :class:`IdentityConflict` (the database refused a duplicate identity);
anything else is :class:`AuditWriteFailed`, and the store then stops issuing (``issuing_stopped``)
until it is reopened (fail closed). A store whose file failed ``PRAGMA quick_check`` at open is
read-only: every write raises :class:`AuditIntegrityError`.
"""

from __future__ import annotations

import hashlib
import json
import threading
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, Final, cast

from cryptography import x509
from sqlalchemy import Connection, Engine, Select, Table, bindparam, func, insert, select, update
from sqlalchemy.exc import IntegrityError, SQLAlchemyError
from sqlalchemy.orm import Session

from station.audit.chain import canonical_detail, event_hash
from station.audit.checkpoint import Checkpoint
from station.audit.driver import DriverStatement, driver_savepoint
from station.audit.engine import READ_OPTION, OpenChecks
from station.audit.models import (
    ACTIVE_WHERE,
    ROLES,
    ChainHeadRow,
    CheckpointRow,
    EventRow,
    OperatorRow,
    SerialSeriesRow,
    UnitRow,
    WorkOrderRow,
)
from station.audit.pins import check_pin, hash_pin
from station.domain import Step, UnitRecord, UnitStatus, WorkOrder
from station.errors import (
    AuditIntegrityError,
    AuditWriteFailed,
    ConfigError,
    IdentityConflict,
    QuotaExhausted,
    SigningFailed,
    StationError,
)
from station.ports import PreparedCertificate

REDACTED: Final = "***"
"""What is stored in place of a secret value: never the value, nor a hash of it (PSKs are guessable)."""

SECRET_KEY_WORDS: Final = ("pin", "password", "passphrase", "psk", "secret", "token")
"""Detail keys containing these words are redacted even if the caller forgot."""

CLOCK_TOLERANCE: Final = timedelta(minutes=5)
"""How far the clock may be behind the log's last entry (NTP skew between stations on one database)."""

INTERRUPTED: Final = "interrupted"
"""Error code of units found mid-flight by :meth:`SqlAuditStore.mark_interrupted`."""

_CONFLICT_WORDS: Final = (
    ("cert_serial", "certificate serial already used"),
    ("public_key_sha256", "public key already bound to a unit"),
    ("hardware_id", "hardware id already belongs to an active unit"),
    ("serial_number", "unit serial number already used"),
    ("badge_id", "badge id already registered"),
    ("number", "work order number already recorded"),
)


# The write fast path: SQLAlchemy Core statements on the transaction's connection (compiled once,
# then served from the statement cache), no ORM objects, no unit-of-work flush per event.
_UNITS = cast(Table, UnitRow.__table__)
_WORK_ORDERS = cast(Table, WorkOrderRow.__table__)
_EVENTS = cast(Table, EventRow.__table__)
_HEAD = cast(Table, ChainHeadRow.__table__)
_INSERT_EVENT: Final = DriverStatement(insert(_EVENTS), varying_columns=True)
_INSERT_UNIT: Final = DriverStatement(insert(_UNITS).returning(_UNITS.c.id), varying_columns=True)
_UPDATE_HEAD: Final = DriverStatement(update(_HEAD).where(_HEAD.c.id == 1), varying_columns=True)
_SELECT_HEAD: Final = DriverStatement(
    select(_HEAD.c.seq, _HEAD.c.hash).where(_HEAD.c.id == 1).with_for_update())
_UPDATE_UNIT: Final = DriverStatement(update(_UNITS).where(_UNITS.c.id == bindparam("unit_id")),
                                      varying_columns=True)
_SELECT_UNIT: Final = (
    select(*[c for c in _UNITS.c if c.name != "work_order_id"],
           _UNITS.c.work_order_id, _WORK_ORDERS.c.number.label("wo_number"),
           _WORK_ORDERS.c.commissioning_json.label("wo_commissioning"))
    .join_from(_UNITS, _WORK_ORDERS, _UNITS.c.work_order_id == _WORK_ORDERS.c.id)
)
_SELECT_UNIT_BY_ID: Final = DriverStatement(_SELECT_UNIT.where(_UNITS.c.id == bindparam("unit_id")))
_UNIT_EVENT_FIELDS: Final = DriverStatement(
    select(_UNITS.c.operator, _UNITS.c.work_order_id, _WORK_ORDERS.c.number.label("wo_number"),
           _WORK_ORDERS.c.commissioning_json.label("wo_commissioning"))
    .join_from(_UNITS, _WORK_ORDERS, _UNITS.c.work_order_id == _WORK_ORDERS.c.id)
    .where(_UNITS.c.id == bindparam("unit_id"))
)
_SELECT_WORK_ORDER: Final = select(
    _WORK_ORDERS.c.id, _WORK_ORDERS.c.number, _WORK_ORDERS.c.product, _WORK_ORDERS.c.profile,
    _WORK_ORDERS.c.quantity, _WORK_ORDERS.c.serial_format, _WORK_ORDERS.c.next_seq,
    _WORK_ORDERS.c.consumed,
)
_LOCK_WORK_ORDER: Final = DriverStatement(
    _SELECT_WORK_ORDER.where(_WORK_ORDERS.c.id == bindparam("wo_id")).with_for_update())
_WORK_ORDER_BY_NUMBER: Final = DriverStatement(
    _SELECT_WORK_ORDER.where(_WORK_ORDERS.c.number == bindparam("number")))
_CONSUMED: Final = DriverStatement(
    select(_WORK_ORDERS.c.consumed).where(_WORK_ORDERS.c.id == bindparam("wo_id")))
_UPDATE_CONSUMED: Final = DriverStatement(
    update(_WORK_ORDERS).where(_WORK_ORDERS.c.id == bindparam("wo_id")), varying_columns=True)
_COUNT_CONSUMED: Final = select(func.count()).select_from(_UNITS).where(
    _UNITS.c.work_order_id == bindparam("wo_id"), _UNITS.c.intent_at.is_not(None))
"""What ``work_orders.consumed`` must equal (``station audit verify`` checks it)."""
_ACTIVE_UNIT: Final = DriverStatement(select(_UNITS.c.id).where(
    _UNITS.c.hardware_id == bindparam("hardware_id"), ACTIVE_WHERE).limit(1))
_KEY_KNOWN: Final = DriverStatement(
    select(_UNITS.c.id).where(_UNITS.c.public_key_sha256 == bindparam("fp")).limit(1))
_ISSUED_FOR: Final = DriverStatement(
    _SELECT_UNIT.where(_UNITS.c.hardware_id == bindparam("hardware_id"), _UNITS.c.cert_der.is_not(None))
    .order_by(_UNITS.c.id.desc()).limit(1)
)
_INSERT_WORK_ORDER: Final = DriverStatement(insert(_WORK_ORDERS).returning(_WORK_ORDERS.c.id),
                                            varying_columns=True)
_SERIES: Final = cast(Table, SerialSeriesRow.__table__)
_SERIES_WHERE: Final = (_SERIES.c.product == bindparam("product"),
                        _SERIES.c.serial_format == bindparam("serial_format"))
_LOCK_SERIES: Final = DriverStatement(
    select(_SERIES.c.id, _SERIES.c.next_seq).where(*_SERIES_WHERE).with_for_update())
_INSERT_SERIES: Final = DriverStatement(insert(_SERIES), varying_columns=True)
_UPDATE_SERIES: Final = DriverStatement(
    update(_SERIES).where(_SERIES.c.id == bindparam("series_id")), varying_columns=True)
_INSERT_CHECKPOINT: Final = DriverStatement(insert(cast(Table, CheckpointRow.__table__)),
                                            varying_columns=True)
_HEAD_EVENT_TIME: Final = DriverStatement(select(_EVENTS.c.occurred_at).where(
    _EVENTS.c.seq == select(_HEAD.c.seq).where(_HEAD.c.id == 1).scalar_subquery()))
_LAST_CHECKPOINT_TIME: Final = DriverStatement(
    select(cast(Table, CheckpointRow.__table__).c.signed_at)
    .order_by(cast(Table, CheckpointRow.__table__).c.id.desc()).limit(1))
_WORK_ORDER_BY_ID: Final = DriverStatement(
    _SELECT_WORK_ORDER.where(_WORK_ORDERS.c.id == bindparam("wo_id")))

_UnitRow = Any
"""A row of :data:`_SELECT_UNIT` (a named tuple from :class:`DriverStatement`): the unit's columns,
``wo_number`` and ``wo_commissioning``."""

_HEAD_KEY: Final = "audit.chain_head"
"""``Session.info`` key: the chain head (seq, hash) as this transaction last wrote it."""
_TX_CACHE_KEY: Final = "audit.cache"
"""``Session.info`` key: lookups made in this transaction (work orders, secret keys, units' event
fields); a write that changes a cached unit column drops that unit's entry (:meth:`_update_unit`)."""
_CONN_KEY: Final = "audit.connection"
"""``Session.info`` key: the transaction's Connection (one per session; savepoints run on it too)."""
_PENDING_KEY: Final = "audit.pending_events"
"""``Session.info`` key: events appended in this transaction and not yet INSERTed. They are written
with one executemany, and the chain head with one UPDATE, just before the transaction commits
(:meth:`SqlAuditStore._flush_events`), or before a read of the events table in the same
transaction."""
_FORGET_KEY: Final = "audit.forget_units"
"""``Session.info`` key: units whose operator this transaction changed (dropped from the store's
cache of units' event fields when it commits; until then that cache is not consulted for them)."""
_SAVEPOINTS_KEY: Final = "audit.savepoints"
"""``Session.info`` key: how deep the batch's driver savepoints are nested (names are per depth)."""
_WRITES_KEY: Final = "audit.writes"
"""``Session.info`` key: how many unit row UPDATEs this session has started (see
:meth:`SqlAuditStore._unrefusable`)."""


def describe_db_error(exc: BaseException) -> str:
    """A database failure in words a technician (and an admin) can act on."""
    orig = getattr(exc, "orig", None) or exc
    text = str(orig)
    low = text.lower()
    sqlstate = str(getattr(orig, "sqlstate", "") or "")
    if "database or disk is full" in low or "no space left" in low or sqlstate == "53100":
        return "disk full: the audit database cannot grow"
    if "readonly database" in low or "read-only" in low or sqlstate == "25006":
        return "the audit database is read-only"
    if "disk i/o error" in low or "input/output error" in low or sqlstate.startswith("58"):
        return "I/O error writing the audit database"
    if "database is locked" in low or sqlstate in ("55P03", "40P01"):
        return "the audit database stayed locked by another writer"
    if "unable to open database file" in low:
        return "the audit database file cannot be opened (missing directory, permissions, read-only disk?)"
    if sqlstate.startswith("08") or "connection" in low:
        return "lost the connection to the audit database"
    return f"database error: {text.splitlines()[0] if text else type(orig).__name__}"


_AFTERMATH: Final = ("no such savepoint", "no transaction is active")


def _first_failure(exc: BaseException) -> BaseException:
    """The error that started it. On SQLITE_FULL or an I/O error SQLite may roll back the whole
    transaction itself; rolling back the batch's savepoint then fails with "no such savepoint", which
    would hide "database or disk is full" from the technician. Walk back to the original error."""
    seen: set[int] = set()
    while any(word in str(getattr(exc, "orig", None) or exc).lower() for word in _AFTERMATH):
        earlier = exc.__context__ or exc.__cause__
        if earlier is None or id(earlier) in seen:
            break
        seen.add(id(exc))
        exc = earlier
    return exc


def _connection(s: Session) -> Connection:
    """The session's Connection, looked up once per transaction (``Session.connection()`` walks the
    session's transaction state each time). Savepoints run on the same Connection."""
    conn: Connection | None = s.info.get(_CONN_KEY)
    if conn is None:
        conn = s.info[_CONN_KEY] = s.connection()
    return conn


def _now() -> datetime:
    return datetime.now(UTC)


def _utc(value: datetime | None) -> datetime | None:
    """SQLite returns naive datetimes; everything stored is UTC."""
    if value is None or value.tzinfo is not None:
        return value
    return value.replace(tzinfo=UTC)


def redact_detail(detail: Mapping[str, str] | None, secret_keys: Sequence[str] = ()) -> dict[str, str]:
    """Replace the values of secret-looking keys (and the work order's secret keys) with ``***``."""
    out: dict[str, str] = {}
    secret = {k.lower() for k in secret_keys}
    for key, value in (detail or {}).items():
        low = key.lower()
        hidden = low in secret or any(word in low for word in SECRET_KEY_WORDS)
        out[str(key)] = REDACTED if hidden else str(value)
    return out


def redact_commissioning(values: Sequence[tuple[str, str, bool]]) -> list[dict[str, Any]]:
    """The work order's commissioning values as stored: secrets become ``***``."""
    return [
        {"key": key, "value": REDACTED if is_secret else value, "secret": is_secret}
        for key, value, is_secret in values
    ]


@dataclass(frozen=True, kw_only=True)
class EventRecord:
    """One row of the event log, as the GUI and CLI show it."""

    seq: int
    kind: str
    station: str
    occurred_at: str
    unit_id: int | None = None
    work_order: str | None = None
    operator: str | None = None
    step: str | None = None
    outcome: str | None = None
    duration_ms: float | None = None
    detail: dict[str, str] = field(default_factory=dict)
    error_code: str | None = None
    error_message: str | None = None
    hash: str = ""


@dataclass(frozen=True, kw_only=True)
class WorkOrderCounts:
    """Progress of one work order. ``consumed`` counts every unit that reached intent."""

    work_order: str
    quantity: int
    provisioned: int
    failed: int
    in_flight: int
    consumed: int

    @property
    def remaining(self) -> int:
        return max(self.quantity - self.consumed, 0)


@dataclass(frozen=True, kw_only=True)
class OperatorInfo:
    badge_id: str
    name: str
    role: str


@dataclass(frozen=True, kw_only=True)
class _WorkOrderRef:
    """A recorded work order as the write path needs it (its terms never change once recorded)."""

    id: int
    number: str
    terms: tuple[str, str, int, str]
    """(product, profile, quantity, serial format)."""

    @property
    def quantity(self) -> int:
        return self.terms[2]


class SqlAuditStore:
    """:class:`station.ports.AuditStore` on SQLAlchemy (SQLite file or PostgreSQL). Thread-safe."""

    def __init__(self, engine: Engine, *, station_id: str, checks: OpenChecks) -> None:
        if not station_id:
            raise ValueError("station_id must not be empty")
        self._engine = engine
        self._reader = engine.execution_options(**{READ_OPTION: True})
        self.station_id = station_id
        self._lock = threading.Lock()
        self._batch = threading.local()
        self._known_units: dict[int, tuple[str, str | None, list[str]]] = {}
        """Units' event fields from committed transactions (see :meth:`_unit_event_fields`)."""
        self._read_only: str | None = checks.integrity_problem
        self._stopped: str | None = None
        if checks.integrity_problem:
            self._stopped = f"integrity check failed: {checks.integrity_problem}"
        elif checks.durability_problem:
            self._stopped = f"durability settings refused: {checks.durability_problem}"

    # -- health ----------------------------------------------------------------------------------

    @property
    def engine(self) -> Engine:
        return self._engine

    @property
    def dialect(self) -> str:
        return self._engine.dialect.name

    @property
    def healthy(self) -> bool:
        """False once issuing has stopped; only reopening the store clears it."""
        return self._stopped is None

    @property
    def issuing_stopped(self) -> str | None:
        """Why issuing stopped (the technician-facing reason), or None."""
        return self._stopped

    @property
    def read_only(self) -> str | None:
        """Why the store refuses all writes (failed integrity check), or None."""
        return self._read_only

    def stop_issuing(self, reason: str) -> None:
        """Stop issuing (first reason wins); used on any audit write failure."""
        with self._lock:
            if self._stopped is None:
                self._stopped = reason

    def close(self) -> None:
        self._engine.dispose()

    def _require_issuing(self) -> None:
        if self._read_only is not None:
            raise AuditIntegrityError(f"audit database is read-only: {self._read_only}")
        if self._stopped is not None:
            raise AuditWriteFailed(f"issuing stopped: {self._stopped}", reason=self._stopped)

    # -- unit of work ----------------------------------------------------------------------------

    @contextmanager
    def batch(self) -> Iterator[None]:
        """Group commit: the writes and reads of this thread inside the block share ONE transaction.

        Each write runs in its own SAVEPOINT, so a refused or failed write rolls back alone, exactly as
        if it had been its own transaction; reads see every write before them. Nothing is durable until
        the block ends and the single COMMIT (one fsync) returns; if that fails, nothing of the block
        is, and :class:`AuditWriteFailed` is raised (issuing stops). Callers must not report a write
        as done before the block has ended.
        """
        if getattr(self._batch, "session", None) is not None:
            yield
            return
        session = Session(self._engine, expire_on_commit=False, autoflush=True)
        self._batch.session = session
        self._batch.failure = None
        try:
            with session.begin():
                yield
                failure: StationError | None = self._batch.failure
                if failure is not None:
                    # A write of this batch failed below its savepoint (disk full, I/O error): SQLite
                    # may already have rolled back the whole transaction, so nothing of the batch may
                    # be reported as durable. Roll back and fail every caller of the batch.
                    raise failure
                self._flush_events(session)
            self._remember_units(session)
        except StationError:
            raise
        except (SQLAlchemyError, OSError) as exc:
            raise self._translate(exc, "commit", {}) from exc
        finally:
            self._batch.session = None
            session.close()

    @contextmanager
    def _write(self, op: str, **context: Any) -> Iterator[Session]:
        """One write transaction; commits on success, database errors translated in one place."""
        if self._read_only is not None:
            raise AuditIntegrityError(f"audit database is read-only: {self._read_only}", op=op)
        batch: Session | None = getattr(self._batch, "session", None)
        if batch is not None:
            failed: StationError | None = getattr(self._batch, "failure", None)
            if failed is not None:  # no write after a failed one: it would run outside the transaction
                raise AuditWriteFailed(failed.message, op=op, **context)
            with self._savepoint(batch, op, context):
                yield batch
            return
        session = Session(self._engine, expire_on_commit=False, autoflush=True)
        try:
            with session.begin():
                yield session
                self._flush_events(session)
            self._remember_units(session)
        except (QuotaExhausted, IdentityConflict) as refusal:
            session.close()
            self._log_refusal(op, refusal, context)
            raise
        except StationError:
            raise
        except (SQLAlchemyError, OSError) as exc:
            session.close()
            translated = self._translate(exc, op, context)
            if isinstance(translated, IdentityConflict):
                self._log_refusal(op, translated, context)
            raise translated from exc
        finally:
            session.close()

    @contextmanager
    def _savepoint(self, session: Session, op: str, context: Mapping[str, Any]) -> Iterator[None]:
        """One write inside a batch: the same error handling as :meth:`_write`, rolled back alone.

        The SAVEPOINT is the driver's (:func:`driver_savepoint`): the writes are Core and driver
        statements. The pending events, the in-memory chain head and the lookups roll back with it.
        ORM objects loaded by an earlier write of the batch are expired first, since Core writes
        since then bypassed them, and any an aborted write left behind are dropped."""
        if session.identity_map:
            session.expire_all()
        head = session.info.get(_HEAD_KEY)
        pending = len(session.info.get(_PENDING_KEY, ()))
        depth = session.info[_SAVEPOINTS_KEY] = session.info.get(_SAVEPOINTS_KEY, 0) + 1
        try:
            try:
                with driver_savepoint(_connection(session), f"audit_sp{depth}"):
                    yield
                    if session.new or session.dirty or session.deleted:
                        session.flush()  # an ORM write's rows belong inside its savepoint
            except BaseException:
                session.info[_HEAD_KEY] = head
                del session.info.get(_PENDING_KEY, [])[pending:]
                session.info.pop(_TX_CACHE_KEY, None)
                if session.identity_map or session.new:
                    session.expunge_all()
                raise
            finally:
                session.info[_SAVEPOINTS_KEY] = depth - 1
        except (QuotaExhausted, IdentityConflict) as refusal:
            self._log_refusal(op, refusal, context)
            raise
        except StationError:
            raise
        except (SQLAlchemyError, OSError) as exc:
            translated = self._translate(exc, op, context)
            if isinstance(translated, IdentityConflict):
                self._log_refusal(op, translated, context)
            else:
                self._batch.failure = translated  # the whole batch fails (see batch())
            raise translated from exc

    @contextmanager
    def _unrefusable(self, op: str, **context: Any) -> Iterator[Session]:
        """A write no unique index or quota can refuse once it writes: no SAVEPOINT of its own.

        These are the event appends and the unit status moves that cannot break a unique index
        (issued, completed, failed). Outside a batch it is :meth:`_write`. Inside a batch it runs
        directly in the batch transaction. Its events only join the transaction's pending list
        (:meth:`_append`), so an error raised before its first row UPDATE (an unknown unit id, a
        wrong status, a certificate that is not the intent's) takes them back out and reaches the
        caller alone, exactly as after a rolled-back savepoint. A database error, or any error after
        that UPDATE, fails the whole batch (nothing of it is reported durable, issuing stops), which
        is what :meth:`_savepoint` does for every database error that is not a refusal."""
        batch: Session | None = getattr(self._batch, "session", None)
        if batch is None:
            with self._write(op, **context) as s:
                yield s
            return
        if self._read_only is not None:
            raise AuditIntegrityError(f"audit database is read-only: {self._read_only}", op=op)
        failed: StationError | None = getattr(self._batch, "failure", None)
        if failed is not None:  # no write after a failed one: it would run outside the transaction
            raise AuditWriteFailed(failed.message, op=op, **context)
        if batch.identity_map:  # as in _savepoint: Core writes bypassed any ORM object loaded earlier
            batch.expire_all()
        head = batch.info.get(_HEAD_KEY)
        pending = len(batch.info.get(_PENDING_KEY, ()))
        writes = batch.info.get(_WRITES_KEY, 0)
        try:
            yield batch
        except BaseException as exc:
            database_error = isinstance(exc, (SQLAlchemyError, OSError))
            if not database_error and batch.info.get(_WRITES_KEY, 0) == writes:
                batch.info[_HEAD_KEY] = head
                del batch.info.get(_PENDING_KEY, [])[pending:]
                raise  # nothing reached the database: the batch goes on
            if database_error:
                translated = self._translate(exc, op, context)
                if not isinstance(translated, AuditWriteFailed):  # this write cannot be refused
                    reason = describe_db_error(exc)
                    self.stop_issuing(reason)
                    translated = AuditWriteFailed(reason, op=op, **context)
            else:
                reason = f"audit write interrupted: {type(exc).__name__}"
                self.stop_issuing(reason)
                translated = AuditWriteFailed(reason, op=op, **context)
            self._batch.failure = translated  # the whole batch fails (see batch())
            raise translated from exc

    @contextmanager
    def _read(self) -> Iterator[Session]:
        """A read-only session (deferred BEGIN on SQLite: never blocks the writer).

        Inside :meth:`batch` the batch's own session, so a read sees the writes queued before it."""
        batch: Session | None = getattr(self._batch, "session", None)
        if batch is not None:
            if batch.identity_map:  # Core writes of the batch bypassed any ORM object loaded earlier
                batch.expire_all()
            failed: StationError | None = getattr(self._batch, "failure", None)
            if failed is not None:
                raise AuditWriteFailed(failed.message, op="read")
            try:
                self._flush_events(batch)  # a read of the events table must see the batch's events
            except (SQLAlchemyError, OSError) as exc:
                translated = self._translate(exc, "write_events", {})
                self._batch.failure = translated  # the whole batch fails (see batch())
                raise translated from exc
            yield batch
            return
        with Session(self._reader) as session:
            yield session

    def _translate(self, exc: BaseException, op: str, context: Mapping[str, Any]) -> StationError:
        """THE place where database exceptions become station errors (and issuing stops)."""
        exc = _first_failure(exc)
        orig = getattr(exc, "orig", None) or exc
        text = str(orig)
        low = text.lower()
        sqlstate = str(getattr(orig, "sqlstate", "") or "")
        if isinstance(exc, IntegrityError) and ("unique" in low or sqlstate == "23505"):
            constraint = str(getattr(getattr(orig, "diag", None), "constraint_name", "") or "")
            where = f"{constraint} {low}"
            for word, sentence in _CONFLICT_WORDS:
                if word in where:
                    return IdentityConflict(sentence, op=op, **context)
            return IdentityConflict("identity already recorded", op=op, **context)
        reason = describe_db_error(exc)
        self.stop_issuing(reason)
        return AuditWriteFailed(reason, op=op, **context)

    def _log_refusal(self, op: str, refusal: StationError, context: Mapping[str, Any]) -> None:
        """Refusals are events too; if even that cannot be written, that failure is what the caller sees."""
        unit_id = context.get("unit_id")
        with self._write("log_refusal") as s:
            self._append(
                s,
                kind="refusal",
                unit_id=unit_id if isinstance(unit_id, int) else None,
                outcome="failed",
                detail={"op": op, **{k: str(v) for k, v in context.items() if k != "unit_id"}},
                error_code=refusal.code,
                error_message=refusal.message,
            )

    def _append(
        self,
        s: Session,
        *,
        kind: str,
        unit_id: int | None = None,
        work_order: str | None = None,
        operator: str | None = None,
        step: str | None = None,
        outcome: str | None = None,
        duration_ms: float | None = None,
        detail: Mapping[str, str] | None = None,
        error_code: str | None = None,
        error_message: str | None = None,
    ) -> None:
        """Append one event to the transaction; it is chained and written at :meth:`_flush_events`.

        The event waits in the transaction's pending list, so appending costs no statement and takes
        no lock: the audit writer can run a slot's step events while the slot talks to its device,
        and the chain head (a row lock on PostgreSQL) is only taken in the moment before COMMIT. A
        batch write that rolls back its savepoint drops its events (:meth:`_savepoint`).
        """
        if s.new or s.dirty or s.deleted:
            s.flush()  # ORM-path writers: their rows must be in the database before the events
        pending: list[dict[str, Any]] | None = s.info.get(_PENDING_KEY)
        if pending is None:
            pending = s.info[_PENDING_KEY] = []
        pending.append({
            "station": self.station_id,
            "kind": kind,
            "unit_id": unit_id,
            "work_order": work_order,
            "operator": operator,
            "step": step,
            "outcome": outcome,
            "duration_ms": None if duration_ms is None else float(duration_ms),
            "detail_json": canonical_detail(detail or {}),
            "error_code": error_code,
            "error_message": error_message,
            "occurred_at": _now().isoformat(timespec="microseconds"),
        })

    @staticmethod
    def _flush_events(s: Session) -> None:
        """Chain the transaction's pending events, INSERT them (one executemany), move the head.

        The head is read once per transaction (``SELECT ... FOR UPDATE``: on PostgreSQL that row lock
        serialises appenders until commit; on SQLite ``BEGIN IMMEDIATE`` already made the transaction
        the only writer) and kept in ``Session.info`` for a later flush in the same transaction. The
        hash is the canonical :func:`event_hash`, so :func:`verify_chain` checks these rows.
        """
        pending: list[dict[str, Any]] | None = s.info.get(_PENDING_KEY)
        if not pending:
            return
        if s.new or s.dirty or s.deleted:
            s.flush()
        conn = _connection(s)
        head: tuple[int, str] | None = s.info.get(_HEAD_KEY)
        if head is None:
            row = _SELECT_HEAD.one(conn)
            head = (int(row.seq), str(row.hash))
        seq, prev = head
        rows = []
        for fields in pending:
            seq += 1
            digest = event_hash(seq, prev, fields)
            rows.append({"seq": seq, "prev_hash": prev, "hash": digest, **fields})
            prev = digest
        _INSERT_EVENT.execute_many(conn, rows)
        _UPDATE_HEAD.execute(conn, {"seq": seq, "hash": prev})
        s.info[_HEAD_KEY] = (seq, prev)
        s.info[_PENDING_KEY] = []

    _KNOWN_UNITS_MAX: Final = 4096

    def _remember_units(self, s: Session) -> None:
        """After COMMIT: keep the transaction's unit lookups; forget units whose operator it changed.

        Only committed lookups are kept: a unit id from a rolled-back insert can be handed out
        again (SQLite reuses the highest rowid)."""
        known = self._known_units
        for unit_id in s.info.pop(_FORGET_KEY, ()):
            known.pop(unit_id, None)
        cache: dict[Any, Any] | None = s.info.get(_TX_CACHE_KEY)
        for key, value in (cache or {}).items():
            if key[0] == "unit":
                known[key[1]] = value
        while len(known) > self._KNOWN_UNITS_MAX:
            del known[next(iter(known))]  # the oldest: units in flight are the newest

    @staticmethod
    def _tx_cache(s: Session) -> dict[Any, Any]:
        """Lookups of immutable rows made in this transaction (dropped with a rolled-back savepoint)."""
        cache: dict[Any, Any] | None = s.info.get(_TX_CACHE_KEY)
        if cache is None:
            cache = s.info[_TX_CACHE_KEY] = {}
        return cache

    def _unit_row(self, s: Session, unit_id: int) -> _UnitRow:
        """The unit's columns plus its work order's number and commissioning (one Core SELECT)."""
        row = _SELECT_UNIT_BY_ID.first(_connection(s), {"unit_id": unit_id})
        if row is None:
            raise ValueError(f"unknown unit id {unit_id}")
        return row

    def _unit_event_fields(self, s: Session, unit_id: int) -> tuple[str, str | None, list[str]]:
        """(work order number, operator, the work order's secret keys) of a unit, for its step
        events. Looked up once and then kept: in the transaction's cache, and once that
        transaction committed, in the store's (:meth:`_remember_units`), so a unit's step events in
        later group commits cost no lookup. :meth:`_update_unit` drops both entries when this store
        changes the operator; units are never deleted, and their work order never changes."""
        cache = self._tx_cache(s)
        key = ("unit", unit_id)
        fields: tuple[str, str | None, list[str]] | None = cache.get(key)
        if fields is None:
            if unit_id not in s.info.get(_FORGET_KEY, ()):
                fields = self._known_units.get(unit_id)
            if fields is not None:
                cache[key] = fields
                return fields
            row = _UNIT_EVENT_FIELDS.first(_connection(s), {"unit_id": unit_id})
            if row is None:
                raise ValueError(f"unknown unit id {unit_id}")
            fields = cache[key] = (row.wo_number, row.operator, self._secret_keys_of(s, row))
        return fields

    def _secret_keys_of(self, s: Session, row: _UnitRow) -> list[str]:
        cache = self._tx_cache(s)
        key = ("secrets", row.work_order_id)
        keys: list[str] | None = cache.get(key)
        if keys is None:
            keys = cache[key] = [str(v["key"]) for v in json.loads(row.wo_commissioning) if v.get("secret")]
        return keys

    @classmethod
    def _update_unit(cls, s: Session, unit_id: int, **values: Any) -> None:
        if "operator" in values or "work_order_id" in values:
            cls._tx_cache(s).pop(("unit", unit_id), None)
            forget = s.info.setdefault(_FORGET_KEY, set())
            forget.add(unit_id)
        s.info[_WRITES_KEY] = s.info.get(_WRITES_KEY, 0) + 1
        _UPDATE_UNIT.execute(_connection(s), {"unit_id": unit_id, **values})

    @staticmethod
    def _expect_status(row: _UnitRow, *allowed: UnitStatus) -> None:
        if row.status not in allowed:
            wanted = "/".join(allowed)
            raise ValueError(f"unit {row.id} is {row.status}, expected {wanted}")

    @staticmethod
    def _consumed_core(s: Session, work_order_id: int) -> int:
        return int(_CONSUMED.one(_connection(s), {"wo_id": work_order_id})[0] or 0)

    # -- helpers ---------------------------------------------------------------------------------

    def _ensure_work_order(self, s: Session, wo: WorkOrder, operator: str | None) -> _WorkOrderRef:
        """The recorded work order with these terms (created, with its event, on first sight)."""
        cache = self._tx_cache(s)
        ref: _WorkOrderRef | None = cache.get(("wo", wo.number))
        if ref is not None and ref.terms == (wo.product, wo.profile, wo.quantity, wo.serial_format):
            return ref
        found = _WORK_ORDER_BY_NUMBER.first(_connection(s), {"number": wo.number})
        if found is None:
            return self._create_work_order(s, wo, operator)
        ref = _WorkOrderRef(id=found.id, number=found.number,
                            terms=(found.product, found.profile, found.quantity, found.serial_format))
        if ref.terms != (wo.product, wo.profile, wo.quantity, wo.serial_format):
            raise ConfigError(
                f"work order {wo.number} is already recorded with different product, profile, quantity "
                "or serial format", work_order=wo.number,
            )
        cache[("wo", wo.number)] = ref
        return ref

    def _create_work_order(self, s: Session, wo: WorkOrder, operator: str | None) -> _WorkOrderRef:
        commissioning = json.dumps(redact_commissioning(wo.commissioning), sort_keys=True)
        conn = _connection(s)
        # A product's serial format is one numbering space (serial_series) shared by its work
        # orders: a new one continues the series, and two at once never hand out the same serial.
        series = {"product": wo.product, "serial_format": wo.serial_format}
        found = _LOCK_SERIES.first(conn, series)
        if found is None:
            _INSERT_SERIES.execute(conn, {**series, "next_seq": 1})
        wo_id = int(_INSERT_WORK_ORDER.one(conn, {
            "number": wo.number, "product": wo.product, "profile": wo.profile, "quantity": wo.quantity,
            "serial_format": wo.serial_format, "commissioning_json": commissioning,
            "next_seq": found.next_seq if found is not None else 1, "station": self.station_id,
            "created_at": _now(),
        }).id)
        self._append(
            s, kind="work_order_created", work_order=wo.number, operator=operator, outcome="ok",
            detail={
                "product": wo.product, "profile": wo.profile, "quantity": str(wo.quantity),
                "serial_format": wo.serial_format, "commissioning": commissioning,
            },
        )
        return _WorkOrderRef(id=wo_id, number=wo.number,
                             terms=(wo.product, wo.profile, wo.quantity, wo.serial_format))

    @staticmethod
    def _record(unit: UnitRow, work_order: str) -> UnitRecord:
        return UnitRecord(
            unit_id=unit.id,
            work_order=work_order,
            station=unit.station,
            slot=unit.slot,
            operator=unit.operator,
            hardware_id=unit.hardware_id,
            serial_number=unit.serial_number,
            status=UnitStatus(unit.status),
            started_at=_utc(unit.started_at) or unit.started_at,
            finished_at=_utc(unit.finished_at),
            public_key_sha256=unit.public_key_sha256,
            cert_serial=unit.cert_serial,
            cert_der=unit.cert_der,
            profile=unit.profile,
            failed_step=Step(unit.failed_step) if unit.failed_step else None,
            error_code=unit.error_code,
            error_message=unit.error_message,
        )

    @staticmethod
    def _record_of_row(row: _UnitRow) -> UnitRecord:
        """:meth:`_record` for a Core row of :data:`_SELECT_UNIT` (same column names as UnitRow)."""
        return SqlAuditStore._record(cast(UnitRow, row), row.wo_number)

    # -- AuditStore protocol ---------------------------------------------------------------------

    def create_work_order(self, work_order: WorkOrder, *, operator: str | None = None) -> None:
        """Record a work order (secrets redacted) and its creation event; idempotent for equal terms."""
        with self._write("create_work_order", work_order=work_order.number) as s:
            self._ensure_work_order(s, work_order, operator)

    def start_unit(
        self, *, work_order: WorkOrder, station: str, slot: str, operator: str, hardware_id: str
    ) -> int:
        """Open an attempt; refuses a hardware id held by an active unit, or a used-up work order."""
        self._require_issuing()
        with self._write("start_unit", work_order=work_order.number, hardware_id=hardware_id) as s:
            wo = self._ensure_work_order(s, work_order, operator)
            conn = _connection(s)
            found_active = _ACTIVE_UNIT.first(conn, {"hardware_id": hardware_id})
            active = None if found_active is None else found_active.id
            if active is not None:
                raise IdentityConflict(
                    f"hardware id already belongs to active unit {active}", hardware_id=hardware_id
                )
            if self._consumed_core(s, wo.id) >= wo.quantity:
                raise QuotaExhausted(f"work order {wo.number} is used up", work_order=wo.number)
            unit_id = int(_INSERT_UNIT.one(conn, {
                "work_order_id": wo.id, "station": station, "slot": slot, "operator": operator,
                "hardware_id": hardware_id, "status": str(UnitStatus.IN_PROGRESS), "started_at": _now(),
            }).id)
            self._append(
                s, kind="unit_started", unit_id=unit_id, work_order=wo.number, operator=operator,
                outcome="ok",
                detail={"status": UnitStatus.IN_PROGRESS, "hardware_id": hardware_id, "slot": slot,
                        "unit_station": station},
            )
            return unit_id

    def record_step(
        self,
        unit_id: int,
        step: Step,
        *,
        ok: bool,
        duration_ms: float,
        detail: dict[str, str] | None = None,
        error_code: str | None = None,
        error_message: str | None = None,
    ) -> None:
        """Append one step event (secret-looking detail keys are redacted here as a second guard)."""
        with self._unrefusable("record_step", unit_id=unit_id, step=str(step)) as s:
            work_order, operator, secret_keys = self._unit_event_fields(s, unit_id)
            self._append(
                s, kind="step", unit_id=unit_id, work_order=work_order, operator=operator,
                step=str(step), outcome="ok" if ok else "failed", duration_ms=duration_ms,
                detail=redact_detail(detail, secret_keys),
                error_code=error_code, error_message=error_message,
            )

    def next_unit_serial(self, unit_id: int) -> str:
        """Reserve the unit's serial from its series' counter (never reused, even after failure).

        The series (product and serial format) is locked, so work orders of one product running
        at once, on this station or others sharing the database, take turns on one counter."""
        with self._write("next_unit_serial", unit_id=unit_id) as s:
            unit = self._unit_row(s, unit_id)
            if unit.serial_number is not None:
                return str(unit.serial_number)
            conn = _connection(s)
            wo = _WORK_ORDER_BY_ID.one(conn, {"wo_id": unit.work_order_id})
            series = _LOCK_SERIES.first(conn, {"product": wo.product, "serial_format": wo.serial_format})
            if series is None:  # a work order recorded by a station from before serial series
                _INSERT_SERIES.execute(conn, {"product": wo.product, "serial_format": wo.serial_format,
                                              "next_seq": wo.next_seq})
                series = _LOCK_SERIES.one(conn, {"product": wo.product,
                                                 "serial_format": wo.serial_format})
            seq = int(series.next_seq)
            try:
                serial = str(wo.serial_format).format(
                    product=wo.product, seq=seq, work_order=wo.number, station=self.station_id
                )
            except (KeyError, IndexError, ValueError) as exc:
                raise ConfigError(
                    f"work order serial format {wo.serial_format!r} is invalid: {exc}", work_order=wo.number
                ) from exc
            _UPDATE_SERIES.execute(conn, {"series_id": series.id, "next_seq": seq + 1})
            self._update_unit(s, unit_id, serial_number=serial)  # the unique index speaks here
            self._append(
                s, kind="serial_reserved", unit_id=unit_id, work_order=wo.number, operator=unit.operator,
                outcome="ok", detail={"serial_number": serial, "seq": str(seq)},
            )
            return serial

    def record_intent(self, unit_id: int, prepared: PreparedCertificate) -> None:
        """Durably reserve cert serial and public key before signing; quota checked under lock."""
        self._require_issuing()
        if prepared.serial <= 0 or prepared.serial.bit_length() > 159:
            raise ValueError("certificate serial must be positive and at most 20 octets")
        cert_serial = format(prepared.serial, "x")
        with self._write("record_intent", unit_id=unit_id, cert_serial=cert_serial) as s:
            unit = self._unit_row(s, unit_id)
            self._expect_status(unit, UnitStatus.IN_PROGRESS)
            self._check_clock(_connection(s), unit_id)
            wo = _LOCK_WORK_ORDER.one(_connection(s), {"wo_id": unit.work_order_id})
            consumed = int(wo.consumed)
            if consumed >= wo.quantity:
                raise QuotaExhausted(f"work order {wo.number} is used up", work_order=wo.number)
            public_key_sha256 = prepared.public_key_sha256.lower()
            tbs_sha256 = prepared.tbs_sha256.lower()
            # Unique indexes (certificate serial, public key) speak here, before anything is signed.
            self._update_unit(
                s, unit_id, public_key_sha256=public_key_sha256, cert_serial=cert_serial,
                tbs_sha256=tbs_sha256, profile=prepared.profile, status=str(UnitStatus.INTENT),
                intent_at=_now(),
            )
            _UPDATE_CONSUMED.execute(_connection(s), {"wo_id": wo.id, "consumed": consumed + 1})
            self._append(
                s, kind="intent", unit_id=unit_id, work_order=wo.number, operator=unit.operator,
                outcome="ok",
                detail={
                    "status": UnitStatus.INTENT, "serial_number": unit.serial_number or "",
                    "hardware_id": unit.hardware_id, "cert_serial": cert_serial,
                    "public_key_sha256": public_key_sha256, "tbs_sha256": tbs_sha256,
                    "profile": prepared.profile, "quota_remaining": str(wo.quantity - consumed - 1),
                },
            )

    def _check_clock(self, conn: Connection, unit_id: int) -> None:
        """Refuse to sign behind the log: the clock must not be earlier than the last event or the
        last checkpoint (beyond ``CLOCK_TOLERANCE``, for stations sharing a database).

        A clock set back would put validity dates in the past and the log out of time order; the
        log is ordered by sequence number, so it stays whole, but nothing more is signed (issuing
        stops) until the clock is set right and the station restarted."""
        now = _now()
        times = [row[0] for row in (_HEAD_EVENT_TIME.first(conn), _LAST_CHECKPOINT_TIME.first(conn))
                 if row is not None and row[0]]
        latest = max((datetime.fromisoformat(t) for t in times), default=None)
        if latest is not None and now < latest - CLOCK_TOLERANCE:
            reason = (f"the station clock ({now.isoformat(timespec='seconds')}) is behind the "
                      f"production log ({latest.isoformat(timespec='seconds')}): set the clock, "
                      "then restart the station")
            self.stop_issuing(reason)
            raise AuditWriteFailed(reason, code="clock_behind_log", unit_id=unit_id)

    def record_issued(self, unit_id: int, cert_der: bytes) -> None:
        """Store the signed certificate against its intent; it must be the certificate of that intent."""
        with self._unrefusable("record_issued", unit_id=unit_id) as s:
            unit = self._unit_row(s, unit_id)
            self._expect_status(unit, UnitStatus.INTENT)
            _check_matches_intent(unit_id, unit.cert_serial, unit.tbs_sha256, cert_der)
            cert_sha256 = hashlib.sha256(cert_der).hexdigest()
            self._update_unit(s, unit_id, cert_der=cert_der, cert_sha256=cert_sha256, issued_at=_now(),
                              status=str(UnitStatus.ISSUED))
            self._append(
                s, kind="issued", unit_id=unit_id, work_order=unit.wo_number, operator=unit.operator,
                outcome="ok",
                detail={"status": UnitStatus.ISSUED, "cert_serial": unit.cert_serial or "",
                        "cert_sha256": cert_sha256},
            )

    def complete_unit(self, unit_id: int) -> None:
        with self._unrefusable("complete_unit", unit_id=unit_id) as s:
            unit = self._unit_row(s, unit_id)
            self._expect_status(unit, UnitStatus.ISSUED)
            self._update_unit(s, unit_id, status=str(UnitStatus.PROVISIONED), finished_at=_now())
            self._append(
                s, kind="completed", unit_id=unit_id, work_order=unit.wo_number, operator=unit.operator,
                outcome="ok", detail={"status": UnitStatus.PROVISIONED},
            )

    def fail_unit(self, unit_id: int, step: Step, error_code: str, error_message: str) -> None:
        """Mark the unit failed at ``step``; its serial and (after intent) its quota stay consumed."""
        with self._unrefusable("fail_unit", unit_id=unit_id) as s:
            unit = self._unit_row(s, unit_id)
            if unit.status == UnitStatus.REVOKED:
                raise ValueError(f"unit {unit_id} is revoked")
            self._update_unit(s, unit_id, **self._failed_values(str(step), error_code, error_message))
            self._append(
                s, kind="failed", unit_id=unit_id, work_order=unit.wo_number, operator=unit.operator,
                step=str(step), outcome="failed", detail={"status": UnitStatus.FAILED},
                error_code=error_code, error_message=error_message,
            )

    @staticmethod
    def _failed_values(step: str | None, code: str, message: str) -> dict[str, Any]:
        return {"status": str(UnitStatus.FAILED), "failed_step": step, "error_code": code,
                "error_message": message, "finished_at": _now()}

    @classmethod
    def _set_failed(cls, unit: UnitRow, step: str | None, code: str, message: str) -> None:
        for name, value in cls._failed_values(step, code, message).items():
            setattr(unit, name, value)

    def _lookup(self, statement: DriverStatement, params: Mapping[str, Any]) -> Any | None:
        """One single-statement read: the first row or None.

        Inside a batch it reads the batch's transaction (it must see the writes before it).
        Otherwise it borrows a pooled connection and runs the one statement on the driver with no
        explicit BEGIN (a single SELECT is consistent on its own; on PostgreSQL the driver's
        implicit transaction ends when the connection goes back to the pool): a slot's lookups cost
        it no Session and no transaction bookkeeping."""
        if getattr(self._batch, "session", None) is not None:
            with self._read() as s:
                return statement.first(_connection(s), params)
        with self._reader.connect() as conn:
            return statement.first(conn, params)

    def is_key_known(self, public_key_sha256: str) -> bool:
        return self._lookup(_KEY_KNOWN, {"fp": public_key_sha256.lower()}) is not None

    def issued_certificate_for(self, hardware_id: str) -> UnitRecord | None:
        """The latest certificate of this hardware id if it is issued but not installed.

        That is a unit in ``issued``, or ``failed`` at ``write_cert`` (the write was never
        acknowledged). Re-send it with :meth:`resume_unit`; never sign a second time.
        """
        row = self._lookup(_ISSUED_FOR, {"hardware_id": hardware_id})
        if row is None:
            return None
        resumable = row.status == UnitStatus.ISSUED or (
            row.status == UnitStatus.FAILED and row.failed_step == Step.WRITE_CERT
        )
        return self._record_of_row(row) if resumable else None

    # -- beyond the protocol ---------------------------------------------------------------------

    def resume_unit(self, unit_id: int, *, slot: str, operator: str) -> UnitRecord:
        """Take an issued-not-installed unit back to ``issued`` in ``slot`` to re-send its certificate."""
        with self._write("resume_unit", unit_id=unit_id) as s:
            unit = self._unit_row(s, unit_id)
            ok = unit.cert_der is not None and (
                unit.status == UnitStatus.ISSUED
                or (unit.status == UnitStatus.FAILED and unit.failed_step == Step.WRITE_CERT)
            )
            if not ok:
                raise ValueError(f"unit {unit_id} has no issued-but-not-installed certificate")
            self._update_unit(s, unit_id, status=str(UnitStatus.ISSUED), slot=slot, operator=operator,
                              failed_step=None, error_code=None, error_message=None, finished_at=None)
            self._append(
                s, kind="resumed", unit_id=unit_id, work_order=unit.wo_number, operator=operator,
                outcome="ok", detail={"status": UnitStatus.ISSUED, "slot": slot},
            )
            return self._record_of_row(self._unit_row(s, unit_id))

    def mark_interrupted(self) -> list[UnitRecord]:
        """At start-up: settle this station's units left mid-flight by a crash.

        ``in_progress`` and ``intent`` become ``failed`` with code ``interrupted`` (an intent keeps its
        serial and quota: the HSM may have signed, the certificate was never released). ``issued``
        units stay issued (the same certificate can be re-sent) and get an ``interrupted`` event.
        """
        out: list[UnitRecord] = []
        with self._write("mark_interrupted") as s:
            rows = s.execute(
                select(UnitRow, WorkOrderRow.number).join(WorkOrderRow)
                .where(UnitRow.station == self.station_id,
                       UnitRow.status.in_((UnitStatus.IN_PROGRESS, UnitStatus.INTENT, UnitStatus.ISSUED)))
                .order_by(UnitRow.id)
            ).all()
            for unit, number in rows:
                was = unit.status
                if was != UnitStatus.ISSUED:
                    self._set_failed(unit, None, INTERRUPTED, f"interrupted while {was} (station restart)")
                s.flush()
                self._append(
                    s, kind=INTERRUPTED, unit_id=unit.id, work_order=number, operator=unit.operator,
                    outcome="failed" if was != UnitStatus.ISSUED else "ok",
                    detail={"status": unit.status, "was": was},
                    error_code=INTERRUPTED if was != UnitStatus.ISSUED else None,
                )
                out.append(self._record(unit, number))
        return out

    def record_event(
        self,
        kind: str,
        *,
        operator: str | None = None,
        unit_id: int | None = None,
        work_order: str | None = None,
        ok: bool = True,
        detail: Mapping[str, str] | None = None,
        error_code: str | None = None,
        error_message: str | None = None,
    ) -> None:
        """Append an event that is not a unit step: a role refusal, a shift note, a config change."""
        with self._unrefusable("record_event", kind=kind) as s:
            self._append(
                s, kind=kind, unit_id=unit_id, work_order=work_order, operator=operator,
                outcome="ok" if ok else "failed", detail=redact_detail(detail),
                error_code=error_code, error_message=error_message,
            )

    def add_operator(
        self, *, badge_id: str, name: str, role: str, pin: str, by: str | None = None
    ) -> None:
        """Register an operator; only the salted scrypt hash of the PIN is kept."""
        if role not in ROLES:
            raise ValueError(f"role must be one of {ROLES}")
        pin_hash = hash_pin(pin)
        with self._write("add_operator", badge_id=badge_id) as s:
            s.add(OperatorRow(badge_id=badge_id, name=name, role=role, pin_hash=pin_hash, active=True,
                              created_at=_now()))
            s.flush()
            self._append(s, kind="operator_added", operator=by, outcome="ok",
                         detail={"badge_id": badge_id, "name": name, "role": role})

    def sign_in(self, badge_id: str, pin: str) -> OperatorInfo | None:
        """Check badge and PIN; the attempt (never the PIN) is logged either way."""
        with self._read() as s:
            op = s.scalars(select(OperatorRow).where(OperatorRow.badge_id == badge_id)).one_or_none()
            info = None
            if op is not None and op.active and check_pin(pin, op.pin_hash):
                info = OperatorInfo(badge_id=op.badge_id, name=op.name, role=op.role)
        with self._write("sign_in", badge_id=badge_id) as w:
            self._append(
                w, kind="sign_in", operator=badge_id, outcome="ok" if info else "failed",
                detail={"role": info.role} if info else {},
                error_code=None if info else "bad_credentials",
            )
        return info

    def sign_out(self, badge_id: str) -> None:
        with self._write("sign_out", badge_id=badge_id) as s:
            self._append(s, kind="sign_out", operator=badge_id, outcome="ok")

    def operators(self) -> list[OperatorInfo]:
        """Active operators, by badge (never their PIN hashes)."""
        with self._read() as s:
            rows = s.scalars(select(OperatorRow).where(OperatorRow.active.is_(True))
                             .order_by(OperatorRow.badge_id))
            return [OperatorInfo(badge_id=r.badge_id, name=r.name, role=r.role) for r in rows]

    # -- queries ---------------------------------------------------------------------------------

    def _units_query(self) -> Select[UnitRow, str]:
        return select(UnitRow, WorkOrderRow.number).join(WorkOrderRow)

    def get_unit(self, unit_id: int) -> UnitRecord | None:
        with self._read() as s:
            row = s.execute(self._units_query().where(UnitRow.id == unit_id)).one_or_none()
            return None if row is None else self._record(row[0], row[1])

    def get_unit_by_serial(self, serial: str) -> UnitRecord | None:
        """By unit serial number, or by certificate serial (hex, any case, optional ``0x``/colons)."""
        hexed = serial.lower().removeprefix("0x").replace(":", "").lstrip("0") or "0"
        with self._read() as s:
            row = s.execute(
                self._units_query().where(
                    (UnitRow.serial_number == serial) | (UnitRow.cert_serial == hexed)
                ).order_by(UnitRow.id).limit(1)
            ).one_or_none()
            return None if row is None else self._record(row[0], row[1])

    def list_units(
        self,
        *,
        work_order: str | None = None,
        status: UnitStatus | str | None = None,
        outcome: str | None = None,
        since: datetime | None = None,
        until: datetime | None = None,
        batch: int = 500,
    ) -> Iterator[UnitRecord]:
        """Stream units in id order (``yield_per``): exports of a whole shift never load all rows.

        ``outcome``: ``ok`` (provisioned) or ``failed`` (failed or revoked).
        """
        stmt = self._units_query().order_by(UnitRow.id)
        if work_order is not None:
            stmt = stmt.where(WorkOrderRow.number == work_order)
        if status is not None:
            stmt = stmt.where(UnitRow.status == str(status))
        if outcome == "ok":
            stmt = stmt.where(UnitRow.status == UnitStatus.PROVISIONED)
        elif outcome == "failed":
            stmt = stmt.where(UnitRow.status.in_((UnitStatus.FAILED, UnitStatus.REVOKED)))
        elif outcome is not None:
            raise ValueError("outcome must be 'ok' or 'failed'")
        if since is not None:
            stmt = stmt.where(UnitRow.started_at >= since)
        if until is not None:
            stmt = stmt.where(UnitRow.started_at < until)
        with self._read() as s:
            for unit, number in s.execute(stmt.execution_options(yield_per=batch)):
                yield self._record(unit, number)

    def work_order_counts(self, work_order: str) -> WorkOrderCounts | None:
        with self._read() as s:
            wo = s.scalars(select(WorkOrderRow).where(WorkOrderRow.number == work_order)).one_or_none()
            if wo is None:
                return None
            by_status: dict[str, int] = {
                status: count
                for status, count in s.execute(
                    select(UnitRow.status, func.count()).where(UnitRow.work_order_id == wo.id)
                    .group_by(UnitRow.status)
                )
            }
            consumed = wo.consumed
        return WorkOrderCounts(
            work_order=work_order,
            quantity=wo.quantity,
            provisioned=by_status.get(UnitStatus.PROVISIONED, 0),
            failed=by_status.get(UnitStatus.FAILED, 0) + by_status.get(UnitStatus.REVOKED, 0),
            in_flight=sum(by_status.get(st, 0) for st in (UnitStatus.IN_PROGRESS, UnitStatus.INTENT,
                                                          UnitStatus.ISSUED)),
            consumed=consumed,
        )

    def interrupted_units(self) -> list[UnitRecord]:
        """Units with an intent or a certificate but no completion, and units marked interrupted."""
        with self._read() as s:
            rows = s.execute(
                self._units_query().where(
                    UnitRow.status.in_((UnitStatus.INTENT, UnitStatus.ISSUED))
                    | (UnitRow.error_code == INTERRUPTED)
                ).order_by(UnitRow.id)
            ).all()
            return [self._record(u, n) for u, n in rows]

    def events(self, *, unit_id: int | None = None, batch: int = 1000) -> Iterator[EventRecord]:
        """Events in sequence order (never clock order), optionally for one unit."""
        stmt = select(EventRow).order_by(EventRow.seq)
        if unit_id is not None:
            stmt = stmt.where(EventRow.unit_id == unit_id)
        with self._read() as s:
            for ev in s.scalars(stmt.execution_options(yield_per=batch)):
                yield EventRecord(
                    seq=ev.seq, kind=ev.kind, station=ev.station, occurred_at=ev.occurred_at,
                    unit_id=ev.unit_id, work_order=ev.work_order, operator=ev.operator, step=ev.step,
                    outcome=ev.outcome, duration_ms=ev.duration_ms, detail=json.loads(ev.detail_json),
                    error_code=ev.error_code, error_message=ev.error_message, hash=ev.hash,
                )

    def revoke(self, serial: str, *, reason: str, operator: str, note: str = "") -> UnitRecord:
        """Mark the certificate of the unit with this unit or certificate serial as revoked.

        For good: the unit's status becomes ``revoked`` and a ``revoked`` event records who, when
        and why; the next CRL lists it (:meth:`revoked_certificates`). Refused for a unit without a
        certificate and for one already revoked."""
        unit = self.get_unit_by_serial(serial)
        if unit is None:
            raise ValueError(f"no unit with serial or certificate serial {serial!r}")
        if unit.cert_der is None or unit.cert_serial is None:
            raise ValueError(f"unit {unit.unit_id} has no certificate to revoke")
        if unit.status is UnitStatus.REVOKED:
            raise ValueError(f"the certificate of unit {unit.unit_id} is already revoked")
        with self._write("revoke", unit_id=unit.unit_id) as s:
            row = self._unit_row(s, unit.unit_id)
            if row.status == UnitStatus.REVOKED:  # revoked meanwhile by another station
                raise ValueError(f"the certificate of unit {unit.unit_id} is already revoked")
            self._update_unit(s, unit.unit_id, status=str(UnitStatus.REVOKED))
            self._append(
                s, kind="revoked", unit_id=unit.unit_id, work_order=row.wo_number, operator=operator,
                outcome="ok", detail={"status": UnitStatus.REVOKED, "cert_serial": row.cert_serial,
                                      "reason": reason, "note": note},
            )
            return self._record_of_row(self._unit_row(s, unit.unit_id))

    def revoked_certificates(self) -> list[tuple[str, datetime, str]]:
        """(certificate serial hex, when revoked, reason) of every revoked certificate, oldest first."""
        out = []
        with self._read() as s:
            for ev in s.scalars(select(EventRow).where(EventRow.kind == "revoked").order_by(EventRow.seq)):
                detail = json.loads(ev.detail_json)
                out.append((str(detail["cert_serial"]), datetime.fromisoformat(ev.occurred_at),
                            str(detail.get("reason", "unspecified"))))
        return out

    def record_checkpoint(self, sign: Callable[[bytes], tuple[bytes, bytes]]) -> Checkpoint:
        """Sign the chain head as it stands and record it (a row and a ``checkpoint`` event).

        ``sign(message)`` returns (signature, audit public key), e.g. the HSM signer's
        :meth:`~station.signing.HsmSigner.sign_checkpoint`. It runs inside the write transaction,
        so no event can be appended between the head read and the signature."""
        with self._write("checkpoint") as s:
            conn = _connection(s)
            row = _SELECT_HEAD.one(conn)
            head_seq, head_hash = int(row.seq), str(row.hash)
            signed_at = _now().isoformat(timespec="microseconds")
            message = Checkpoint.message_for(station=self.station_id, seq=head_seq, hash=head_hash,
                                             signed_at=signed_at)
            signature, public_key = sign(message)
            checkpoint = Checkpoint(station=self.station_id, seq=head_seq, hash=head_hash,
                                    signed_at=signed_at, public_key=public_key, signature=signature)
            if not checkpoint.signature_valid():
                raise SigningFailed("the audit key's checkpoint signature does not verify")
            _INSERT_CHECKPOINT.execute(conn, {
                "station": self.station_id, "seq": head_seq, "hash": head_hash, "signed_at": signed_at,
                "key_sha256": checkpoint.key_sha256, "public_key": public_key, "signature": signature,
            })
            self._append(s, kind="checkpoint", outcome="ok",
                         detail={"seq": str(head_seq), "hash": head_hash,
                                 "key_sha256": checkpoint.key_sha256})
        return checkpoint

    def checkpoints(self) -> list[Checkpoint]:
        """The checkpoints recorded in this database, oldest first."""
        with self._read() as s:
            rows = s.scalars(select(CheckpointRow).order_by(CheckpointRow.id)).all()
            return [Checkpoint(station=r.station, seq=r.seq, hash=r.hash, signed_at=r.signed_at,
                               public_key=r.public_key, signature=r.signature) for r in rows]

    def chain_head(self) -> tuple[int, str]:
        """(last sequence number, its hash): what a signed checkpoint would sign."""
        with self._read() as s:
            head = s.scalars(select(ChainHeadRow).where(ChainHeadRow.id == 1)).one()
            return head.seq, head.hash


def _check_matches_intent(unit_id: int, cert_serial: str | None, tbs_sha256: str | None,
                          cert_der: bytes) -> None:
    """The certificate must carry the intent's serial and TBS bytes (Boulder: check before use)."""
    try:
        cert = x509.load_der_x509_certificate(cert_der)
    except ValueError as exc:
        raise SigningFailed("the signed certificate does not parse", unit_id=unit_id) from exc
    if format(cert.serial_number, "x") != cert_serial:
        raise SigningFailed("the signed certificate's serial differs from its intent", unit_id=unit_id)
    if hashlib.sha256(cert.tbs_certificate_bytes).hexdigest() != tbs_sha256:
        raise SigningFailed("the signed certificate is not the one recorded at intent", unit_id=unit_id)
