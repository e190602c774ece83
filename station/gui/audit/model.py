"""The units table: a lazy ``QAbstractTableModel`` over :class:`station.reports.AuditQuery`.

Rows arrive a page at a time through ``canFetchMore``/``fetchMore`` (the view asks as the user
scrolls), so opening the view on a million units reads one page and one ``COUNT``. Filtering and
sorting reset the model and go back to the database; nothing here ever holds the whole table.
Sorted by unit id, pages continue from the last id seen (keyset); other sorts page by offset.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, Final

from PySide6.QtCore import QAbstractTableModel, QModelIndex, QObject, QPersistentModelIndex, Qt, Signal
from PySide6.QtGui import QColor, QFont

from station.gui.theme import RED
from station.reports.filters import UnitFilter
from station.reports.query import COLUMN_KEYS, TABLE_COLUMNS, AuditQuery

PAGE_SIZE: Final = 200
UNIT_ID_ROLE: Final = int(Qt.ItemDataRole.UserRole) + 1

_STATUS_WORDS: Final = {
    "provisioned": "PASS", "failed": "FAIL", "revoked": "REVOKED", "in_progress": "RUNNING",
    "intent": "INTENT", "issued": "ISSUED",
}

Index = QModelIndex | QPersistentModelIndex


class UnitsTableModel(QAbstractTableModel):
    """Units matching a filter, fetched lazily; ``total`` is the matching count (one ``COUNT``)."""

    filter_applied = Signal(int)
    """Emitted after a filter or sort reset, with the number of matching units."""

    def __init__(
        self, query: AuditQuery, parent: QObject | None = None, *, page_size: int = PAGE_SIZE
    ) -> None:
        super().__init__(parent)
        self._query = query
        self._filter = UnitFilter()
        self._rows: list[tuple[Any, ...]] = []
        self._exhausted = False
        self._sort_key = "id"
        self._descending = True
        self._page_size = page_size
        self._busy = False
        """True while resetting or inserting: a view (or qtmodeltester) that asks for more from inside
        our own change signals is ignored, so changes never nest."""
        self.total = 0
        self._bold = QFont()
        self._bold.setBold(True)

    # -- state -------------------------------------------------------------------------------

    @property
    def unit_filter(self) -> UnitFilter:
        return self._filter

    @property
    def sort_key(self) -> tuple[str, bool]:
        return self._sort_key, self._descending

    @property
    def loaded(self) -> int:
        """Rows fetched so far (the view's rowCount)."""
        return len(self._rows)

    def set_filter(self, unit_filter: UnitFilter) -> None:
        self._filter = unit_filter
        self._reload()

    def _reload(self) -> None:
        self._busy = True
        try:
            self.beginResetModel()
            self._rows = []
            self._exhausted = False
            self.total = self._query.count(self._filter)
            self.endResetModel()
        finally:
            self._busy = False
        if self.canFetchMore(QModelIndex()):
            self.fetchMore(QModelIndex())
        self.filter_applied.emit(self.total)

    def unit_id(self, row: int) -> int | None:
        return int(self._rows[row][0]) if 0 <= row < len(self._rows) else None

    def row_values(self, row: int) -> dict[str, Any]:
        return dict(zip(COLUMN_KEYS, self._rows[row], strict=True))

    # -- Qt model ----------------------------------------------------------------------------

    def rowCount(self, parent: Index = QModelIndex()) -> int:  # noqa: B008, N802 - Qt's names and signature
        return 0 if parent.isValid() else len(self._rows)

    def columnCount(self, parent: Index = QModelIndex()) -> int:  # noqa: B008, N802
        return 0 if parent.isValid() else len(TABLE_COLUMNS)

    def canFetchMore(self, parent: Index) -> bool:  # noqa: N802
        return not parent.isValid() and not self._exhausted and not self._busy

    def fetchMore(self, parent: Index) -> None:  # noqa: N802
        if parent.isValid() or self._exhausted or self._busy:
            return
        after = int(self._rows[-1][0]) if self._rows and self._sort_key == "id" else None
        page = self._query.page(self._filter, sort=self._sort_key, descending=self._descending,
                                limit=self._page_size, offset=len(self._rows), after_id=after)
        if len(page) < self._page_size:
            self._exhausted = True
        if page:
            first = len(self._rows)
            self._busy = True
            try:
                self.beginInsertRows(QModelIndex(), first, first + len(page) - 1)
                self._rows.extend(page)
                self.endInsertRows()
            finally:
                self._busy = False

    def data(self, index: Index, role: int = Qt.ItemDataRole.DisplayRole) -> Any:
        if not index.isValid() or not (0 <= index.row() < len(self._rows)):
            return None
        if not (0 <= index.column() < len(TABLE_COLUMNS)):
            return None
        row = self._rows[index.row()]
        key = COLUMN_KEYS[index.column()]
        value = row[index.column()]
        if role in (Qt.ItemDataRole.DisplayRole, Qt.ItemDataRole.ToolTipRole):
            return _text(key, value)
        if role == UNIT_ID_ROLE:
            return int(row[0])
        status = row[COLUMN_KEYS.index("status")]
        if role == Qt.ItemDataRole.ForegroundRole and key == "status" and status in ("failed", "revoked"):
            return QColor(RED)
        if role == Qt.ItemDataRole.FontRole and key == "status" and status in ("failed", "revoked"):
            return self._bold
        if role == Qt.ItemDataRole.TextAlignmentRole and key == "id":
            return int(Qt.AlignmentFlag.AlignRight | Qt.AlignmentFlag.AlignVCenter)
        return None

    def headerData(  # noqa: N802
        self, section: int, orientation: Qt.Orientation,
        role: int = Qt.ItemDataRole.DisplayRole,
    ) -> Any:
        if role != Qt.ItemDataRole.DisplayRole:
            return None
        if orientation == Qt.Orientation.Horizontal and 0 <= section < len(TABLE_COLUMNS):
            return TABLE_COLUMNS[section].header
        if orientation == Qt.Orientation.Vertical:
            return str(section + 1)
        return None

    def sort(self, column: int, order: Qt.SortOrder = Qt.SortOrder.AscendingOrder) -> None:
        """Sort in the database (ties broken by unit id); resets to the first page."""
        if not (0 <= column < len(TABLE_COLUMNS)):
            return
        self._sort_key = COLUMN_KEYS[column]
        self._descending = order == Qt.SortOrder.DescendingOrder
        self._reload()


def _text(key: str, value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, datetime):
        return value.strftime("%Y-%m-%d %H:%M:%S")
    if key == "status":
        return f"{_STATUS_WORDS.get(str(value), str(value).upper())} ({value})"
    return str(value)
