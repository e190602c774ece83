"""Verification of the hash chain, and of unit rows against the events that describe them.

Walks the log in sequence order and stops at the first bad row: a gap in the sequence (a deleted
row), a ``prev_hash`` that is not the previous row's hash (inserted, deleted or reordered rows), or a
hash that does not match the row's contents (an edited row). Then the chain head row must point at
the last event (a cut tail shows unless the head was rewritten too), and the log must reach and
agree with every signed checkpoint, those it holds and those from a checkpoint file kept elsewhere
(that closes the cut tail with a rewritten head, and an older copy of the database put back).
Finally every unit row is compared with the values its own hashed events carry: status, unit serial,
hardware id, certificate serial, public key, TBS hash and certificate hash, so editing a unit row is
caught even though unit rows are not chained themselves.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Final

from sqlalchemy import Engine, func, select
from sqlalchemy.engine import URL
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session

from station.audit.chain import GENESIS_HASH, HASHED_FIELDS, event_hash
from station.audit.checkpoint import Checkpoint
from station.audit.engine import READ_OPTION, build_engine, to_url
from station.audit.models import ChainHeadRow, CheckpointRow, EventRow, UnitRow, WorkOrderRow
from station.audit.store import SqlAuditStore
from station.errors import AuditIntegrityError

ProgressCallback = Callable[[int, int], None]
"""Called as ``(rows checked, rows in total)`` every few hundred rows and at the end."""

_TRACKED: Final = ("status", "serial_number", "hardware_id", "cert_serial", "public_key_sha256",
                   "tbs_sha256", "cert_sha256")
_STATE_KINDS: Final = frozenset(
    {"unit_started", "serial_reserved", "intent", "issued", "completed", "failed", "interrupted", "resumed",
     "revoked"}
)
"""Events that change a unit row; their hashed detail is what the row must equal. (A refusal event
names the values that were refused, so it must not count.)"""
_PROGRESS_EVERY: Final = 500


@dataclass(frozen=True, kw_only=True)
class VerifyResult:
    """``ok``, or the first bad row: ``seq`` (event) and/or ``unit_id``, and ``problem`` in words."""

    ok: bool
    events_checked: int
    units_checked: int
    head_seq: int
    head_hash: str
    seq: int | None = None
    unit_id: int | None = None
    problem: str | None = None

    def summary(self) -> str:
        if self.ok:
            return (f"audit chain intact: {self.events_checked} events, {self.units_checked} units, "
                    f"head seq {self.head_seq} hash {self.head_hash[:16]}")
        where = []
        if self.seq is not None:
            where.append(f"event seq {self.seq}")
        if self.unit_id is not None:
            where.append(f"unit {self.unit_id}")
        return f"audit chain BROKEN at {', '.join(where) or 'chain head'}: {self.problem}"


def verify_chain(
    store_or_url: SqlAuditStore | str | os.PathLike[str] | URL,
    progress_callback: ProgressCallback | None = None,
    *,
    checkpoints: Sequence[Checkpoint] = (),
) -> VerifyResult:
    """Verify the log of an open store, or of a database given by URL or SQLite path (read only).

    ``checkpoints`` are signed checkpoints kept off the station (a checkpoint file); the log must
    reach each of them and agree with it, as it must with the checkpoints it holds itself."""
    if isinstance(store_or_url, SqlAuditStore):
        return _verify(store_or_url.engine, progress_callback, checkpoints)
    engine = build_engine(to_url(store_or_url))
    try:
        return _verify(engine, progress_callback, checkpoints)
    except SQLAlchemyError as exc:
        raise AuditIntegrityError(f"cannot read the audit database: {exc.__class__.__name__}: "
                                  f"{str(exc).splitlines()[0]}") from exc
    finally:
        engine.dispose()


def _verify(engine: Engine, progress: ProgressCallback | None,
            external: Sequence[Checkpoint] = ()) -> VerifyResult:
    reader = engine.execution_options(**{READ_OPTION: True})
    with Session(reader) as s:
        stored = [Checkpoint(station=r.station, seq=r.seq, hash=r.hash, signed_at=r.signed_at,
                             public_key=r.public_key, signature=r.signature)
                  for r in s.scalars(select(CheckpointRow).order_by(CheckpointRow.id))]
        wanted: dict[int, list[tuple[Checkpoint, str]]] = {}
        for checkpoint, origin in [(c, "in the database") for c in stored] + \
                [(c, "in the checkpoint file") for c in external]:
            wanted.setdefault(checkpoint.seq, []).append((checkpoint, origin))
        logged: set[tuple[int, str]] = set()
        total = int(s.scalar(select(func.count()).select_from(EventRow)) or 0)
        total += int(s.scalar(select(func.count()).select_from(UnitRow)) or 0)
        head = s.scalars(select(ChainHeadRow).where(ChainHeadRow.id == 1)).one_or_none()
        head_seq, head_hash = (head.seq, head.hash) if head else (-1, "")
        done = 0
        expected: dict[int, dict[str, tuple[str, int]]] = {}

        def tick() -> None:
            if progress is not None and (done % _PROGRESS_EVERY == 0 or done == total):
                progress(done, total)

        def bad(problem: str, *, seq: int | None = None, unit_id: int | None = None) -> VerifyResult:
            return VerifyResult(ok=False, events_checked=done, units_checked=0, head_seq=head_seq,
                                head_hash=head_hash, seq=seq, unit_id=unit_id, problem=problem)

        for at, found in sorted(wanted.items()):
            for checkpoint, origin in found:
                if not checkpoint.signature_valid():
                    return bad(f"the checkpoint of seq {at} {origin} (signed {checkpoint.signed_at}) "
                               "does not verify against its audit key (edited or forged)", seq=at or None)

        prev_seq, prev_hash = 0, GENESIS_HASH
        stmt = select(EventRow).order_by(EventRow.seq).execution_options(yield_per=1000)
        for ev in s.scalars(stmt):
            if ev.seq != prev_seq + 1:
                if ev.seq <= prev_seq:
                    return bad("sequence numbers out of order", seq=ev.seq)
                return bad(f"sequence gap: event(s) {prev_seq + 1}..{ev.seq - 1} are missing (deleted)",
                           seq=ev.seq)
            if ev.prev_hash != prev_hash:
                return bad("prev_hash does not match the previous event's hash "
                           "(a row was inserted, deleted or reordered before it)", seq=ev.seq)
            fields: dict[str, Any] = {name: getattr(ev, name) for name in HASHED_FIELDS}
            if event_hash(ev.seq, ev.prev_hash, fields) != ev.hash:
                return bad("hash does not match the row's contents (the event was edited)", seq=ev.seq)
            for checkpoint, origin in wanted.get(ev.seq, ()):
                if checkpoint.hash != ev.hash:
                    return bad(f"the log differs from the checkpoint {origin} signed {checkpoint.signed_at}: "
                               "this event is not the one that was signed (the log was rewritten)",
                               seq=ev.seq)
            if ev.kind == "checkpoint":
                try:
                    said = json.loads(ev.detail_json)
                    logged.add((int(said["seq"]), str(said["hash"])))
                except (ValueError, KeyError):
                    return bad("a checkpoint event without its sequence number and hash", seq=ev.seq)
            if ev.unit_id is not None and ev.kind in _STATE_KINDS:
                try:
                    detail = json.loads(ev.detail_json)
                except ValueError:
                    return bad("detail is not valid JSON", seq=ev.seq)
                mine = expected.setdefault(ev.unit_id, {})
                for key in _TRACKED:
                    if key in detail and detail[key] != "":
                        mine[key] = (str(detail[key]), ev.seq)
            prev_seq, prev_hash = ev.seq, ev.hash
            done += 1
            tick()
        for at, found in sorted(wanted.items(), reverse=True):
            checkpoint, origin = found[0]
            if at > prev_seq:
                return bad(f"the log ends at seq {prev_seq}, but the checkpoint {origin} signed "
                           f"{checkpoint.signed_at} covers seq {at}: this is an older copy of the "
                           "database, or its tail was cut", seq=prev_seq or None)
            if at == 0 and checkpoint.hash != GENESIS_HASH:
                return bad(f"the checkpoint {origin} signed {checkpoint.signed_at} is of an empty log "
                           "with another hash")
        missing = logged - {(c.seq, c.hash) for c in stored}
        if missing:
            at, _ = min(missing)
            return bad(f"the checkpoint of seq {at} is in the log but its signed row is gone (deleted)",
                       seq=at or None)
        if (prev_seq, prev_hash) != (head_seq, head_hash):
            return bad(f"chain head says seq {head_seq} but the log ends at seq {prev_seq} "
                       "(tail cut or head edited)", seq=prev_seq or None)
        events_checked = done

        units = 0
        intents: dict[int, int] = {}
        for unit in s.scalars(select(UnitRow).order_by(UnitRow.id).execution_options(yield_per=1000)):
            if unit.intent_at is not None:
                intents[unit.work_order_id] = intents.get(unit.work_order_id, 0) + 1
            problem = _unit_problem(unit, expected.pop(unit.id, None))
            if problem is not None:
                msg, seq = problem
                return VerifyResult(ok=False, events_checked=events_checked, units_checked=units,
                                    head_seq=head_seq, head_hash=head_hash, seq=seq, unit_id=unit.id,
                                    problem=msg)
            units += 1
            done += 1
            tick()
        if expected:
            orphan = min(expected)
            return VerifyResult(ok=False, events_checked=events_checked, units_checked=units,
                                head_seq=head_seq, head_hash=head_hash, unit_id=orphan,
                                problem="events name a unit row that does not exist (deleted)")
        for wo in s.execute(select(WorkOrderRow.id, WorkOrderRow.number, WorkOrderRow.consumed)):
            if wo.consumed != intents.get(wo.id, 0):
                return VerifyResult(
                    ok=False, events_checked=events_checked, units_checked=units, head_seq=head_seq,
                    head_hash=head_hash,
                    problem=(f"work order {wo.number} says {wo.consumed} units used its quota but "
                             f"{intents.get(wo.id, 0)} units have an intent (quota counter edited)"))
        if progress is not None:
            progress(total, total)
        return VerifyResult(ok=True, events_checked=events_checked, units_checked=units,
                            head_seq=head_seq, head_hash=head_hash)


Problem = tuple[str, int | None]
"""What is wrong, and the sequence number of the event that says otherwise (if one does)."""


def _unit_problem(unit: UnitRow, expected: dict[str, tuple[str, int]] | None) -> Problem | None:
    """Compare a unit row with the last values its events recorded."""
    if expected is None:
        return "unit row has no events (inserted outside the store)", None
    actual = {
        "status": unit.status,
        "serial_number": unit.serial_number,
        "hardware_id": unit.hardware_id,
        "cert_serial": unit.cert_serial,
        "public_key_sha256": unit.public_key_sha256,
        "tbs_sha256": unit.tbs_sha256,
        "cert_sha256": unit.cert_sha256,
    }
    for key in _TRACKED:
        if key in expected:
            value, seq = expected[key]
            if actual[key] != value:
                return (f"{key} is {actual[key]!r} but event seq {seq} recorded {value!r} "
                        "(unit row edited)", seq)
        elif actual[key] not in (None, "") and key != "status":  # "" = unknown (failed before HELLO)
            return f"{key} is set ({actual[key]!r}) but no event recorded it (unit row edited)", None
    if "cert_sha256" in expected or unit.cert_der is not None:
        value, seq = expected.get("cert_sha256", ("", 0))
        digest = hashlib.sha256(unit.cert_der).hexdigest() if unit.cert_der is not None else None
        if digest != value:
            return "certificate DER does not match the hash its issued event recorded (unit row edited)", (
                seq or None)
    return None
