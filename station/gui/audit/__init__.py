"""The quality engineer's audit view (issue 6): filters, a lazy units table, a unit's detail, charts,
audit-chain verification and exports, over :mod:`station.reports` (no SQL in the widgets).

Contract with :mod:`station.gui`: :class:`AuditView` (a QWidget taking an open
:class:`~station.audit.SqlAuditStore`) and :func:`capture_audit_screenshots`.

Layout::

    model        UnitsTableModel: canFetchMore/fetchMore pages from the database
    detail       UnitDetailPane: timeline, certificate, commissioning, events, local chain check
    charts       QPainter charts: yield per hour/shift/day, failure Pareto, cycle-time histogram
    view         AuditView: filter bar, table + detail, charts tab, verify, exports
    screenshots  capture_audit_screenshots
"""

from station.gui.audit.model import UnitsTableModel
from station.gui.audit.screenshots import capture_audit_screenshots
from station.gui.audit.view import AuditView

__all__ = ["AuditView", "UnitsTableModel", "capture_audit_screenshots"]
