"""The audit writer on the real store (SQLite file): group commit, early replies, fail closed.

What the workflow relies on (the AuditStore contract in station/ports.py): intent, issued and
completion are durable when their call returns; start_unit and next_unit_serial may reply before
their commit, but are durable once the same thread's next durable call returns, and a failure to
commit them is raised by that call.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from sqlalchemy import event

from station.audit import DURABLE_PRAGMAS, SqlAuditStore, open_audit_store, verify_chain
from station.domain import Step, UnitStatus
from station.errors import AuditWriteFailed, IdentityConflict
from station.line import AuditWriter
from tests.audit.conftest import STATION, Issuer, work_order

WO = work_order(quantity=100)


def _commits(store: SqlAuditStore) -> list[int]:
    """A counter of COMMITs on the store's engine (one element per commit)."""
    seen: list[int] = []
    event.listen(store.engine, "commit", lambda conn: seen.append(1))
    return seen


@pytest.fixture
def writer(sqlite_store: SqlAuditStore) -> Iterator[AuditWriter]:
    w = AuditWriter(sqlite_store, linger_s=0.05)
    yield w
    w.close()


def _unit_through(writer: AuditWriter, issuer: Issuer, hw: str) -> int:
    unit = writer.start_unit(work_order=WO, station=STATION, slot="1", operator="op", hardware_id=hw)
    writer.record_step(unit, Step.COMMISSION, ok=True, duration_ms=1.0)
    writer.next_unit_serial(unit)
    writer.record_step(unit, Step.GET_CSR, ok=True, duration_ms=1.0)
    prepared, der = issuer.prepare()
    writer.record_intent(unit, prepared)
    writer.record_issued(unit, der)
    writer.record_step(unit, Step.LOCK, ok=True, duration_ms=1.0)
    writer.complete_unit(unit)
    writer.flush()
    return unit


def test_a_unit_costs_three_commits_and_everything_is_durable(
        sqlite_store: SqlAuditStore, writer: AuditWriter, issuer: Issuer, tmp_path: Path) -> None:
    _unit_through(writer, issuer, "hw-0")  # the work order's first unit also creates it
    commits = _commits(sqlite_store)
    unit = _unit_through(writer, issuer, "hw-1")
    assert len(commits) == 3, "start and serial ride with the intent; flush has nothing left to wait for"
    fresh = open_audit_store(tmp_path / "audit.db", station_id=STATION)  # another connection
    try:
        record = fresh.get_unit(unit)
        assert record is not None and record.status is UnitStatus.PROVISIONED
        assert record.serial_number is not None
        kinds = [(e.kind, e.step) for e in fresh.events(unit_id=unit)]
        assert kinds == [("unit_started", None), ("step", "commission"), ("serial_reserved", None),
                         ("step", "get_csr"), ("intent", None), ("issued", None), ("step", "lock"),
                         ("completed", None)]
        assert verify_chain(fresh).ok
    finally:
        fresh.close()


def test_an_early_reply_carries_a_refusal(writer: AuditWriter, issuer: Issuer) -> None:
    _unit_through(writer, issuer, "hw-a")
    # hw-a is provisioned: the store refuses a second active unit for it, in start_unit itself,
    # and the caller hears it at once; the writer and the rest of its batch go on.
    with pytest.raises(IdentityConflict):
        writer.start_unit(work_order=WO, station=STATION, slot="2", operator="op", hardware_id="hw-a")
    _unit_through(writer, issuer, "hw-b")


def test_a_failed_commit_of_an_early_reply_fails_the_next_durable_call(
        tmp_path: Path, issuer: Issuer) -> None:
    """The disk fills while the batch holding start_unit and next_unit_serial commits: the slot
    already has its unit id and serial, but its intent raises, nothing of the batch is durable, and
    issuing stops: no certificate is ever signed against a unit the log lacks."""
    path = tmp_path / "a.db"
    open_audit_store(path, station_id=STATION).close()
    store = open_audit_store(path, station_id=STATION,
                             pragmas=dict(DURABLE_PRAGMAS) | {"max_page_count": "60"})
    writer = AuditWriter(store, linger_s=0.05)
    try:
        unit = writer.start_unit(work_order=WO, station=STATION, slot="1", operator="op",
                                 hardware_id="hw-1")
        writer.next_unit_serial(unit)
        for _ in range(100):  # 800 kB of step events against a 240 kB file
            writer.record_step(unit, Step.GET_CSR, ok=True, duration_ms=1.0,
                               detail={"pad": "x" * 8000})
        with pytest.raises(AuditWriteFailed, match="disk full"):
            writer.record_intent(unit, issuer.prepare()[0])
        assert store.get_unit(unit) is None, "nothing of the failed batch may be durable"
        assert not store.healthy
    finally:
        writer.close()
        store.close()


def test_slots_share_commits(sqlite_store: SqlAuditStore, issuer: Issuer) -> None:
    """Eight slots at once: their durable calls share transactions (group commit)."""
    writer = AuditWriter(sqlite_store)
    _unit_through(writer, issuer, "hw-warm")
    commits = _commits(sqlite_store)
    barrier = threading.Barrier(8)
    errors: list[BaseException] = []

    def slot(i: int) -> None:
        barrier.wait()
        try:
            for j in range(5):
                _unit_through(writer, issuer, f"hw-{i}-{j}")
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=slot, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    writer.close()
    assert not errors
    assert len(commits) < 3 * 40, "40 units through one writer must share commits"
    assert verify_chain(sqlite_store).ok


class _FailingCommit:
    """The real store, whose next group commit fails (rolled back, nothing durable)."""

    def __init__(self, store: SqlAuditStore) -> None:
        self._store = store
        self.fail_next = False

    def __getattr__(self, name: str) -> object:
        return getattr(self._store, name)

    @contextmanager
    def batch(self) -> Iterator[None]:
        with self._store.batch():
            yield
            if self.fail_next:
                self.fail_next = False
                time.sleep(0.1)  # a slow, failing fsync: the early reply is long back by now
                raise AuditWriteFailed("disk full (simulated)")


def test_a_call_after_a_failed_early_reply_reports_that_failure(sqlite_store: SqlAuditStore) -> None:
    """start_unit replied, then its commit failed: the slot's next call, queued before the failure
    was known, raises that failure, never the 'unknown unit' its own statements then hit."""
    failing = _FailingCommit(sqlite_store)
    writer = AuditWriter(failing, linger_s=0.0)  # type: ignore[arg-type]
    try:
        failing.fail_next = True
        unit = writer.start_unit(work_order=WO, station=STATION, slot="1", operator="op",
                                 hardware_id="hw-1")  # replies while its commit is still running
        with pytest.raises(AuditWriteFailed, match="disk full"):
            writer.next_unit_serial(unit)  # queued before the failure was known; runs after it
        assert sqlite_store.get_unit(unit) is None
    finally:
        writer.close()
