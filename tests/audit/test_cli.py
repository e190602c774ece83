"""``station audit verify|show|export`` through argparse, as the top-level CLI will call them."""

from __future__ import annotations

import argparse
import csv
import json
from pathlib import Path

import pytest
from sqlalchemy import text

from station.audit import SqlAuditStore, open_audit_store
from station.audit.cli import register
from station.domain import Step
from tests.audit.conftest import STATION, Issuer, work_order


def run(*argv: str) -> int:
    parser = argparse.ArgumentParser(prog="station")
    register(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(list(argv))
    result = args.func(args)
    assert isinstance(result, int)
    return result


@pytest.fixture
def db(tmp_path: Path, issuer: Issuer) -> Path:
    path = tmp_path / "audit.db"
    store = open_audit_store(path, station_id=STATION)
    for i in range(3):
        unit = store.start_unit(work_order=work_order(), station=STATION, slot="A", operator="t",
                                hardware_id=f"hw-{i}")
        store.next_unit_serial(unit)
        prepared, der = issuer.prepare(serial=0xABC0 + i)
        store.record_intent(unit, prepared)
        store.record_issued(unit, der)
        store.complete_unit(unit)
    bad = store.start_unit(work_order=work_order("WO-2"), station=STATION, slot="B", operator="t",
                           hardware_id="hw-x")
    store.fail_unit(bad, Step.GET_CSR, "device_timeout", "no answer")
    store.close()
    return path


def test_verify_intact_and_broken(db: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert run("audit", "verify", "--db", str(db)) == 0
    assert "intact" in capsys.readouterr().out
    store: SqlAuditStore = open_audit_store(db, station_id=STATION)
    with store.engine.begin() as conn:
        conn.execute(text("UPDATE events SET error_message = 'nothing to see' WHERE seq = 6"))
    store.close()
    assert run("audit", "verify", "--db", f"sqlite:///{db}", "--quiet") == 1
    out = capsys.readouterr().out
    assert "BROKEN" in out and "seq 6" in out


def test_show_by_unit_and_certificate_serial(db: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert run("audit", "show", "--db", str(db), "--serial", "SENSOR-000002") == 0
    out = capsys.readouterr().out
    assert "hw-1" in out and "provisioned" in out and "intent" in out and "completed" in out
    assert run("audit", "show", "--db", str(db), "--serial", "0xabc2") == 0
    assert "SENSOR-000003" in capsys.readouterr().out
    assert run("audit", "show", "--db", str(db), "--serial", "nope") == 1


def test_export_csv_and_json(db: Path, tmp_path: Path) -> None:
    out = tmp_path / "units.csv"
    assert run("audit", "export", "--db", str(db), "--format", "csv", "--out", str(out)) == 0
    rows = list(csv.DictReader(out.open()))
    assert len(rows) == 4 and rows[0]["cert_der_hex"]
    out_json = tmp_path / "units.jsonl"
    assert run("audit", "export", "--db", str(db), "--format", "json", "--out", str(out_json),
               "--work-order", "WO-1", "--outcome", "ok", "--since", "2000-01-01") == 0
    lines = [json.loads(line) for line in out_json.read_text().splitlines()]
    assert [r["serial_number"] for r in lines] == ["SENSOR-000001", "SENSOR-000002", "SENSOR-000003"]
    assert run("audit", "export", "--db", str(db), "--format", "json", "--out", str(out_json),
               "--outcome", "failed", "--until", "2000-01-01") == 0
    assert out_json.read_text() == ""


def test_cli_reading_does_not_write(db: Path) -> None:
    before = {p.name: p.read_bytes() for p in db.parent.iterdir() if p.name == "audit.db"}
    assert run("audit", "export", "--db", str(db), "--format", "csv", "--out", "-") == 0
    assert run("audit", "verify", "--db", str(db), "--quiet") == 0
    after = {p.name: p.read_bytes() for p in db.parent.iterdir() if p.name == "audit.db"}
    assert before == after
