"""The ``station`` command as scripts on the line call it."""

from __future__ import annotations

import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from fixtures.softhsm import TestCa
from fixtures.virtual_dut import Faults, virtual_devices
from station.audit import open_audit_store, verify_chain
from station.cli import main


def _station(*args: str) -> subprocess.CompletedProcess[str]:
    """Run the ``station`` command as line scripts do: its own process, its own SoftHSM config."""
    return subprocess.run([sys.executable, "-m", "station.cli", *args], capture_output=True, text=True,
                          timeout=120, check=False)


def test_demo_keeps_its_data_directory_and_reuses_the_ca(tmp_path: Path) -> None:
    data = tmp_path / "demo"
    first = _station("demo", "--units", "3", "--data-dir", str(data), "--key-delay", "0.01")
    assert first.returncode == 0, first.stderr
    assert "Audit chain: audit chain intact" in first.stdout
    assert (data / "audit.db").exists() and (data / "hsm" / "hsm-pin").stat().st_mode & 0o077 == 0
    chain = data / "hsm" / "issuing-ca" / "chain.pem"
    ca_before = chain.read_bytes()
    # A second run in the same directory uses the same token and CA and appends to the same log;
    # the injected fault is expected and the healthy unit passes, so the exit code is 0.
    second = _station("demo", "--units", "2", "--data-dir", str(data), "--key-delay", "0.01",
                      "--faults", "bad-csr")
    assert second.returncode == 0, second.stderr
    assert "FAIL at pre_issuance" in second.stdout
    assert chain.read_bytes() == ca_before
    rows = sqlite3.connect(data / "audit.db").execute(
        "SELECT status, count(*) FROM units GROUP BY status ORDER BY status").fetchall()
    assert rows == [("failed", 1), ("provisioned", 4)]
    assert verify_chain(data / "audit.db").ok
    hsm_pin = (data / "hsm" / "hsm-pin").read_text()
    assert hsm_pin not in first.stdout + first.stderr + second.stdout + second.stderr


def test_demo_rejects_an_unknown_fault(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        main(["demo", "--units", "1", "--faults", "gremlins"])
    assert "unknown fault gremlins" in str(info.value)


def _config(tmp_path: Path, ca: TestCa, ports: list[str], *, quantity: int = 10) -> Path:
    slots = "".join(f'\n[[slots]]\nname = "{i}"\nport = "{p}"\n' for i, p in enumerate(ports, 1))
    path = tmp_path / "station.toml"
    path.write_text(f"""
[station]
id = "cli-station"
operator = "op-7"

[hsm]
module = "{ca.module_path}"
token_label = "{ca.token_label}"
key_label = "{ca.key_label}"
pin_source = "env:TEST_STATION_PIN"
ca_chain = "{ca.ca_dir / 'chain.pem'}"

[database]
url = "audit.db"

[work_order]
number = "WO-CLI"
product = "meter"
profile = "aws-iot"
quantity = {quantity}

[[commissioning]]
key = "mqtt.endpoint"
value = "mqtts://example.invalid:8883"
{slots}""")
    return path


def test_provision_from_a_configuration_file(tmp_path: Path, softhsm_ca: TestCa,
                                             monkeypatch: pytest.MonkeyPatch,
                                             capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("TEST_STATION_PIN", softhsm_ca.pin)
    with virtual_devices(3, faults=[None, None, Faults(report_locked=True)], key_delay=0.01) as devs:
        config = _config(tmp_path, softhsm_ca, [d.port for d in devs])
        assert main(["provision", "--config", str(config)]) == 1  # one unit failed
        assert [d.certificate_der is not None for d in devs] == [True, True, False]
    out = capsys.readouterr().out
    assert "FAIL" in out and "already locked" in out
    assert softhsm_ca.pin not in out
    store = open_audit_store(tmp_path / "audit.db", station_id="reader")
    units = list(store.list_units(work_order="WO-CLI"))
    store.close()
    assert sorted(u.status for u in units) == ["failed", "provisioned", "provisioned"]
    assert {u.operator for u in units} == {"op-7"}
    assert {u.profile for u in units if u.status == "provisioned"} == {"aws-iot"}
    assert main(["audit", "show", "--db", str(tmp_path / "audit.db"),
                 "--serial", units[0].serial_number or units[1].serial_number or ""]) == 0


def test_wrong_pin_is_one_clear_line_without_the_pin(tmp_path: Path, softhsm_ca: TestCa,
                                                     monkeypatch: pytest.MonkeyPatch,
                                                     capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("TEST_STATION_PIN", "not-the-pin-4711")
    config = _config(tmp_path, softhsm_ca, ["/dev/null-port"])
    assert main(["provision", "--config", str(config)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("station provision: ") and "PIN" in err
    assert "not-the-pin-4711" not in err and "Traceback" not in err


def test_bad_configuration_stops_the_station(tmp_path: Path, softhsm_ca: TestCa,
                                             capsys: pytest.CaptureFixture[str]) -> None:
    config = _config(tmp_path, softhsm_ca, ["/dev/x"])
    config.write_text(config.read_text().replace("quantity = 10", "quantity = -5"))
    assert main(["provision", "--config", str(config)]) == 2
    assert "work_order.quantity: must not be negative" in capsys.readouterr().err
    assert not (tmp_path / "audit.db").exists()


def test_ports_lists_nothing_on_a_machine_without_adapters(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["ports", "--vid", "0483", "--pid", "5740"]) == 0
    assert "No matching serial ports." in capsys.readouterr().out
