"""The whole station over the real parts: pseudo-terminals, SoftHSM, SQLite.

No fakes here: virtual devices speak the wire protocol on ptys opened with pyserial, the CA key lives
in a SoftHSM token, the audit log is a durable SQLite file.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterator
from pathlib import Path

import pytest
from cryptography import x509

from fixtures.softhsm import TestCa
from fixtures.virtual_dut import CLONE_KEY_PEM, Faults, VirtualDevice, virtual_devices
from station.app import Station, open_station
from station.audit import verify_chain
from station.cli import main as station_main
from station.config import SlotConfig
from station.domain import Step, UnitStatus, WorkOrder
from station.signing import HsmSigner
from station.transport import LinkPolicy
from station.workflow import UnitResult

FAST = LinkPolicy(scale=0.3)
"""Shorter timeouts so silent-device cases finish quickly; still far above a pty's latency."""


def work_order(number: str = "WO-E2E", quantity: int = 1000) -> WorkOrder:
    return WorkOrder(
        number=number, product="sensor-v2", profile="tls-client", quantity=quantity,
        serial_format="SNS2-{seq:06d}",
        commissioning=(("wifi.ssid", "line-1", False), ("wifi.passphrase", "pa55-secret-xyz", True)),
    )


@pytest.fixture
def station(tmp_path: Path, softhsm_ca: TestCa) -> Iterator[Station]:
    signer = HsmSigner.open(
        module_path=softhsm_ca.module_path, token_label=softhsm_ca.token_label,
        pin_source=softhsm_ca.pin_source(), key_label=softhsm_ca.key_label,
        ca_chain_path=softhsm_ca.ca_dir / "chain.pem",
    )
    with open_station(station_id="e2e", signer=signer, database=tmp_path / "audit.db") as st:
        yield st


def provision(station: Station, devices: list[VirtualDevice], wo: WorkOrder, *, retries: int = 0,
              seen: list[UnitResult] | None = None) -> list[UnitResult]:
    """One attempt per slot unless ``retries`` (the line's own requeue of transient failures)."""
    slots = [SlotConfig(name=str(i), port=d.port) for i, d in enumerate(devices, start=1)]
    return station.line.run(station.slot_runs(slots, operator="op-e2e", work_order=wo, policy=FAST),
                            retries=retries, on_result=None if seen is None else seen.append)


def test_transient_link_failures_are_tried_again_on_the_same_unit(station: Station) -> None:
    """HMI.md: a transient failure (here a device that restarts mid-session) is requeued a bounded
    number of times on the same unit, each attempt recorded; a silent device is given up on."""
    seen: list[UnitResult] = []
    with virtual_devices(2, faults=[Faults(reboot_at="get_csr"), Faults(silent_at="get_csr")],
                         key_delay=0.02) as devices:
        rebooted, silent = provision(station, devices, work_order(), retries=2, seen=seen)
    assert rebooted.ok and not silent.ok
    by_slot = {s: [r for r in seen if r.slot == s] for s in ("1", "2")}
    assert [r.error_code for r in by_slot["1"]] == ["device_rebooted", None]
    assert [r.error_code for r in by_slot["2"]] == ["device_timeout"] * 3  # 1 + 2 retries
    assert len({r.hardware_id for r in by_slot["1"]}) == 1  # the same unit each time
    for r in seen:
        unit = station.store.get_unit(r.unit_id)  # type: ignore[arg-type]
        assert unit is not None  # every attempt is in the log


def test_sixteen_devices_in_parallel(station: Station, softhsm_ca: TestCa, tmp_path: Path) -> None:
    ca_cert = softhsm_ca.ca_cert()
    with virtual_devices(16, key_delay=0.02) as devices:
        results = provision(station, devices, work_order())
        assert [r.ok for r in results] == [True] * 16, [r.message for r in results if not r.ok]
        for device, result in zip(devices, results, strict=True):
            assert device.certificate_der == result.cert_der  # the device holds what the log holds
            assert device.lifecycle.name == "LOCKED"
            cert = x509.load_der_x509_certificate(device.certificate_der)
            cert.verify_directly_issued_by(ca_cert)  # chains to the CA
            assert cert.subject.get_attributes_for_oid(x509.NameOID.COMMON_NAME)[0].value == \
                result.unit_serial

    db = tmp_path / "audit.db"
    rows = sqlite3.connect(db).execute(
        "SELECT status, count(*) FROM units GROUP BY status").fetchall()
    assert rows == [("provisioned", 16)]
    assert len({r.cert_serial for r in results}) == 16
    assert verify_chain(db).ok
    assert station_main(["audit", "verify", "--db", str(db), "--quiet"]) == 0

    # An edited event row is found and named.
    con = sqlite3.connect(db)
    seq = con.execute(
        "SELECT seq FROM events WHERE kind = 'step' ORDER BY seq LIMIT 1 OFFSET 20").fetchone()[0]
    con.execute("UPDATE events SET duration_ms = duration_ms + 1 WHERE seq = ?", (seq,))
    con.commit()
    con.close()
    verdict = verify_chain(db)
    assert not verdict.ok and verdict.seq == seq
    assert station_main(["audit", "verify", "--db", str(db), "--quiet"]) == 1


# Each fault from the protocol issue, with the step and code the station must record.
FAULT_CASES: list[tuple[str, Faults, Step, str]] = [
    ("unplug", Faults(unplug_at="generate_key"), Step.GENERATE_KEY, "device_disconnected"),
    ("silent", Faults(silent_at="get_csr"), Step.GET_CSR, "device_timeout"),
    ("garbage-heavy", Faults(corrupt_rate=0.3, seed=3), Step.IDENTIFY, "bad_link"),
    ("bad-csr-signature", Faults(bad_csr_signature=True), Step.PRE_ISSUANCE, "csr_signature_invalid"),
    ("weak-key", Faults(csr_key="rsa1024"), Step.PRE_ISSUANCE, "key_algorithm_not_allowed"),
    ("wrong-curve", Faults(csr_key="secp256k1"), Step.PRE_ISSUANCE, "key_curve_not_allowed"),
    ("locked", Faults(report_locked=True), Step.CHECK, "device_locked"),
    ("reject-cert", Faults(reject_cert=True), Step.WRITE_CERT, "device_cert_rejected"),
    ("bad-challenge", Faults(bad_challenge=True), Step.PROVE_POSSESSION, "pop_failed"),
    ("oversize", Faults(oversize_at="get_csr"), Step.GET_CSR, "oversize_frame"),
    ("wrong-version", Faults(wrong_version=9), Step.IDENTIFY, "protocol_version"),
    ("flood", Faults(flood_at="generate_key"), Step.GENERATE_KEY, "bad_link"),
]


def test_every_device_fault_is_a_recorded_failure_while_others_finish(
        station: Station, tmp_path: Path) -> None:
    healthy = 3
    plans: list[Faults | None] = [case[1] for case in FAULT_CASES] + [None] * healthy
    with virtual_devices(len(plans), faults=plans, key_delay=0.02) as devices:
        results = provision(station, devices, work_order())
    for (name, _, step, code), result in zip(FAULT_CASES, results, strict=False):
        assert not result.ok, name
        assert (result.failed_step, result.error_code) == (step, code), (name, result.message)
        assert result.message and "Traceback" not in result.message
        assert result.hint
        unit = station.store.get_unit(result.unit_id)  # type: ignore[arg-type]
        assert unit is not None, name
        if name == "reject-cert":  # issued, never installed: kept issued so it is re-sent later
            assert unit.status is UnitStatus.ISSUED
        else:
            assert unit.status is UnitStatus.FAILED, name
            assert (unit.failed_step, unit.error_code) == (step, code), name
    assert all(r.ok for r in results[len(FAULT_CASES):])
    assert verify_chain(tmp_path / "audit.db").ok


def test_clone_duplicate_hardware_id_and_exhausted_work_order_are_refused(
        station: Station, tmp_path: Path) -> None:
    wo = work_order("WO-SMALL", quantity=2)
    clone = Faults(clone_key_pem=CLONE_KEY_PEM)
    with virtual_devices(2, faults=[clone, clone], key_delay=0.01) as clones:
        first, second = (provision(station, [d], wo)[0] for d in clones)
    assert first.ok
    assert not second.ok and second.error_code == "key_already_issued"
    assert second.failed_step is Step.PRE_ISSUANCE

    twin_id = "00112233aabbccdd"
    with virtual_devices(1, hardware_id=twin_id, key_delay=0.01) as (a,), \
            virtual_devices(1, hardware_id=twin_id, key_delay=0.01) as (b,):
        assert provision(station, [a], wo)[0].ok
        twin = provision(station, [b], wo)[0]
    assert not twin.ok and twin.error_code == "identity_conflict"
    assert b.certificate_der is None

    with virtual_devices(1, key_delay=0.01) as (late,):
        refused = provision(station, [late], wo)[0]
    assert not refused.ok and refused.error_code == "quota_exhausted"
    assert refused.message == "The work order has no units left."
    assert late.certificate_der is None and late.public_key_der is None  # refused before the key
    counts = station.store.work_order_counts("WO-SMALL")
    assert counts is not None and counts.remaining == 0
    assert verify_chain(tmp_path / "audit.db").ok


def test_secrets_never_reach_the_database_file(station: Station, tmp_path: Path) -> None:
    with virtual_devices(2, key_delay=0.01) as devices:
        results = provision(station, devices, work_order())
        assert all(r.ok for r in results)
        assert devices[0].config["wifi.passphrase"] == b"pa55-secret-xyz"  # the device got it
    station.close()
    for path in tmp_path.glob("audit.db*"):
        assert b"pa55-secret-xyz" not in path.read_bytes(), path


def test_issued_but_not_installed_is_resumed_with_the_same_certificate(
        station: Station, tmp_path: Path) -> None:
    """Unplugged after signing: the log keeps the unit issued; reseated, it gets the same certificate."""
    state = tmp_path / "dut.json"
    wo = work_order()
    with VirtualDevice(state_file=state, faults=Faults(unplug_at="put_cert"), key_delay=0.0) as dut:
        (first,) = provision(station, [dut], wo)
    assert not first.ok and first.failed_step is Step.WRITE_CERT
    assert first.error_code == "device_disconnected" and first.cert_der is not None
    unit = station.store.get_unit(first.unit_id)  # type: ignore[arg-type]
    assert unit is not None and unit.status is UnitStatus.ISSUED  # visible as issued-not-installed

    with VirtualDevice(state_file=state, key_delay=0.0) as reseated:  # same unit, same flash
        (second,) = provision(station, [reseated], wo)
        assert second.ok and second.resumed, second.message
        assert second.unit_id == first.unit_id
        assert reseated.certificate_der == first.cert_der  # the same certificate, not a new one
        assert reseated.key_generations == 0  # no second key
    units = list(station.store.list_units(work_order=wo.number))
    assert len(units) == 1 and units[0].status is UnitStatus.PROVISIONED
    assert verify_chain(tmp_path / "audit.db").ok


def test_a_unit_that_lost_its_key_after_issuance_starts_afresh(station: Station, tmp_path: Path) -> None:
    """The certificate of a key the device no longer holds is settled (for revocation), never re-sent."""
    state = tmp_path / "dut.json"
    wo = work_order()
    with VirtualDevice(state_file=state, faults=Faults(unplug_at="put_cert"), key_delay=0.0) as dut:
        (first,) = provision(station, [dut], wo)
    assert not first.ok
    doc = json.loads(state.read_text())
    doc.update(private_key_pem=None, lifecycle="BLANK")  # a factory reset on the bench
    state.write_text(json.dumps(doc))
    with VirtualDevice(state_file=state, key_delay=0.0) as reset:
        (second,) = provision(station, [reset], wo)
        assert second.ok and not second.resumed
        assert reset.certificate_der == second.cert_der != first.cert_der
    old = station.store.get_unit(first.unit_id)  # type: ignore[arg-type]
    assert old is not None and old.status is UnitStatus.FAILED
    assert old.error_code == "certificate_orphaned"
    assert verify_chain(tmp_path / "audit.db").ok
