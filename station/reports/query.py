"""Read-only queries behind the audit view, the exports and the reports (SQLAlchemy Core).

Every query takes a :class:`~station.reports.filters.UnitFilter` and turns it into the same ``WHERE``
clause (:func:`where_clause`), answered from the indexes of migrations 0001-0002. Nothing here loads
a whole table: the view pages (keyset on the unit id when sorted by id, ``OFFSET`` otherwise),
exports stream one cursor, charts aggregate with ``GROUP BY`` in the database. All reads run in
deferred (read-only) transactions, so a long report never blocks the station's writer.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Final

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from sqlalchemy import (
    ColumnElement,
    Engine,
    Select,
    String,
    and_,
    cast,
    func,
    literal,
    literal_column,
    or_,
    select,
    true,
    type_coerce,
)
from sqlalchemy.engine import Connection
from sqlalchemy.orm import Session

from station.audit.chain import HASHED_FIELDS, event_hash
from station.audit.engine import READ_OPTION
from station.audit.models import EventRow, UnitRow, WorkOrderRow
from station.audit.store import EventRecord, SqlAuditStore
from station.reports.filters import UnitFilter

UNITS: Final = UnitRow.__table__
WORK_ORDERS: Final = WorkOrderRow.__table__
EVENTS: Final = EventRow.__table__

_HIGH: Final = "\U0010ffff"
"""Upper bound of a prefix range: ``col >= q AND col < q || _HIGH`` uses the column's index."""


@dataclass(frozen=True)
class Column:
    """One column of the units table: its key, its header and the SQL expression behind it."""

    key: str
    header: str
    expr: ColumnElement[Any]


TABLE_COLUMNS: Final[tuple[Column, ...]] = (
    Column("id", "Unit", UNITS.c.id),
    Column("serial_number", "Serial", UNITS.c.serial_number),
    Column("work_order", "Work order", WORK_ORDERS.c.number),
    Column("product", "Product", WORK_ORDERS.c.product),
    Column("status", "Status", UNITS.c.status),
    Column("started_at", "Started (UTC)", UNITS.c.started_at),
    Column("station", "Station", UNITS.c.station),
    Column("slot", "Slot", UNITS.c.slot),
    Column("operator", "Operator", UNITS.c.operator),
    Column("hardware_id", "Hardware id", UNITS.c.hardware_id),
    Column("failed_step", "Failed step", UNITS.c.failed_step),
    Column("error_code", "Error code", UNITS.c.error_code),
    Column("cert_serial", "Certificate serial", UNITS.c.cert_serial),
)
"""What the audit view's table shows, in order; sorting is by any of these keys."""

COLUMN_KEYS: Final = tuple(c.key for c in TABLE_COLUMNS)
_BY_KEY: Final = {c.key: c for c in TABLE_COLUMNS}

FAILED_STATUSES: Final = ("failed", "revoked")
IN_FLIGHT_STATUSES: Final = ("in_progress", "intent", "issued")


def _normalise_hex(text: str) -> str:
    return text.lower().removeprefix("0x").replace(":", "")


def _prefix(col: ColumnElement[Any], text: str) -> ColumnElement[bool]:
    return and_(col >= text, col < text + _HIGH)


def where_clause(f: UnitFilter, *, sqlite: bool = False) -> ColumnElement[bool]:
    """The one translation of a filter into SQL, over the ``units`` table alone."""
    terms: list[ColumnElement[bool]] = []
    if f.since is not None:
        terms.append(UNITS.c.started_at >= f.since)
    if f.until is not None:
        terms.append(UNITS.c.started_at < f.until)
    # Work order and product as sub-selects on the (small) work_orders table, never as join terms:
    # the units table then drives every query, so the planner keeps its indexes (a join let SQLite
    # start from work_orders and scan a million units for a serial-number search).
    if f.work_order is not None:  # numbers are unique: '=' lets the index also give the id order
        terms.append(UNITS.c.work_order_id == select(WORK_ORDERS.c.id).where(
            WORK_ORDERS.c.number == f.work_order).scalar_subquery())
    if f.product is not None:
        terms.append(UNITS.c.work_order_id.in_(
            select(WORK_ORDERS.c.id).where(WORK_ORDERS.c.product == f.product)))
    if f.station is not None:
        terms.append(UNITS.c.station == f.station)
    if f.operator is not None:
        terms.append(UNITS.c.operator == f.operator)
    if f.outcome == "ok":
        terms.append(UNITS.c.status == "provisioned")
    elif f.outcome == "failed":
        terms.append(UNITS.c.status.in_(FAILED_STATUSES))
    elif f.outcome == "in_flight":
        terms.append(UNITS.c.status.in_(IN_FLIGHT_STATUSES))
    if f.failed_step is not None:
        terms.append(UNITS.c.failed_step == f.failed_step)
    if f.error_code is not None:
        terms.append(UNITS.c.error_code == f.error_code)
    if f.search is not None:
        q = f.search
        hexed = _normalise_hex(q)
        cert_serial = hexed.lstrip("0") or "0"
        search = or_(
            _prefix(UNITS.c.serial_number, q),
            _prefix(UNITS.c.hardware_id, q),
            _prefix(UNITS.c.cert_serial, cert_serial),
            _prefix(UNITS.c.cert_sha256, hexed),
            _prefix(UNITS.c.public_key_sha256, hexed),
        )
        # SQLite rates a prefix range as unselective and would rather walk the table in id order
        # (to skip the sort) than use the five indexes: 0.4 s instead of 0.1 ms on a million units.
        # likelihood() tells its planner the truth: a search matches almost nothing.
        terms.append(func.likelihood(search, literal_column("0.000001")) if sqlite else search)
    return and_(true(), *terms)


@dataclass(frozen=True, kw_only=True)
class StepTiming:
    """One step of a unit's timeline."""

    seq: int
    step: str
    outcome: str
    duration_ms: float | None
    occurred_at: str
    error_code: str | None
    error_message: str | None


@dataclass(frozen=True, kw_only=True)
class CertificateInfo:
    """What a QE reads off a certificate (parsed with cryptography, never trusted from the row)."""

    subject: str
    issuer: str
    serial_hex: str
    not_before: datetime
    not_after: datetime
    sha256: str
    sha1: str
    public_key: str
    pem: str


@dataclass(frozen=True, kw_only=True)
class ChainCheck:
    """Whether the unit's own events and their neighbours in the chain verify, and the unit row."""

    ok: bool
    events_checked: int
    problem: str | None = None
    seq: int | None = None


@dataclass(frozen=True, kw_only=True)
class UnitDetail:
    """Everything the detail pane shows for one unit."""

    unit: dict[str, Any]
    product: str
    profile: str
    key_type: str | None
    commissioning: list[dict[str, Any]]
    timeline: list[StepTiming]
    events: list[EventRecord]
    certificate: CertificateInfo | None
    chain: ChainCheck
    certificate_problem: str | None = None


@dataclass(frozen=True, kw_only=True)
class Failures:
    step: str
    error_code: str
    count: int


@dataclass(frozen=True, kw_only=True)
class YieldBucket:
    label: str
    ok: int
    failed: int

    @property
    def yield_pct(self) -> float:
        done = self.ok + self.failed
        return 100.0 * self.ok / done if done else 0.0


@dataclass(frozen=True, kw_only=True)
class Histogram:
    """Cycle times of provisioned units: ``counts[i]`` units in ``[edges[i], edges[i+1])`` ms."""

    edges: list[float]
    counts: list[int]
    median_ms: float | None = None
    p95_ms: float | None = None


@dataclass(frozen=True, kw_only=True)
class Summary:
    """Counts for a filter (the report's first section)."""

    total: int
    provisioned: int
    failed: int
    in_flight: int
    first_at: datetime | None
    last_at: datetime | None
    work_orders: list[dict[str, Any]] = field(default_factory=list)

    @property
    def yield_pct(self) -> float:
        done = self.provisioned + self.failed
        return 100.0 * self.provisioned / done if done else 0.0


def _utc_dt(value: Any) -> datetime | None:
    if isinstance(value, str):  # MIN/MAX on SQLite return the stored text
        value = datetime.fromisoformat(value)
    return _utc(value) if isinstance(value, datetime) else None


def _utc(value: Any) -> Any:
    if isinstance(value, datetime) and value.tzinfo is None:
        return value.replace(tzinfo=UTC)
    return value


class AuditQuery:
    """Read-only queries over the audit store's engine; safe to share between threads."""

    def __init__(self, store_or_engine: SqlAuditStore | Engine) -> None:
        engine = store_or_engine.engine if isinstance(store_or_engine, SqlAuditStore) else store_or_engine
        self._engine = engine
        self._reader = engine.execution_options(**{READ_OPTION: True})

    @property
    def dialect(self) -> str:
        return self._engine.dialect.name

    def connect(self) -> Connection:
        """A read-only connection (deferred BEGIN on SQLite)."""
        return self._reader.connect()

    # -- the table ---------------------------------------------------------------------------

    def _from(self, stmt: Select[Any], f: UnitFilter, *, join: bool) -> Select[Any]:
        """FROM units (plus work_orders for display columns) WHERE the filter.

        The join is a LEFT OUTER JOIN on purpose: every unit has its work order (a foreign key), so
        the rows are the same, and SQLite never reorders an outer join, so ``units`` stays the
        driving table whose indexes answer the filter.
        """
        if join:
            stmt = stmt.select_from(UNITS.outerjoin(WORK_ORDERS, UNITS.c.work_order_id == WORK_ORDERS.c.id))
        else:
            stmt = stmt.select_from(UNITS)
        return stmt.where(where_clause(f, sqlite=self.dialect == "sqlite"))

    def count(self, f: UnitFilter) -> int:
        stmt = self._from(select(func.count()), f, join=False)
        with self.connect() as conn:
            return int(conn.execute(stmt).scalar() or 0)

    def page(
        self,
        f: UnitFilter,
        *,
        sort: str = "id",
        descending: bool = False,
        limit: int = 200,
        offset: int = 0,
        after_id: int | None = None,
    ) -> list[tuple[Any, ...]]:
        """One page of table rows (values in :data:`TABLE_COLUMNS` order).

        Sorted by id, pass ``after_id`` (the last id seen) for keyset paging; any other sort pages by
        ``offset`` (ties broken by id, so pages never overlap).
        """
        if sort not in _BY_KEY:
            raise ValueError(f"unknown sort column {sort!r}")
        stmt = self._from(select(*(c.expr for c in TABLE_COLUMNS)), f, join=True)
        key = _BY_KEY[sort].expr
        if sort == "id":
            if after_id is not None:
                stmt = stmt.where(UNITS.c.id < after_id if descending else UNITS.c.id > after_id)
            order: ColumnElement[Any] = UNITS.c.id
            if f.search is not None and self.dialect == "sqlite":
                # '+id' stops SQLite from walking the table in id order to skip a sort; a search
                # matches a handful of rows, which its indexes find at once (with any statistics)
                order = literal_column("+units.id")
            stmt = stmt.order_by(order.desc() if descending else order)
        else:
            stmt = stmt.order_by(key.desc() if descending else key.asc(),
                                 UNITS.c.id.desc() if descending else UNITS.c.id).offset(offset)
        with self.connect() as conn:
            return [tuple(_utc(v) for v in row) for row in conn.execute(stmt.limit(limit))]

    def first_last(self) -> tuple[datetime | None, datetime | None]:
        """Start time of the first and last unit (two index seeks): the view's default date range."""
        with self.connect() as conn:
            lo = conn.execute(select(func.min(UNITS.c.started_at))).scalar()
            hi = conn.execute(select(func.max(UNITS.c.started_at))).scalar()
        return _utc_dt(lo), _utc_dt(hi)

    def distinct_values(self) -> dict[str, list[str]]:
        """The choices of the view's filter boxes, each from its index (a skip scan, not a full scan)."""
        out: dict[str, list[str]] = {}
        with self.connect() as conn:
            out["work_order"] = list(conn.execute(select(WORK_ORDERS.c.number).order_by(
                WORK_ORDERS.c.number)).scalars())
            out["product"] = list(conn.execute(select(WORK_ORDERS.c.product).distinct().order_by(
                WORK_ORDERS.c.product)).scalars())
            for name in ("station", "operator", "failed_step", "error_code"):
                out[name] = self._skip_scan(conn, name)
        return out

    @staticmethod
    def _skip_scan(conn: Connection, column: str) -> list[str]:
        """Distinct values of an indexed column by repeated ``MIN(col) WHERE col > previous``.

        That is one index seek per distinct value, so a million rows with a dozen stations cost a
        dozen seeks (a plain ``DISTINCT`` reads the whole index).
        """
        col = UNITS.c[column]
        values: list[str] = []
        current = conn.execute(select(func.min(col))).scalar()
        while current is not None and len(values) < 10_000:
            values.append(str(current))
            current = conn.execute(select(func.min(col)).where(col > current)).scalar()
        return values

    # -- a unit ------------------------------------------------------------------------------

    def unit_detail(self, unit_id: int, store: SqlAuditStore) -> UnitDetail | None:
        """The detail pane's data: unit row, timeline, certificate, commissioning, events, chain."""
        with self.connect() as conn:
            row = conn.execute(
                select(UNITS, WORK_ORDERS.c.number.label("wo_number"), WORK_ORDERS.c.product,
                       WORK_ORDERS.c.profile.label("wo_profile"), WORK_ORDERS.c.commissioning_json)
                .select_from(UNITS.join(WORK_ORDERS, UNITS.c.work_order_id == WORK_ORDERS.c.id))
                .where(UNITS.c.id == unit_id)
            ).mappings().one_or_none()
        if row is None:
            return None
        unit = {k: _utc(v) for k, v in row.items()}
        events = list(store.events(unit_id=unit_id))
        timeline = [
            StepTiming(seq=e.seq, step=e.step or e.kind, outcome=e.outcome or "", duration_ms=e.duration_ms,
                       occurred_at=e.occurred_at, error_code=e.error_code, error_message=e.error_message)
            for e in events if e.kind == "step"
        ]
        key_type = next((e.detail.get("key_type") for e in events
                         if e.step == "generate_key" and e.detail.get("key_type")), None)
        cert, problem = None, None
        if unit["cert_der"]:
            try:
                cert = certificate_info(unit["cert_der"])
            except ValueError as exc:
                problem = f"certificate does not parse: {exc}"
        try:
            commissioning = list(json.loads(unit["commissioning_json"] or "[]"))
        except ValueError:
            commissioning = []
        return UnitDetail(
            unit=unit, product=str(unit["product"]), profile=str(unit["profile"] or unit["wo_profile"]),
            key_type=key_type, commissioning=commissioning, timeline=timeline, events=events,
            certificate=cert, certificate_problem=problem, chain=self.check_unit_chain(unit_id),
        )

    def check_unit_chain(self, unit_id: int) -> ChainCheck:
        """Verify the chain *around* one unit: each of its events' hash, the links to the events
        before and after, and the unit row against what its events recorded.

        A full :func:`~station.audit.verify.verify_chain` proves the whole log; this is the quick,
        local answer the detail pane can give at once.
        """
        from station.audit.verify import _STATE_KINDS, _TRACKED, _unit_problem

        with self.connect() as conn:
            evs = list(conn.execute(select(EVENTS).where(EVENTS.c.unit_id == unit_id)
                                    .order_by(EVENTS.c.seq)).mappings())
            checked = 0
            expected: dict[str, tuple[str, int]] = {}
            for ev in evs:
                fields = {name: ev[name] for name in HASHED_FIELDS}
                if event_hash(ev["seq"], ev["prev_hash"], fields) != ev["hash"]:
                    return ChainCheck(ok=False, events_checked=checked, seq=ev["seq"],
                                      problem="hash does not match the row's contents (edited)")
                before = conn.execute(select(EVENTS.c.hash).where(EVENTS.c.seq == ev["seq"] - 1)).scalar()
                if ev["seq"] > 1 and before != ev["prev_hash"]:
                    return ChainCheck(ok=False, events_checked=checked, seq=ev["seq"],
                                      problem="not linked to the event before it (row missing or edited)")
                after = conn.execute(select(EVENTS.c.prev_hash).where(EVENTS.c.seq == ev["seq"] + 1)).scalar()
                if after is not None and after != ev["hash"]:
                    return ChainCheck(ok=False, events_checked=checked, seq=ev["seq"] + 1,
                                      problem="the next event does not link to this one")
                if ev["kind"] in _STATE_KINDS:
                    detail = json.loads(ev["detail_json"])
                    for key in _TRACKED:
                        if key in detail and detail[key] != "":
                            expected[key] = (str(detail[key]), ev["seq"])
                checked += 1
            with Session(bind=conn) as session:
                unit = session.get(UnitRow, unit_id)
                if unit is None:
                    return ChainCheck(ok=False, events_checked=checked, problem="unit row is missing")
                found = _unit_problem(unit, expected or None)
        if found is not None:
            return ChainCheck(ok=False, events_checked=checked, problem=found[0], seq=found[1])
        return ChainCheck(ok=True, events_checked=checked)

    # -- aggregates --------------------------------------------------------------------------

    def summary(self, f: UnitFilter) -> Summary:
        stmt = self._from(select(UNITS.c.status, func.count(), func.min(UNITS.c.started_at),
                                 func.max(UNITS.c.started_at)), f, join=False).group_by(UNITS.c.status)
        wo_stmt = self._from(
            select(WORK_ORDERS.c.number, WORK_ORDERS.c.product, WORK_ORDERS.c.profile,
                   WORK_ORDERS.c.quantity, UNITS.c.status, func.count()),
            f, join=True,
        ).group_by(WORK_ORDERS.c.number, WORK_ORDERS.c.product, WORK_ORDERS.c.profile,
                   WORK_ORDERS.c.quantity, UNITS.c.status).order_by(WORK_ORDERS.c.number)
        by_status: dict[str, int] = {}
        first: datetime | None = None
        last: datetime | None = None
        wos: dict[str, dict[str, Any]] = {}
        with self.connect() as conn:
            for status, n, lo, hi in conn.execute(stmt):
                by_status[status] = int(n)
                lo, hi = _utc(lo), _utc(hi)
                first = lo if first is None or (lo is not None and lo < first) else first
                last = hi if last is None or (hi is not None and hi > last) else last
            for number, product, profile, quantity, status, n in conn.execute(wo_stmt):
                entry = wos.setdefault(number, {"work_order": number, "product": product,
                                                "profile": profile, "quantity": quantity,
                                                "provisioned": 0, "failed": 0, "in_flight": 0})
                entry[_outcome(status)] += int(n)
        return Summary(
            total=sum(by_status.values()),
            provisioned=by_status.get("provisioned", 0),
            failed=sum(by_status.get(s, 0) for s in FAILED_STATUSES),
            in_flight=sum(by_status.get(s, 0) for s in IN_FLIGHT_STATUSES),
            first_at=first, last_at=last, work_orders=list(wos.values()),
        )

    def failures(self, f: UnitFilter) -> list[Failures]:
        """Failures by step and error code, most frequent first (a Pareto)."""
        failed = f.with_(outcome="failed") if f.outcome in (None, "failed") else None
        if failed is None:
            return []
        stmt = self._from(select(UNITS.c.failed_step, UNITS.c.error_code, func.count().label("n")),
                          failed, join=False)
        stmt = stmt.group_by(UNITS.c.failed_step, UNITS.c.error_code).order_by(
            func.count().desc(), UNITS.c.failed_step, UNITS.c.error_code)
        with self.connect() as conn:
            return [Failures(step=step or "(none)", error_code=code or "(none)", count=int(n))
                    for step, code, n in conn.execute(stmt)]

    def _hour_expr(self) -> ColumnElement[Any]:
        if self.dialect == "sqlite":
            return func.substr(type_coerce(UNITS.c.started_at, String), 1, 13)
        return func.to_char(func.timezone("UTC", UNITS.c.started_at), "YYYY-MM-DD HH24")

    def yield_by(self, f: UnitFilter, bucket: str = "hour", *, last: int = 48) -> list[YieldBucket]:
        """Provisioned vs failed per hour, shift (06-14, 14-22, 22-06 UTC) or day; the last buckets."""
        hour = self._hour_expr().label("hour")
        stmt = self._from(select(hour, UNITS.c.status, func.count()), f, join=False)
        stmt = stmt.group_by(hour, UNITS.c.status)
        counts: dict[str, list[int]] = {}
        with self.connect() as conn:
            for text, status, n in conn.execute(stmt):
                label = _bucket_label(str(text), bucket)
                pair = counts.setdefault(label, [0, 0])
                outcome = _outcome(status)
                if outcome == "provisioned":
                    pair[0] += int(n)
                elif outcome == "failed":
                    pair[1] += int(n)
        labels = sorted(counts)[-last:]
        return [YieldBucket(label=lab, ok=counts[lab][0], failed=counts[lab][1]) for lab in labels]

    def _cycle_ms_expr(self) -> ColumnElement[Any]:
        if self.dialect == "sqlite":
            return (func.julianday(UNITS.c.finished_at) - func.julianday(UNITS.c.started_at)) * 86_400_000.0
        return func.extract("epoch", UNITS.c.finished_at - UNITS.c.started_at) * 1000.0

    def cycle_times(self, f: UnitFilter, *, bins: int = 30) -> Histogram:
        """Cycle time (start to finish) of provisioned units, binned in SQL at 10 ms, then re-binned."""
        ok = f.with_(outcome="ok") if f.outcome in (None, "ok") else None
        if ok is None:
            return Histogram(edges=[], counts=[])
        fine = func.cast(self._cycle_ms_expr() / 10.0, type_=func.count().type).label("b")
        stmt = self._from(select(fine, func.count()), ok, join=False).where(
            UNITS.c.finished_at.is_not(None)).group_by(fine).order_by(fine)
        with self.connect() as conn:
            raw = [(int(b) * 10.0, int(n)) for b, n in conn.execute(stmt) if b is not None]
        return _rebin(raw, bins)

    # -- exports -----------------------------------------------------------------------------

    def _ts_text(self, col: ColumnElement[Any]) -> ColumnElement[Any]:
        if self.dialect == "sqlite":  # stored as 'YYYY-MM-DD HH:MM:SS.ffffff' UTC
            return func.replace(type_coerce(col, String), " ", "T") + literal("+00:00")
        return func.to_char(func.timezone("UTC", col), 'YYYY-MM-DD"T"HH24:MI:SS.US"+00:00"')

    def _hex(self, col: ColumnElement[Any]) -> ColumnElement[Any]:
        if self.dialect == "sqlite":
            return func.lower(func.hex(col))
        return func.encode(col, "hex")

    def export_columns(self) -> list[tuple[str, ColumnElement[Any]]]:
        """Export columns and their SQL: text as the MES reads it, produced by the database."""
        return [
            ("unit_id", UNITS.c.id), ("work_order", WORK_ORDERS.c.number),
            ("product", WORK_ORDERS.c.product), ("station", UNITS.c.station), ("slot", UNITS.c.slot),
            ("operator", UNITS.c.operator), ("hardware_id", UNITS.c.hardware_id),
            ("serial_number", UNITS.c.serial_number), ("status", UNITS.c.status),
            ("started_at", self._ts_text(UNITS.c.started_at)),
            ("finished_at", self._ts_text(UNITS.c.finished_at)),
            ("public_key_sha256", UNITS.c.public_key_sha256), ("cert_serial", UNITS.c.cert_serial),
            ("cert_sha256", UNITS.c.cert_sha256), ("profile", UNITS.c.profile),
            ("failed_step", UNITS.c.failed_step), ("error_code", UNITS.c.error_code),
            ("error_message", UNITS.c.error_message), ("cert_der_hex", self._hex(UNITS.c.cert_der)),
        ]

    def export_statement(self, f: UnitFilter, columns: Sequence[str] | None = None, *,
                         as_text: bool = False) -> Select[Any]:
        """The export's SELECT in id order; ``as_text``: every column text, ``''`` for none (CSV)."""
        cols = self.export_columns()
        if columns is not None:
            wanted = set(columns)
            cols = [c for c in cols if c[0] in wanted]
        if as_text:
            cols = [(name, _as_text(name, expr)) for name, expr in cols]
        stmt = self._from(select(*(expr.label(name) for name, expr in cols)), f, join=True)
        return stmt.order_by(UNITS.c.id)

    def stream(self, f: UnitFilter, columns: Sequence[str] | None = None, *, as_text: bool = False,
               batch: int = 5000) -> Iterator[tuple[Any, ...]]:
        """Rows of the export in id order, from one cursor in one read transaction (one snapshot).

        On SQLite the rows come straight from the driver's cursor: every column is already what the
        export writes (text made by SQL, or integers), so SQLAlchemy's per-row processing is skipped;
        that halves the time of a million-row export. Other databases go through SQLAlchemy's rows.
        """
        stmt = self.export_statement(f, columns, as_text=as_text)
        with self.connect() as conn:
            if self.dialect == "sqlite":
                # no stream/yield_per options here: those make SQLAlchemy pre-buffer rows from the
                # cursor; a plain execute leaves every row on the (lazily stepping) sqlite3 cursor.
                result = conn.execute(stmt)
                cursor = result.cursor
                while rows := cursor.fetchmany(batch):
                    yield from rows
                result.close()
                return
            result = conn.execution_options(stream_results=True, yield_per=batch).execute(stmt)
            for part in result.partitions():
                for row in part:
                    yield tuple(row)


_NOT_NULL_TEXT: Final = frozenset({"work_order", "product", "station", "slot", "operator", "hardware_id",
                                   "status", "started_at"})


def _as_text(name: str, expr: ColumnElement[Any]) -> ColumnElement[Any]:
    """Text for a CSV field at the least cost in SQL: only ids are cast, only nullable columns
    coalesced (each extra function on a million rows is measurable)."""
    if name == "unit_id":
        return cast(expr, String)
    if name in _NOT_NULL_TEXT:
        return expr
    return func.coalesce(expr, "")


def _outcome(status: str) -> str:
    if status in FAILED_STATUSES:
        return "failed"
    if status in IN_FLIGHT_STATUSES:
        return "in_flight"
    return "provisioned"


def _bucket_label(hour_text: str, bucket: str) -> str:
    """'YYYY-MM-DD HH' to an hour, shift or day label that sorts in time order."""
    day, _, hh = hour_text.partition(" ")
    if bucket == "hour":
        return f"{day} {hh}h"
    if bucket == "day":
        return day
    h = int(hh or 0)
    if h < 6:  # the night shift started the day before; keep the date it started on
        start = datetime.fromisoformat(day).toordinal() - 1
        return f"{datetime.fromordinal(start).date().isoformat()} S3 22-06"
    return f"{day} S1 06-14" if h < 14 else f"{day} S2 14-22" if h < 22 else f"{day} S3 22-06"


def _rebin(raw: list[tuple[float, int]], bins: int) -> Histogram:
    """Fine (10 ms) counts to ``bins`` equal bins up to the 99th percentile (the rest in the last)."""
    total = sum(n for _, n in raw)
    if not total:
        return Histogram(edges=[], counts=[])

    def quantile(q: float) -> float:
        seen = 0
        for start, n in raw:
            seen += n
            if seen >= q * total:
                return start + 5.0
        return raw[-1][0]

    lo = raw[0][0]
    hi = max(quantile(0.99), lo + 10.0 * bins)
    width = (hi - lo) / bins
    counts = [0] * bins
    for start, n in raw:
        counts[min(int((start - lo) / width), bins - 1)] += n
    return Histogram(edges=[lo + i * width for i in range(bins + 1)], counts=counts,
                     median_ms=quantile(0.5), p95_ms=quantile(0.95))


def certificate_info(der: bytes) -> CertificateInfo:
    """Parse a certificate for display; raises ValueError if it does not parse."""
    cert = x509.load_der_x509_certificate(der)
    try:
        key = cert.public_key()
        size = getattr(key, "key_size", None)
        curve = getattr(getattr(key, "curve", None), "name", None)
        public_key = f"{type(key).__name__.removeprefix('_')} {curve or size or ''}".strip()
    except ValueError as exc:
        public_key = f"unreadable ({exc})"
    return CertificateInfo(
        subject=cert.subject.rfc4514_string(),
        issuer=cert.issuer.rfc4514_string(),
        serial_hex=format(cert.serial_number, "x"),
        not_before=cert.not_valid_before_utc,
        not_after=cert.not_valid_after_utc,
        sha256=hashlib.sha256(der).hexdigest(),
        sha1=cert.fingerprint(hashes.SHA1()).hex(),  # a fingerprint, as tools show it
        public_key=public_key,
        pem=cert.public_bytes(serialization.Encoding.PEM).decode("ascii"),
    )
