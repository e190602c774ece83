"""The workflow's rules, fast, against in-memory fakes of the device, the signer and the audit store."""

from __future__ import annotations

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec

from station.domain import Step, UnitStatus, WorkOrder
from station.line import AuditWriter, Line, SlotRun
from station.workflow import Provisioner, SlotJob
from tests.station.fakes import FakeAuditStore, FakeDevice, FakeLink, FakeSigner

WO = WorkOrder(number="WO-1", product="sensor", profile="tls-client", quantity=100,
               commissioning=(("wifi.ssid", "factory", False), ("wifi.psk", "hunter2-secret", True)))


def job(slot: str = "1", work_order: WorkOrder = WO) -> SlotJob:
    return SlotJob(station="st-1", slot=slot, port=f"/dev/fake{slot}", operator="op-1",
                   work_order=work_order)


@pytest.fixture
def parts() -> tuple[FakeSigner, FakeAuditStore, Provisioner]:
    signer, store = FakeSigner(), FakeAuditStore()
    return signer, store, Provisioner(signer=signer, audit=store)


def run(provisioner: Provisioner, device: FakeDevice, work_order: WorkOrder = WO):  # type: ignore[no-untyped-def]
    return provisioner.provision(job(work_order=work_order), lambda: FakeLink(device))


def test_happy_path_signs_records_then_writes(parts) -> None:  # type: ignore[no-untyped-def]
    signer, store, provisioner = parts
    journal: list[str] = []
    device = FakeDevice(calls=journal)
    store.order = signer.journal = journal
    progress: list[tuple[Step, int, int]] = []

    result = provisioner.provision(job(), lambda: FakeLink(device),
                                   lambda slot, step, n, total: progress.append((step, n, total)))

    assert result.ok, result.message
    assert device.lifecycle.value == "locked"
    assert device.cert_der == result.cert_der
    unit = store.units[result.unit_id].record  # type: ignore[index]
    assert unit.status is UnitStatus.PROVISIONED
    assert unit.cert_der == result.cert_der
    # Safety order: intent before the HSM signs, the certificate recorded before the device sees it.
    intent = journal.index(f"intent:{result.unit_id}")
    signed = next(i for i, e in enumerate(journal) if e.startswith("sign:"))
    issued = journal.index(f"issued:{result.unit_id}")
    put = journal.index("put_cert")
    assert intent < signed < issued < put
    assert [s for s, _, _ in progress][:2] == [Step.CONNECT, Step.IDENTIFY]
    assert progress[-1][0] is Step.COMPLETE and progress[-1][2] == len(Step)
    recorded = [step for step, ok, _, _ in store.units[unit.unit_id].events if ok]
    # Every step timed and recorded, in order; the last one's record is the unit's completion.
    assert recorded == [s for s in Step if s is not Step.COMPLETE]
    assert [t.step for t in result.timings] == list(Step)
    cert = x509.load_der_x509_certificate(result.cert_der)  # type: ignore[arg-type]
    assert cert.issuer == signer.ca_cert.subject


def test_commissioning_secrets_are_redacted_in_the_log(parts) -> None:  # type: ignore[no-untyped-def]
    _, store, provisioner = parts
    device = FakeDevice()
    result = run(provisioner, device)
    assert device.config["wifi.psk"] == "hunter2-secret"  # the device got the real value
    details = [d for unit in store.units.values() for *_, d in unit.events]
    assert {"wifi.ssid": "factory", "wifi.psk": "<redacted>"}.items() <= details[3].items()
    assert "hunter2-secret" not in repr(details) and result.ok


def test_unplug_during_key_generation_is_a_recorded_failure(parts) -> None:  # type: ignore[no-untyped-def]
    signer, store, provisioner = parts
    result = run(provisioner, FakeDevice(unplug_at="generate_key"))
    assert not result.ok
    assert result.failed_step is Step.GENERATE_KEY
    assert result.error_code == "device_disconnected"
    assert result.message == "Device disconnected during key generation."
    assert result.hint == "Reseat the device and retry."
    unit = store.units[result.unit_id].record  # type: ignore[index]
    assert unit.status is UnitStatus.FAILED and unit.failed_step is Step.GENERATE_KEY
    assert signer.signed == []


def test_unplug_before_identification_is_still_recorded(parts) -> None:  # type: ignore[no-untyped-def]
    _, store, provisioner = parts
    result = run(provisioner, FakeDevice(unplug_at="hello"))
    assert not result.ok and result.failed_step is Step.IDENTIFY
    assert store.units[result.unit_id].record.status is UnitStatus.FAILED  # type: ignore[index]


def test_unplug_after_issuance_resumes_with_the_same_certificate(parts) -> None:  # type: ignore[no-untyped-def]
    signer, store, provisioner = parts
    device = FakeDevice(unplug_at="put_cert")
    first = run(provisioner, device)
    assert not first.ok and first.failed_step is Step.WRITE_CERT
    # Issued but not installed: the log holds the certificate, the unit is not failed.
    assert store.units[first.unit_id].record.status is UnitStatus.ISSUED  # type: ignore[index]
    second = run(provisioner, device)  # reseated
    assert second.ok and second.resumed
    assert second.unit_id == first.unit_id
    assert second.cert_der == first.cert_der == device.cert_der
    assert len(signer.signed) == 1  # never a second signature


def test_clone_with_another_units_key_is_refused_before_signing(parts) -> None:  # type: ignore[no-untyped-def]
    signer, _, provisioner = parts
    shared = ec.generate_private_key(ec.SECP256R1())
    assert run(provisioner, FakeDevice(clone_key=shared)).ok
    clone = run(provisioner, FakeDevice(clone_key=shared))
    assert not clone.ok and clone.failed_step is Step.PRE_ISSUANCE
    assert clone.error_code == "key_already_issued"
    assert len(signer.signed) == 1


def test_a_retry_stops_if_another_unit_is_in_the_slot(parts) -> None:  # type: ignore[no-untyped-def]
    """HMI.md: a retry never picks a new target. The unit that failed was swapped for another: the
    retry stops at identification, before anything is written to the new unit or signed."""
    signer, _, provisioner = parts
    newcomer = FakeDevice()
    retry = SlotJob(station="st-1", slot="1", port="/dev/fake1", operator="op-1", work_order=WO,
                    expected_hardware_id="00c0ffee00000001")
    result = provisioner.provision(retry, lambda: FakeLink(newcomer))
    assert not result.ok and result.error_code == "identity_changed"
    assert result.failed_step is Step.IDENTIFY
    assert "00c0ffee00000001" in (result.message or "") and "Put back the unit" in (result.hint or "")
    assert newcomer.calls == ["hello", "close"] and signer.signed == []
    same = SlotJob(station="st-1", slot="1", port="/dev/fake1", operator="op-1", work_order=WO,
                   expected_hardware_id=newcomer.hardware_id)
    assert provisioner.provision(same, lambda: FakeLink(newcomer)).ok  # the same unit: goes on


def test_wrong_proof_of_possession_fails_and_is_not_locked(parts) -> None:  # type: ignore[no-untyped-def]
    _, store, provisioner = parts
    device = FakeDevice(wrong_pop=True)
    result = run(provisioner, device)
    assert not result.ok and result.error_code == "pop_failed"
    assert result.failed_step is Step.PROVE_POSSESSION
    assert "lock" not in device.calls
    assert store.units[result.unit_id].record.status is UnitStatus.FAILED  # type: ignore[index]


def test_already_locked_device_is_refused(parts) -> None:  # type: ignore[no-untyped-def]
    from station.ports import Lifecycle

    signer, _, provisioner = parts
    result = run(provisioner, FakeDevice(lifecycle=Lifecycle.LOCKED))
    assert not result.ok and result.error_code == "device_locked" and result.failed_step is Step.CHECK
    assert "generate_key" not in FakeDevice().calls and signer.signed == []


def test_device_rejecting_the_certificate_leaves_it_issued(parts) -> None:  # type: ignore[no-untyped-def]
    _, store, provisioner = parts
    result = run(provisioner, FakeDevice(refuse_cert=True))
    assert not result.ok and result.failed_step is Step.WRITE_CERT
    assert result.error_code == "device_refused"
    assert store.units[result.unit_id].record.status is UnitStatus.ISSUED  # type: ignore[index]


def test_exhausted_work_order_is_refused_before_the_hsm(parts) -> None:  # type: ignore[no-untyped-def]
    signer, _, provisioner = parts
    small = WorkOrder(number="WO-2", product="p", profile="tls-client", quantity=1)
    assert run(provisioner, FakeDevice(), small).ok
    refused = run(provisioner, FakeDevice(), small)
    assert not refused.ok and refused.error_code == "quota_exhausted"
    assert refused.message == "The work order has no units left."
    assert len(signer.signed) == 1


def test_audit_write_failure_stops_issuing(parts) -> None:  # type: ignore[no-untyped-def]
    signer, store, provisioner = parts
    store.fail_writes_from = "record_intent"
    result = run(provisioner, FakeDevice())
    assert not result.ok and result.error_code == "audit_write_failed"
    assert signer.signed == []  # nothing signed without a durable intent
    assert provisioner.issuing_stopped is not None
    store.fail_writes_from, store._failing = None, False  # even if the disk recovers...
    again = run(provisioner, FakeDevice())
    assert not again.ok and again.error_code == "audit_write_failed"  # ...an operator must act
    assert signer.signed == []


def test_hsm_failure_is_recorded_with_its_step(parts) -> None:  # type: ignore[no-untyped-def]
    signer, _, provisioner = parts
    signer.fail_sign = True
    result = run(provisioner, FakeDevice())
    assert not result.ok and result.failed_step is Step.SIGN and result.error_code == "hsm_sign_failed"
    assert result.message is not None and result.message.startswith("The signing module failed")


def test_sixteen_slots_in_parallel_through_one_audit_writer(parts) -> None:  # type: ignore[no-untyped-def]
    signer, store, _ = parts
    writer = AuditWriter(store)
    line = Line(Provisioner(signer=signer, audit=writer))
    devices = [FakeDevice() for _ in range(16)]
    runs = [SlotRun(job=job(str(i)), open_link=lambda d=d: FakeLink(d)) for i, d in enumerate(devices)]
    results = line.run(runs)
    writer.close()
    assert [r.slot for r in results] == [str(i) for i in range(16)]
    assert all(r.ok for r in results)
    assert len({r.cert_serial for r in results}) == 16
    assert len({r.unit_serial for r in results}) == 16
