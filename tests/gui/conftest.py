"""GUI tests drive the real window offscreen over SoftHSM, SQLite and virtual devices on ptys."""

from __future__ import annotations

import os

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")

from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

import pytest
from PySide6.QtCore import Qt
from PySide6.QtWidgets import QWidget
from pytestqt.qtbot import QtBot

from fixtures.softhsm import TestCa
from fixtures.virtual_dut import Faults, virtual_devices
from station.app import open_station
from station.config import ScannerConfig, SlotConfig
from station.gui.app import build_window, close_window
from station.gui.embedded import DEMO_OPERATORS, StationParts, demo_work_orders
from station.gui.window import MainWindow
from station.signing import HsmSigner
from station.transport import LinkPolicy

WindowFactory = Callable[..., MainWindow]


@pytest.fixture
def make_window(qtbot: QtBot, softhsm_ca: TestCa, tmp_path: Path) -> Iterator[WindowFactory]:
    """Build the real window over ``faults`` virtual devices; everything is closed afterwards."""
    stack: list[tuple[MainWindow, object]] = []

    @contextmanager
    def parts(faults: Sequence[Faults | None], places: Sequence[tuple[int, int]] | None = None,
              scanner: ScannerConfig | None = None) -> Iterator[StationParts]:
        signer = HsmSigner.open(module_path=softhsm_ca.module_path, token_label=softhsm_ca.token_label,
                                pin_source=softhsm_ca.pin_source(), key_label=softhsm_ca.key_label,
                                ca_chain_path=softhsm_ca.ca_dir / "chain.pem")
        with open_station(station_id="test-station", signer=signer, database=tmp_path / "audit.db") \
                as station, virtual_devices(len(faults), faults=[f or Faults() for f in faults],
                                            key_delay=0.05) as devices:
            for badge, name, role, pin in DEMO_OPERATORS:
                station.store.add_operator(badge_id=badge, name=name, role=role, pin=pin)
            yield StationParts(
                station=station, work_orders=demo_work_orders(len(faults)), database="test",
                slots=[SlotConfig(name=str(i), port=d.port,
                                  row=places[i - 1][0] if places else None,
                                  column=places[i - 1][1] if places else None)
                       for i, d in enumerate(devices, 1)],
                mode="test", policy=LinkPolicy(scale=0.2), devices=devices,
                scanner=scanner or ScannerConfig())

    def factory(faults: Sequence[Faults | None] = (None,) * 4, *, kiosk: bool = False,
                idle_timeout_s: float = 300.0,
                places: Sequence[tuple[int, int]] | None = None,
                scanner: ScannerConfig | None = None) -> MainWindow:
        cm = parts(faults, places, scanner)
        built = cm.__enter__()
        window = build_window(built, kiosk=kiosk, idle_timeout_s=idle_timeout_s)
        qtbot.addWidget(window)
        window.resize(1366, 860)
        window.show()
        stack.append((window, cm))
        return window

    yield factory
    for window, cm in reversed(stack):
        window.kiosk = False
        window.close()
        close_window(window)
        cm.__exit__(None, None, None)  # type: ignore[attr-defined]


def scan(qtbot: QtBot, widget: QWidget, text: str) -> None:
    """What a scanner does: fast keystrokes and Enter, into the window, not into a text box."""
    qtbot.keyClicks(widget, text)
    qtbot.keyClick(widget, Qt.Key.Key_Return)


def sign_in(qtbot: QtBot, window: MainWindow, badge: str = "B-1001", pin: str = "1234") -> None:
    scan(qtbot, window, badge)
    qtbot.waitUntil(lambda: window.sign_in.pin.hasFocus() or window.session.pending_badge == badge)
    qtbot.keyClicks(window.sign_in.pin, pin)
    qtbot.keyClick(window.sign_in.pin, Qt.Key.Key_Return)
