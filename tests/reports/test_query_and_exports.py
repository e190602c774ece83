"""The query layer against direct SQL, the exports read back, the CLI, and the seed itself."""

from __future__ import annotations

import argparse
import csv
import json
import sqlite3
from datetime import UTC, datetime
from pathlib import Path

import pytest
from pypdf import PdfReader

from station.audit import verify_chain
from station.audit.cli import register
from station.audit.store import SqlAuditStore
from station.reports import AuditQuery, UnitFilter, build_report, export, format_report
from tests.reports.conftest import UNITS


def run(*argv: str) -> int:
    parser = argparse.ArgumentParser()
    register(parser.add_subparsers(dest="command"))
    args = parser.parse_args(list(argv))
    return int(args.func(args))


def sql_ids(db: Path, where: str, params: tuple[object, ...] = ()) -> list[int]:
    """The reference: plain SQL written by hand, independent of the query layer."""
    with sqlite3.connect(db) as conn:
        rows = conn.execute("SELECT u.id FROM units u JOIN work_orders w ON w.id = u.work_order_id "
                            f"WHERE {where} ORDER BY u.id", params).fetchall()
    return [int(r[0]) for r in rows]


FILTERS = [
    (UnitFilter(), "1=1", ()),
    (UnitFilter(outcome="failed"), "u.status IN ('failed','revoked')", ()),
    (UnitFilter(outcome="ok"), "u.status = 'provisioned'", ()),
    (UnitFilter(work_order="WO-2025-0002"), "w.number = ?", ("WO-2025-0002",)),
    (UnitFilter(product="meter-m3"), "w.product = ?", ("meter-m3",)),
    (UnitFilter(station="st-02", operator="op-004"), "u.station = ? AND u.operator = ?", ("st-02", "op-004")),
    (UnitFilter(failed_step="connect"), "u.failed_step = 'connect'", ()),
    (UnitFilter(error_code="csr_rejected"), "u.error_code = 'csr_rejected'", ()),
    (UnitFilter(since=datetime(2025, 1, 6, 12, tzinfo=UTC), until=datetime(2025, 1, 6, 18, tzinfo=UTC)),
     "u.started_at >= '2025-01-06 12:00:00.000000' AND u.started_at < '2025-01-06 18:00:00.000000'", ()),
    (UnitFilter(search="SNS2-001-00000"), "u.serial_number LIKE 'SNS2-001-00000%'", ()),
]


@pytest.mark.parametrize(("f", "where", "params"), FILTERS, ids=[f.describe() for f, _, _ in FILTERS])
def test_filters_match_direct_sql(reader: SqlAuditStore, seeded_db: Path, f: UnitFilter, where: str,
                                  params: tuple[object, ...]) -> None:
    q = AuditQuery(reader)
    expected = sql_ids(seeded_db, where, params)
    assert q.count(f) == len(expected)
    got = [int(r[0]) for r in q.page(f, limit=UNITS + 1)]
    assert got == expected
    assert len(expected) > 0 or f.failed_step  # every filter actually selects something


def test_search_by_cert_serial_fingerprint_and_hardware_id(reader: SqlAuditStore, seeded_db: Path) -> None:
    q = AuditQuery(reader)
    with sqlite3.connect(seeded_db) as conn:
        uid, hw, cert_serial, cert_sha, pk = conn.execute(
            "SELECT id, hardware_id, cert_serial, cert_sha256, public_key_sha256 FROM units "
            "WHERE status='provisioned' ORDER BY id LIMIT 1 OFFSET 17").fetchone()
    colon_serial = ":".join(cert_serial[i:i + 2] for i in range(0, len(cert_serial), 2)).upper()
    for term in (hw, cert_serial, "0x" + colon_serial, cert_sha[:20], pk[:24].upper()):
        assert [r[0] for r in q.page(UnitFilter(search=term))] == [uid], term


def test_keyset_and_offset_paging_cover_everything_once(reader: SqlAuditStore) -> None:
    q = AuditQuery(reader)
    f = UnitFilter(product="sensor-v2")
    total = q.count(f)
    seen: list[int] = []
    after: int | None = None
    while True:
        page = q.page(f, limit=97, after_id=after, descending=True)
        if not page:
            break
        seen += [int(r[0]) for r in page]
        after = int(page[-1][0])
    assert len(seen) == total and seen == sorted(seen, reverse=True)
    by_operator: list[tuple[str, int]] = []
    while len(by_operator) < total:
        page = q.page(f, sort="operator", limit=113, offset=len(by_operator))
        assert page
        by_operator += [(r[8], int(r[0])) for r in page]
    assert by_operator == sorted(by_operator) and len({i for _, i in by_operator}) == total


def test_seeded_database_verifies_and_is_realistic(seeded_db: Path, reader: SqlAuditStore) -> None:
    assert verify_chain(seeded_db).ok
    q = AuditQuery(reader)
    s = q.summary(UnitFilter())
    assert s.total == UNITS and 0.01 < s.failed / s.total < 0.06
    values = q.distinct_values()
    assert len(values["work_order"]) >= 3 and len(values["station"]) == 4 and len(values["operator"]) >= 8
    assert len(values["failed_step"]) >= 5
    detail = q.unit_detail(int(q.page(UnitFilter(outcome="ok"), limit=1)[0][0]), reader)
    assert detail is not None and detail.certificate is not None and detail.chain.ok
    assert detail.certificate.serial_hex == detail.unit["cert_serial"]
    assert detail.certificate.sha256 == detail.unit["cert_sha256"]
    assert detail.unit["serial_number"] in detail.certificate.subject
    assert detail.key_type == "p256" and len(detail.timeline) == 13
    assert any(c["value"] == "***" for c in detail.commissioning)


def _expected(seeded_db: Path) -> list[int]:
    return sql_ids(seeded_db, "w.number = ? AND u.status IN ('failed','revoked')", ("WO-2025-0001",))


def test_exports_contain_exactly_the_filtered_rows(reader: SqlAuditStore, seeded_db: Path,
                                                   tmp_path: Path) -> None:
    q = AuditQuery(reader)
    f = UnitFilter(work_order="WO-2025-0001", outcome="failed")
    expected = _expected(seeded_db)
    assert expected
    assert export(q, f, "csv", tmp_path / "u.csv") == len(expected)
    rows = list(csv.DictReader((tmp_path / "u.csv").open(encoding="utf-8")))
    assert [int(r["unit_id"]) for r in rows] == expected
    assert all(r["status"] == "failed" and r["work_order"] == "WO-2025-0001" for r in rows)
    assert export(q, f, "json", tmp_path / "u.jsonl") == len(expected)
    lines = [json.loads(x) for x in (tmp_path / "u.jsonl").read_text().splitlines()]
    assert [int(x["unit_id"]) for x in lines] == expected


def test_pdf_report_lists_exactly_the_filtered_units(reader: SqlAuditStore, seeded_db: Path,
                                                     tmp_path: Path) -> None:
    q = AuditQuery(reader)
    f = UnitFilter(work_order="WO-2025-0003")
    with sqlite3.connect(seeded_db) as conn:
        units = conn.execute("SELECT serial_number, cert_sha256 FROM units u JOIN work_orders w "
                             "ON w.id = u.work_order_id WHERE w.number = 'WO-2025-0003' AND "
                             "u.serial_number IS NOT NULL").fetchall()
        others = conn.execute("SELECT count(*) FROM units u JOIN work_orders w ON w.id = u.work_order_id "
                              "WHERE w.number = 'WO-2025-0003' AND u.serial_number IS NULL").fetchone()[0]
    assert export(q, f, "pdf", tmp_path / "coc.pdf") == len(units) + others
    text = "\n".join(page.extract_text() for page in PdfReader(tmp_path / "coc.pdf").pages)
    assert "Certificate of conformance - work order WO-2025-0003" in text
    assert "Failures by reason" in text and "Yield" in text
    listed = {line.split()[0] for line in text.splitlines() if line.startswith("MTR3-")}
    assert listed == {serial for serial, _ in units}
    for _serial, sha in units:
        if sha:
            assert sha in text
    assert "SNS2-" not in text and "GWX1-" not in text


def test_report_numbers_add_up(reader: SqlAuditStore) -> None:
    q = AuditQuery(reader)
    data = build_report(q, UnitFilter())
    s = data["summary"]
    assert s["units"] == UNITS == s["provisioned"] + s["failed"] + s["in_flight"]
    assert sum(x["count"] for x in data["failures"]) == s["failed"]
    assert data["failures"][-1]["cumulative_pct"] == 100.0
    assert "Failures by step and error code" in format_report(q, UnitFilter(station="st-01"))


def test_cli_export_report_and_seed(
    seeded_db: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "f.csv"
    assert run("audit", "export", "--db", str(seeded_db), "--format", "csv", "--out", str(out),
               "--work-order", "WO-2025-0001", "--outcome", "failed", "--quiet") == 0
    assert [int(r["unit_id"]) for r in csv.DictReader(out.open())] == _expected(seeded_db)
    assert run("audit", "export", "--db", str(seeded_db), "--format", "pdf", "--out",
               str(tmp_path / "r.pdf"), "--work-order", "WO-2025-0001", "--quiet") == 0
    assert PdfReader(tmp_path / "r.pdf").pages
    capsys.readouterr()
    assert run("audit", "report", "--db", str(seeded_db), "--format", "json", "--error-code",
               "device_timeout") == 0
    data = json.loads(capsys.readouterr().out)
    assert {x["error_code"] for x in data["failures"]} == {"device_timeout"}
    assert run("audit", "report", "--db", str(seeded_db), "--since", "2025-02-01", "--until",
               "2025-01-01") == 2
    fresh = tmp_path / "fresh.db"
    assert run("audit", "seed", "--db", str(fresh), "--units", "300", "--quiet") == 0
    assert "seeded 300 units" in capsys.readouterr().out
    assert run("audit", "verify", "--db", str(fresh), "--quiet") == 0
