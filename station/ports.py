"""The interfaces the provisioning workflow depends on (ports, in the hexagonal sense).

The workflow knows a device link, a signer and an audit store; it never imports pyserial, PKCS#11 or
SQLAlchemy. Real adapters: :mod:`station.transport` (serial), :mod:`station.signing` (HSM via
:mod:`hsm`), :mod:`station.audit` (SQLAlchemy). Tests use in-memory fakes that implement the same
protocols.
"""

from __future__ import annotations

import enum
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Protocol

from station.domain import Step, UnitRecord, WorkOrder


class Lifecycle(enum.StrEnum):
    BLANK = "blank"
    KEYED = "keyed"
    PROVISIONED = "provisioned"
    LOCKED = "locked"


class KeyType(enum.StrEnum):
    P256 = "p256"
    P384 = "p384"
    ED25519 = "ed25519"


@dataclass(frozen=True, kw_only=True)
class DeviceInfo:
    """What a device says about itself in HELLO and STATUS."""

    protocol_version: int
    vendor: str
    model: str
    hardware_revision: str
    firmware_version: str
    hardware_id: str
    """Unique hardware id (e.g. MCU UID), hex."""
    serial_number: str | None
    key_types: tuple[KeyType, ...]
    secure_element: bool
    max_frame: int
    lifecycle: Lifecycle


@dataclass(frozen=True, kw_only=True)
class ConfigValue:
    key: str
    value: str
    secret: bool = False


@dataclass(frozen=True, kw_only=True)
class SubjectRequest:
    """The subject the station asks the device to put in its CSR (the station decides the subject)."""

    common_name: str
    serial_number: str | None = None
    organization: str | None = None


class DeviceLink(Protocol):
    """One open conversation with the unit in one fixture slot.

    Every method raises a :class:`station.errors.DeviceError` subclass on failure: disconnect, timeout,
    bad link, refusal (the device's ERROR code and text), or a wrong answer.
    """

    def hello(self) -> DeviceInfo: ...
    def status(self) -> Lifecycle: ...
    def set_config(self, values: Sequence[ConfigValue]) -> None: ...
    def generate_key(self, key_type: KeyType, key_slot: int = 0) -> bytes:
        """Ask the device to make a new key pair; returns the public key (SubjectPublicKeyInfo DER)."""
        ...
    def get_csr(self, subject: SubjectRequest, nonce: bytes, key_slot: int = 0) -> bytes:
        """Return a PKCS#10 CSR (DER) signed by the device key, bound to the station's nonce."""
        ...
    def put_cert(self, cert_der: bytes, chain: Sequence[bytes] = (), key_slot: int = 0) -> None: ...
    def challenge(self, nonce: bytes, key_slot: int = 0) -> bytes:
        """Return the device's signature (DER for ECDSA, raw for Ed25519) over the nonce."""
        ...
    def lock(self) -> None: ...
    def factory_reset(self, authorisation: bytes | None = None) -> None: ...
    def close(self) -> None: ...


@dataclass(frozen=True, kw_only=True)
class PreparedCertificate:
    """A certificate ready to sign: the exact to-be-signed bytes whose hash goes in the intent row."""

    serial: int
    tbs_der: bytes
    tbs_sha256: str
    public_key_sha256: str
    profile: str
    subject: str
    not_after: str


class Signer(Protocol):
    """The issuing CA. Thread-safe: many slots call it at once."""

    def key_types(self, work_order: WorkOrder) -> Sequence[KeyType]:
        """Key types the work order's profile allows, most preferred first."""
        ...

    def subject_for(
        self, *, device: DeviceInfo, work_order: WorkOrder, unit_serial: str
    ) -> SubjectRequest:
        """The subject the station asks for in GET_CSR, built from the profile (never the device)."""
        ...

    def prepare(
        self,
        *,
        csr_der: bytes,
        nonce: bytes,
        device: DeviceInfo,
        work_order: WorkOrder,
        unit_serial: str,
        is_key_known: Callable[[str], bool] | None = None,
    ) -> PreparedCertificate:
        """Run the pre-issuance checks and build the TBS certificate. Nothing is signed.

        The CSR must carry ``nonce`` (hex) in its challengePassword attribute: a replayed old CSR is
        refused. ``is_key_known(public_key_sha256_hex)`` is the audit store's lookup for keys
        already issued. Raises :class:`station.errors.CsrRejected` with a specific reason code.
        """
        ...

    def sign(self, prepared: PreparedCertificate) -> bytes:
        """Sign exactly ``prepared.tbs_der`` in the HSM, verify the result in software, return DER.

        Raises :class:`station.errors.SigningFailed`.
        """
        ...

    def chain(self) -> Sequence[bytes]:
        """The CA certificate chain (DER), issuing CA first, sent to the device with its certificate."""
        ...


class AuditStore(Protocol):
    """The durable production log.

    The records the safety order rests on are durable when their method returns:
    ``record_intent`` (before the HSM signs), ``record_issued`` (before the device sees the
    certificate), ``complete_unit``, ``fail_unit`` and ``resume_unit``. An implementation may commit
    ``start_unit``, ``next_unit_serial`` and ``record_step`` later, together with a following write
    of the same caller, but never after that caller's next durable method (or ``flush``, where it
    has one) returns; if they cannot be committed, that durable call raises the failure instead.

    Any failure to write raises :class:`station.errors.AuditWriteFailed`; after one, the station stops
    issuing until an operator has dealt with it (fail closed).
    """

    def start_unit(
        self, *, work_order: WorkOrder, station: str, slot: str, operator: str, hardware_id: str
    ) -> int:
        """Open an attempt for the unit now in ``slot``; returns its unit id.

        Raises :class:`station.errors.IdentityConflict` if the hardware id belongs to an active
        (provisioned or issued) unit, :class:`station.errors.QuotaExhausted` if the work order is used up.
        """
        ...

    def record_step(
        self,
        unit_id: int,
        step: Step,
        *,
        ok: bool,
        duration_ms: float,
        detail: dict[str, str] | None = None,
        error_code: str | None = None,
        error_message: str | None = None,
    ) -> None:
        """Append one event (hash-chained) to the log. Secret values must already be redacted."""
        ...

    def next_unit_serial(self, unit_id: int) -> str:
        """Reserve the unit's serial number from the work order's serial format."""
        ...

    def record_intent(self, unit_id: int, prepared: PreparedCertificate) -> None:
        """Durably reserve the certificate serial and public key before signing.

        Enforces quota and uniqueness in the database (unique indexes): raises
        :class:`station.errors.IdentityConflict` for a key or serial already issued,
        :class:`station.errors.QuotaExhausted` when the work order is used up.
        """
        ...

    def record_issued(self, unit_id: int, cert_der: bytes) -> None:
        """Durably store the signed certificate against its intent before it goes to the device."""
        ...

    def complete_unit(self, unit_id: int) -> None: ...

    def fail_unit(self, unit_id: int, step: Step, error_code: str, error_message: str) -> None: ...

    def is_key_known(self, public_key_sha256: str) -> bool:
        """True if this public key is already bound to any unit (clone detection)."""
        ...

    def issued_certificate_for(self, hardware_id: str) -> UnitRecord | None:
        """The unit holding an issued-but-not-installed certificate for this hardware id, if any.

        Lets a re-seated device get the same certificate again, never a second signature.
        """
        ...

    def resume_unit(self, unit_id: int, *, slot: str, operator: str) -> UnitRecord:
        """Take an issued-but-not-installed unit back to ``issued`` to re-send its certificate."""
        ...
