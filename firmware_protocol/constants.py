"""Wire constants of the device provisioning protocol, version 1.

Every number here is also in ``PROTOCOL.md``; a test checks the two agree. Sizes are in bytes.

Frame arithmetic (section "Framing" of the spec)::

    raw frame   = header (6) + payload (<= MAX_PAYLOAD = 1024) + CRC-32C (4)   <= 1034
    on the wire = 0x00 + COBS(raw frame) + 0x00                              <= 1041
    COBS adds at most ceil(n / 254) bytes, so MAX_ENCODED_FRAME = 1034 + 5 = 1039
"""

from __future__ import annotations

import enum
from typing import Final

PROTOCOL_VERSION: Final = 1
"""The only protocol version this implementation speaks."""

SUPPORTED_VERSIONS: Final = (1, 1)
"""(lowest, highest) protocol version the station offers in HELLO."""

DELIMITER: Final = 0x00
"""Frame delimiter on the wire; COBS guarantees it never occurs inside a frame."""

HEADER_SIZE: Final = 6
"""msg_type (u8) + flags (u8) + seq (u16 LE) + payload_len (u16 LE)."""

CRC_SIZE: Final = 4
"""CRC-32C (Castagnoli), little-endian, over header and payload."""

MAX_PAYLOAD: Final = 1024
"""Largest payload either side may send; a device may advertise less (never below MIN_MAX_PAYLOAD)."""

MIN_MAX_PAYLOAD: Final = 256
"""Smallest MAX_PAYLOAD a device may advertise in HELLO."""

MAX_RAW_FRAME: Final = HEADER_SIZE + MAX_PAYLOAD + CRC_SIZE
"""Largest frame before COBS encoding."""

MAX_ENCODED_FRAME: Final = MAX_RAW_FRAME + (MAX_RAW_FRAME + 253) // 254
"""Largest COBS-encoded frame (without delimiters); longer runs are discarded up to the next 0x00."""

MIN_RAW_FRAME: Final = HEADER_SIZE + CRC_SIZE
"""A frame with an empty payload."""

RECEIVE_BUFFER_LIMIT: Final = 64 * 1024
"""Bytes a Connection holds before ``next_event`` drains them; more is a local error (caller bug)."""

MAX_CERT_BUNDLE: Final = 4096
"""Largest certificate bundle (device certificate + chain, length-prefixed) PUT_CERT may transfer."""

NONCE_MIN: Final = 16
"""Shortest station nonce for GET_CSR and CHALLENGE (128 bits)."""

NONCE_MAX: Final = 64
"""Longest station nonce."""

ERROR_TEXT_MAX: Final = 64
"""Longest ERROR text (UTF-8 bytes)."""

LOCK_MAGIC: Final = 0x4B434F4C
"""LOCK must carry this u32 ("LOCK" in little-endian ASCII): a stray frame can never lock a unit."""

CHALLENGE_DOMAIN: Final = b"fwprov-v1 proof-of-possession\x00"
"""Prefix of the message a device signs in CHALLENGE (domain separation)."""

RESET_DOMAIN: Final = b"fwprov-v1 factory-reset\x00"
"""Prefix of the HMAC input that authorises FACTORY_RESET of a locked unit."""

RESET_TOKEN_SIZE: Final = 32
"""HMAC-SHA256 output size; the AUTH field of FACTORY_RESET."""

SEQ_MODULUS: Final = 1 << 16
"""Sequence numbers are u16 and wrap."""


class MessageType(enum.IntEnum):
    """Message type byte. A reply is its request's type | 0x80; ERROR answers any request."""

    HELLO = 0x01
    STATUS = 0x02
    SET_CONFIG = 0x03
    GENERATE_KEY = 0x04
    GET_CSR = 0x05
    PUT_CERT = 0x06
    CHALLENGE = 0x07
    LOCK = 0x08
    FACTORY_RESET = 0x09
    HELLO_REPLY = 0x81
    STATUS_REPLY = 0x82
    SET_CONFIG_REPLY = 0x83
    GENERATE_KEY_REPLY = 0x84
    GET_CSR_REPLY = 0x85
    PUT_CERT_REPLY = 0x86
    CHALLENGE_REPLY = 0x87
    LOCK_REPLY = 0x88
    FACTORY_RESET_REPLY = 0x89
    ERROR = 0xFF

    @property
    def is_request(self) -> bool:
        return self < 0x80

    def reply_type(self) -> MessageType:
        """The success reply to this request."""
        if not self.is_request:
            raise ValueError(f"{self.name} is not a request")
        return MessageType(self | 0x80)


REPLY_FLAG: Final = 0x80
"""Bit set in the type byte of every device-to-station message."""


class KeyType(enum.IntEnum):
    """Key algorithm codes (KEY_TYPE, KEY_TYPES fields)."""

    P256 = 0x01
    P384 = 0x02
    ED25519 = 0x03


class Lifecycle(enum.IntEnum):
    """Device lifecycle (LIFECYCLE field). Only moves forward, except FACTORY_RESET back to BLANK."""

    BLANK = 0x00
    KEYED = 0x01
    PROVISIONED = 0x02
    LOCKED = 0x03


class ErrorCode(enum.IntEnum):
    """ERROR codes (u16). 0x8000 and above are vendor-specific."""

    UNSUPPORTED_VERSION = 0x0001
    SESSION_REQUIRED = 0x0002
    UNKNOWN_MESSAGE = 0x0003
    MALFORMED = 0x0004
    WRONG_STATE = 0x0005
    LOCKED = 0x0006
    UNSUPPORTED_KEY_TYPE = 0x0007
    BAD_SLOT = 0x0008
    NO_KEY = 0x0009
    CERT_REJECTED = 0x000A
    CHUNK_ERROR = 0x000B
    UNAUTHORISED = 0x000C
    CONFIG_REJECTED = 0x000D
    TOO_LARGE = 0x000E
    INTERNAL = 0x000F


class Tag(enum.IntEnum):
    """TLV tags; one namespace for all messages (the spec lists which message carries which)."""

    VERSION_MIN = 0x01
    VERSION_MAX = 0x02
    VERSION = 0x03
    VENDOR = 0x10
    MODEL = 0x11
    HW_REV = 0x12
    FW_VERSION = 0x13
    HW_ID = 0x14
    SERIAL = 0x15
    KEY_TYPES = 0x16
    SECURE_ELEMENT = 0x17
    MAX_PAYLOAD = 0x18
    LIFECYCLE = 0x19
    KEY_SLOTS = 0x1A
    CFG_KEY = 0x20
    CFG_VALUE = 0x21
    CFG_SECRET = 0x22
    KEY_TYPE = 0x30
    KEY_SLOT = 0x31
    PUBLIC_KEY = 0x32
    NONCE = 0x40
    SUBJECT_CN = 0x41
    SUBJECT_SERIAL = 0x42
    SUBJECT_ORG = 0x43
    CSR = 0x44
    TOTAL = 0x50
    OFFSET = 0x51
    DATA = 0x52
    RECEIVED = 0x53
    COMPLETE = 0x54
    SIGNATURE = 0x60
    LOCK_CONFIRM = 0x70
    AUTH = 0x71
    ERR_CODE = 0x7E
    ERR_TEXT = 0x7F


TIMEOUTS_S: Final[dict[MessageType, float]] = {
    MessageType.HELLO: 0.5,
    MessageType.STATUS: 0.5,
    MessageType.SET_CONFIG: 1.0,
    MessageType.GENERATE_KEY: 5.0,
    MessageType.GET_CSR: 3.0,
    MessageType.PUT_CERT: 1.0,
    MessageType.CHALLENGE: 2.0,
    MessageType.LOCK: 2.0,
    MessageType.FACTORY_RESET: 3.0,
}
"""Per-attempt reply timeout of each request (seconds), from the last byte sent."""

MAX_ATTEMPTS: Final = 3
"""Attempts per request (1 + 2 retries), each with the SAME sequence number."""

BAD_FRAME_BUDGET: Final = 8
"""Corrupt frames tolerated during one request before the station declares a bad link."""

BAD_FRAME_SETTLE_S: Final = 0.05
"""After a corrupt frame, wait this long for a good reply before retrying early."""
