"""Offscreen grabs of the audit view, a unit's detail and the charts (``station gui --screenshots``)."""

from __future__ import annotations

from pathlib import Path

from PySide6.QtWidgets import QApplication

from station.audit.store import SqlAuditStore
from station.gui.audit.view import AuditView
from station.reports.filters import UnitFilter


def capture_audit_screenshots(store: SqlAuditStore, out_dir: Path) -> list[Path]:
    """Save audit-view.png, audit-unit-detail.png and audit-charts.png in ``out_dir``.

    Needs a QApplication (the caller's; offscreen is fine). Picks a failed unit for the table's
    selection when there is one, so the screenshot shows a failure's reason, and a provisioned unit
    for the detail, so it shows a certificate.
    """
    app = QApplication.instance()
    if app is None:
        raise RuntimeError("capture_audit_screenshots needs a QApplication")
    out_dir.mkdir(parents=True, exist_ok=True)
    view = AuditView(store)
    view.resize(1560, 960)
    view.show()
    QApplication.processEvents()
    saved: list[Path] = []
    try:
        view.table.selectRow(0)
        QApplication.processEvents()
        path = out_dir / "audit-view.png"
        view.grab().save(str(path))
        saved.append(path)

        ok_units = view.query.page(UnitFilter(outcome="ok"), limit=1, descending=True)
        if ok_units:
            view.detail.show_unit(int(ok_units[0][0]))
        detail = view.detail
        detail.setParent(None)
        detail.resize(1300, 720)
        detail.show()
        QApplication.processEvents()
        path = out_dir / "audit-unit-detail.png"
        detail.grab().save(str(path))
        saved.append(path)
        detail.close()
        detail.deleteLater()

        view.tabs.setCurrentWidget(view.charts)
        view.charts.refresh()
        QApplication.processEvents()
        path = out_dir / "audit-charts.png"
        view.grab().save(str(path))
        saved.append(path)
    finally:
        view.shutdown()
        view.close()
        view.deleteLater()
        QApplication.processEvents()
    return saved
