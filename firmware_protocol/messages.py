"""Payloads: fixed binary TLV, and the field table of every message.

TLV item: ``tag (u8) || length (u16 LE) || value``. Integers have a fixed width per tag (u8, u16 or
u32, little-endian); strings are UTF-8 without NUL; booleans are one byte 0 or 1. Why TLV and not
CBOR or protobuf: a C parser is one loop over a buffer with pointers into it (no malloc, no code
generator), each field has a hard maximum so every buffer is a fixed array, unknown tags can be skipped
(a newer station can add optional fields), and optional fields are simply absent.

Receiver rules: unknown tags are ignored; a repeated tag, a truncated item, a wrong-width integer, an
out-of-range value or a missing required field is MALFORMED.
"""

from __future__ import annotations

import enum
import struct
from collections.abc import Iterator
from dataclasses import dataclass, fields
from typing import Final

from firmware_protocol.codec import Frame
from firmware_protocol.constants import KeyType, Lifecycle, MessageType, Tag
from firmware_protocol.errors import LocalProtocolError, MalformedPayload, UnknownMessage
from firmware_protocol.events import REPLY_TYPES, REQUEST_TYPES, Event, PutCert, Reply, Request

_TLV_HEADER: Final = struct.Struct("<BH")


def encode_tlv(items: list[tuple[int, bytes]]) -> bytes:
    """Concatenate (tag, value) items."""
    out = bytearray()
    for tag, value in items:
        out += _TLV_HEADER.pack(tag, len(value)) + value
    return bytes(out)


def iter_tlv(payload: bytes) -> Iterator[tuple[int, bytes]]:
    """Yield (tag, value); raise :class:`MalformedPayload` on a truncated item."""
    i = 0
    n = len(payload)
    while i < n:
        if n - i < _TLV_HEADER.size:
            raise MalformedPayload(f"truncated TLV header at offset {i}")
        tag, length = _TLV_HEADER.unpack_from(payload, i)
        i += _TLV_HEADER.size
        if length > n - i:
            raise MalformedPayload(f"TLV tag 0x{tag:02x} claims {length} bytes, {n - i} left")
        yield tag, payload[i : i + length]
        i += length


class Kind(enum.Enum):
    """How a field's value is laid out."""

    U8 = "u8"
    U16 = "u16"
    U32 = "u32"
    BOOL = "bool"
    BYTES = "bytes"
    STR = "str"
    LIFECYCLE = "lifecycle"
    KEY_TYPE = "key_type"
    KEY_TYPES = "key_types"


_INT_WIDTH: Final = {Kind.U8: 1, Kind.U16: 2, Kind.U32: 4, Kind.BOOL: 1, Kind.LIFECYCLE: 1,
                     Kind.KEY_TYPE: 1}


@dataclass(frozen=True)
class FieldSpec:
    """One TLV field of a message: event attribute, tag, layout, and whether it must be present."""

    attr: str
    tag: Tag
    kind: Kind
    required: bool = True


def _f(attr: str, tag: Tag, kind: Kind, required: bool = True) -> FieldSpec:
    return FieldSpec(attr, tag, kind, required)


SCHEMAS: Final[dict[MessageType, tuple[FieldSpec, ...]]] = {
    MessageType.HELLO: (_f("version_min", Tag.VERSION_MIN, Kind.U8),
                        _f("version_max", Tag.VERSION_MAX, Kind.U8)),
    MessageType.HELLO_REPLY: (
        _f("version", Tag.VERSION, Kind.U8),
        _f("vendor", Tag.VENDOR, Kind.STR),
        _f("model", Tag.MODEL, Kind.STR),
        _f("hardware_revision", Tag.HW_REV, Kind.STR),
        _f("firmware_version", Tag.FW_VERSION, Kind.STR),
        _f("hardware_id", Tag.HW_ID, Kind.BYTES),
        _f("serial_number", Tag.SERIAL, Kind.STR, required=False),
        _f("key_types", Tag.KEY_TYPES, Kind.KEY_TYPES),
        _f("secure_element", Tag.SECURE_ELEMENT, Kind.BOOL),
        _f("max_payload", Tag.MAX_PAYLOAD, Kind.U16),
        _f("lifecycle", Tag.LIFECYCLE, Kind.LIFECYCLE),
        _f("key_slots", Tag.KEY_SLOTS, Kind.U8),
    ),
    MessageType.STATUS: (),
    MessageType.STATUS_REPLY: (_f("lifecycle", Tag.LIFECYCLE, Kind.LIFECYCLE),),
    MessageType.SET_CONFIG: (_f("key", Tag.CFG_KEY, Kind.STR), _f("value", Tag.CFG_VALUE, Kind.BYTES),
                             _f("secret", Tag.CFG_SECRET, Kind.BOOL)),
    MessageType.SET_CONFIG_REPLY: (),
    MessageType.GENERATE_KEY: (_f("key_type", Tag.KEY_TYPE, Kind.KEY_TYPE),
                               _f("key_slot", Tag.KEY_SLOT, Kind.U8)),
    MessageType.GENERATE_KEY_REPLY: (_f("public_key", Tag.PUBLIC_KEY, Kind.BYTES),),
    MessageType.GET_CSR: (
        _f("key_slot", Tag.KEY_SLOT, Kind.U8),
        _f("nonce", Tag.NONCE, Kind.BYTES),
        _f("common_name", Tag.SUBJECT_CN, Kind.STR),
        _f("serial_number", Tag.SUBJECT_SERIAL, Kind.STR, required=False),
        _f("organization", Tag.SUBJECT_ORG, Kind.STR, required=False),
    ),
    MessageType.GET_CSR_REPLY: (_f("csr", Tag.CSR, Kind.BYTES),),
    MessageType.PUT_CERT: (_f("key_slot", Tag.KEY_SLOT, Kind.U8), _f("total", Tag.TOTAL, Kind.U16),
                           _f("offset", Tag.OFFSET, Kind.U16), _f("data", Tag.DATA, Kind.BYTES)),
    MessageType.PUT_CERT_REPLY: (_f("received", Tag.RECEIVED, Kind.U16),
                                 _f("complete", Tag.COMPLETE, Kind.BOOL)),
    MessageType.CHALLENGE: (_f("key_slot", Tag.KEY_SLOT, Kind.U8), _f("nonce", Tag.NONCE, Kind.BYTES)),
    MessageType.CHALLENGE_REPLY: (_f("signature", Tag.SIGNATURE, Kind.BYTES),),
    MessageType.LOCK: (_f("confirm", Tag.LOCK_CONFIRM, Kind.U32),),
    MessageType.LOCK_REPLY: (_f("lifecycle", Tag.LIFECYCLE, Kind.LIFECYCLE),),
    MessageType.FACTORY_RESET: (_f("authorisation", Tag.AUTH, Kind.BYTES, required=False),),
    MessageType.FACTORY_RESET_REPLY: (_f("lifecycle", Tag.LIFECYCLE, Kind.LIFECYCLE),),
    MessageType.ERROR: (_f("code", Tag.ERR_CODE, Kind.U16), _f("text", Tag.ERR_TEXT, Kind.STR)),
}
"""Fields of every message, in the order they are encoded."""


def _encode_value(kind: Kind, value: object) -> bytes:
    if kind is Kind.STR:
        assert isinstance(value, str)
        return value.encode("utf-8")
    if kind is Kind.BYTES:
        assert isinstance(value, bytes)
        return value
    if kind is Kind.KEY_TYPES:
        assert isinstance(value, tuple)
        return bytes(int(v) for v in value)
    assert isinstance(value, int)
    return int(value).to_bytes(_INT_WIDTH[kind], "little")


def _decode_value(kind: Kind, tag: int, raw: bytes) -> object:
    if kind is Kind.STR:
        try:
            return raw.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise MalformedPayload(f"tag 0x{tag:02x}: invalid UTF-8") from exc
    if kind is Kind.BYTES:
        return raw
    try:
        if kind is Kind.KEY_TYPES:
            # Unknown codes are skipped: a device may support key types newer than this station.
            return tuple(KeyType(b) for b in raw if b in KeyType._value2member_map_)
        width = _INT_WIDTH[kind]
        if len(raw) != width:
            raise MalformedPayload(f"tag 0x{tag:02x}: {len(raw)} bytes, expected {width}")
        number = int.from_bytes(raw, "little")
        if kind is Kind.BOOL:
            if number > 1:
                raise MalformedPayload(f"tag 0x{tag:02x}: boolean must be 0 or 1")
            return bool(number)
        if kind is Kind.LIFECYCLE:
            return Lifecycle(number)
        if kind is Kind.KEY_TYPE:
            return KeyType(number)
        return number
    except ValueError as exc:
        if isinstance(exc, MalformedPayload):
            raise
        raise MalformedPayload(f"tag 0x{tag:02x}: unknown value {raw.hex()}") from exc


def encode_payload(event: Request | Reply) -> bytes:
    """The TLV payload of an event (fields already validated by the event)."""
    items: list[tuple[int, bytes]] = []
    for spec in SCHEMAS[event.MSG_TYPE]:
        value = getattr(event, spec.attr)
        if value is None:
            continue
        items.append((spec.tag, _encode_value(spec.kind, value)))
    return encode_tlv(items)


def decode_payload(msg_type: int, payload: bytes) -> Request | Reply:
    """Parse a payload into its event; raise a RemoteProtocolError subclass if it is not valid."""
    try:
        mt = MessageType(msg_type)
    except ValueError:
        raise UnknownMessage(f"unknown message type 0x{msg_type:02x}") from None
    specs = SCHEMAS[mt]
    by_tag = {spec.tag: spec for spec in specs}
    values: dict[str, object] = {}
    for tag, raw in iter_tlv(payload):
        spec = by_tag.get(tag)  # type: ignore[call-overload]
        if spec is None:
            continue  # unknown tag: skip (forward compatibility)
        if spec.attr in values:
            raise MalformedPayload(f"tag 0x{tag:02x} repeated")
        values[spec.attr] = _decode_value(spec.kind, tag, raw)
    for spec in specs:
        if spec.required and spec.attr not in values:
            raise MalformedPayload(f"{mt.name}: required field {spec.attr} (tag 0x{spec.tag:02x}) missing")
    cls: type[Request | Reply] = (REQUEST_TYPES[mt] if mt.is_request else REPLY_TYPES[mt])
    try:
        return cls(**values)
    except LocalProtocolError as exc:
        raise MalformedPayload(f"{mt.name}: {exc}") from exc


def encode_message(event: Request | Reply, seq: int) -> bytes:
    """Event to wire bytes (``00 || COBS(frame) || 00``)."""
    payload = encode_payload(event)
    return Frame(msg_type=event.MSG_TYPE, seq=seq, payload=payload).to_wire()


def event_fields(event: Event) -> dict[str, object]:
    """An event's fields as JSON-friendly values (for vectors and logs; secrets are not redacted)."""
    out: dict[str, object] = {}
    for f in fields(event):
        value = getattr(event, f.name)
        if isinstance(value, bytes):
            value = value.hex()
        elif isinstance(value, tuple):
            value = [v.name if isinstance(v, enum.Enum) else v for v in value]
        elif isinstance(value, enum.Enum):
            value = value.name
        out[f.name] = value
    return out


def encode_cert_bundle(cert_der: bytes, chain: tuple[bytes, ...] | list[bytes] = ()) -> bytes:
    """PUT_CERT bundle: each certificate (device first, then issuing CA upwards) as u16 LE length + DER."""
    out = bytearray()
    for der in (cert_der, *chain):
        if not 0 < len(der) <= 0xFFFF:
            raise LocalProtocolError("certificate DER must be 1..65535 bytes")
        out += len(der).to_bytes(2, "little") + der
    return bytes(out)


def split_cert_bundle(bundle: bytes) -> list[bytes]:
    """Inverse of :func:`encode_cert_bundle`; raises MalformedPayload on a bad length."""
    certs: list[bytes] = []
    i = 0
    while i < len(bundle):
        if len(bundle) - i < 2:
            raise MalformedPayload("truncated certificate length")
        n = int.from_bytes(bundle[i : i + 2], "little")
        i += 2
        if n == 0 or n > len(bundle) - i:
            raise MalformedPayload(f"certificate length {n} does not fit the bundle")
        certs.append(bundle[i : i + n])
        i += n
    if not certs:
        raise MalformedPayload("empty certificate bundle")
    return certs


PUT_CERT_OVERHEAD: Final = 3 + 1 + 3 + 2 + 3 + 2 + 3
"""TLV bytes of a PUT_CERT besides the data: KEY_SLOT, TOTAL, OFFSET items and DATA's header."""


def chunk_cert_bundle(bundle: bytes, max_payload: int, key_slot: int = 0) -> list[PutCert]:
    """Split a bundle into PUT_CERT requests that each fit ``max_payload`` (the device's limit)."""
    size = max_payload - PUT_CERT_OVERHEAD
    return [PutCert(total=len(bundle), offset=off, data=bundle[off : off + size], key_slot=key_slot)
            for off in range(0, len(bundle), size)]
