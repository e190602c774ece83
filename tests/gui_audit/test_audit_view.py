"""The audit view driven with pytest-qt on a seeded database."""

from __future__ import annotations

import csv
import json
import sqlite3
from pathlib import Path

from pypdf import PdfReader
from PySide6.QtCore import QModelIndex, Qt
from pytestqt.modeltest import ModelTester
from pytestqt.qtbot import QtBot

from station.audit.store import SqlAuditStore
from station.audit.verify import VerifyResult
from station.gui.audit import AuditView, UnitsTableModel, capture_audit_screenshots
from station.gui.audit.model import PAGE_SIZE
from station.reports import AuditQuery, UnitFilter
from tests.gui_audit.conftest import UNITS


def make_view(qtbot: QtBot, store: SqlAuditStore) -> AuditView:
    view = AuditView(store)
    qtbot.addWidget(view)
    view.resize(1400, 900)
    view.show()
    return view


def db_of(store: SqlAuditStore) -> str:
    return str(store.engine.url.database)


def sql_count(store: SqlAuditStore, where: str) -> int:
    with sqlite3.connect(db_of(store)) as conn:
        return int(conn.execute("SELECT count(*) FROM units u JOIN work_orders w ON w.id = u.work_order_id "
                                f"WHERE {where}").fetchone()[0])


def test_model_passes_qtmodeltester(qtmodeltester: ModelTester, store: SqlAuditStore) -> None:
    model = UnitsTableModel(AuditQuery(store), page_size=50)
    model.set_filter(UnitFilter(product="gateway-x1"))
    model.sort(3, Qt.SortOrder.AscendingOrder)  # offset paging
    qtmodeltester.check(model, force_py=True)  # fetches more pages itself
    assert model.rowCount() >= 100


def test_model_keyset_paging_passes_qtmodeltester(qtmodeltester: ModelTester, store: SqlAuditStore) -> None:
    model = UnitsTableModel(AuditQuery(store), page_size=50)
    model.set_filter(UnitFilter(outcome="failed"))
    qtmodeltester.check(model, force_py=True)


def test_lazy_fetching_never_loads_everything(store: SqlAuditStore) -> None:
    model = UnitsTableModel(AuditQuery(store))
    model.set_filter(UnitFilter())
    assert model.total == UNITS
    assert model.rowCount() == PAGE_SIZE and model.canFetchMore(QModelIndex())
    model.fetchMore(QModelIndex())
    assert model.rowCount() == 2 * PAGE_SIZE
    ids = [model.unit_id(r) for r in range(model.rowCount())]
    assert ids == sorted(ids, reverse=True) and len(set(ids)) == len(ids)
    while model.canFetchMore(QModelIndex()):
        model.fetchMore(QModelIndex())
    assert model.rowCount() == UNITS


def test_filters_narrow_the_table(qtbot: QtBot, store: SqlAuditStore) -> None:
    view = make_view(qtbot, store)
    assert view.model.total == UNITS
    view.combos["outcome"].setCurrentText("failed")  # a combo applies at once
    failed = sql_count(store, "u.status IN ('failed','revoked')")
    assert view.model.total == failed and 0 < failed < UNITS
    assert f"{failed:,}" in view.count_label.text()
    statuses = {view.model.row_values(r)["status"] for r in range(view.model.rowCount())}
    assert statuses == {"failed"}
    view.combos["failed_step"].setCurrentText("connect")
    assert view.model.total == sql_count(store, "u.failed_step = 'connect'")
    view.set_filter(UnitFilter(work_order="WO-2025-0002", station="st-03"))
    assert view.model.total == sql_count(store, "w.number = 'WO-2025-0002' AND u.station = 'st-03'")
    serial = view.model.row_values(0)["serial_number"]
    view.search.setText(serial[:-1])
    view.search.returnPressed.emit()
    assert 1 <= view.model.total <= 10
    assert all(view.model.row_values(r)["serial_number"].startswith(serial[:-1])
               for r in range(view.model.rowCount()))
    view.clear_filters()
    assert view.model.total == UNITS


def test_sorting_by_a_column_goes_to_the_database(qtbot: QtBot, store: SqlAuditStore) -> None:
    view = make_view(qtbot, store)
    header = view.table.horizontalHeader()
    header.setSortIndicator(8, Qt.SortOrder.AscendingOrder)  # operator
    ops = [view.model.row_values(r)["operator"] for r in range(view.model.rowCount())]
    assert ops == sorted(ops) and ops[0] == "op-001"
    header.setSortIndicator(5, Qt.SortOrder.DescendingOrder)  # started
    times = [view.model.row_values(r)["started_at"] for r in range(view.model.rowCount())]
    assert times == sorted(times, reverse=True)


def test_detail_shows_the_certificate(qtbot: QtBot, store: SqlAuditStore) -> None:
    view = make_view(qtbot, store)
    view.set_filter(UnitFilter(outcome="ok"))
    view.table.selectRow(3)
    row = view.model.row_values(3)
    d = view.detail
    assert d.detail is not None and d.detail.unit["id"] == row["id"]
    cert = d.detail.certificate
    assert cert is not None
    assert row["serial_number"] in d.cert_labels["subject"].text()
    assert d.cert_labels["serial_hex"].text() == row["cert_serial"]
    assert d.pem.toPlainText().startswith("-----BEGIN CERTIFICATE-----")
    assert d.unit_labels["key_type"].text() == "p256"
    assert "verifies" in d.chain.text()
    assert d.timeline.rowCount() == 13 and d.events.rowCount() >= 17
    assert any(d.commissioning.item(r, 1).text() == "***" for r in range(d.commissioning.rowCount()))


def test_verification_reports_the_tampered_row(qtbot: QtBot, tampered_store: SqlAuditStore) -> None:
    view = make_view(qtbot, tampered_store)
    with qtbot.waitSignal(view.verification_finished, timeout=30_000) as blocker:
        view.verify_button.click()
    assert isinstance(blocker.args[0], VerifyResult) and blocker.args[0].ok
    assert "INTACT" in view.verify_label.text()
    with sqlite3.connect(db_of(tampered_store)) as conn:
        seq, unit_id = conn.execute("SELECT seq, unit_id FROM events WHERE kind='step' "
                                    "AND unit_id IS NOT NULL ORDER BY seq LIMIT 1 OFFSET 4321").fetchone()
        conn.execute("UPDATE events SET duration_ms = duration_ms + 1 WHERE seq = ?", (seq,))
    with qtbot.waitSignal(view.verification_finished, timeout=30_000) as blocker:
        view.verify_button.click()
    result = blocker.args[0]
    assert isinstance(result, VerifyResult) and not result.ok and result.seq == seq
    assert "BROKEN" in view.verify_label.text() and f"event seq {seq}" in view.verify_label.text()
    assert view.progress.value() == view.progress.maximum()
    view.show_unit(unit_id)  # the unit's own detail says so too
    assert "BROKEN" in view.detail.chain.text() and str(seq) in view.detail.chain.text()


def test_exports_from_the_view_contain_the_filtered_rows(qtbot: QtBot, store: SqlAuditStore,
                                                         tmp_path: Path) -> None:
    view = make_view(qtbot, store)
    view.set_filter(UnitFilter(work_order="WO-2025-0001", error_code="device_timeout"))
    with sqlite3.connect(db_of(store)) as conn:
        expected = [int(r[0]) for r in conn.execute(
            "SELECT u.id FROM units u JOIN work_orders w ON w.id = u.work_order_id WHERE "
            "w.number = 'WO-2025-0001' AND u.error_code = 'device_timeout' ORDER BY u.id")]
    assert expected
    for fmt, name in (("csv", "u.csv"), ("json", "u.jsonl"), ("pdf", "u.pdf")):
        with qtbot.waitSignal(view.export_finished, timeout=30_000) as blocker:
            view.export_to(tmp_path / name, fmt)
        assert blocker.args == [str(tmp_path / name), len(expected)]
    assert [int(r["unit_id"]) for r in csv.DictReader((tmp_path / "u.csv").open())] == expected
    lines = (tmp_path / "u.jsonl").read_text().splitlines()
    assert [int(json.loads(x)["unit_id"]) for x in lines] == expected
    text = "\n".join(p.extract_text() for p in PdfReader(tmp_path / "u.pdf").pages)
    assert f"{len(expected)} units listed" in text


def test_charts_and_screenshots(qtbot: QtBot, store: SqlAuditStore, tmp_path: Path) -> None:
    view = make_view(qtbot, store)
    view.tabs.setCurrentWidget(view.charts)
    assert view.charts.yield_chart.buckets and view.charts.pareto.rows and view.charts.cycle.has_data()
    assert sum(x.count for x in view.charts.pareto.rows) == sql_count(store, "u.status = 'failed'")
    shots = capture_audit_screenshots(store, tmp_path / "shots")
    assert [p.name for p in shots] == ["audit-view.png", "audit-unit-detail.png", "audit-charts.png"]
    assert all(p.stat().st_size > 10_000 for p in shots)
