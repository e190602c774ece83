"""Events: what the application hands to ``send`` and gets from ``next_event``.

Every event is a frozen, keyword-only dataclass that checks its own fields on construction, so an
invalid message can never be built, encoded or handed to the application. A bad field raises
:class:`~firmware_protocol.errors.LocalProtocolError`; when the bad value came off the wire the
connection re-raises it as :class:`~firmware_protocol.errors.MalformedPayload`.

Requests travel station -> device, replies device -> station (``ErrorReply`` answers any request).
``FrameDropped``, ``DuplicateRequest`` and ``ConnectionClosed`` are produced by a connection, never sent.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import ClassVar, Final, Literal

from firmware_protocol.constants import (
    ERROR_TEXT_MAX,
    LOCK_MAGIC,
    MAX_CERT_BUNDLE,
    MAX_PAYLOAD,
    MIN_MAX_PAYLOAD,
    NONCE_MAX,
    NONCE_MIN,
    RESET_TOKEN_SIZE,
    SEQ_MODULUS,
    ErrorCode,
    KeyType,
    Lifecycle,
    MessageType,
)
from firmware_protocol.errors import LocalProtocolError


class Sentinel(enum.Enum):
    """Non-event results of ``next_event``."""

    NEED_DATA = "NEED_DATA"
    PAUSED = "PAUSED"


NEED_DATA: Final = Sentinel.NEED_DATA
"""``next_event`` has no complete frame: feed more bytes with ``receive_data``."""

PAUSED: Final = Sentinel.PAUSED
"""The device connection holds a request not yet answered: call ``send`` before reading on."""

NeedData = Literal[Sentinel.NEED_DATA]
Paused = Literal[Sentinel.PAUSED]


def _str(name: str, value: object, max_len: int, *, min_len: int = 0) -> None:
    if not isinstance(value, str):
        raise LocalProtocolError(f"{name} must be str, not {type(value).__name__}")
    try:
        raw = value.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise LocalProtocolError(f"{name} is not encodable as UTF-8") from exc
    if not min_len <= len(raw) <= max_len:
        raise LocalProtocolError(f"{name} must be {min_len}..{max_len} UTF-8 bytes, got {len(raw)}")
    if "\x00" in value:
        raise LocalProtocolError(f"{name} must not contain NUL")


def _opt_str(name: str, value: object, max_len: int) -> None:
    if value is not None:
        _str(name, value, max_len, min_len=1)


def _bytes(name: str, value: object, max_len: int, *, min_len: int = 0) -> None:
    if not isinstance(value, bytes):
        raise LocalProtocolError(f"{name} must be bytes, not {type(value).__name__}")
    if not min_len <= len(value) <= max_len:
        raise LocalProtocolError(f"{name} must be {min_len}..{max_len} bytes, got {len(value)}")


def _int(name: str, value: object, lo: int, hi: int) -> None:
    if not isinstance(value, int) or isinstance(value, bool):
        raise LocalProtocolError(f"{name} must be int, not {type(value).__name__}")
    if not lo <= value <= hi:
        raise LocalProtocolError(f"{name} must be in {lo}..{hi}, got {value}")


def _bool(name: str, value: object) -> None:
    if not isinstance(value, bool):
        raise LocalProtocolError(f"{name} must be bool, not {type(value).__name__}")


def _enum(name: str, value: object, cls: type[enum.IntEnum]) -> None:
    if not isinstance(value, cls):
        raise LocalProtocolError(f"{name} must be {cls.__name__}, not {value!r}")


KEY_SLOT_MAX: Final = 15
"""Highest key slot number the protocol can address (a device advertises how many it has)."""

CONFIG_KEY_MAX: Final = 32
"""Longest SET_CONFIG key (UTF-8 bytes)."""

CONFIG_VALUE_MAX: Final = 256
"""Longest SET_CONFIG value (bytes)."""

IDENTITY_STR_MAX: Final = 32
"""Longest vendor, model, hardware revision and firmware version string."""

SUBJECT_STR_MAX: Final = 64
"""Longest subject attribute and serial number (X.509 upper bound for CN)."""

DER_MAX: Final = 1000
"""Longest DER object (public key, CSR) carried in one reply; it must fit in one frame."""

SIGNATURE_MAX: Final = 160
"""Longest signature (DER ECDSA P-384 is at most 104)."""


@dataclass(frozen=True, kw_only=True)
class Event:
    """Base of every protocol event."""


@dataclass(frozen=True, kw_only=True)
class Request(Event):
    """A station-to-device message."""

    MSG_TYPE: ClassVar[MessageType]


@dataclass(frozen=True, kw_only=True)
class Reply(Event):
    """A device-to-station message."""

    MSG_TYPE: ClassVar[MessageType]


@dataclass(frozen=True, kw_only=True)
class Hello(Request):
    """Open a session; offer the protocol versions the station speaks."""

    MSG_TYPE: ClassVar[MessageType] = MessageType.HELLO
    version_min: int = 1
    version_max: int = 1

    def __post_init__(self) -> None:
        _int("version_min", self.version_min, 1, 255)
        _int("version_max", self.version_max, self.version_min, 255)


@dataclass(frozen=True, kw_only=True)
class HelloReply(Reply):
    """The device's chosen version, identity and capabilities."""

    MSG_TYPE: ClassVar[MessageType] = MessageType.HELLO_REPLY
    version: int
    vendor: str
    model: str
    hardware_revision: str
    firmware_version: str
    hardware_id: bytes
    serial_number: str | None = None
    key_types: tuple[KeyType, ...]
    secure_element: bool
    max_payload: int
    lifecycle: Lifecycle
    key_slots: int = 1

    def __post_init__(self) -> None:
        _int("version", self.version, 1, 255)
        for name in ("vendor", "model", "hardware_revision", "firmware_version"):
            _str(name, getattr(self, name), IDENTITY_STR_MAX)
        _bytes("hardware_id", self.hardware_id, 32, min_len=4)
        _opt_str("serial_number", self.serial_number, SUBJECT_STR_MAX)
        if not isinstance(self.key_types, tuple) or not 1 <= len(self.key_types) <= 8:
            raise LocalProtocolError("key_types must be a tuple of 1..8 KeyType")
        for kt in self.key_types:
            _enum("key_types[]", kt, KeyType)
        if len(set(self.key_types)) != len(self.key_types):
            raise LocalProtocolError("key_types must not repeat")
        _bool("secure_element", self.secure_element)
        _int("max_payload", self.max_payload, MIN_MAX_PAYLOAD, MAX_PAYLOAD)
        _enum("lifecycle", self.lifecycle, Lifecycle)
        _int("key_slots", self.key_slots, 1, KEY_SLOT_MAX + 1)


@dataclass(frozen=True, kw_only=True)
class GetStatus(Request):
    """Ask for the lifecycle state."""

    MSG_TYPE: ClassVar[MessageType] = MessageType.STATUS


@dataclass(frozen=True, kw_only=True)
class StatusReply(Reply):
    MSG_TYPE: ClassVar[MessageType] = MessageType.STATUS_REPLY
    lifecycle: Lifecycle

    def __post_init__(self) -> None:
        _enum("lifecycle", self.lifecycle, Lifecycle)


@dataclass(frozen=True, kw_only=True)
class SetConfig(Request):
    """Store one commissioning value. ``secret`` values are write-only on the device and never logged."""

    MSG_TYPE: ClassVar[MessageType] = MessageType.SET_CONFIG
    key: str
    value: bytes
    secret: bool = False

    def __post_init__(self) -> None:
        _str("key", self.key, CONFIG_KEY_MAX, min_len=1)
        if not all(c.isascii() and (c.isalnum() or c in "._-") for c in self.key):
            raise LocalProtocolError("config key must be ASCII letters, digits, '.', '_' or '-'")
        _bytes("value", self.value, CONFIG_VALUE_MAX)
        _bool("secret", self.secret)

    def __repr__(self) -> str:
        value = "<redacted>" if self.secret else repr(self.value)
        return f"SetConfig(key={self.key!r}, value={value}, secret={self.secret})"


@dataclass(frozen=True, kw_only=True)
class ConfigAck(Reply):
    MSG_TYPE: ClassVar[MessageType] = MessageType.SET_CONFIG_REPLY


@dataclass(frozen=True, kw_only=True)
class GenerateKey(Request):
    """Make a new key pair in ``key_slot``; the private key never leaves the device."""

    MSG_TYPE: ClassVar[MessageType] = MessageType.GENERATE_KEY
    key_type: KeyType
    key_slot: int = 0

    def __post_init__(self) -> None:
        _enum("key_type", self.key_type, KeyType)
        _int("key_slot", self.key_slot, 0, KEY_SLOT_MAX)


@dataclass(frozen=True, kw_only=True)
class KeyGenerated(Reply):
    """The new public key, SubjectPublicKeyInfo DER."""

    MSG_TYPE: ClassVar[MessageType] = MessageType.GENERATE_KEY_REPLY
    public_key: bytes

    def __post_init__(self) -> None:
        _bytes("public_key", self.public_key, DER_MAX, min_len=1)


@dataclass(frozen=True, kw_only=True)
class GetCsr(Request):
    """Ask for a PKCS#10 CSR over this subject, with the nonce (lowercase hex) as challengePassword."""

    MSG_TYPE: ClassVar[MessageType] = MessageType.GET_CSR
    nonce: bytes
    common_name: str
    serial_number: str | None = None
    organization: str | None = None
    key_slot: int = 0

    def __post_init__(self) -> None:
        _bytes("nonce", self.nonce, NONCE_MAX, min_len=NONCE_MIN)
        _str("common_name", self.common_name, SUBJECT_STR_MAX, min_len=1)
        _opt_str("serial_number", self.serial_number, SUBJECT_STR_MAX)
        _opt_str("organization", self.organization, SUBJECT_STR_MAX)
        _int("key_slot", self.key_slot, 0, KEY_SLOT_MAX)


@dataclass(frozen=True, kw_only=True)
class CsrReply(Reply):
    MSG_TYPE: ClassVar[MessageType] = MessageType.GET_CSR_REPLY
    csr: bytes

    def __post_init__(self) -> None:
        _bytes("csr", self.csr, DER_MAX, min_len=1)


@dataclass(frozen=True, kw_only=True)
class PutCert(Request):
    """One chunk of the certificate bundle: ``data`` goes at ``offset`` of a ``total``-byte bundle."""

    MSG_TYPE: ClassVar[MessageType] = MessageType.PUT_CERT
    total: int
    offset: int
    data: bytes
    key_slot: int = 0

    def __post_init__(self) -> None:
        _int("total", self.total, 1, MAX_CERT_BUNDLE)
        _int("offset", self.offset, 0, self.total - 1)
        _bytes("data", self.data, min(MAX_PAYLOAD, self.total - self.offset), min_len=1)
        _int("key_slot", self.key_slot, 0, KEY_SLOT_MAX)


@dataclass(frozen=True, kw_only=True)
class CertAck(Reply):
    """Bytes of the bundle received so far; ``complete`` once the bundle was checked and stored."""

    MSG_TYPE: ClassVar[MessageType] = MessageType.PUT_CERT_REPLY
    received: int
    complete: bool

    def __post_init__(self) -> None:
        _int("received", self.received, 0, MAX_CERT_BUNDLE)
        _bool("complete", self.complete)


@dataclass(frozen=True, kw_only=True)
class Challenge(Request):
    """Proof of possession: sign CHALLENGE_DOMAIN || nonce with the key in ``key_slot``."""

    MSG_TYPE: ClassVar[MessageType] = MessageType.CHALLENGE
    nonce: bytes
    key_slot: int = 0

    def __post_init__(self) -> None:
        _bytes("nonce", self.nonce, NONCE_MAX, min_len=NONCE_MIN)
        _int("key_slot", self.key_slot, 0, KEY_SLOT_MAX)


@dataclass(frozen=True, kw_only=True)
class ChallengeReply(Reply):
    """ECDSA: DER signature over SHA-256; Ed25519: raw 64-byte signature."""

    MSG_TYPE: ClassVar[MessageType] = MessageType.CHALLENGE_REPLY
    signature: bytes

    def __post_init__(self) -> None:
        _bytes("signature", self.signature, SIGNATURE_MAX, min_len=1)


@dataclass(frozen=True, kw_only=True)
class Lock(Request):
    """Finalise the unit (irreversible). ``confirm`` must be LOCK_MAGIC."""

    MSG_TYPE: ClassVar[MessageType] = MessageType.LOCK
    confirm: int = LOCK_MAGIC

    def __post_init__(self) -> None:
        _int("confirm", self.confirm, 0, 0xFFFFFFFF)


@dataclass(frozen=True, kw_only=True)
class LockReply(Reply):
    MSG_TYPE: ClassVar[MessageType] = MessageType.LOCK_REPLY
    lifecycle: Lifecycle

    def __post_init__(self) -> None:
        _enum("lifecycle", self.lifecycle, Lifecycle)


@dataclass(frozen=True, kw_only=True)
class FactoryReset(Request):
    """Wipe keys, certificate and config. A locked unit needs ``authorisation`` (see reset_token)."""

    MSG_TYPE: ClassVar[MessageType] = MessageType.FACTORY_RESET
    authorisation: bytes | None = None

    def __post_init__(self) -> None:
        if self.authorisation is not None:
            _bytes("authorisation", self.authorisation, RESET_TOKEN_SIZE, min_len=RESET_TOKEN_SIZE)

    def __repr__(self) -> str:
        auth = None if self.authorisation is None else "<redacted>"
        return f"FactoryReset(authorisation={auth})"


@dataclass(frozen=True, kw_only=True)
class ResetReply(Reply):
    MSG_TYPE: ClassVar[MessageType] = MessageType.FACTORY_RESET_REPLY
    lifecycle: Lifecycle

    def __post_init__(self) -> None:
        _enum("lifecycle", self.lifecycle, Lifecycle)


@dataclass(frozen=True, kw_only=True)
class ErrorReply(Reply):
    """The device refuses the request. ``code`` may be a vendor code (>= 0x8000)."""

    MSG_TYPE: ClassVar[MessageType] = MessageType.ERROR
    code: int
    text: str = ""

    def __post_init__(self) -> None:
        _int("code", self.code, 1, 0xFFFF)
        _str("text", self.text, ERROR_TEXT_MAX)

    @property
    def error_code(self) -> ErrorCode | None:
        """The standard code, or None for a vendor or unknown code."""
        try:
            return ErrorCode(self.code)
        except ValueError:
            return None


class DropReason(enum.StrEnum):
    """Why a run of bytes between delimiters was not a frame."""

    COBS = "cobs"
    """Not valid COBS (a code byte points past the end)."""
    SHORT = "short"
    """Shorter than header + CRC."""
    CRC = "crc"
    """CRC-32C mismatch: noise."""
    LENGTH = "length"
    """payload_len disagrees with the bytes received."""
    OVERSIZE = "oversize"
    """Longer than MAX_ENCODED_FRAME, or payload_len above MAX_PAYLOAD."""
    STALE = "stale"
    """A valid reply whose sequence number is not the outstanding request's (a late duplicate)."""


@dataclass(frozen=True, kw_only=True)
class FrameDropped(Event):
    """Bytes that were discarded; the decoder has resynchronised at the next delimiter."""

    reason: DropReason
    size: int
    detail: str = ""

    def __post_init__(self) -> None:
        if not isinstance(self.reason, DropReason):
            raise LocalProtocolError(f"reason must be DropReason, not {self.reason!r}")
        _int("size", self.size, 0, 1 << 31)


@dataclass(frozen=True, kw_only=True)
class DuplicateRequest(Event):
    """Device side: a retry of the request just answered; write ``reply`` (the cached answer) again."""

    seq: int
    reply: bytes

    def __post_init__(self) -> None:
        _int("seq", self.seq, 0, SEQ_MODULUS - 1)
        _bytes("reply", self.reply, 1 << 16, min_len=1)


@dataclass(frozen=True, kw_only=True)
class ConnectionClosed(Event):
    """The byte stream ended (``receive_eof`` was called and all buffered frames were returned)."""


REQUEST_TYPES: Final[dict[MessageType, type[Request]]] = {
    cls.MSG_TYPE: cls
    for cls in (Hello, GetStatus, SetConfig, GenerateKey, GetCsr, PutCert, Challenge, Lock, FactoryReset)
}
"""Request class for each request message type."""

REPLY_TYPES: Final[dict[MessageType, type[Reply]]] = {
    cls.MSG_TYPE: cls
    for cls in (HelloReply, StatusReply, ConfigAck, KeyGenerated, CsrReply, CertAck, ChallengeReply,
                LockReply, ResetReply, ErrorReply)
}
"""Reply class for each reply message type (ERROR included)."""
