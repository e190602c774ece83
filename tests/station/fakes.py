"""In-memory fakes of the workflow's ports (cosmicpython style): they implement the same protocols.

They are faithful enough to exercise the workflow's ordering rules fast; the end-to-end tests run the
same workflow over real pseudo-terminals, SoftHSM and SQLite.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import itertools
import secrets
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import AttributeOID, NameOID

from station.domain import Step, UnitRecord, UnitStatus, WorkOrder
from station.errors import (
    AuditWriteFailed,
    CsrRejected,
    DeviceDisconnected,
    DeviceRefused,
    IdentityConflict,
    QuotaExhausted,
    SigningFailed,
)
from station.ports import (
    ConfigValue,
    DeviceInfo,
    KeyType,
    Lifecycle,
    PreparedCertificate,
    SubjectRequest,
)
from station.workflow import challenge_message


@dataclass
class FakeDevice:
    """A device's persistent state (survives 'reseating': a new link to the same device)."""

    hardware_id: str = field(default_factory=lambda: secrets.token_hex(8))
    lifecycle: Lifecycle = Lifecycle.BLANK
    key: ec.EllipticCurvePrivateKey | None = None
    cert_der: bytes | None = None
    config: dict[str, str] = field(default_factory=dict)
    unplug_at: str | None = None
    """Name of a DeviceLink method that raises DeviceDisconnected (once)."""
    refuse_cert: bool = False
    wrong_pop: bool = False
    clone_key: ec.EllipticCurvePrivateKey | None = None
    calls: list[str] = field(default_factory=list)


class FakeLink:
    def __init__(self, device: FakeDevice) -> None:
        self.device = device

    def _enter(self, name: str) -> None:
        self.device.calls.append(name)
        if self.device.unplug_at == name:
            self.device.unplug_at = None
            raise DeviceDisconnected("device disconnected")

    def hello(self) -> DeviceInfo:
        self._enter("hello")
        return DeviceInfo(
            protocol_version=1, vendor="Acme", model="Sensor", hardware_revision="B",
            firmware_version="1.0.0", hardware_id=self.device.hardware_id, serial_number=None,
            key_types=(KeyType.P256,), secure_element=True, max_frame=2048,
            lifecycle=self.device.lifecycle,
        )

    def status(self) -> Lifecycle:
        self._enter("status")
        return self.device.lifecycle

    def set_config(self, values: Sequence[ConfigValue]) -> None:
        self._enter("set_config")
        self.device.config.update({v.key: v.value for v in values})

    def generate_key(self, key_type: KeyType, key_slot: int = 0) -> bytes:
        self._enter("generate_key")
        self.device.key = self.device.clone_key or ec.generate_private_key(ec.SECP256R1())
        self.device.lifecycle = Lifecycle.KEYED
        return self.device.key.public_key().public_bytes(
            serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)

    def get_csr(self, subject: SubjectRequest, nonce: bytes, key_slot: int = 0) -> bytes:
        self._enter("get_csr")
        assert self.device.key is not None
        csr = (
            x509.CertificateSigningRequestBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, subject.common_name)]))
            .add_attribute(AttributeOID.CHALLENGE_PASSWORD, nonce.hex().encode())
            .sign(self.device.key, hashes.SHA256())
        )
        return csr.public_bytes(serialization.Encoding.DER)

    def put_cert(self, cert_der: bytes, chain: Sequence[bytes] = (), key_slot: int = 0) -> None:
        self._enter("put_cert")
        if self.device.refuse_cert:
            raise DeviceRefused("certificate rejected", code="device_refused")
        self.device.cert_der = cert_der
        self.device.lifecycle = Lifecycle.PROVISIONED

    def challenge(self, nonce: bytes, key_slot: int = 0) -> bytes:
        self._enter("challenge")
        assert self.device.key is not None
        key = ec.generate_private_key(ec.SECP256R1()) if self.device.wrong_pop else self.device.key
        return key.sign(challenge_message(nonce), ec.ECDSA(hashes.SHA256()))

    def lock(self) -> None:
        self._enter("lock")
        self.device.lifecycle = Lifecycle.LOCKED

    def factory_reset(self, authorisation: bytes | None = None) -> None:
        self._enter("factory_reset")
        self.device.lifecycle = Lifecycle.BLANK
        self.device.key = None

    def close(self) -> None:
        self.device.calls.append("close")


class FakeSigner:
    """A software CA standing in for the HSM signer; same two-phase contract."""

    def __init__(self) -> None:
        self.key = ec.generate_private_key(ec.SECP256R1())
        name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "Fake Issuing CA")])
        now = dt.datetime.now(dt.UTC)
        self.ca_cert = (
            x509.CertificateBuilder().subject_name(name).issuer_name(name)
            .public_key(self.key.public_key()).serial_number(1)
            .not_valid_before(now - dt.timedelta(days=1)).not_valid_after(now + dt.timedelta(days=365))
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .sign(self.key, hashes.SHA256())
        )
        self._pending: dict[str, bytes] = {}
        self.signed: list[int] = []
        self.fail_sign = False
        self.journal: list[str] | None = None
        self._lock = threading.Lock()

    def key_types(self, work_order: WorkOrder) -> Sequence[KeyType]:
        return (KeyType.P256,)

    def subject_for(self, *, device: DeviceInfo, work_order: WorkOrder,
                    unit_serial: str) -> SubjectRequest:
        return SubjectRequest(common_name=unit_serial, serial_number=device.hardware_id)

    def prepare(self, *, csr_der: bytes, nonce: bytes, device: DeviceInfo, work_order: WorkOrder,
                unit_serial: str, is_key_known: Callable[[str], bool] | None = None
                ) -> PreparedCertificate:
        try:
            csr = x509.load_der_x509_csr(csr_der)
        except ValueError as exc:
            raise CsrRejected("the request is not valid DER", code="csr_malformed") from exc
        if not csr.is_signature_valid:
            raise CsrRejected("the request's signature is invalid", code="csr_bad_signature")
        password = csr.attributes.get_attribute_for_oid(AttributeOID.CHALLENGE_PASSWORD).value
        if password != nonce.hex().encode():
            raise CsrRejected("the request is not bound to this session", code="csr_nonce_mismatch")
        spki = csr.public_key().public_bytes(serialization.Encoding.DER,
                                             serialization.PublicFormat.SubjectPublicKeyInfo)
        fingerprint = hashlib.sha256(spki).hexdigest()
        if is_key_known is not None and is_key_known(fingerprint):
            raise CsrRejected("this public key was already issued", code="key_already_issued")
        serial = int.from_bytes(secrets.token_bytes(16), "big") >> 1 or 1
        now = dt.datetime.now(dt.UTC)
        cert = (
            x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, unit_serial)]))
            .issuer_name(self.ca_cert.subject).public_key(csr.public_key()).serial_number(serial)
            .not_valid_before(now - dt.timedelta(minutes=5)).not_valid_after(now + dt.timedelta(days=30))
            .sign(self.key, hashes.SHA256())
        )
        tbs = cert.tbs_certificate_bytes
        with self._lock:
            self._pending[hashlib.sha256(tbs).hexdigest()] = cert.public_bytes(serialization.Encoding.DER)
        return PreparedCertificate(
            serial=serial, tbs_der=tbs, tbs_sha256=hashlib.sha256(tbs).hexdigest(),
            public_key_sha256=fingerprint, profile=work_order.profile, subject=f"CN={unit_serial}",
            not_after=cert.not_valid_after_utc.isoformat(),
        )

    def sign(self, prepared: PreparedCertificate) -> bytes:
        if self.fail_sign:
            raise SigningFailed("the HSM refused to sign", code="hsm_sign_failed")
        with self._lock:
            self.signed.append(prepared.serial)
            if self.journal is not None:
                self.journal.append(f"sign:{prepared.serial:x}")
            return self._pending.pop(prepared.tbs_sha256)

    def chain(self) -> Sequence[bytes]:
        return (self.ca_cert.public_bytes(serialization.Encoding.DER),)


@dataclass
class _Unit:
    record: UnitRecord
    events: list[tuple[Step, bool, str | None, dict[str, str]]] = field(default_factory=list)


class FakeAuditStore:
    """An in-memory audit store with the same uniqueness, quota and fail-closed rules."""

    ACTIVE = (UnitStatus.INTENT, UnitStatus.ISSUED, UnitStatus.PROVISIONED)

    def __init__(self) -> None:
        self.units: dict[int, _Unit] = {}
        self.order: list[str] = []
        """Every call in order, e.g. 'intent:3', 'issued:3': tests check the safety ordering."""
        self._ids = itertools.count(1)
        self._seq: dict[str, itertools.count[int]] = {}
        self._lock = threading.Lock()
        self.fail_writes_from: str | None = None
        """Name of a method from which every write raises AuditWriteFailed (disk full)."""
        self._failing = False

    def _write(self, name: str) -> None:
        if self.fail_writes_from == name:
            self._failing = True
        if self._failing:
            raise AuditWriteFailed("database or disk is full")

    def _update(self, unit_id: int, **changes: object) -> None:
        unit = self.units[unit_id]
        unit.record = replace(unit.record, **changes)  # type: ignore[arg-type]

    def start_unit(self, *, work_order: WorkOrder, station: str, slot: str, operator: str,
                   hardware_id: str) -> int:
        with self._lock:
            self._write("start_unit")
            unit_id = next(self._ids)
            self.units[unit_id] = _Unit(UnitRecord(
                unit_id=unit_id, work_order=work_order.number, station=station, slot=slot,
                operator=operator, hardware_id=hardware_id, serial_number=None,
                status=UnitStatus.IN_PROGRESS, started_at=dt.datetime.now(dt.UTC),
                profile=work_order.profile))
            self._quota = getattr(self, "_quota", {})
            self._quota.setdefault(work_order.number, work_order.quantity)
            self.order.append(f"start:{unit_id}")
            return unit_id

    def record_step(self, unit_id: int, step: Step, *, ok: bool, duration_ms: float,
                    detail: dict[str, str] | None = None, error_code: str | None = None,
                    error_message: str | None = None) -> None:
        with self._lock:
            self._write("record_step")
            self.units[unit_id].events.append((step, ok, error_code, dict(detail or {})))
            self.order.append(f"step:{step}:{unit_id}:{'ok' if ok else 'failed'}")

    def next_unit_serial(self, unit_id: int) -> str:
        with self._lock:
            unit = self.units[unit_id]
            counter = self._seq.setdefault(unit.record.work_order, itertools.count(1))
            serial = f"UNIT-{next(counter):06d}"
            self._update(unit_id, serial_number=serial)
            return serial

    def record_intent(self, unit_id: int, prepared: PreparedCertificate) -> None:
        with self._lock:
            self._write("record_intent")
            unit = self.units[unit_id].record
            used = sum(1 for u in self.units.values()
                       if u.record.work_order == unit.work_order and u.record.cert_serial is not None)
            if used >= self._quota[unit.work_order]:
                raise QuotaExhausted("the work order has no units left")
            for other in self.units.values():
                if other.record.public_key_sha256 == prepared.public_key_sha256:
                    raise IdentityConflict("public key already issued", code="duplicate_public_key")
            self._update(unit_id, status=UnitStatus.INTENT, cert_serial=format(prepared.serial, "x"),
                         public_key_sha256=prepared.public_key_sha256)
            self.order.append(f"intent:{unit_id}")

    def record_issued(self, unit_id: int, cert_der: bytes) -> None:
        with self._lock:
            self._write("record_issued")
            self._update(unit_id, status=UnitStatus.ISSUED, cert_der=cert_der)
            self.order.append(f"issued:{unit_id}")

    def complete_unit(self, unit_id: int) -> None:
        with self._lock:
            self._write("complete_unit")
            self._update(unit_id, status=UnitStatus.PROVISIONED, finished_at=dt.datetime.now(dt.UTC))
            self.order.append(f"complete:{unit_id}")

    def fail_unit(self, unit_id: int, step: Step, error_code: str, error_message: str) -> None:
        with self._lock:
            self._write("fail_unit")
            self._update(unit_id, status=UnitStatus.FAILED, failed_step=step, error_code=error_code,
                         error_message=error_message, finished_at=dt.datetime.now(dt.UTC))
            self.order.append(f"fail:{unit_id}")

    def is_key_known(self, public_key_sha256: str) -> bool:
        with self._lock:
            return any(u.record.public_key_sha256 == public_key_sha256 for u in self.units.values())

    def issued_certificate_for(self, hardware_id: str) -> UnitRecord | None:
        with self._lock:
            for unit in self.units.values():
                if unit.record.hardware_id == hardware_id and unit.record.status is UnitStatus.ISSUED:
                    return unit.record
            return None

    def resume_unit(self, unit_id: int, *, slot: str, operator: str) -> UnitRecord:
        with self._lock:
            self._write("resume_unit")
            self._update(unit_id, status=UnitStatus.ISSUED, slot=slot, operator=operator)
            self.order.append(f"resume:{unit_id}")
            return self.units[unit_id].record
