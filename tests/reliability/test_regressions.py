"""Regressions found by the reliability work, pinned at unit level (in-memory fakes, fast)."""

from __future__ import annotations

from station.domain import Step, UnitStatus, WorkOrder
from station.workflow import Provisioner, SlotJob
from tests.station.fakes import FakeAuditStore, FakeDevice, FakeLink, FakeSigner

WO = WorkOrder(number="WO-R", product="sensor", profile="tls-client", quantity=10)


def _job() -> SlotJob:
    return SlotJob(station="st-1", slot="1", port="/dev/fake1", operator="op-1", work_order=WO)


def test_locked_before_completion_is_resumed_not_orphaned() -> None:
    """Crash-harness finding: a kill (or a lost link) after LOCK, before the completion was recorded,
    left a locked device holding its certificate while the next run declared that certificate
    orphaned ("the device lost its key") and failed the unit, so the log no longer knew a certificate
    a device held. The unit must be resumed: proof of possession, then completed, never re-signed."""
    signer, store = FakeSigner(), FakeAuditStore()
    provisioner = Provisioner(signer=signer, audit=store)
    device = FakeDevice(unplug_at="status")  # the read-back after LOCK never arrives
    first = provisioner.provision(_job(), lambda: FakeLink(device))
    assert not first.ok and first.failed_step is Step.LOCK
    assert store.units[first.unit_id].record.status is UnitStatus.ISSUED  # type: ignore[index]
    device.calls.clear()

    second = provisioner.provision(_job(), lambda: FakeLink(device))
    assert second.ok and second.resumed, second.message
    assert second.unit_id == first.unit_id and second.cert_der == device.cert_der
    assert store.units[first.unit_id].record.status is UnitStatus.PROVISIONED  # type: ignore[index]
    assert "challenge" in device.calls and "put_cert" not in device.calls
    assert len(signer.signed) == 1


def test_locked_device_that_cannot_prove_the_key_is_not_completed() -> None:
    """The resume path for a locked device still demands proof of possession (fail closed)."""
    signer, store = FakeSigner(), FakeAuditStore()
    provisioner = Provisioner(signer=signer, audit=store)
    device = FakeDevice(unplug_at="status")
    first = provisioner.provision(_job(), lambda: FakeLink(device))
    assert not first.ok
    device.wrong_pop = True
    second = provisioner.provision(_job(), lambda: FakeLink(device))
    assert not second.ok and second.error_code == "pop_failed"
    assert store.units[first.unit_id].record.status is UnitStatus.FAILED  # type: ignore[index]
    assert len(signer.signed) == 1
