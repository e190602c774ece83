"""Admin actions from the command line: a technician is refused and the refusal is logged."""

from __future__ import annotations

import secrets
from pathlib import Path

import pytest

from fixtures.softhsm import TestCa
from station.audit import open_audit_store
from station.cli import main


def _events(db: Path, kind: str) -> list[tuple[str | None, str, str | None]]:
    store = open_audit_store(db, station_id="reader")
    try:
        return [(e.operator, e.outcome, e.error_code) for e in store.events() if e.kind == kind]
    finally:
        store.close()


@pytest.fixture
def station_db(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A station database with a bootstrapped admin (B-9) and a technician (B-1)."""
    db = tmp_path / "audit.db"
    monkeypatch.setenv("NEW_PIN", "9999")
    assert main(["operator", "add", "--db", str(db), "--badge", "B-9", "--name", "Ada Admin",
                 "--role", "admin", "--pin-env", "NEW_PIN"]) == 0  # the first admin bootstraps
    monkeypatch.setenv("NEW_PIN", "1111")
    monkeypatch.setenv("STATION_OPERATOR_PIN", "9999")
    assert main(["--as", "B-9", "operator", "add", "--db", str(db), "--badge", "B-1",
                 "--name", "Tom Tech", "--role", "technician", "--pin-env", "NEW_PIN"]) == 0
    return db


def test_only_the_first_admin_bootstraps(station_db: Path, monkeypatch: pytest.MonkeyPatch,
                                         capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("NEW_PIN", "2222")
    assert main(["operator", "add", "--db", str(station_db), "--badge", "B-X", "--name", "Eve",
                 "--role", "admin", "--pin-env", "NEW_PIN"]) == 2
    assert "needs an admin" in capsys.readouterr().err
    assert main(["operator", "list", "--db", str(station_db)]) == 0
    listed = capsys.readouterr().out
    assert "B-9" in listed and "B-1" in listed and "B-X" not in listed
    assert (None, "failed", "role_refused") in _events(station_db, "refusal")


def test_technician_is_refused_ca_and_operator_admin(station_db: Path, tmp_path: Path,
                                                      softhsm_ca: TestCa,
                                                      monkeypatch: pytest.MonkeyPatch,
                                                      capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("STATION_OPERATOR_PIN", "1111")  # the technician's own, valid PIN
    monkeypatch.setenv("TEST_HSM_PIN", softhsm_ca.pin)
    ca_dir = tmp_path / "new-ca"
    code = main(["--as", "B-1", "--station-db", str(station_db), "ca", "init",
                 "--module", softhsm_ca.module_path, "--token-label", softhsm_ca.token_label,
                 "--pin", "env:TEST_HSM_PIN", "--key-label", f"rogue-{secrets.token_hex(3)}",
                 "--ca-dir", str(ca_dir), "--subject", "CN=Rogue CA", "--self-signed"])
    err = capsys.readouterr().err
    assert code == 2
    assert "station ca: station ca init needs an admin; B-1 is signed in as technician" in err
    assert not ca_dir.exists()  # nothing was created
    monkeypatch.setenv("NEW_PIN", "3333")
    assert main(["--as", "B-1", "operator", "add", "--db", str(station_db), "--badge", "B-2",
                 "--name", "Mallory", "--role", "admin", "--pin-env", "NEW_PIN"]) == 2
    refusals = _events(station_db, "refusal")
    assert refusals.count(("B-1", "failed", "role_refused")) == 2
    assert softhsm_ca.pin not in err and "1111" not in err


def test_admin_may_init_a_ca_and_a_wrong_pin_is_refused(station_db: Path, tmp_path: Path,
                                                         softhsm_ca: TestCa,
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TEST_HSM_PIN", softhsm_ca.pin)
    args = ["ca", "init", "--module", softhsm_ca.module_path, "--token-label", softhsm_ca.token_label,
            "--pin", "env:TEST_HSM_PIN", "--key-label", f"line-ca-{secrets.token_hex(3)}",
            "--ca-dir", str(tmp_path / "ca"), "--subject", "CN=Line 2 CA,O=Example", "--self-signed"]
    monkeypatch.setenv("STATION_OPERATOR_PIN", "0000")
    assert main(["--as", "B-9", "--station-db", str(station_db), *args]) == 2  # wrong PIN
    assert ("B-9", "failed", "bad_credentials") in _events(station_db, "sign_in")
    monkeypatch.setenv("STATION_OPERATOR_PIN", "9999")
    assert main(["--as", "B-9", "--station-db", str(station_db), *args]) == 0
    assert (tmp_path / "ca" / "ca.pem").exists()
    assert ("B-9", "ok", None) in _events(station_db, "admin_action")


def test_admin_commands_need_the_station_database(capsys: pytest.CaptureFixture[str],
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("STATION_DB", raising=False)
    with pytest.raises(SystemExit) as info:
        main(["--as", "B-9", "ca", "import-chain", "--ca-dir", "/tmp/x", "chain.pem"])
    assert "needs the station's audit database" in str(info.value)
