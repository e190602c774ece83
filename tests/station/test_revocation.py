"""Revocation: a quality engineer or admin revokes a unit's certificate; the CA in the HSM signs a CRL.

Real parts: the station provisions virtual devices through the session's SoftHSM CA into a SQLite
file; the CLI is the one operators run, with roles checked against the operators table.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from cryptography import x509

from fixtures.softhsm import TestCa
from fixtures.virtual_dut import virtual_devices
from station.app import open_station
from station.audit import open_audit_store, verify_chain
from station.cli import main
from station.config import SlotConfig
from station.domain import UnitStatus, WorkOrder
from station.signing import HsmSigner

WO = WorkOrder(number="WO-RV", product="sensor", profile="tls-client", quantity=10)


@pytest.fixture
def provisioned(tmp_path: Path, softhsm_ca: TestCa, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Three provisioned units, a quality engineer (B-5, PIN 5555) and a technician (B-1, 1111);
    writes station.toml next to the database and returns its path."""
    db = tmp_path / "audit.db"
    signer = HsmSigner.open(module_path=softhsm_ca.module_path, token_label=softhsm_ca.token_label,
                            pin_source=softhsm_ca.pin_source(), key_label=softhsm_ca.key_label,
                            ca_chain_path=softhsm_ca.ca_dir / "chain.pem")
    with open_station(station_id="st-rv", signer=signer, database=db, work_order=WO) as station, \
            virtual_devices(3) as devices:
        slots = [SlotConfig(name=str(i), port=d.port) for i, d in enumerate(devices, 1)]
        assert all(r.ok for r in station.line.run(station.slot_runs(slots, operator="op",
                                                                    work_order=WO)))
    store = open_audit_store(db, station_id="setup")
    try:
        store.add_operator(badge_id="B-9", name="Ada Admin", role="admin", pin="9999")
        store.add_operator(badge_id="B-5", name="Quinn Quality", role="quality", pin="5555")
        store.add_operator(badge_id="B-1", name="Tom Tech", role="technician", pin="1111")
    finally:
        store.close()
    monkeypatch.setenv("TEST_HSM_PIN", softhsm_ca.pin)
    config = tmp_path / "station.toml"
    config.write_text(f"""
[station]
id = "st-rv"
[hsm]
module = "{softhsm_ca.module_path}"
token_label = "{softhsm_ca.token_label}"
key_label = "{softhsm_ca.key_label}"
pin_source = "env:TEST_HSM_PIN"
ca_chain = "{softhsm_ca.ca_dir / 'chain.pem'}"
[database]
url = "{db}"
[work_order]
number = "WO-RV"
product = "sensor"
profile = "tls-client"
quantity = 10
[[slots]]
name = "1"
port = "/dev/null"
""")
    return config


def _units(db: Path) -> list[tuple[str, str, UnitStatus]]:
    store = open_audit_store(db, station_id="reader")
    try:
        return [(u.serial_number or "", u.cert_serial or "", u.status) for u in store.list_units()]
    finally:
        store.close()


def test_quality_revokes_and_the_ca_signs_a_crl_that_lists_it(
        provisioned: Path, softhsm_ca: TestCa, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    db = provisioned.parent / "audit.db"
    unit_serial, cert_serial, _ = _units(db)[1]
    monkeypatch.setenv("STATION_OPERATOR_PIN", "5555")
    assert main(["--as", "B-5", "audit", "revoke", "--db", str(db), "--serial", unit_serial,
                 "--reason", "key_compromise", "--note", "proof of possession failed in rework"]) == 0
    assert [s for _, _, s in _units(db)].count(UnitStatus.REVOKED) == 1
    assert main(["--as", "B-5", "audit", "revoke", "--db", str(db), "--serial", unit_serial,
                 "--reason", "key_compromise"]) == 1  # once is enough
    assert "already revoked" in capsys.readouterr().err
    assert verify_chain(db).ok  # the unit row and its revoked event agree

    out = provisioned.parent / "ca.crl"
    assert main(["--as", "B-5", "crl", "--config", str(provisioned), "--out", str(out)]) == 0
    crl = x509.load_der_x509_crl(out.read_bytes())
    assert crl.is_signature_valid(softhsm_ca.ca_cert().public_key())  # type: ignore[arg-type]
    assert crl.issuer == softhsm_ca.ca_cert().subject
    entry = crl.get_revoked_certificate_by_serial_number(int(cert_serial, 16))
    assert entry is not None
    assert entry.extensions.get_extension_for_class(x509.CRLReason).value.reason is \
        x509.ReasonFlags.key_compromise
    assert len(list(crl)) == 1

    store = open_audit_store(db, station_id="reader")
    try:
        events = [(e.kind, e.operator, e.detail.get("reason")) for e in store.events()
                  if e.kind in ("revoked", "crl_signed")]
    finally:
        store.close()
    assert events == [("revoked", "B-5", "key_compromise"), ("crl_signed", "B-5", None)]


def test_a_technician_may_not_revoke_and_the_refusal_is_logged(
        provisioned: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    db = provisioned.parent / "audit.db"
    unit_serial = _units(db)[0][0]
    monkeypatch.setenv("STATION_OPERATOR_PIN", "1111")
    code = main(["--as", "B-1", "audit", "revoke", "--db", str(db), "--serial", unit_serial,
                 "--reason", "superseded"])
    assert code != 0 and "B-1" in capsys.readouterr().err
    assert UnitStatus.REVOKED not in [s for _, _, s in _units(db)]
    store = open_audit_store(db, station_id="reader")
    try:
        refusals = [e for e in store.events() if e.kind == "refusal"]
    finally:
        store.close()
    assert refusals and refusals[-1].operator == "B-1"


def test_only_a_unit_with_a_certificate_can_be_revoked(provisioned: Path) -> None:
    store = open_audit_store(provisioned.parent / "audit.db", station_id="st-rv")
    try:
        with pytest.raises(ValueError, match="no unit"):
            store.revoke("NO-SUCH-UNIT", reason="unspecified", operator="B-9")
        unit = store.start_unit(work_order=WO, station="st-rv", slot="1", operator="op",
                                hardware_id="hw-without-cert")
        serial = store.next_unit_serial(unit)
        with pytest.raises(ValueError, match="no certificate"):
            store.revoke(serial, reason="unspecified", operator="B-9")
    finally:
        store.close()
