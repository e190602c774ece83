"""Reports over the audit log: the filter shared by the QE view and the CLI, read-only queries,
exports (CSV, JSON lines, PDF certificate of conformance), the text report, and the seed generator.

No Qt here: the GUI (:mod:`station.gui.audit`) and ``station audit`` both sit on top of this package.
"""

from station.reports.export import EXPORT_COLUMNS, FORMATS, export, write_csv, write_json
from station.reports.filters import OUTCOMES, UnitFilter
from station.reports.query import TABLE_COLUMNS, AuditQuery, UnitDetail, where_clause
from station.reports.report import build_report, format_report

__all__ = [
    "EXPORT_COLUMNS",
    "FORMATS",
    "OUTCOMES",
    "TABLE_COLUMNS",
    "AuditQuery",
    "UnitDetail",
    "UnitFilter",
    "build_report",
    "export",
    "format_report",
    "where_clause",
    "write_csv",
    "write_json",
]
