"""Put a window on a station: build the session, controller, scanner filter and main window."""

from __future__ import annotations

import math
import sys

from PySide6.QtWidgets import QApplication

from station.gui.controller import LineController
from station.gui.embedded import StationParts
from station.gui.scanner import ScanClassifier, ScannerFilter, ScanPatterns
from station.gui.session import Session
from station.gui.window import MainWindow, StationInfo


def application() -> QApplication:
    """The process's QApplication (made once)."""
    app = QApplication.instance()
    if isinstance(app, QApplication):
        return app
    app = QApplication(sys.argv[:1])
    app.setApplicationName("station")
    return app


def build_window(parts: StationParts, *, kiosk: bool = False, idle_timeout_s: float = 300.0,
                 columns: int | None = None) -> MainWindow:
    """The whole GUI over ``parts``; call :func:`close_window` (or close the window) to stop it."""
    application()
    session = Session(parts.station.store, idle_timeout_s=idle_timeout_s)
    controller = LineController(parts.station, parts.slots, session, work_orders=parts.work_orders,
                                policy=parts.policy)
    session.setParent(controller)
    info = StationInfo(
        station_id=parts.station.station_id, database=parts.database, token_label=parts.token_label,
        key_label=parts.key_label, mode=parts.mode, sign_in_hint=parts.sign_in_hint,
        settings=(("Idle sign-out", f"{idle_timeout_s:.0f} s"), ("Kiosk", "yes" if kiosk else "no")),
    )
    n = len(parts.slots)
    cols = columns or (n if n <= 4 else math.ceil(n / 2) if n <= 8 else 4)
    placed = [(s.row, s.column) for s in parts.slots]
    positions = [(r, c) for r, c in placed if r is not None and c is not None]  # the fixture's layout
    patterns = ScanPatterns(work_order=parts.scanner.work_order, badge=parts.scanner.badge,
                            unit_label=parts.scanner.unit_label, prefix=parts.scanner.prefix)
    scanner = ScannerFilter(ScanClassifier(patterns=patterns))
    window = MainWindow(controller, scanner, info, kiosk=kiosk, columns=cols,
                        positions=positions if len(positions) == n and columns is None else None)
    controller.setParent(window)
    return window


def close_window(window: MainWindow) -> None:
    """Stop the slot threads and take the filters off the application."""
    window.controller.shutdown()
    app = QApplication.instance()
    if app is not None:
        for f in (window.station_keys, window.scanner, window.activity, window.kiosk_guard):
            app.removeEventFilter(f)


def run_window(parts: StationParts, *, kiosk: bool = False, idle_timeout_s: float = 300.0) -> int:
    """Show the window and run the event loop until it is closed (by an admin, in the kiosk)."""
    app = application()
    window = build_window(parts, kiosk=kiosk, idle_timeout_s=idle_timeout_s)
    window.show_station()
    try:
        return app.exec()
    finally:
        window.session.sign_out("exit")
        close_window(window)
