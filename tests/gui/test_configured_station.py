"""``station gui --config``: the window over a station built from its TOML file, with operators added
by ``station operator add`` (the way a site sets one up), provisioning real virtual devices."""

from __future__ import annotations

from pathlib import Path

import pytest
from PySide6.QtCore import Qt
from pytestqt.qtbot import QtBot

from fixtures.softhsm import TestCa
from fixtures.virtual_dut import virtual_devices
from station.cli import main as station_main
from station.domain import UnitStatus
from station.gui.app import build_window, close_window
from station.gui.embedded import configured_station
from station.gui.slots import SlotState
from station.gui.window import LinePage
from tests.gui.conftest import scan, sign_in


def _config(tmp_path: Path, ca: TestCa, ports: list[str]) -> Path:
    slots = "".join(f'\n[[slots]]\nname = "{i}"\nport = "{p}"\n' for i, p in enumerate(ports, 1))
    path = tmp_path / "station.toml"
    path.write_text(f"""
[station]
id = "gui-station"

[hsm]
module = "{ca.module_path}"
token_label = "{ca.token_label}"
key_label = "{ca.key_label}"
pin_source = "env:TEST_GUI_HSM_PIN"
ca_chain = "{ca.ca_dir / 'chain.pem'}"

[database]
url = "audit.db"

[work_order]
number = "WO-7001"
product = "meter"
profile = "tls-client"
quantity = 10
{slots}""")
    return path


def test_configured_station_provisions_by_scans(qtbot: QtBot, softhsm_ca: TestCa, tmp_path: Path,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TEST_GUI_HSM_PIN", softhsm_ca.pin)
    db = tmp_path / "audit.db"
    monkeypatch.setenv("OP_PIN", "4321")
    assert station_main(["operator", "add", "--db", str(db), "--badge", "B-7001", "--name", "Ann Admin",
                         "--role", "admin", "--pin-env", "OP_PIN"]) == 0
    monkeypatch.setenv("STATION_OPERATOR_PIN", "4321")
    monkeypatch.setenv("OP_PIN", "2468")
    assert station_main(["--as", "B-7001", "operator", "add", "--db", str(db), "--badge", "B-2002",
                         "--name", "Tim Tech", "--role", "technician", "--pin-env", "OP_PIN"]) == 0

    with virtual_devices(2, key_delay=0.02) as devices, \
            configured_station(_config(tmp_path, softhsm_ca, [d.port for d in devices])) as parts:
        window = build_window(parts, kiosk=False, idle_timeout_s=300.0)
        qtbot.addWidget(window)
        window.show()
        try:
            sign_in(qtbot, window, badge="B-2002", pin="2468")
            qtbot.waitUntil(lambda: isinstance(window.current_page(), LinePage))
            scan(qtbot, window, "WO-7001")  # the configured work order
            qtbot.waitUntil(lambda: window.controller.work_order is not None)
            qtbot.wait(300)  # past the scanner's inter-key window
            qtbot.keyClick(window, Qt.Key.Key_F5)  # start all, keyboard only
            model = window.controller.slot_model
            qtbot.waitUntil(lambda: all(v.state is SlotState.PASS for v in model.views()),
                            timeout=30_000)
            units = list(parts.station.store.list_units(work_order="WO-7001"))
            assert sorted(u.status for u in units) == [UnitStatus.PROVISIONED] * 2
            assert {u.operator for u in units} == {"B-2002"}
            assert all(d.certificate_der is not None for d in devices)
        finally:
            window.close()
            close_window(window)
