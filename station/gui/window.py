"""The main window: sign-in, the technician's line screen, the quality audit view, the admin page.

Pages are chosen by role from the :class:`Session`; guarded pages are opened only through
``Session.require``, so a refused attempt is both shown and written to the audit log. In kiosk mode
the window is full screen and frameless, and closing it (button, Alt+F4, Ctrl+Q, Ctrl+W) needs the
admin role.
"""

from __future__ import annotations

import functools
import importlib
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Final

from cryptography import x509
from PySide6.QtCore import QEvent, QModelIndex, QObject, Qt, Signal
from PySide6.QtGui import QCloseEvent, QKeyEvent
from PySide6.QtWidgets import (
    QApplication,
    QCheckBox,
    QFormLayout,
    QHBoxLayout,
    QLineEdit,
    QMainWindow,
    QPushButton,
    QStackedWidget,
    QVBoxLayout,
    QWidget,
)

from station.errors import StationError
from station.gui import theme
from station.gui.controller import LineController
from station.gui.models import VIEW_ROLE
from station.gui.scanner import Scan, ScanKind, ScannerFilter
from station.gui.session import ActivityFilter, Session
from station.gui.widgets import Banner, Notice, SlotGrid, _label, make_table
from station.roles import Action

log = logging.getLogger(__name__)


@dataclass(frozen=True, kw_only=True)
class StationInfo:
    """What the admin page shows about this station (never secrets, never the PIN source's value)."""

    station_id: str
    database: str
    token_label: str = ""
    key_label: str = ""
    mode: str = "configured"
    sign_in_hint: str = ""
    """Shown on the sign-in page (the demo's seeded badges); empty on a real station."""
    settings: Sequence[tuple[str, str]] = field(default_factory=tuple)


class SignInPage(QWidget):
    """Scan a badge (or type it), then the PIN."""

    def __init__(self, session: Session, scanner: ScannerFilter, hint: str,
                 parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self._session = session
        self._scanner = scanner
        title = _label("Provisioning station", size=40, bold=True)
        self.instruction = _label("\u25a0 SCAN  your badge to sign in", size=30, bold=True)
        self.instruction.setStyleSheet(f"background: {theme.BLUE}; color: {theme.WHITE}; padding: 14px;"
                                       " font-size: 30px; font-weight: bold;")
        self.badge = QLineEdit()
        self.badge.setObjectName("badgeField")
        self.badge.setPlaceholderText("or type the badge number and press Enter")
        self.badge.returnPressed.connect(self._badge_entered)
        self.pin = QLineEdit()
        self.pin.setObjectName("pinField")
        self.pin.setEchoMode(QLineEdit.EchoMode.Password)
        self.pin.setPlaceholderText("PIN, then Enter")
        self.pin.returnPressed.connect(self._pin_entered)
        self.message = Notice()
        form = QFormLayout()
        form.addRow(_label("Badge", size=22, bold=True), self.badge)
        form.addRow(_label("PIN", size=22, bold=True), self.pin)
        box = QVBoxLayout(self)
        box.setContentsMargins(120, 60, 120, 60)
        box.setSpacing(18)
        box.addWidget(title)
        box.addWidget(self.instruction)
        box.addLayout(form)
        box.addWidget(self.message)
        if hint:
            demo = _label(hint, size=17, wrap=True)
            demo.setObjectName("demoHint")
            box.addWidget(demo)
        box.addStretch(1)
        session.pin_needed.connect(self._ask_pin)
        session.refused.connect(lambda text: self.message.show_notice(text, "alarm"))

    def reset(self) -> None:
        self.badge.clear()
        self.pin.clear()
        self.instruction.setText("\u25a0 SCAN  your badge to sign in")
        self.message.show_notice("", "info")

    def _badge_entered(self) -> None:
        text = self.badge.text()
        self.badge.clear()
        self._scanner.submit(text, manual=True)

    def _ask_pin(self, badge: str) -> None:
        self.badge.setText(badge)
        self.instruction.setText(f"Badge {badge}: enter your PIN and press Enter")
        self.pin.clear()
        self.pin.setFocus()

    def _pin_entered(self) -> None:
        badge = self._session.pending_badge or self.badge.text().strip()
        pin = self.pin.text()
        self.pin.clear()
        if not badge:
            self.message.show_notice("Scan your badge first.", "attention")
            return
        self._session.sign_in(badge, pin)


class LinePage(QWidget):
    """The technician's screen: banner, tiles, controls, last results and a result's timeline."""

    def __init__(self, controller: LineController, scanner: ScannerFilter, *, columns: int,
                 positions: Sequence[tuple[int, int]] | None = None,
                 parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.controller = controller
        self.banner = Banner()
        self.notice = Notice()
        self.grid = SlotGrid(controller.slot_model, columns=columns, positions=positions)
        self.grid.activated.connect(self._tile_activated)
        self.start_all = QPushButton("\u25b6 Start all (F5)")
        self.start_all.setObjectName("startAll")
        self.start_all.clicked.connect(controller.start_all)
        self.auto_start = QCheckBox("Auto-start when a device appears")
        self.auto_start.toggled.connect(controller.set_auto_start)
        self.entry = QLineEdit()
        self.entry.setObjectName("manualEntry")
        self.entry.setPlaceholderText("Type a work order, badge or unit label, Enter")
        self.entry.returnPressed.connect(self._manual)
        self._scanner = scanner
        self.audit_button = QPushButton("Audit (F9)")
        self.config_button = QPushButton("\u2699 Configuration (F10)")
        self.config_button.setObjectName("configButton")
        self.sign_out_button = QPushButton("Sign out (F12)")
        controls = QHBoxLayout()
        controls.addWidget(self.start_all)
        controls.addWidget(self.auto_start)
        controls.addWidget(self.entry, 1)
        controls.addWidget(self.audit_button)
        controls.addWidget(self.config_button)
        controls.addWidget(self.sign_out_button)
        self.results = make_table(controller.results_model)
        self.results.setObjectName("results")
        self.results.setMinimumWidth(440)
        self.results.clicked.connect(self._result_clicked)
        self.results.activated.connect(self._result_clicked)
        self.timeline = make_table(controller.timeline_model)
        self.timeline.setObjectName("timeline")
        self.timeline_title = _label("Step timeline: click a result", size=17, bold=True)
        side = QVBoxLayout()
        side.addWidget(_label("Last results", size=17, bold=True))
        side.addWidget(self.results, 3)
        side.addWidget(self.timeline_title)
        side.addWidget(self.timeline, 2)
        middle = QHBoxLayout()
        middle.addWidget(self.grid, 3)
        middle.addLayout(side, 2)
        body = QVBoxLayout()
        body.setContentsMargins(12, 8, 12, 8)
        body.addWidget(self.notice)
        body.addLayout(middle, 1)
        body.addLayout(controls)
        page = QVBoxLayout(self)
        page.setContentsMargins(0, 0, 0, 0)
        page.addWidget(self.banner)
        page.addLayout(body, 1)
        controller.banner_changed.connect(self.refresh_banner)
        controller.notice.connect(self.notice.show_notice)
        controller.slot_flash.connect(lambda row: self.grid.tiles[row].flash())
        self.refresh_banner()

    def refresh_banner(self) -> None:
        self.banner.show_info(self.controller.banner())

    def _tile_activated(self, row: int) -> None:
        view = self.controller.slot_model.view(row)
        if view.state.value in ("pass", "fail"):
            self.controller.acknowledge(row)
        else:
            self.controller.start_slot(row)

    def _manual(self) -> None:
        text = self.entry.text()
        self.entry.clear()
        self._scanner.submit(text, manual=True)

    def _result_clicked(self, index: QModelIndex) -> None:
        row = self.controller.show_timeline(index.row())
        r = row.result
        self.timeline_title.setText(
            f"Step timeline: slot {r.slot}, {r.unit_serial or r.hardware_id or 'no serial'}, "
            f"{row.outcome}" + (f": {r.message}" if not r.ok else ""))
        self.timeline_title.setWordWrap(True)


class QualityPage(QWidget):
    """The audit view for the quality role (issue 6's AuditView when installed): read-only, but for
    revoking a certificate, which the role allows (two steps and a reason, logged)."""

    def __init__(self, controller: LineController, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        box = QVBoxLayout(self)
        top = QHBoxLayout()
        top.addWidget(_label("Audit log", size=26, bold=True))
        top.addStretch(1)
        self.back = QPushButton("Line view")
        self.sign_out_button = QPushButton("Sign out (F12)")
        top.addWidget(self.back)
        top.addWidget(self.sign_out_button)
        box.addLayout(top)
        self.view: QWidget
        try:  # issue 6's view, imported lazily: this page works before it exists
            audit = importlib.import_module("station.gui.audit")
            view_class = audit.AuditView
        except (ImportError, AttributeError):
            self.view = _label("\u25b2 The audit view is unavailable on this station "
                               "(station.gui.audit is not installed).", size=22, bold=True, wrap=True)
            self.view.setObjectName("auditUnavailable")
        else:
            self.view = view_class(controller.station.store, self)
        box.addWidget(self.view, 1)


class AdminPage(QWidget):
    """Configuration, CA and HSM status, work orders, and leaving the kiosk (admin only)."""

    leave_kiosk = Signal()

    def __init__(self, controller: LineController, info: StationInfo, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.controller = controller
        self.info = info
        title = _label("Administration", size=28, bold=True)
        self.back = QPushButton("Back to the line")
        self.leave = QPushButton("\u23fb Leave kiosk")
        self.leave.setObjectName("leaveKiosk")
        self.leave.clicked.connect(self.leave_kiosk)
        self.config = _label(size=18, wrap=True)
        self.ca = _label(size=18, wrap=True)
        self.work_orders = _label(size=18, wrap=True)
        self.config.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        top = QHBoxLayout()
        top.addWidget(title)
        top.addStretch(1)
        top.addWidget(self.back)
        top.addWidget(self.leave)
        cols = QHBoxLayout()
        for heading, label in (("Configuration", self.config), ("CA and HSM", self.ca),
                               ("Work orders", self.work_orders)):
            col = QVBoxLayout()
            col.addWidget(_label(heading, size=22, bold=True))
            col.addWidget(label)
            col.addStretch(1)
            cols.addLayout(col, 1)
        box = QVBoxLayout(self)
        box.setContentsMargins(24, 16, 24, 16)
        box.addLayout(top)
        box.addLayout(cols, 1)

    def refresh(self) -> None:
        i = self.info
        slots = "<br>".join(f"slot {v.name}: {v.port}" for v in self.controller.slot_model.views())
        settings = "".join(f"<br>{k}: {v}" for k, v in i.settings)
        self.config.setText(f"Station <b>{i.station_id}</b> ({i.mode})<br>Audit database: {i.database}"
                            f"{settings}<br><br><b>Slots</b><br>{slots}")
        stopped = self.controller.station.provisioner.issuing_stopped
        chain = self.controller.station.signer.chain()
        dash = "\u2014"
        lines = [f"Token: {i.token_label or dash}", f"CA key: {i.key_label or dash}"]
        for der in chain:
            cert = x509.load_der_x509_certificate(der)
            days = (cert.not_valid_after_utc - datetime.now(UTC)).days
            lines.append(f"{cert.subject.rfc4514_string()}<br>&nbsp;&nbsp;expires in {days} days")
        lines.append("\u2718 ISSUING STOPPED: " + stopped if stopped else "\u2714 Issuing: ready")
        self.ca.setText("<br>".join(lines))
        rows = []
        for number, wo in self.controller.work_orders.items():
            counts = self.controller.station.store.work_order_counts(number)
            done = f"{counts.provisioned} of {counts.quantity}" if counts else f"0 of {wo.quantity}"
            active = " \u25c0 active" if self.controller.work_order is wo else ""
            rows.append(f"<b>{number}</b>{active}<br>&nbsp;&nbsp;{wo.product}, {wo.profile}: {done}")
        self.work_orders.setText("<br>".join(rows) or "none")


class MainWindow(QMainWindow):
    """Puts the pages together, routes scans, enforces roles and the kiosk."""

    def __init__(self, controller: LineController, scanner: ScannerFilter, info: StationInfo, *,
                 kiosk: bool = False, columns: int = 4,
                 positions: Sequence[tuple[int, int]] | None = None) -> None:
        super().__init__()
        self.controller = controller
        self.session = controller.session
        self.scanner = scanner
        self.info = info
        self.kiosk = kiosk
        self._may_close = False
        self.setWindowTitle(f"Provisioning station {info.station_id}")
        self.setStyleSheet(theme.STYLE_SHEET)
        self.pages = QStackedWidget()
        self.sign_in = SignInPage(self.session, scanner, info.sign_in_hint)
        self.line = LinePage(controller, scanner, columns=columns, positions=positions)
        self.admin = AdminPage(controller, info)
        self.quality: QualityPage | None = None
        for page in (self.sign_in, self.line, self.admin):
            self.pages.addWidget(page)
        self.setCentralWidget(self.pages)
        self.line.config_button.clicked.connect(self.open_admin)
        self.line.audit_button.clicked.connect(self.open_audit)
        self.line.sign_out_button.clicked.connect(lambda: self.session.sign_out("user"))
        self.admin.back.clicked.connect(self.show_line)
        self.admin.leave_kiosk.connect(self.leave_kiosk)
        self.session.changed.connect(self._on_session)
        self.session.refused.connect(lambda text: self.line.notice.show_notice(text, "alarm"))
        scanner.scanned.connect(self.route_scan)
        keys: dict[tuple[int, Qt.KeyboardModifier], Callable[[], object]] = {
            (Qt.Key.Key_F5, _NO_MODS): controller.start_all,
            (Qt.Key.Key_F9, _NO_MODS): self.open_audit,
            (Qt.Key.Key_F10, _NO_MODS): self.open_admin,
            (Qt.Key.Key_F12, _NO_MODS): lambda: self.session.sign_out("user"),
        }
        for n in range(min(9, controller.slot_model.rowCount())):
            keys[(Qt.Key.Key_1 + n, Qt.KeyboardModifier.ControlModifier)] = \
                functools.partial(self.line._tile_activated, n)
        self.station_keys = StationKeys(self, keys, self)
        self.activity = ActivityFilter(self.session, self)
        self.kiosk_guard = KioskGuard(self, self)
        app = QApplication.instance()
        if app is not None:
            app.installEventFilter(self.station_keys)
            app.installEventFilter(scanner)
            app.installEventFilter(self.activity)
            app.installEventFilter(self.kiosk_guard)
        if kiosk:
            self.setWindowFlag(Qt.WindowType.FramelessWindowHint, True)
            self.setWindowFlag(Qt.WindowType.WindowStaysOnTopHint, True)
        self._on_session()

    # -- pages ---------------------------------------------------------------------------------

    def _on_session(self) -> None:
        role = self.session.role
        if role is None:
            self.sign_in.reset()
            self.pages.setCurrentWidget(self.sign_in)
            if self.session.last_sign_out_reason == "idle":
                self.sign_in.message.show_notice("Signed out after inactivity.", "info")
        elif role == "quality":
            self.open_audit()
        else:
            self.show_line()
        self.line.audit_button.setVisible(self.session.may(Action.VIEW_AUDIT))

    def show_line(self) -> None:
        self.pages.setCurrentWidget(self.line)
        self.line.setFocus()

    def open_admin(self) -> bool:
        if not self.session.require(Action.CONFIGURE, where="configuration page"):
            return False
        self.admin.refresh()
        self.admin.leave.setVisible(self.kiosk)
        self.pages.setCurrentWidget(self.admin)
        return True

    def open_audit(self) -> bool:
        if not self.session.require(Action.VIEW_AUDIT, where="audit page"):
            return False
        if self.quality is None:
            self.quality = QualityPage(self.controller)
            self.quality.back.clicked.connect(self._quality_back)
            self.quality.sign_out_button.clicked.connect(lambda: self.session.sign_out("user"))
            self.pages.addWidget(self.quality)
        self.quality.back.setVisible(self.session.may(Action.PROVISION))
        detail = getattr(self.quality.view, "detail", None)
        if detail is not None and hasattr(detail, "revoker"):
            detail.revoker = self._revoke if self.session.may(Action.REVOKE) else None
        self.pages.setCurrentWidget(self.quality)
        return True

    def _revoke(self, cert_serial: str, reason: str, note: str) -> str | None:
        """The audit view's revocation, by the signed-in operator; None once done."""
        if not self.session.require(Action.REVOKE, where="audit view") or self.session.operator is None:
            return "your role may not revoke certificates"
        try:
            self.controller.station.store.revoke(cert_serial, reason=reason, note=note,
                                                 operator=self.session.operator.badge_id)
        except (ValueError, StationError) as exc:
            return str(exc)
        return None

    def _quality_back(self) -> None:
        if self.session.may(Action.PROVISION):
            self.show_line()

    def current_page(self) -> QWidget | None:
        return self.pages.currentWidget()

    # -- scans ---------------------------------------------------------------------------------

    def route_scan(self, scan: Scan) -> None:
        """Badge to the session, work order to the banner, unit label to a slot."""
        if scan.kind is ScanKind.BADGE:
            self.pages.setCurrentWidget(self.sign_in)
            self.session.badge_scanned(scan.text)
        elif self.session.operator is None:
            self.sign_in.message.show_notice("Scan your badge first.", "attention")
        elif scan.kind is ScanKind.WORK_ORDER:
            if self.session.require(Action.PROVISION, where="work order scan"):
                self.controller.select_work_order(scan.text)
        elif scan.kind is ScanKind.UNIT_LABEL:
            self.controller.bind_label(scan.text)
        else:
            self.line.notice.show_notice(
                f"Not recognised: {scan.text}. Scan a work order, a badge or a unit label.", "attention")

    # -- kiosk ---------------------------------------------------------------------------------

    def show_station(self) -> None:
        """Show the window as configured: full screen and frameless in kiosk mode."""
        if self.kiosk:
            self.showFullScreen()
        else:
            self.resize(1366, 860)
            self.show()

    def leave_kiosk(self) -> None:
        if self.session.require(Action.LEAVE_KIOSK, where="leave kiosk button"):
            self.session.note("kiosk_left", where="leave kiosk button")
            self._may_close = True
            self.close()

    def request_quit(self, where: str) -> bool:
        """A quit shortcut or the close button: allowed outside the kiosk or for an admin."""
        if not self.kiosk or self.session.may(Action.LEAVE_KIOSK):
            self._may_close = True
            self.close()
            return True
        self.session.refuse(Action.LEAVE_KIOSK, where=where)
        return False

    def closeEvent(self, event: QCloseEvent) -> None:  # noqa: N802
        if self.kiosk and not self._may_close and not self.session.may(Action.LEAVE_KIOSK):
            event.ignore()
            self.session.refuse(Action.LEAVE_KIOSK, where="window close")
            return
        self.scanner.enabled = False
        event.accept()

    def changeEvent(self, event: QEvent) -> None:  # noqa: N802
        if (self.kiosk and event.type() == QEvent.Type.WindowStateChange
                and self.windowState() & Qt.WindowState.WindowMinimized):
            self.showFullScreen()  # minimising is ignored in the kiosk
        super().changeEvent(event)


_QUIT_KEYS = {
    (Qt.Key.Key_F4, Qt.KeyboardModifier.AltModifier): "Alt+F4",
    (Qt.Key.Key_Q, Qt.KeyboardModifier.ControlModifier): "Ctrl+Q",
    (Qt.Key.Key_W, Qt.KeyboardModifier.ControlModifier): "Ctrl+W",
}


_NO_MODS: Final = Qt.KeyboardModifier.NoModifier


class StationKeys(QObject):
    """Application-level filter for the station's function keys (F5 start all, F9 audit, F10
    configuration, F12 sign out, Ctrl+1..9 a slot).

    Not QShortcuts: a shortcut needs a focused widget in an active window, and right after a scan
    changes the page or enables the buttons there briefly is none, so an F5 pressed then was lost.
    A key pressed anywhere in the window works, whatever has the focus."""

    def __init__(self, window: QWidget, keys: dict[tuple[int, Qt.KeyboardModifier], Callable[[], object]],
                 parent: QObject | None = None) -> None:
        super().__init__(parent)
        self._window = window
        self._keys = keys

    def eventFilter(self, watched: QObject, event: QEvent) -> bool:  # noqa: N802 (Qt override)
        if event.type() != QEvent.Type.KeyPress or not isinstance(watched, QWidget):
            return False
        if watched is not self._window and watched.window() is not self._window:
            return False  # another window's keys (a dialog) are its own
        assert isinstance(event, QKeyEvent)
        mods = event.modifiers() & (Qt.KeyboardModifier.ControlModifier | Qt.KeyboardModifier.AltModifier
                                    | Qt.KeyboardModifier.ShiftModifier)
        action = self._keys.get((event.key(), Qt.KeyboardModifier(mods)))
        if action is None or event.isAutoRepeat():
            return False
        action()
        event.accept()
        return True


class KioskGuard(QObject):
    """Application-level filter: the usual quit shortcuts never reach a widget in the kiosk."""

    def __init__(self, window: MainWindow, parent: QObject | None = None) -> None:
        super().__init__(parent)
        self._window = window
        self._last: int | None = None

    def eventFilter(self, watched: QObject, event: QEvent) -> bool:  # noqa: N802 (Qt override)
        if event.type() not in (QEvent.Type.KeyPress, QEvent.Type.ShortcutOverride):
            return False
        assert isinstance(event, QKeyEvent)
        mods = event.modifiers() & (Qt.KeyboardModifier.AltModifier | Qt.KeyboardModifier.ControlModifier)
        name = _QUIT_KEYS.get((Qt.Key(event.key()), mods))
        if name is None:
            return False
        if event.type() == QEvent.Type.KeyPress:
            self._window.request_quit(name)
        event.accept()
        return True


def selected_view(window: MainWindow, row: int) -> object:
    """The slot view behind a tile (tests and screenshots read the model, not pixels)."""
    model = window.controller.slot_model
    return model.data(model.index(row, 0), VIEW_ROLE)
