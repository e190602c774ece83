"""The technician screen's widgets. They show models and forward clicks to the controller; no
provisioning logic lives here."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, ClassVar

from PySide6.QtCore import QModelIndex, QPersistentModelIndex, Qt, QTimer, Signal
from PySide6.QtGui import QFocusEvent, QKeyEvent, QMouseEvent
from PySide6.QtWidgets import (
    QAbstractItemView,
    QFrame,
    QGridLayout,
    QHBoxLayout,
    QHeaderView,
    QLabel,
    QProgressBar,
    QSizePolicy,
    QTableView,
    QVBoxLayout,
    QWidget,
)

from station.gui import theme
from station.gui.controller import BannerInfo, step_label
from station.gui.models import VIEW_ROLE, SlotListModel
from station.gui.slots import SlotState, SlotView

_Index = QModelIndex | QPersistentModelIndex


def _label(text: str = "", *, size: int = 16, bold: bool = False, wrap: bool = False) -> QLabel:
    label = QLabel(text)
    label.setWordWrap(wrap)
    # Sizes go in the label's own style sheet: the window's sheet would override setFont().
    label.setStyleSheet(f"font-size: {size}px; font-weight: {'bold' if bold else 'normal'};"
                        " background: transparent;")
    return label


class SlotTile(QFrame):
    """One fixture slot: number, verdict word and icon, step and progress, serial or reason and hint."""

    activated = Signal(int)
    """Click, Enter or Space on the tile (start it, or acknowledge its verdict)."""

    def __init__(self, row: int, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.row = row
        self.setObjectName(f"slotTile{row}")
        self.setFocusPolicy(Qt.FocusPolicy.StrongFocus)
        self.setMinimumSize(220, 230)
        self.setSizePolicy(QSizePolicy.Policy.Expanding, QSizePolicy.Policy.Expanding)
        self.number = _label(size=30, bold=True)
        self.verdict = _label(size=44, bold=True)
        self.line1 = _label(size=22, bold=True, wrap=True)
        self.line2 = _label(size=18, wrap=True)
        self.hint = _label(size=18, bold=True, wrap=True)
        self.progress = QProgressBar()
        self.progress.setTextVisible(False)
        self.progress.setFixedHeight(16)
        self.footer = _label(size=15)
        box = QVBoxLayout(self)
        box.setContentsMargins(14, 10, 14, 10)
        box.setSpacing(6)
        box.addWidget(self.number)
        box.addWidget(self.verdict)
        box.addWidget(self.line1)
        box.addWidget(self.progress)
        box.addWidget(self.line2)
        box.addWidget(self.hint)
        box.addStretch(1)
        box.addWidget(self.footer)
        self._flash_off = QTimer(self)
        self._flash_off.setSingleShot(True)
        self._flash_off.setInterval(400)
        self._flash_off.timeout.connect(self._apply_style)
        self._blink = QTimer(self)
        self._blink.setInterval(round(500 / theme.CRITICAL_FLASH_HZ))  # two phases a cycle
        self._blink.timeout.connect(self._toggle_blink)
        self._dim = False
        self._view: SlotView | None = None

    def show_view(self, view: SlotView) -> None:
        self._view = view
        look = theme.look_for(view)
        self.number.setText(f"Slot {view.name}")
        self.verdict.setText(f"{look.icon} {look.word}")
        self.progress.setVisible(view.state is SlotState.RUNNING)
        self.progress.setMaximum(max(view.step_total, 1))
        self.progress.setValue(view.step_no)
        elapsed = f"{view.elapsed_s:.0f} s" if view.elapsed_s else ""
        attempts = f"attempt {view.attempts}" if view.attempts else ""
        self.footer.setText("   ".join(x for x in (elapsed, attempts, view.label) if x) or view.port)
        hint = ""
        if view.state is SlotState.RUNNING:
            line1, line2 = step_label(view), (view.label and f"Unit label {view.label}") or ""
        elif view.state is SlotState.PASS:
            line1 = view.unit_serial or "Provisioned"
            line2 = f"Hardware id {view.hardware_id}" if view.hardware_id else ""
            if view.settled:
                line2 = "Done. Remove the unit." + (f"\nHardware id {view.hardware_id}"
                                                   if view.hardware_id else "")
        elif view.state is SlotState.FAIL:
            line1, line2 = view.message, view.unit_serial or view.hardware_id
            hint = f"\u27a4 {view.hint}"
        elif view.state is SlotState.WAITING:
            line1, line2 = "Waiting for a device", "Insert the unit in this slot."
        elif view.state is SlotState.BLOCKED:
            line1, line2 = view.message or "Not ready", ""
        else:
            line1, line2 = "Ready", "Press Start or scan the unit label."
        self.line1.setText(line1)
        self.line2.setText(line2)
        self.line2.setVisible(bool(line2))
        self.hint.setText(hint)
        self.hint.setVisible(bool(hint))
        self.setAccessibleName(f"Slot {view.name}: {look.word}. {line1}")
        if view.state is SlotState.FAIL and view.critical:
            if not self._blink.isActive():
                self._blink.start()
        else:
            self._blink.stop()
            self._dim = False
        self._apply_style()

    @property
    def blinking(self) -> bool:
        """True while the tile flashes a critical FAIL."""
        return self._blink.isActive()

    def _toggle_blink(self) -> None:
        self._dim = not self._dim
        self._apply_style()

    def _apply_style(self, *, flash: bool = False) -> None:
        if self._view is None:
            return
        look = theme.CRITICAL_DIM if self._dim else theme.look_for(self._view)
        border = 6 if flash or self.hasFocus() or self._blink.isActive() else 3
        color = theme.BLUE if flash or self.hasFocus() else look.border
        self.setStyleSheet(
            f"QFrame#{self.objectName()} {{ background: {look.background}; color: {look.foreground};"
            f" border: {border}px solid {color}; border-radius: 8px; }}"
            f" QLabel {{ color: {look.foreground}; background: transparent; }}"
            f" QProgressBar {{ border: 1px solid {theme.TEXT}; background: {theme.WHITE}; }}"
            f" QProgressBar::chunk {{ background: {theme.TEXT}; }}")

    def flash(self) -> None:
        """Show once where a scan went."""
        self._apply_style(flash=True)
        self._flash_off.start()

    def view(self) -> SlotView | None:
        return self._view

    def mousePressEvent(self, event: QMouseEvent) -> None:  # noqa: N802
        self.setFocus()
        self.activated.emit(self.row)
        event.accept()

    def keyPressEvent(self, event: QKeyEvent) -> None:  # noqa: N802
        if event.key() in (Qt.Key.Key_Return, Qt.Key.Key_Enter, Qt.Key.Key_Space):
            self.activated.emit(self.row)
            event.accept()
            return
        super().keyPressEvent(event)

    def focusInEvent(self, event: QFocusEvent) -> None:  # noqa: N802
        super().focusInEvent(event)
        self._apply_style()

    def focusOutEvent(self, event: QFocusEvent) -> None:  # noqa: N802
        super().focusOutEvent(event)
        self._apply_style()


class SlotGrid(QWidget):
    """The tiles in the fixture's rows and columns, kept in step with the slot model."""

    activated = Signal(int)

    def __init__(self, model: SlotListModel, *, columns: int = 4,
                 positions: Sequence[tuple[int, int]] | None = None, parent: QWidget | None = None) -> None:
        """``positions``: each slot's (row, column) in the fixture, 1-based; otherwise the tiles
        fill ``columns`` per row in slot order."""
        super().__init__(parent)
        self._model = model
        grid = QGridLayout(self)
        grid.setSpacing(10)
        grid.setContentsMargins(0, 0, 0, 0)
        self.tiles: list[SlotTile] = []
        for row in range(model.rowCount()):
            tile = SlotTile(row, self)
            tile.activated.connect(self.activated)
            if positions is not None:
                grid.addWidget(tile, positions[row][0] - 1, positions[row][1] - 1)
            else:
                grid.addWidget(tile, row // columns, row % columns)
            self.tiles.append(tile)
            tile.show_view(model.view(row))
        model.dataChanged.connect(self._on_changed)

    def _on_changed(self, top: _Index, bottom: _Index, roles: Any = None) -> None:
        for row in range(top.row(), bottom.row() + 1):
            view = self._model.data(self._model.index(row, 0), VIEW_ROLE)
            if isinstance(view, SlotView):
                self.tiles[row].show_view(view)


class Banner(QFrame):
    """The active work order, its counts, today's yield and who is signed in."""

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setObjectName("bannerFrame")
        self.work_order = _label(size=24, bold=True)
        self.product = _label(size=18)
        self.done = _label(size=24, bold=True)
        self.yield_ = _label(size=18)
        self.operator = _label(size=20, bold=True)
        self.operator.setAlignment(Qt.AlignmentFlag.AlignRight | Qt.AlignmentFlag.AlignVCenter)
        left = QVBoxLayout()
        left.addWidget(self.work_order)
        left.addWidget(self.product)
        mid = QVBoxLayout()
        mid.addWidget(self.done)
        mid.addWidget(self.yield_)
        row = QHBoxLayout(self)
        row.setContentsMargins(16, 8, 16, 8)
        row.addLayout(left, 3)
        row.addLayout(mid, 3)
        row.addWidget(self.operator, 2)

    def show_info(self, info: BannerInfo) -> None:
        wo = info.work_order
        if wo is None:
            self.work_order.setText("\u25a0 SCAN  no work order")
            self.product.setText("Scan the work order on the traveller.")
        else:
            self.work_order.setText(f"Work order {wo.number}")
            self.product.setText(f"Product {wo.product}   Profile {wo.profile}")
        if info.counts is not None:
            c = info.counts
            self.done.setText(f"Done {c.provisioned} of {c.quantity} authorised")
            low = c.remaining <= max(1, c.quantity // 10)
            self.done.setStyleSheet(
                f"background: {theme.AMBER}; color: {theme.TEXT}; padding: 2px 6px;" if low
                else "background: transparent;")
            if low:
                self.done.setText(self.done.text() + f"  \u25b2 {c.remaining} left")
        else:
            self.done.setText("Done \u2014")
            self.done.setStyleSheet("background: transparent;")
        y = info.yield_today
        self.yield_.setText(
            f"Yield today {y:.0%} ({info.passed_today} pass, {info.failed_today} fail)" if y is not None
            else "Yield today \u2014")
        self.operator.setText(f"Operator {info.operator}\n{info.role}" if info.operator
                              else "Nobody signed in")


class Notice(QLabel):
    """One line of feedback: where a scan went, what was refused. Colour plus an icon and word."""

    _LEVELS: ClassVar[dict[str, tuple[str, str, str]]] = {
        "info": ("\u2139", theme.PANEL, theme.TEXT),
        "attention": ("\u25b2 ATTENTION", theme.AMBER, theme.TEXT),
        "alarm": ("\u2718 REFUSED", theme.RED, theme.WHITE),
    }

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setObjectName("notice")
        self.setWordWrap(True)
        self.show_notice("", "info")

    def show_notice(self, text: str, level: str) -> None:
        icon, bg, fg = self._LEVELS.get(level, self._LEVELS["info"])
        self.setText(f"{icon}  {text}" if text else " ")
        self.setStyleSheet(f"background: {bg}; color: {fg}; font-size: 18px; font-weight: bold;"
                           " padding: 6px;")
        self.level = level


def make_table(model: Any, *, parent: QWidget | None = None) -> QTableView:
    """A read-only, row-selecting table that fits the station's type sizes."""
    view = QTableView(parent)
    view.setModel(model)
    view.setSelectionBehavior(QAbstractItemView.SelectionBehavior.SelectRows)
    view.setSelectionMode(QAbstractItemView.SelectionMode.SingleSelection)
    view.setEditTriggers(QAbstractItemView.EditTrigger.NoEditTriggers)
    view.setAlternatingRowColors(True)
    view.verticalHeader().setVisible(False)
    view.verticalHeader().setDefaultSectionSize(30)
    header = view.horizontalHeader()
    header.setSectionResizeMode(QHeaderView.ResizeMode.ResizeToContents)
    header.setStretchLastSection(True)
    return view
