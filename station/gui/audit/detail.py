"""A unit's detail: its identity, step timeline with timings, certificate, CSR key type,
commissioning values (secrets shown as stored: ``***``), its events, and whether the audit chain
around it verifies (:meth:`AuditQuery.check_unit_chain`, a quick local check; the full log is checked
by the view's Verify button).
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from typing import Final

from PySide6.QtCore import Qt
from PySide6.QtGui import QFont
from PySide6.QtWidgets import (
    QCheckBox,
    QComboBox,
    QDialog,
    QDialogButtonBox,
    QFormLayout,
    QGroupBox,
    QHBoxLayout,
    QHeaderView,
    QLabel,
    QLineEdit,
    QPlainTextEdit,
    QPushButton,
    QTableWidget,
    QTableWidgetItem,
    QTabWidget,
    QVBoxLayout,
    QWidget,
)

from hsm.ca import REVOCATION_REASONS
from station.audit.store import SqlAuditStore
from station.gui.theme import GREEN, RED
from station.reports.query import AuditQuery, UnitDetail

_UNIT_FIELDS: Final = (
    ("serial_number", "Unit serial"), ("wo_number", "Work order"), ("product", "Product"),
    ("status", "Status"), ("station", "Station / slot"), ("operator", "Operator"),
    ("hardware_id", "Hardware id"), ("started_at", "Started (UTC)"), ("finished_at", "Finished (UTC)"),
    ("failed_step", "Failed at step"), ("error_code", "Error"),
)


def _table(headers: list[str]) -> QTableWidget:
    t = QTableWidget(0, len(headers))
    t.setHorizontalHeaderLabels(headers)
    t.verticalHeader().setVisible(False)
    t.verticalHeader().setDefaultSectionSize(22)
    t.setEditTriggers(QTableWidget.EditTrigger.NoEditTriggers)
    t.setAlternatingRowColors(True)
    t.horizontalHeader().setSectionResizeMode(QHeaderView.ResizeMode.ResizeToContents)
    t.horizontalHeader().setStretchLastSection(True)
    return t


def _fill(t: QTableWidget, rows: list[list[str]]) -> None:
    t.setRowCount(len(rows))
    for r, row in enumerate(rows):
        for c, value in enumerate(row):
            t.setItem(r, c, QTableWidgetItem(value))


def _selectable(label: QLabel) -> QLabel:
    label.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
    label.setWordWrap(True)
    return label


Revoker = Callable[[str, str, str], str | None]
"""``(certificate serial, reason, note)`` -> None once revoked, or why it was not (in words)."""


class RevokeDialog(QDialog):
    """The second step of a revocation (HMI.md: two steps and a reason): reason, note, confirmation."""

    def __init__(self, unit_title: str, cert_serial: str, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setWindowTitle("Revoke certificate")
        self.setObjectName("revokeDialog")
        self.setMinimumWidth(640)
        self.reason = QComboBox()
        self.reason.addItems(sorted(REVOCATION_REASONS))
        self.reason.setCurrentText("key_compromise")
        self.note = QLineEdit()
        self.note.setPlaceholderText("Why, in words (required; it goes into the audit log)")
        self.confirm = QCheckBox("Revoke for good: the next CRL lists this certificate")
        form = QFormLayout()
        form.addRow("Unit:", QLabel(unit_title))
        form.addRow("Certificate serial:", _selectable(QLabel(cert_serial)))
        form.addRow("Reason:", self.reason)
        form.addRow("Note:", self.note)
        self.buttons = QDialogButtonBox(QDialogButtonBox.StandardButton.Ok
                                        | QDialogButtonBox.StandardButton.Cancel)
        self.buttons.button(QDialogButtonBox.StandardButton.Ok).setText("Revoke")
        self.buttons.accepted.connect(self.accept)
        self.buttons.rejected.connect(self.reject)
        box = QVBoxLayout(self)
        box.addLayout(form)
        box.addWidget(self.confirm)
        box.addWidget(self.buttons)
        for signal in (self.note.textChanged, self.confirm.toggled):
            signal.connect(self._update)
        self._update()

    def _update(self) -> None:
        ready = self.confirm.isChecked() and bool(self.note.text().strip())
        self.buttons.button(QDialogButtonBox.StandardButton.Ok).setEnabled(ready)


class UnitDetailPane(QWidget):
    """Shows one unit; :meth:`show_unit` loads it (a handful of indexed queries)."""

    def __init__(self, query: AuditQuery, store: SqlAuditStore, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self._query = query
        self._store = store
        self.detail: UnitDetail | None = None
        self.revoker: Revoker | None = None
        """Set by the window for an operator who may revoke (quality, admin)."""
        self.dialog: RevokeDialog | None = None
        self.revoke_button = QPushButton("Revoke certificate\u2026")
        self.revoke_button.setObjectName("revokeButton")
        self.revoke_button.setVisible(False)
        self.revoke_button.clicked.connect(self._ask_revoke)
        self.title = QLabel("Select a unit to see its detail")
        font = QFont(self.title.font())
        font.setBold(True)
        font.setPointSizeF(font.pointSizeF() * 1.3)
        self.title.setFont(font)
        self.chain = _selectable(QLabel(""))

        self.unit_box = QGroupBox("Unit")
        self.unit_form = QFormLayout(self.unit_box)
        self.unit_labels: dict[str, QLabel] = {}
        for key, text in (*_UNIT_FIELDS, ("key_type", "CSR key type")):
            self.unit_labels[key] = _selectable(QLabel(""))
            self.unit_form.addRow(text + ":", self.unit_labels[key])

        self.cert_box = QGroupBox("Certificate")
        cert_layout = QVBoxLayout(self.cert_box)
        self.cert_form = QFormLayout()
        self.cert_labels: dict[str, QLabel] = {}
        for key, text in (("subject", "Subject"), ("issuer", "Issuer"), ("serial_hex", "Serial"),
                          ("validity", "Valid"), ("sha256", "SHA-256"), ("sha1", "SHA-1"),
                          ("public_key", "Public key")):
            self.cert_labels[key] = _selectable(QLabel(""))
            self.cert_form.addRow(text + ":", self.cert_labels[key])
        self.pem = QPlainTextEdit()
        self.pem.setReadOnly(True)
        mono = QFont("Monospace")
        mono.setStyleHint(QFont.StyleHint.TypeWriter)
        mono.setPointSizeF(max(self.font().pointSizeF() * 0.85, 7.0))
        self.pem.setFont(mono)
        cert_layout.addLayout(self.cert_form)
        cert_layout.addWidget(self.pem, 1)

        self.timeline = _table(["#", "Step", "Result", "ms", "At (UTC)", "Error"])
        self.commissioning = _table(["Key", "Value", "Secret"])
        self.events = _table(["Seq", "Kind", "Step", "Outcome", "At (UTC)", "Detail", "Hash"])
        self.tabs = QTabWidget()
        overview = QWidget()
        over = QHBoxLayout(overview)
        left = QVBoxLayout()
        left.addWidget(self.unit_box)
        left.addWidget(self.timeline, 1)
        over.addLayout(left, 1)
        over.addWidget(self.cert_box, 1)
        self.tabs.addTab(overview, "Overview")
        self.tabs.addTab(self.commissioning, "Commissioning")
        self.tabs.addTab(self.events, "Events")

        layout = QVBoxLayout(self)
        head = QHBoxLayout()
        head.addWidget(self.title, 1)
        head.addWidget(self.chain, 1)
        head.addWidget(self.revoke_button)
        layout.addLayout(head)
        layout.addWidget(self.tabs, 1)

    def _ask_revoke(self) -> None:
        """The first step: open the dialog (non-modal for the event loop, modal for the operator)."""
        if self.detail is None or self.detail.certificate is None:
            return
        self.dialog = RevokeDialog(self.title.text(), self.detail.certificate.serial_hex, self)
        self.dialog.setModal(True)
        self.dialog.accepted.connect(lambda: _revoke_flow(self))
        self.dialog.open()

    def show_unit(self, unit_id: int) -> UnitDetail | None:
        detail = self._query.unit_detail(unit_id, self._store)
        self.detail = detail
        if detail is None:
            self.title.setText(f"Unit {unit_id} not found")
            return None
        u = detail.unit
        self.title.setText(f"Unit {u['id']}  {u['serial_number'] or '(no serial)'}")
        values = {
            "serial_number": u["serial_number"] or "-", "wo_number": u["wo_number"],
            "product": detail.product, "status": str(u["status"]).upper(),
            "station": f"{u['station']} / slot {u['slot']}", "operator": u["operator"],
            "hardware_id": u["hardware_id"], "started_at": _when(u["started_at"]),
            "finished_at": _when(u["finished_at"]), "failed_step": u["failed_step"] or "-",
            "error_code": (f"{u['error_code']}: {u['error_message'] or ''}" if u["error_code"] else "-"),
            "key_type": detail.key_type or "-",
        }
        for key, label in self.unit_labels.items():
            label.setText(str(values[key]))
        failed = u["status"] in ("failed", "revoked")
        self.unit_labels["status"].setStyleSheet(f"color: {RED}; font-weight: bold" if failed else "")
        if detail.chain.ok:
            self.chain.setText(f"\u2714 Audit chain around this unit verifies "
                               f"({detail.chain.events_checked} events)")
            self.chain.setStyleSheet(f"color: {GREEN}; font-weight: bold")
        else:
            where = f" at event seq {detail.chain.seq}" if detail.chain.seq is not None else ""
            self.chain.setText(f"\u2716 Audit chain BROKEN{where}: {detail.chain.problem}")
            self.chain.setStyleSheet(f"color: {RED}; font-weight: bold")

        cert = detail.certificate
        self.revoke_button.setVisible(self.revoker is not None and cert is not None
                                      and u["status"] != "revoked")
        if cert is None:
            for label in self.cert_labels.values():
                label.setText("-")
            self.cert_labels["subject"].setText(detail.certificate_problem or "no certificate issued")
            self.pem.setPlainText("")
        else:
            self.cert_labels["subject"].setText(cert.subject)
            self.cert_labels["issuer"].setText(cert.issuer)
            self.cert_labels["serial_hex"].setText(cert.serial_hex)
            self.cert_labels["validity"].setText(f"{_when(cert.not_before)}  to  {_when(cert.not_after)}")
            self.cert_labels["sha256"].setText(cert.sha256)
            self.cert_labels["sha1"].setText(cert.sha1)
            self.cert_labels["public_key"].setText(cert.public_key)
            self.pem.setPlainText(cert.pem)

        _fill(self.timeline, [
            [str(i + 1), t.step, "FAIL" if t.outcome == "failed" else "ok",
             "" if t.duration_ms is None else f"{t.duration_ms:.1f}", t.occurred_at[11:23],
             f"{t.error_code}: {t.error_message or ''}" if t.error_code else ""]
            for i, t in enumerate(detail.timeline)
        ])
        _fill(self.commissioning, [[str(c.get("key", "")), str(c.get("value", "")),
                                    "yes (redacted)" if c.get("secret") else "no"]
                                   for c in detail.commissioning])
        _fill(self.events, [
            [str(e.seq), e.kind, e.step or "", e.outcome or "", e.occurred_at[:23],
             ", ".join(f"{k}={v}" for k, v in sorted(e.detail.items()))[:120], e.hash[:16]]
            for e in detail.events
        ])
        return detail


def _revoke_flow(pane: UnitDetailPane) -> None:
    """After the dialog: revoke through the window's revoker, then show the unit again."""
    detail, dialog, revoker = pane.detail, pane.dialog, pane.revoker
    if detail is None or dialog is None or revoker is None or detail.certificate is None:
        return
    problem = revoker(detail.certificate.serial_hex, dialog.reason.currentText(), dialog.note.text().strip())
    if problem is not None:
        pane.title.setText(f"Not revoked: {problem}")
        return
    pane.show_unit(int(detail.unit["id"]))


def _when(value: object) -> str:
    if isinstance(value, datetime):
        return value.strftime("%Y-%m-%d %H:%M:%S")
    return "-" if value is None else str(value)


__all__ = ["UnitDetailPane"]
