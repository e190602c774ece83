"""The public names of the reports package and the audit GUI (other code imports them)."""

from __future__ import annotations

import os

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")


def test_reports_public_names() -> None:
    import station.reports as reports

    assert reports.__all__ == [
        "EXPORT_COLUMNS", "FORMATS", "OUTCOMES", "TABLE_COLUMNS", "AuditQuery", "UnitDetail",
        "UnitFilter", "build_report", "export", "format_report", "where_clause", "write_csv",
        "write_json",
    ]


def test_audit_gui_contract() -> None:
    import inspect

    import station.gui.audit as audit

    assert audit.__all__ == ["AuditView", "UnitsTableModel", "capture_audit_screenshots"]
    assert list(inspect.signature(audit.AuditView).parameters) == ["store", "parent"]
    assert list(inspect.signature(audit.capture_audit_screenshots).parameters) == ["store", "out_dir"]
