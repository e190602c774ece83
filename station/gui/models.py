"""The models the technician screen shows: slots, last results, one result's step timeline.

Widgets only read these; the controller is the only writer. Each model holds plain frozen values
(:class:`SlotView`, :class:`ResultRow`), so a view can never change provisioning state by accident.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Final

from PySide6.QtCore import QAbstractListModel, QAbstractTableModel, QModelIndex, QPersistentModelIndex, Qt

from station.domain import STEP_ORDER, Outcome
from station.gui.slots import SlotView
from station.gui.theme import look_for
from station.workflow import UnitResult

_Index = QModelIndex | QPersistentModelIndex

VIEW_ROLE: Final = int(Qt.ItemDataRole.UserRole) + 1
"""The :class:`SlotView` (or :class:`ResultRow`) behind a row."""


def step_words(step: str) -> str:
    return step.replace("_", " ")


class SlotListModel(QAbstractListModel):
    """One row per fixture slot, in the fixture's order."""

    def __init__(self, slots: Sequence[SlotView], parent: Any = None) -> None:
        super().__init__(parent)
        self._slots = list(slots)

    def rowCount(self, parent: _Index = QModelIndex()) -> int:  # noqa: N802, B008
        return 0 if parent.isValid() else len(self._slots)

    def data(self, index: _Index, role: int = Qt.ItemDataRole.DisplayRole) -> Any:
        if not index.isValid() or not 0 <= index.row() < len(self._slots):
            return None
        view = self._slots[index.row()]
        if role == Qt.ItemDataRole.DisplayRole:
            return f"Slot {view.name}: {look_for(view).word}"
        if role == Qt.ItemDataRole.ToolTipRole:
            return view.message or view.step
        if role == VIEW_ROLE:
            return view
        return None

    def view(self, row: int) -> SlotView:
        return self._slots[row]

    def views(self) -> list[SlotView]:
        return list(self._slots)

    def row_of(self, name: str) -> int:
        for row, view in enumerate(self._slots):
            if view.name == name:
                return row
        raise KeyError(name)

    def set_view(self, row: int, view: SlotView) -> None:
        if self._slots[row] == view:
            return
        self._slots[row] = view
        index = self.index(row, 0)
        self.dataChanged.emit(index, index, [])


@dataclass(frozen=True, kw_only=True)
class ResultRow:
    """One finished attempt as the result list shows it."""

    finished: datetime
    result: UnitResult
    label: str = ""

    @property
    def outcome(self) -> str:
        return "\u2714 PASS" if self.result.ok else "\u2718 FAIL"


class _RowsTableModel(QAbstractTableModel):
    """A table over ``self._rows`` with fixed column ``HEADERS``: what the two tables share."""

    HEADERS: tuple[str, ...] = ()
    _rows: Sequence[object]

    def rowCount(self, parent: _Index = QModelIndex()) -> int:  # noqa: N802, B008
        return 0 if parent.isValid() else len(self._rows)

    def columnCount(self, parent: _Index = QModelIndex()) -> int:  # noqa: N802, B008
        return 0 if parent.isValid() else len(self.HEADERS)

    def headerData(self, section: int, orientation: Qt.Orientation,  # noqa: N802
                   role: int = Qt.ItemDataRole.DisplayRole) -> Any:
        if (role == Qt.ItemDataRole.DisplayRole and orientation == Qt.Orientation.Horizontal
                and 0 <= section < len(self.HEADERS)):
            return self.HEADERS[section]
        return None


class ResultsModel(_RowsTableModel):
    """The last results, newest first, capped so a long shift does not grow memory."""

    HEADERS = ("Time", "Slot", "Serial", "Outcome")

    def __init__(self, *, limit: int = 200, parent: Any = None) -> None:
        super().__init__(parent)
        self._rows: list[ResultRow] = []
        self._limit = limit

    def data(self, index: _Index, role: int = Qt.ItemDataRole.DisplayRole) -> Any:
        if not index.isValid() or not 0 <= index.row() < len(self._rows):
            return None
        row = self._rows[index.row()]
        if role == VIEW_ROLE:
            return row
        if role == Qt.ItemDataRole.DisplayRole:
            r = row.result
            return (row.finished.strftime("%H:%M:%S"), r.slot,
                    r.unit_serial or r.hardware_id or "\u2014", row.outcome)[index.column()]
        if role == Qt.ItemDataRole.ToolTipRole and not row.result.ok:
            return row.result.message
        return None

    def add(self, row: ResultRow) -> None:
        self.beginInsertRows(QModelIndex(), 0, 0)
        self._rows.insert(0, row)
        self.endInsertRows()
        if len(self._rows) > self._limit:
            self.beginRemoveRows(QModelIndex(), self._limit, len(self._rows) - 1)
            del self._rows[self._limit:]
            self.endRemoveRows()

    def row(self, n: int) -> ResultRow:
        return self._rows[n]


class TimelineModel(_RowsTableModel):
    """The steps of one attempt: each step's outcome and time, the failed step last."""

    HEADERS = ("#", "Step", "Outcome", "Time (ms)")

    def __init__(self, parent: Any = None) -> None:
        super().__init__(parent)
        self._rows: list[tuple[str, str, str, str]] = []

    def show(self, result: UnitResult | None) -> None:
        self.beginResetModel()
        self._rows = []
        if result is not None:
            for t in result.timings:  # the workflow's last timing is the failed step, marked failed
                outcome = "\u2714 ok" if t.outcome is Outcome.OK else "\u2718 failed"
                self._rows.append((str(STEP_ORDER.index(t.step) + 1), step_words(t.step),
                                   outcome, f"{t.duration_ms:.0f}"))
            shown = any(t.outcome is not Outcome.OK for t in result.timings)
            if result.failed_step is not None and not shown:
                self._rows.append((str(STEP_ORDER.index(result.failed_step) + 1),
                                   step_words(result.failed_step), "\u2718 failed", "\u2014"))
        self.endResetModel()

    def data(self, index: _Index, role: int = Qt.ItemDataRole.DisplayRole) -> Any:
        if not index.isValid() or not 0 <= index.row() < len(self._rows):
            return None
        if role == Qt.ItemDataRole.DisplayRole:
            return self._rows[index.row()][index.column()]
        return None
