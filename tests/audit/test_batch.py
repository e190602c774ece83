"""Group commit (SqlAuditStore.batch): plain appends run without a savepoint of their own.

Step events and free events cannot be refused by a unique index or a quota, so inside a batch they
run directly in the batch transaction. These tests pin what that must keep: an error before anything
was written reaches its caller alone, a database error fails the whole batch (nothing of it durable,
issuing stops), a refused write next to them still rolls back alone, and the per-transaction lookups
follow a change of the unit's operator.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from station.audit import DURABLE_PRAGMAS, SqlAuditStore, open_audit_store, verify_chain
from station.domain import Step
from station.errors import AuditWriteFailed, IdentityConflict
from tests.audit.conftest import STATION, Issuer, work_order


def _start(store: SqlAuditStore, hw: str, operator: str = "t") -> int:
    return store.start_unit(work_order=work_order(quantity=100), station=STATION, slot="A",
                            operator=operator, hardware_id=hw)


def _kinds(store: SqlAuditStore) -> list[tuple[str, int | None, str | None]]:
    return [(e.kind, e.unit_id, e.step) for e in store.events()]


def test_steps_in_a_batch_commit_together_and_chain(store: SqlAuditStore) -> None:
    unit = _start(store, "hw-1")
    before = len(_kinds(store))
    with store.batch():
        store.record_step(unit, Step.CONNECT, ok=True, duration_ms=1.0)
        store.record_step(unit, Step.IDENTIFY, ok=True, duration_ms=2.0,
                          detail={"wifi.passphrase": "hunter2", "model": "m"})
        store.record_event("shift_note", operator="t", detail={"note": "hello"})
    events = list(store.events())
    assert [(e.kind, e.step) for e in events[before:]] == [
        ("step", "connect"), ("step", "identify"), ("shift_note", None)]
    assert events[before + 1].detail == {"wifi.passphrase": "***", "model": "m"}
    assert events[before].operator == "t" and events[before].work_order == "WO-1"
    assert verify_chain(store).ok


def test_an_error_before_anything_was_written_leaves_the_batch_alone(store: SqlAuditStore) -> None:
    unit = _start(store, "hw-1")
    before = len(_kinds(store))
    with store.batch():
        store.record_step(unit, Step.CONNECT, ok=True, duration_ms=1.0)
        with pytest.raises(ValueError, match="unknown unit id"):
            store.record_step(unit + 1000, Step.CONNECT, ok=True, duration_ms=1.0)
        store.record_step(unit, Step.IDENTIFY, ok=True, duration_ms=1.0)
    assert [k[2] for k in _kinds(store)[before:]] == ["connect", "identify"]
    assert store.healthy
    assert verify_chain(store).ok


def test_a_refusal_between_plain_appends_rolls_back_alone(store: SqlAuditStore, issuer: Issuer) -> None:
    """The unique index refuses the second intent inside the batch (on PostgreSQL that aborts the
    transaction but for its savepoint): the step events on either side of it stay."""
    first = _start(store, "hw-1")
    prepared, _ = issuer.prepare()
    store.record_intent(first, prepared)
    unit = _start(store, "hw-2")
    before = len(_kinds(store))
    with store.batch():
        store.record_step(unit, Step.CONNECT, ok=True, duration_ms=1.0)
        with pytest.raises(IdentityConflict):
            store.record_intent(unit, prepared)  # same certificate serial and public key
        store.record_step(unit, Step.IDENTIFY, ok=True, duration_ms=1.0)
    kinds = _kinds(store)[before:]
    assert [k[0] for k in kinds] == ["step", "refusal", "step"]
    assert store.healthy
    assert verify_chain(store).ok


def test_operator_change_is_seen_by_later_steps_of_the_same_batch(store: SqlAuditStore,
                                                                  issuer: Issuer) -> None:
    unit = _start(store, "hw-1", operator="first")
    store.next_unit_serial(unit)
    prepared, der = issuer.prepare()
    store.record_intent(unit, prepared)
    store.record_issued(unit, der)
    with store.batch():
        store.record_step(unit, Step.WRITE_CERT, ok=True, duration_ms=1.0)
        store.resume_unit(unit, slot="B", operator="second")
        store.record_step(unit, Step.WRITE_CERT, ok=True, duration_ms=1.0)
    steps = [e for e in store.events(unit_id=unit) if e.kind == "step"]
    assert [e.operator for e in steps[-2:]] == ["first", "second"]
    assert verify_chain(store).ok


def test_operator_change_is_seen_by_steps_of_later_batches(store: SqlAuditStore,
                                                            issuer: Issuer) -> None:
    """The store keeps units' event fields across commits; a resumption in its own transaction, and
    one in a batch that failed, must still leave later steps with the right operator."""
    unit = _start(store, "hw-1", operator="first")
    with store.batch():
        store.record_step(unit, Step.CONNECT, ok=True, duration_ms=1.0)  # looked up and kept
    store.next_unit_serial(unit)
    prepared, der = issuer.prepare()
    store.record_intent(unit, prepared)
    store.record_issued(unit, der)
    store.resume_unit(unit, slot="B", operator="second")  # its own transaction
    with store.batch():
        store.record_step(unit, Step.WRITE_CERT, ok=True, duration_ms=1.0)
    with pytest.raises(RuntimeError), store.batch():
        store.resume_unit(unit, slot="C", operator="third")
        raise RuntimeError("the batch rolls back")
    with store.batch():
        store.record_step(unit, Step.PROVE_POSSESSION, ok=True, duration_ms=1.0)
    steps = [e for e in store.events(unit_id=unit) if e.kind == "step"]
    assert [e.operator for e in steps] == ["first", "second", "second"]
    assert verify_chain(store).ok


def _nearly_full_store(tmp_path: Path) -> SqlAuditStore:
    """A store whose file may grow to 60 pages (240 kB): a full disk, for real."""
    path = tmp_path / "a.db"
    open_audit_store(path, station_id=STATION).close()
    return open_audit_store(path, station_id=STATION,
                            pragmas=dict(DURABLE_PRAGMAS) | {"max_page_count": "60"})


def test_a_failed_step_write_fails_the_whole_batch(tmp_path: Path, issuer: Issuer) -> None:
    """Disk full while a batch's events are written (they are written together, just before COMMIT):
    every write of the batch is lost, every caller of the batch is told so, issuing stops, and the
    chain on disk is whole."""
    store = _nearly_full_store(tmp_path)
    try:
        unit = _start(store, "hw-1")
        before = _kinds(store)
        with pytest.raises(AuditWriteFailed, match="disk full"), store.batch():
            store.record_step(unit, Step.CONNECT, ok=True, duration_ms=1.0)
            for _ in range(100):  # 800 kB of events against a 240 kB file limit
                store.record_step(unit, Step.CONNECT, ok=True, duration_ms=1.0,
                                  detail={"pad": "x" * 8000})
        assert _kinds(store) == before, "nothing of the failed batch may be durable"
        assert not store.healthy and "disk full" in (store.issuing_stopped or "")
        with pytest.raises(AuditWriteFailed, match="issuing stopped"):
            store.record_intent(unit, issuer.prepare()[0])
        assert verify_chain(store).ok
    finally:
        store.close()


def test_a_read_inside_a_failing_batch_fails_the_batch(tmp_path: Path) -> None:
    """A read inside a batch first writes the batch's pending events (so it sees them); if that
    write fails, the read raises AuditWriteFailed, later writes of the batch are refused, and
    nothing of the batch is durable."""
    store = _nearly_full_store(tmp_path)
    try:
        unit = _start(store, "hw-1")
        before = _kinds(store)
        with pytest.raises(AuditWriteFailed, match="disk full"), store.batch():
            for _ in range(100):
                store.record_step(unit, Step.CONNECT, ok=True, duration_ms=1.0,
                                  detail={"pad": "x" * 8000})
            with pytest.raises(AuditWriteFailed, match="disk full"):
                store.is_key_known("00" * 32)
            with pytest.raises(AuditWriteFailed):
                store.record_event("shift_note")
        assert _kinds(store) == before
        assert not store.healthy
        assert verify_chain(store).ok
    finally:
        store.close()


def test_a_write_that_fails_after_writing_rolls_back_alone(store: SqlAuditStore) -> None:
    """Each savepoint write really has its SAVEPOINT: what it wrote before failing is undone, and the
    writes around it commit (on SQLite too, where a failed statement does not abort the transaction)."""
    unit = _start(store, "hw-1")
    before = len(_kinds(store))
    with store.batch():
        store.record_step(unit, Step.CONNECT, ok=True, duration_ms=1.0)
        with pytest.raises(RuntimeError), store._write("probe") as s:
            store._append(s, kind="must_not_stay")
            raise RuntimeError("after the append")
        store.record_step(unit, Step.IDENTIFY, ok=True, duration_ms=1.0)
    assert [k[0] for k in _kinds(store)[before:]] == ["step", "step"]
    assert verify_chain(store).ok
