"""``station gui --screenshots DIR``: drive the real window through its main screens, offscreen.

It signs in by badge scan, scans a work order, provisions healthy virtual devices and one with a bad
CSR signature through SoftHSM and SQLite, and saves sign-in, idle, running, pass, fail, admin and
quality screens as PNG files. The same key presses a scanner would type are sent to the window.
"""

from __future__ import annotations

import importlib
import os
import time
from collections.abc import Callable
from pathlib import Path

from PySide6.QtCore import QCoreApplication, Qt
from PySide6.QtTest import QTest
from PySide6.QtWidgets import QApplication, QWidget

from fixtures.virtual_dut import Faults
from station.gui.app import build_window, close_window
from station.gui.embedded import embedded_station
from station.gui.slots import SlotState
from station.gui.window import MainWindow

SIZE = (1366, 860)


def pump_until(done: Callable[[], bool], timeout_s: float = 60.0) -> bool:
    """Process Qt events until ``done()`` or the timeout."""
    end = time.monotonic() + timeout_s
    while time.monotonic() < end:
        QCoreApplication.processEvents()
        if done():
            return True
        time.sleep(0.01)
    return done()


def scan(widget: QWidget, text: str) -> None:
    """Type like a scanner: the characters, then Enter, into whatever has focus."""
    QTest.keyClicks(widget, text)
    QTest.keyClick(widget, Qt.Key.Key_Return)
    QCoreApplication.processEvents()


def sign_in(window: MainWindow, badge: str, pin: str) -> None:
    scan(window, badge)
    QTest.keyClicks(window.sign_in.pin, pin)
    QTest.keyClick(window.sign_in.pin, Qt.Key.Key_Return)
    QCoreApplication.processEvents()


def _save(window: MainWindow, out_dir: Path, name: str, saved: list[Path]) -> None:
    pump_until(lambda: False, 0.15)
    path = out_dir / f"{name}.png"
    window.grab().save(str(path))
    saved.append(path)


def capture(out_dir: Path, *, data_dir: Path | None = None) -> list[Path]:
    """Write the screenshots into ``out_dir``; returns the files written."""
    os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
    out_dir.mkdir(parents=True, exist_ok=True)
    saved: list[Path] = []
    faults = [None, None, None, Faults(bad_csr_signature=True)]
    with embedded_station(units=4, data_dir=data_dir, faults=faults, key_delay=0.6) as parts:
        window = build_window(parts, idle_timeout_s=600)
        window.resize(*SIZE)
        window.show()
        try:
            _save(window, out_dir, "sign-in", saved)
            sign_in(window, "B-1001", "1234")
            scan(window, "WO-DEMO-1001")
            _save(window, out_dir, "idle", saved)
            model = window.controller.slot_model
            for row in range(3):
                window.controller.start_slot(row)
            pump_until(lambda: all(model.view(r).step_no >= 5 for r in range(3)), 30)
            _save(window, out_dir, "running", saved)
            pump_until(lambda: all(model.view(r).state is SlotState.PASS for r in range(3)), 60)
            _save(window, out_dir, "pass", saved)
            window.controller.start_slot(3)
            pump_until(lambda: model.view(3).state is SlotState.FAIL, 60)
            window.line.results.selectRow(0)
            window.line._result_clicked(window.controller.results_model.index(0, 0))
            _save(window, out_dir, "fail", saved)
            window.session.sign_out("user")
            sign_in(window, "B-9001", "9876")
            window.open_admin()
            _save(window, out_dir, "admin", saved)
            window.session.sign_out("user")
            sign_in(window, "B-2001", "2345")
            _save(window, out_dir, "quality", saved)
            window.session.sign_out("user")
            try:
                audit = importlib.import_module("station.gui.audit")
                saved.extend(audit.capture_audit_screenshots(parts.station.store, out_dir))
            except (ImportError, AttributeError):
                pass
        finally:
            window.kiosk = False
            window.close()
            close_window(window)
    app = QApplication.instance()
    if app is not None:
        app.processEvents()
    return saved
