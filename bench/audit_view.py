#!/usr/bin/env python3
"""Benchmark of the quality engineer's audit view and exports on a seeded audit database.

Each figure is printed beside a reference measured in the same run on the same database:

* opening the view, each filter, a unit's detail: the time the view takes (widgets, model, the
  queries through SQLAlchemy) against the same SQL run directly on Python's ``sqlite3`` module;
* a full CSV export (``station audit export``'s code path) against the ``sqlite3`` command-line tool's
  own CSV dump (``sqlite3 -csv``) of the same rows and columns.

Targets (issue 6): view open < 1 s, any filter < 200 ms, export within 2x the sqlite3 reference.

    .venv/bin/python bench/audit_view.py --quick                 # 20,000 units, seeded in a temp dir
    .venv/bin/python bench/audit_view.py --units 1000000 --db /tmp/a1m.db   # seeds if missing
"""

from __future__ import annotations

import argparse
import os
import shutil
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from PySide6.QtWidgets import QApplication
from sqlalchemy.dialects import sqlite as sqlite_dialect

from station.audit.cli import _open_reader
from station.gui.audit import AuditView
from station.gui.audit.model import PAGE_SIZE
from station.reports import AuditQuery, UnitFilter, export
from station.reports.query import TABLE_COLUMNS, UNITS
from station.reports.seed import seed_database

Row = tuple[str, float, float, str, bool | None]


def best(fn: Callable[[], object], repeat: int) -> float:
    """Best of ``repeat`` runs, in seconds (the first run warms the page cache too)."""
    times = []
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return min(times)


def literal_sql(stmt: Any) -> str:
    return str(stmt.compile(dialect=sqlite_dialect.dialect(), compile_kwargs={"literal_binds": True}))


def raw_filter(conn: sqlite3.Connection, query: AuditQuery, f: UnitFilter) -> None:
    """The view's two queries for a filter (count, first page), straight on sqlite3."""
    from sqlalchemy import func, select

    count = query._from(select(func.count()), f, join=False)
    page = query._from(select(*(c.expr for c in TABLE_COLUMNS)), f, join=True)
    page = page.order_by(UNITS.c.id.desc()).limit(PAGE_SIZE)
    conn.execute(literal_sql(count)).fetchall()
    conn.execute(literal_sql(page)).fetchall()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--units", type=int, default=100_000, help="units to seed if --db is missing")
    parser.add_argument("--db", type=Path, help="audit database (seeded with --units if it does not exist)")
    parser.add_argument("--quick", action="store_true", help="20,000 units in a temp dir, fewer repeats")
    parser.add_argument("--repeat", type=int, default=None)
    parser.add_argument("--no-export", action="store_true", help="skip the full CSV export")
    args = parser.parse_args(argv)
    units = 20_000 if args.quick else args.units
    repeat = args.repeat or (2 if args.quick else 3)
    tmp = Path(tempfile.mkdtemp(prefix="bench-audit-"))
    db = args.db or tmp / "audit.db"
    try:
        if not db.exists():
            print(f"seeding {units:,} units into {db} ...", flush=True)
            r = seed_database(db, units)
            print(f"seeded {r.units:,} units, {r.events:,} events in {r.seconds:.1f} s "
                  f"({r.units_per_second:,.0f} units/s, {r.db_bytes / 1e6:,.0f} MB)", flush=True)
        return run(db, tmp, repeat, export_too=not args.no_export)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def run(db: Path, tmp: Path, repeat: int, *, export_too: bool) -> int:
    app = QApplication.instance() or QApplication([])
    store = _open_reader(str(db))
    query = AuditQuery(store)
    raw = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    total = query.count(UnitFilter())
    rows: list[Row] = []

    def open_view() -> AuditView:
        view = AuditView(store)
        view.resize(1400, 900)
        view.show()
        app.processEvents()
        return view

    def open_raw() -> None:
        raw_filter(raw, query, UnitFilter())
        raw.execute("SELECT min(started_at), max(started_at) FROM units").fetchall()

    views: list[AuditView] = []
    t_open = best(lambda: views.append(open_view()), repeat)
    rows.append(("open the audit view", t_open, best(open_raw, repeat), "< 1 s", t_open < 1.0))
    for v in views[:-1]:
        v.close()
    view = views[-1]

    values = query.distinct_values()
    mid_wo = values["work_order"][len(values["work_order"]) // 2]
    lo, hi = query.first_last()
    assert lo is not None and hi is not None
    mid = lo + (hi - lo) / 2
    with raw:
        serial = raw.execute("SELECT serial_number FROM units WHERE serial_number IS NOT NULL "
                             "ORDER BY id LIMIT 1 OFFSET ?", (total // 3,)).fetchone()[0]
        fingerprint = raw.execute("SELECT cert_sha256 FROM units WHERE cert_sha256 IS NOT NULL "
                                  "ORDER BY id LIMIT 1 OFFSET ?", (total // 2,)).fetchone()[0]
    day = datetime(mid.year, mid.month, mid.day, tzinfo=UTC)
    filters = [
        ("date range: one day", UnitFilter(since=day, until=day + timedelta(days=1))),
        ("date range: from mid-year on", UnitFilter(since=mid)),
        ("work order", UnitFilter(work_order=mid_wo)),
        ("product", UnitFilter(product=values["product"][-1])),
        ("station", UnitFilter(station=values["station"][1])),
        ("operator", UnitFilter(operator=values["operator"][2])),
        ("outcome: failed", UnitFilter(outcome="failed")),
        ("outcome: ok", UnitFilter(outcome="ok")),
        ("failing step", UnitFilter(failed_step="write_cert")),
        ("error code", UnitFilter(error_code="csr_rejected")),
        ("search: serial", UnitFilter(search=serial)),
        ("search: fingerprint prefix", UnitFilter(search=fingerprint[:16])),
        ("work order + failed + code",
         UnitFilter(work_order=mid_wo, outcome="failed", error_code="bad_link")),
    ]
    for name, f in filters:
        t = best(lambda f=f: view.set_filter(f), repeat)
        ref = best(lambda f=f: raw_filter(raw, query, f), repeat)
        rows.append((f"filter: {name} ({view.model.total:,})", t, ref, "< 0.2 s", t < 0.2))

    view.set_filter(UnitFilter(outcome="ok"))
    unit_id = view.model.unit_id(PAGE_SIZE // 2)
    assert unit_id is not None

    from station.audit.chain import HASHED_FIELDS, event_hash

    def raw_detail() -> None:
        """The same reads and hash checks as the detail pane, on sqlite3, without Qt or SQLAlchemy."""
        raw.execute("SELECT * FROM units u JOIN work_orders w ON w.id = u.work_order_id WHERE u.id = ?",
                    (unit_id,)).fetchall()
        cur = raw.execute("SELECT * FROM events WHERE unit_id = ? ORDER BY seq", (unit_id,))
        names = [d[0] for d in cur.description]
        for values in cur.fetchall():
            ev = dict(zip(names, values, strict=True))
            event_hash(ev["seq"], ev["prev_hash"], {k: ev[k] for k in HASHED_FIELDS})
            raw.execute("SELECT hash FROM events WHERE seq = ?", (ev["seq"] - 1,)).fetchone()
            raw.execute("SELECT prev_hash FROM events WHERE seq = ?", (ev["seq"] + 1,)).fetchone()

    t = best(lambda: view.show_unit(unit_id), repeat)
    rows.append(("a unit's detail (incl. chain check around it)", t, best(raw_detail, repeat), "", None))
    view.close()

    if export_too:
        f = UnitFilter()
        out = tmp / "export.csv"
        t0 = time.perf_counter()
        n = export(query, f, "csv", out)
        t_export = time.perf_counter() - t0
        size = out.stat().st_size
        out.unlink()
        sql = literal_sql(query.export_statement(f))
        ref_out = tmp / "ref.csv"
        t0 = time.perf_counter()
        with ref_out.open("wb") as fh:
            subprocess.run(["sqlite3", "-readonly", "-csv", "-header", str(db), sql], stdout=fh, check=True)
        t_ref = time.perf_counter() - t0
        ref_size = ref_out.stat().st_size
        ref_out.unlink()
        rows.append((f"full CSV export ({n:,} rows, {size / 1e6:,.0f} MB; sqlite3 {ref_size / 1e6:,.0f} MB)",
                     t_export, t_ref, "< 2x sqlite3", t_export < 2 * t_ref))

    print()
    print(f"audit view benchmark on {db} ({total:,} units); best of {repeat}")
    print(f"{'measure':<58}{'figure':>11}{'reference':>12}{'ratio':>8}  {'target':<13}{'met'}")
    for name, fig, ref, target, ok in rows:
        ratio = fig / ref if ref else float("nan")
        met = "" if ok is None else ("yes" if ok else "NO")
        print(f"{name:<58}{fig * 1000:>9.1f}ms{ref * 1000:>10.1f}ms{ratio:>7.1f}x  {target:<13}{met}")
    print("reference: the same SQL on Python's sqlite3 (view rows); the sqlite3 CLI's CSV dump (export)")
    store.close()
    raw.close()
    misses = [r for r in rows if r[4] is False]
    filter_times = [r[1] for r in rows if r[0].startswith("filter")]
    print(f"median filter time: {statistics.median(filter_times) * 1000:.1f} ms")
    return 1 if misses else 0


if __name__ == "__main__":
    raise SystemExit(main())
