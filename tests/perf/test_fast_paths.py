"""The fast paths keep their safety semantics: a lock that does not hold is still caught, with or
without the STATUS read-back, and the directly assembled certificate is the one cryptography parses."""

from __future__ import annotations

import pytest

import firmware_protocol as fp
from station.domain import Step, WorkOrder
from station.errors import DeviceMisbehaved
from station.ports import Lifecycle
from station.transport import SerialDeviceLink
from station.workflow import Provisioner, SlotJob
from tests.station.fakes import FakeAuditStore, FakeDevice, FakeLink, FakeSigner

WO = WorkOrder(number="WO-FAST", product="sensor", profile="tls-client", quantity=10)


def _job() -> SlotJob:
    return SlotJob(station="st-1", slot="1", port="/dev/fake1", operator="op-1", work_order=WO)


class _LockFails(FakeLink):
    """A link whose LOCK is accepted but leaves the unit unlocked (no confirmation of its own)."""

    def lock(self) -> None:
        self._enter("lock")


class _ConfirmingLink(FakeLink):
    """A link whose lock() checks the lifecycle in the LOCK reply, as the serial transport does."""

    lock_confirms_lifecycle = True


def test_lock_that_does_not_hold_is_caught_by_the_status_read_back() -> None:
    device = FakeDevice()
    result = Provisioner(signer=FakeSigner(), audit=FakeAuditStore()).provision(
        _job(), lambda: _LockFails(device))
    assert not result.ok and result.error_code == "lock_not_held" and result.failed_step is Step.LOCK
    assert device.calls[-2:] == ["status", "close"]


def test_a_link_that_confirms_the_lock_itself_costs_no_status_round_trip() -> None:
    device = FakeDevice()
    result = Provisioner(signer=FakeSigner(), audit=FakeAuditStore()).provision(
        _job(), lambda: _ConfirmingLink(device))
    assert result.ok, result.message
    assert "status" not in device.calls and device.lifecycle is Lifecycle.LOCKED


@pytest.mark.parametrize("answer", [fp.Lifecycle.PROVISIONED, fp.Lifecycle.KEYED])
def test_serial_lock_reply_without_locked_is_lock_not_held(answer: fp.Lifecycle,
                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    link = SerialDeviceLink("loop://", slot="1")
    try:
        assert link.lock_confirms_lifecycle is True
        monkeypatch.setattr(link, "_exchange", lambda request, expect: fp.LockReply(lifecycle=answer))
        with pytest.raises(DeviceMisbehaved) as caught:
            link.lock()
        assert caught.value.code == "lock_not_held"
        monkeypatch.setattr(link, "_exchange",
                            lambda request, expect: fp.LockReply(lifecycle=fp.Lifecycle.LOCKED))
        link.lock()
    finally:
        link.close()


@pytest.mark.parametrize("curve", ["p256", "p384"])
def test_direct_der_assembly_reproduces_the_certificate_byte_for_byte(curve: str) -> None:
    import datetime as dt

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    from hsm.issuer import _der, _tbs_signature_algorithm

    key = ec.generate_private_key(ec.SECP256R1() if curve == "p256" else ec.SECP384R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "x" * 60)])
    now = dt.datetime.now(dt.UTC)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(now)
            .not_valid_after(now + dt.timedelta(days=1))
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .sign(key, hashes.SHA256()))
    tbs = cert.tbs_certificate_bytes
    assembled = _der(0x30, tbs + _tbs_signature_algorithm(tbs) + _der(0x03, b"\x00" + cert.signature))
    assert assembled == cert.public_bytes(serialization.Encoding.DER)
