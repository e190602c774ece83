"""Database faults on SQLite: durability refused, disk full, read-only, a corrupt file.

Disk full is tested two ways: on a real 2 MiB tmpfs when this process may mount one (root here), and
everywhere with ``PRAGMA max_page_count`` (SQLite's own SQLITE_FULL path). Read-only: a ``mode=ro``
URI (chmod does not stop root), and a tmpfs remounted read-only under an open store when mounting works.
"""

from __future__ import annotations

import os
import shutil
import sqlite3
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from station.audit import DURABLE_PRAGMAS, SqlAuditStore, open_audit_store, verify_chain
from station.domain import Step
from station.errors import AuditIntegrityError, AuditWriteFailed
from tests.audit.conftest import STATION, Issuer, work_order


def start(store: SqlAuditStore, hw: str) -> int:
    return store.start_unit(work_order=work_order(quantity=1000), station=STATION, slot="A",
                            operator="t", hardware_id=hw)


def fill_until_failure(store: SqlAuditStore, unit: int, limit: int = 5000) -> AuditWriteFailed:
    for _ in range(limit):
        try:
            store.record_step(unit, Step.CONNECT, ok=True, duration_ms=1.0, detail={"pad": "x" * 8000})
        except AuditWriteFailed as exc:
            return exc
    raise AssertionError("the database never filled up")


@pytest.mark.parametrize(("pragma", "value", "words"),
                         [("synchronous", "NORMAL", "synchronous=1"),
                          ("journal_mode", "DELETE", "journal_mode")])
def test_durability_settings_are_checked(tmp_path: Path, issuer: Issuer, pragma: str, value: str,
                                         words: str) -> None:
    weak = dict(DURABLE_PRAGMAS) | {pragma: value}
    store = open_audit_store(tmp_path / "a.db", station_id=STATION, pragmas=weak)
    try:
        assert not store.healthy and words in (store.issuing_stopped or "")
        with pytest.raises(AuditWriteFailed, match="durability"):
            start(store, "hw-1")
    finally:
        store.close()
    good = open_audit_store(tmp_path / "a.db", station_id=STATION)
    assert good.healthy
    unit = start(good, "hw-1")
    good.record_intent(unit, issuer.prepare()[0])
    good.close()


def test_disk_full_simulated_with_max_page_count(tmp_path: Path, issuer: Issuer) -> None:
    path = tmp_path / "a.db"
    open_audit_store(path, station_id=STATION).close()
    store = open_audit_store(path, station_id=STATION,
                             pragmas=dict(DURABLE_PRAGMAS) | {"max_page_count": "60"})
    unit = start(store, "hw-1")
    exc = fill_until_failure(store, unit)
    assert "disk full" in exc.message
    assert not store.healthy and "disk full" in (store.issuing_stopped or "")
    with pytest.raises(AuditWriteFailed, match="issuing stopped: disk full"):
        store.record_intent(unit, issuer.prepare()[0])
    assert verify_chain(store).ok, "the failed write left nothing half-done"
    store.close()


def _can_mount() -> bool:
    if os.geteuid() != 0 or shutil.which("mount") is None:
        return False
    probe = Path(f"/tmp/audit-mount-probe-{uuid.uuid4().hex[:8]}")
    probe.mkdir()
    try:
        ok = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", str(probe)],
                            capture_output=True).returncode == 0
        if ok:
            subprocess.run(["umount", str(probe)], check=True)
        return ok
    finally:
        probe.rmdir()


# In CI (root, as .ci/run runs) the real tiny filesystem must work: a failure there is a failure.
needs_mount = pytest.mark.skipif(not os.environ.get("CI") and not _can_mount(),
                                 reason="cannot mount a tmpfs here (needs root); "
                                 "the max_page_count and mode=ro variants still run")


@pytest.fixture
def tiny_fs(tmp_path: Path) -> Iterator[Path]:
    """A real 2 MiB filesystem: ENOSPC, not a simulation."""
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=2m", "tmpfs", str(mnt)], check=True)
    try:
        yield mnt
    finally:
        subprocess.run(["umount", "-l", str(mnt)], check=False)


@needs_mount
def test_disk_full_on_a_real_tiny_filesystem(tiny_fs: Path, issuer: Issuer) -> None:
    store = open_audit_store(tiny_fs / "a.db", station_id=STATION)
    unit = start(store, "hw-1")
    exc = fill_until_failure(store, unit)
    assert "disk full" in exc.message, exc.message
    with pytest.raises(AuditWriteFailed, match="issuing stopped"):
        store.record_intent(unit, issuer.prepare()[0])
    store.close()


@needs_mount
def test_filesystem_remounted_read_only(tiny_fs: Path) -> None:
    """A filesystem cannot go read-only under open writers (EBUSY), so the station meets it at open."""
    open_audit_store(tiny_fs / "a.db", station_id=STATION).close()
    subprocess.run(["mount", "-o", "remount,ro", str(tiny_fs)], check=True)
    try:
        with pytest.raises(AuditWriteFailed, match="cannot open the audit database"):
            open_audit_store(tiny_fs / "a.db", station_id=STATION)
    finally:
        subprocess.run(["mount", "-o", "remount,rw", str(tiny_fs)], check=False)


def test_read_only_database_file(tmp_path: Path, issuer: Issuer) -> None:
    path = tmp_path / "a.db"
    store = open_audit_store(path, station_id=STATION)
    unit = start(store, "hw-1")
    store.close()
    ro = open_audit_store(f"sqlite:///file:{path}?mode=ro&uri=true", station_id=STATION)
    try:
        assert ro.get_unit(unit) is not None, "reading still works"
        with pytest.raises(AuditWriteFailed, match="read-only"):
            ro.record_step(unit, Step.CONNECT, ok=True, duration_ms=1.0)
        assert "read-only" in (ro.issuing_stopped or "")
        with pytest.raises(AuditWriteFailed):
            ro.record_intent(unit, issuer.prepare()[0])
    finally:
        ro.close()


def test_corrupt_file_opens_read_only(tmp_path: Path) -> None:
    path = tmp_path / "a.db"
    store = open_audit_store(path, station_id=STATION)
    for i in range(40):
        start(store, f"hw-{i}")
    store.close()
    with sqlite3.connect(path) as conn:
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        root = conn.execute(
            "SELECT rootpage FROM sqlite_master WHERE name = 'ix_units_hardware_id'"
        ).fetchone()[0]
        page_size = conn.execute("PRAGMA page_size").fetchone()[0]
    conn.close()
    with path.open("r+b") as f:  # scribble over the cell pointers of one index page
        f.seek((root - 1) * page_size + 8)
        f.write(b"\xff" * 64)
    damaged = open_audit_store(path, station_id=STATION)
    try:
        assert damaged.read_only and "quick_check" in damaged.read_only
        assert not damaged.healthy
        with pytest.raises(AuditIntegrityError):
            start(damaged, "hw-new")
        with pytest.raises(AuditIntegrityError):
            damaged.record_step(1, Step.CONNECT, ok=True, duration_ms=1.0)
        assert damaged.get_unit(1) is not None, "quality can still read what is there"
    finally:
        damaged.close()


def test_writes_begin_immediate_and_reads_do_not(sqlite_store: SqlAuditStore) -> None:
    from sqlalchemy import event

    seen: list[str] = []

    def spy(conn: object, cursor: object, statement: str, *args: object) -> None:
        if statement.startswith("BEGIN"):
            seen.append(statement)

    event.listen(sqlite_store.engine, "before_cursor_execute", spy)
    start(sqlite_store, "hw-1")
    assert seen == ["BEGIN IMMEDIATE"]
    list(sqlite_store.list_units())
    assert seen == ["BEGIN IMMEDIATE", "BEGIN"]


def test_a_long_read_does_not_block_the_writer(sqlite_store: SqlAuditStore) -> None:
    import time

    for i in range(6):
        start(sqlite_store, f"hw-{i}")
    export = sqlite_store.list_units(batch=1)
    next(export)  # a QE export is mid-way, its read transaction open
    t0 = time.monotonic()
    start(sqlite_store, "hw-new")
    assert time.monotonic() - t0 < 1.0, "the writer waited on the reader"
    assert len(list(export)) >= 5
