"""Benchmark 5: durable unit records per second, one commit per record versus group commit.

A unit record is one durable state change of a unit with its hash-chained event
(:meth:`SqlAuditStore.fail_unit`: the unit row updated and one event appended). Three ways:

* the store, one caller, one transaction (and fsync) per record;
* the store behind the :class:`AuditWriter`, 8 slot threads at once: group commit;
* raw ``sqlite3`` with the same durability settings (WAL, synchronous=FULL): one INSERT per commit,
  and 8 INSERTs per commit, as the references.
"""

from __future__ import annotations

import sqlite3
import tempfile
import threading
import time
from pathlib import Path

from bench.perf.common import Row, work_order
from station.audit import open_audit_store
from station.domain import Step
from station.line import AuditWriter

SLOTS = 8


def _raw(path: Path, count: int, per_commit: int) -> float:
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA synchronous=FULL")
    conn.execute("CREATE TABLE IF NOT EXISTS ev (seq INTEGER PRIMARY KEY, unit INTEGER, kind TEXT, "
                 "detail TEXT, prev TEXT, hash TEXT)")
    started = time.perf_counter()
    for i in range(0, count, per_commit):
        conn.execute("BEGIN IMMEDIATE")
        for j in range(i, min(count, i + per_commit)):
            conn.execute("INSERT INTO ev (unit, kind, detail, prev, hash) VALUES (?, ?, ?, ?, ?)",
                         (j, "failed", '{"status":"failed"}', "0" * 64, "1" * 64))
        conn.execute("COMMIT")
    rate = count / (time.perf_counter() - started)
    conn.close()
    return rate


def run(*, quick: bool = False) -> list[Row]:
    count = 200 if quick else 1600
    with tempfile.TemporaryDirectory(prefix="station-bench-audit-") as tmp:
        store = open_audit_store(Path(tmp) / "audit.db", station_id="bench")
        try:
            wo = work_order(SLOTS)
            units = [store.start_unit(work_order=wo, station="bench", slot=str(i), operator="bench",
                                      hardware_id=f"{i:016x}") for i in range(SLOTS)]
            started = time.perf_counter()
            for i in range(count):
                store.fail_unit(units[i % SLOTS], Step.WRITE_CERT, "bench", "bench record")
            single = count / (time.perf_counter() - started)

            writer = AuditWriter(store)
            barrier = threading.Barrier(SLOTS + 1)

            def slot(unit_id: int) -> None:
                barrier.wait()
                for _ in range(count // SLOTS):
                    writer.fail_unit(unit_id, Step.WRITE_CERT, "bench", "bench record")

            threads = [threading.Thread(target=slot, args=(u,)) for u in units]
            for t in threads:
                t.start()
            barrier.wait()
            started = time.perf_counter()
            for t in threads:
                t.join()
            grouped = (count // SLOTS) * SLOTS / (time.perf_counter() - started)
            writer.close()
        finally:
            store.close()
        raw_single = _raw(Path(tmp) / "raw1.db", count, 1)
        raw_group = _raw(Path(tmp) / "raw8.db", count, SLOTS)
    return [
        Row(bench="5", figure="audit: unit records/s, one commit per record", value=single, unit="/s",
            reference="raw sqlite3 INSERT, 1 per commit", ref_value=raw_single),
        Row(bench="5", figure=f"audit: unit records/s, group commit ({SLOTS} slots)", value=grouped,
            unit="/s", reference=f"raw sqlite3 INSERT, {SLOTS} per commit", ref_value=raw_group),
    ]
