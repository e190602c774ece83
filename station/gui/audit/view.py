"""The quality engineer's audit view: filters, the lazy units table, a unit's detail, charts,
audit-chain verification with a progress bar, and exports of the current filter.

Read-only: nothing here writes to the store. Long jobs (verifying the whole chain, exporting a
million rows) run in a worker on their own ``QThread`` and report by signals (STYLE.md item 11);
the table's paging and the filter counts are single indexed queries, run in the GUI thread.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Final

from PySide6.QtCore import (
    QDateTime,
    QItemSelection,
    QObject,
    Qt,
    QThread,
    QTimer,
    QTimeZone,
    Signal,
    Slot,
)
from PySide6.QtGui import QCloseEvent
from PySide6.QtWidgets import (
    QAbstractItemView,
    QCheckBox,
    QComboBox,
    QDateTimeEdit,
    QFileDialog,
    QGridLayout,
    QGroupBox,
    QHBoxLayout,
    QHeaderView,
    QLabel,
    QLineEdit,
    QProgressBar,
    QPushButton,
    QSplitter,
    QTableView,
    QTabWidget,
    QVBoxLayout,
    QWidget,
)

from station.audit.store import SqlAuditStore
from station.audit.verify import VerifyResult, verify_chain
from station.gui.audit.charts import ChartsPanel
from station.gui.audit.detail import UnitDetailPane
from station.gui.audit.model import UnitsTableModel
from station.gui.theme import GREEN, RED
from station.reports.export import export
from station.reports.filters import OUTCOMES, UnitFilter
from station.reports.query import AuditQuery

ANY: Final = "(any)"
_COMBOS: Final = ("work_order", "product", "station", "operator", "outcome", "failed_step", "error_code")
_LABELS: Final = {"work_order": "Work order", "product": "Product", "station": "Station",
                  "operator": "Operator", "outcome": "Outcome", "failed_step": "Failing step",
                  "error_code": "Error code"}


class _Task(QObject):
    """Runs one callable (given a progress callback) on a worker thread; reports by signals."""

    progress = Signal(int, int)
    done = Signal(object)
    failed = Signal(str)

    def __init__(self, job: Callable[[Callable[[int, int], None]], object]) -> None:
        super().__init__()
        self._job = job

    @Slot()
    def run(self) -> None:
        try:
            result = self._job(self.progress.emit)
        except Exception as exc:  # reported to the QE in words, never a crash of the view
            self.failed.emit(f"{type(exc).__name__}: {exc}")
        else:
            self.done.emit(result)


class AuditView(QWidget):
    """The audit view over an open store (read-only). See the module docstring."""

    verification_finished = Signal(object)
    """A :class:`~station.audit.verify.VerifyResult`, or the error text (str)."""
    export_finished = Signal(str, int)
    """(path, units written), or (error text, -1)."""

    def __init__(self, store: SqlAuditStore, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.store = store
        self.query = AuditQuery(store)
        self._threads: list[tuple[QThread, _Task]] = []
        self.last_verify: VerifyResult | None = None

        self.model = UnitsTableModel(self.query, self)
        self.table = QTableView()
        self.table.setModel(self.model)
        self.table.setSortingEnabled(False)
        self.table.horizontalHeader().setSortIndicatorShown(True)
        self.table.horizontalHeader().setSectionsClickable(True)
        self.table.horizontalHeader().sortIndicatorChanged.connect(self._on_sort)
        self.table.setSelectionBehavior(QAbstractItemView.SelectionBehavior.SelectRows)
        self.table.setSelectionMode(QAbstractItemView.SelectionMode.SingleSelection)
        self.table.setAlternatingRowColors(True)
        self.table.verticalHeader().setVisible(False)
        self.table.verticalHeader().setDefaultSectionSize(22)
        self.table.horizontalHeader().setSectionResizeMode(QHeaderView.ResizeMode.Interactive)
        self.table.horizontalHeader().setStretchLastSection(True)
        self.table.selectionModel().selectionChanged.connect(self._on_select)

        self.detail = UnitDetailPane(self.query, store)
        self.charts = ChartsPanel(self.query)
        self.count_label = QLabel()
        self.status = QLabel()
        self.status.setWordWrap(True)

        self._build_filters()
        self._build_actions()

        units_page = QSplitter(Qt.Orientation.Vertical)
        units_page.addWidget(self.table)
        units_page.addWidget(self.detail)
        units_page.setStretchFactor(0, 3)  # the table gets the room first; the detail can be dragged up
        units_page.setStretchFactor(1, 2)
        units_page.setSizes([440, 380])
        self.tabs = QTabWidget()
        self.tabs.addTab(units_page, "Units")
        self.tabs.addTab(self.charts, "Charts")
        self.tabs.currentChanged.connect(self._on_tab)

        layout = QVBoxLayout(self)
        layout.addWidget(self.filter_box)
        counts = QHBoxLayout()
        counts.addWidget(self.count_label)
        counts.addStretch(1)
        counts.addWidget(self.status, 2)
        layout.addLayout(counts)
        layout.addWidget(self.tabs, 1)
        layout.addWidget(self.actions_box)

        self._search_timer = QTimer(self)
        self._search_timer.setSingleShot(True)
        self._search_timer.setInterval(300)
        self._search_timer.timeout.connect(self.apply_filters)
        self.model.filter_applied.connect(self._on_count)
        self.table.horizontalHeader().setSortIndicator(0, Qt.SortOrder.DescendingOrder)
        self.apply_filters()
        # widths from the first page's contents (and the host window's font), capped so that one
        # long error message cannot push the other columns off screen
        self.table.resizeColumnsToContents()
        for col in range(self.model.columnCount()):
            self.table.setColumnWidth(col, min(self.table.columnWidth(col), 260))

    # -- building ----------------------------------------------------------------------------

    def _build_filters(self) -> None:
        self.filter_box = QGroupBox("Filter")
        grid = QGridLayout(self.filter_box)
        choices = self.query.distinct_values()
        choices["outcome"] = list(OUTCOMES)
        self.combos: dict[str, QComboBox] = {}
        for i, name in enumerate(_COMBOS):
            combo = QComboBox()
            combo.addItem(ANY)
            combo.addItems(choices.get(name, []))
            combo.setMinimumContentsLength(10)
            combo.currentIndexChanged.connect(lambda _i: self.apply_filters())
            self.combos[name] = combo
            grid.addWidget(QLabel(_LABELS[name]), i // 4 * 2, i % 4)
            grid.addWidget(combo, i // 4 * 2 + 1, i % 4)
        self.since_on = QCheckBox("Since (UTC)")
        self.until_on = QCheckBox("Until (UTC)")
        self.since = QDateTimeEdit()
        self.until = QDateTimeEdit()
        lo, hi = self._time_range()
        for box, edit, value in ((self.since_on, self.since, lo), (self.until_on, self.until, hi)):
            edit.setTimeZone(QTimeZone.utc())
            edit.setDisplayFormat("yyyy-MM-dd HH:mm")
            edit.setCalendarPopup(True)
            edit.setDateTime(QDateTime.fromSecsSinceEpoch(int(value.timestamp()), QTimeZone.utc()))
            edit.setEnabled(False)
            box.toggled.connect(edit.setEnabled)
            box.toggled.connect(lambda _on: self.apply_filters())
            edit.dateTimeChanged.connect(lambda _d: self._search_timer.start())
        self.search = QLineEdit()
        self.search.setPlaceholderText("serial, hardware id, certificate serial or fingerprint")
        self.search.setClearButtonEnabled(True)
        self.search.textEdited.connect(lambda _t: self._search_timer.start())
        self.search.returnPressed.connect(self.apply_filters)
        clear = QPushButton("Clear filters")
        clear.clicked.connect(self.clear_filters)
        grid.addWidget(self.since_on, 2, 3)
        grid.addWidget(self.since, 3, 3)
        grid.addWidget(self.until_on, 4, 0)
        grid.addWidget(self.until, 5, 0)
        grid.addWidget(QLabel("Search"), 4, 1)
        grid.addWidget(self.search, 5, 1, 1, 2)
        grid.addWidget(clear, 5, 3)

    def _build_actions(self) -> None:
        self.actions_box = QWidget()
        row = QHBoxLayout(self.actions_box)
        row.setContentsMargins(0, 0, 0, 0)
        self.verify_button = QPushButton("Verify audit chain")
        self.verify_button.clicked.connect(self.start_verification)
        self.progress = QProgressBar()
        self.progress.setRange(0, 1)
        self.progress.setValue(0)
        self.progress.setFormat("%p%")
        self.verify_label = QLabel("Audit chain not verified in this session")
        self.verify_label.setWordWrap(True)
        row.addWidget(self.verify_button)
        row.addWidget(self.progress, 1)
        row.addWidget(self.verify_label, 3)
        self.export_buttons: dict[str, QPushButton] = {}
        for fmt, text in (("csv", "Export CSV"), ("json", "Export JSON"), ("pdf", "PDF report")):
            button = QPushButton(text)
            button.clicked.connect(lambda _c=False, f=fmt: self._ask_export(f))
            self.export_buttons[fmt] = button
            row.addWidget(button)

    def _time_range(self) -> tuple[datetime, datetime]:
        summary = self.query.first_last()
        now = datetime.now(UTC)
        return summary[0] or now, summary[1] or now

    # -- filters -----------------------------------------------------------------------------

    def current_filter(self) -> UnitFilter:
        values: dict[str, Any] = {}
        for name, combo in self.combos.items():
            text = combo.currentText()
            values[name] = None if text == ANY else text
        if self.since_on.isChecked():
            values["since"] = datetime.fromtimestamp(self.since.dateTime().toSecsSinceEpoch(), UTC)
        if self.until_on.isChecked():
            values["until"] = datetime.fromtimestamp(self.until.dateTime().toSecsSinceEpoch(), UTC)
        values["search"] = self.search.text() or None
        return UnitFilter(**values)

    @Slot()
    def apply_filters(self) -> None:
        self._search_timer.stop()
        try:
            f = self.current_filter()
        except ValueError as exc:
            self.status.setText(f"\u25b2 {exc}")
            return
        self.status.setText("")
        self.model.set_filter(f)
        self.charts.set_filter(f)
        if self.tabs.currentWidget() is self.charts:
            self.charts.refresh()
        if self.model.rowCount() and self.detail.detail is None:
            self.table.selectRow(0)

    def set_filter(self, f: UnitFilter) -> None:
        """Put ``f`` into the filter widgets and apply it (for scripts and tests)."""
        widgets = [*self.combos.values(), self.since_on, self.until_on, self.search, self.since, self.until]
        for w in widgets:
            w.blockSignals(True)
        try:
            for name, combo in self.combos.items():
                value = getattr(f, name)
                if value is None:
                    combo.setCurrentIndex(0)
                else:
                    if combo.findText(value) < 0:
                        combo.addItem(value)
                    combo.setCurrentText(value)
            dates = ((self.since_on, self.since, f.since), (self.until_on, self.until, f.until))
            for on, edit, value in dates:
                on.setChecked(value is not None)
                edit.setEnabled(value is not None)
                if value is not None:
                    edit.setDateTime(QDateTime.fromSecsSinceEpoch(int(value.timestamp()), QTimeZone.utc()))
            self.search.setText(f.search or "")
        finally:
            for w in widgets:
                w.blockSignals(False)
        self.apply_filters()

    def clear_filters(self) -> None:
        self.set_filter(UnitFilter())

    def _on_count(self, total: int) -> None:
        shown = self.model.unit_filter.describe()
        self.count_label.setText(f"<b>{total:,}</b> units match ({shown})")

    def _on_sort(self, column: int, order: Qt.SortOrder) -> None:
        self.model.sort(column, order)

    def _on_tab(self, _index: int) -> None:
        if self.tabs.currentWidget() is self.charts and self.charts.stale:
            self.charts.refresh()

    def _on_select(self, selected: QItemSelection, _deselected: QItemSelection) -> None:
        rows = {i.row() for i in selected.indexes()}
        if rows:
            unit_id = self.model.unit_id(min(rows))
            if unit_id is not None:
                self.detail.show_unit(unit_id)

    def show_unit(self, unit_id: int) -> None:
        self.detail.show_unit(unit_id)

    # -- long jobs ---------------------------------------------------------------------------

    def _run(self, job: Callable[[Callable[[int, int], None]], object],
             on_done: Callable[[object], None], on_failed: Callable[[str], None]) -> None:
        thread = QThread(self)
        task = _Task(job)
        task.moveToThread(thread)
        thread.started.connect(task.run)
        task.progress.connect(self._on_progress)
        task.done.connect(on_done)
        task.failed.connect(on_failed)
        task.done.connect(thread.quit)
        task.failed.connect(thread.quit)
        pair = (thread, task)
        self._threads.append(pair)
        thread.finished.connect(lambda: self._threads.remove(pair) if pair in self._threads else None)
        thread.start()

    def _on_progress(self, done: int, total: int) -> None:
        self.progress.setRange(0, max(total, 1))
        self.progress.setValue(min(done, max(total, 1)))

    @Slot()
    def start_verification(self) -> None:
        """Verify the whole chain and every unit row on a worker thread; names the first broken row."""
        self.verify_button.setEnabled(False)
        self.verify_label.setText("Verifying the audit chain ...")
        self.verify_label.setStyleSheet("")
        self.progress.setRange(0, 0)
        self._run(lambda progress: verify_chain(self.store, progress_callback=progress),
                  self._verified, self._verify_failed)

    def _verified(self, result: object) -> None:
        assert isinstance(result, VerifyResult)
        self.last_verify = result
        self.verify_button.setEnabled(True)
        self.progress.setRange(0, 1)
        self.progress.setValue(1)
        if result.ok:
            self.verify_label.setText(f"\u2714 INTACT: {result.summary()}")
            self.verify_label.setStyleSheet(f"color: {GREEN}; font-weight: bold")
        else:
            self.verify_label.setText(f"\u2716 BROKEN: {result.summary()}")
            self.verify_label.setStyleSheet(f"color: {RED}; font-weight: bold")
        self.verification_finished.emit(result)

    def _verify_failed(self, message: str) -> None:
        self.verify_button.setEnabled(True)
        self.progress.setRange(0, 1)
        self.verify_label.setText(f"\u2716 Could not verify: {message}")
        self.verify_label.setStyleSheet(f"color: {RED}; font-weight: bold")
        self.verification_finished.emit(message)

    def _ask_export(self, fmt: str) -> None:
        suffix = {"csv": "CSV (*.csv)", "json": "JSON lines (*.jsonl *.json)", "pdf": "PDF (*.pdf)"}[fmt]
        name = "units." + ("jsonl" if fmt == "json" else fmt)
        path, _ = QFileDialog.getSaveFileName(self, "Export the current filter", name, suffix)
        if path:
            self.export_to(Path(path), fmt)

    def export_to(self, path: Path, fmt: str) -> None:
        """Export the current filter to ``path`` on a worker thread; emits :attr:`export_finished`."""
        f = self.model.unit_filter
        for b in self.export_buttons.values():
            b.setEnabled(False)
        self.status.setText(f"Exporting {fmt.upper()} of {f.describe()} to {path} ...")

        def job(progress: Callable[[int, int], None]) -> object:
            return export(self.query, f, fmt, path, progress=progress)

        def done(count: object) -> None:
            self._export_done(str(path), int(count) if isinstance(count, int) else -1)

        self._run(job, done, lambda message: self._export_done(message, -1))

    def _export_done(self, what: str, count: int) -> None:
        for b in self.export_buttons.values():
            b.setEnabled(True)
        self.status.setText(f"Exported {count:,} units to {what}" if count >= 0
                            else f"\u2716 Export failed: {what}")
        self.export_finished.emit(what, count)

    def closeEvent(self, event: QCloseEvent) -> None:  # noqa: N802 - Qt's name
        """A running verification or export is waited for: a QThread must not die running."""
        self.shutdown()
        super().closeEvent(event)

    def shutdown(self, timeout_ms: int = 30_000) -> None:
        """Wait for running jobs (tests and window close)."""
        for thread, _task in list(self._threads):
            thread.quit()
            thread.wait(timeout_ms)
