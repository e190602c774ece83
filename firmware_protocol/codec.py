"""Pure byte codecs: CRC-32C, COBS, the frame, and the frame decoder that resynchronises.

Frame layout (all integers little-endian)::

    offset  size  field
    0       1     msg_type     MessageType; replies have bit 7 set, ERROR is 0xFF
    1       1     flags        0 in version 1; receivers ignore it
    2       2     seq          u16, chosen by the station, echoed by the device
    4       2     payload_len  u16, <= MAX_PAYLOAD
    6       n     payload      TLV fields (see messages.py)
    6+n     4     crc          CRC-32C over bytes 0 .. 6+n-1

On the wire: ``00 || COBS(frame) || 00``. The leading delimiter terminates any garbage the receiver
was holding, so a frame is never glued to noise that preceded it.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from typing import Any, Final

from firmware_protocol.constants import (
    CRC_SIZE,
    DELIMITER,
    HEADER_SIZE,
    MAX_ENCODED_FRAME,
    MAX_PAYLOAD,
    MIN_RAW_FRAME,
    SEQ_MODULUS,
)
from firmware_protocol.errors import LocalProtocolError
from firmware_protocol.events import DropReason, FrameDropped

_HEADER: Final = struct.Struct("<BBHH")
"""msg_type, flags, seq, payload_len."""

_CRC: Final = struct.Struct("<I")


def _crc32c_table() -> tuple[int, ...]:
    table = []
    for n in range(256):
        c = n
        for _ in range(8):
            c = (c >> 1) ^ 0x82F63B78 if c & 1 else c >> 1
        table.append(c)
    return tuple(table)


_CRC32C_TABLE: Final = _crc32c_table()
"""Reflected CRC-32C (Castagnoli, polynomial 0x1EDC6F41) lookup table."""

try:  # the C implementation only: google-crc32c's own pure-Python fallback is no faster than ours
    import google_crc32c as _google_crc32c
except ImportError:  # pragma: no cover - it is a dependency; the protocol still works without it
    _fast_crc32c: Any = None
else:
    _fast_crc32c = _google_crc32c if _google_crc32c.implementation == "c" else None


def crc32c(data: bytes, crc: int = 0) -> int:
    """CRC-32C: reflected, init 0xFFFFFFFF, xorout 0xFFFFFFFF; crc32c(b"123456789") == 0xE3069283.

    ``crc`` continues an earlier result over more data. Computed by ``google-crc32c``'s C code
    (hardware CRC32 instructions where the CPU has them) when it is installed: 0.1 us a KiB where
    the table loop below takes 80; :func:`crc32c_table_driven` otherwise (and for comparison).
    """
    if _fast_crc32c is not None:
        return int(_fast_crc32c.extend(crc, data))
    return crc32c_table_driven(data, crc)


def crc32c_table_driven(data: bytes, crc: int = 0) -> int:
    """:func:`crc32c` as a device computes it without a CRC unit: one table lookup a byte."""
    c = crc ^ 0xFFFFFFFF
    table = _CRC32C_TABLE
    for b in data:
        c = table[(c ^ b) & 0xFF] ^ (c >> 8)
    return c ^ 0xFFFFFFFF


class CobsError(ValueError):
    """The bytes are not a valid COBS encoding."""


def cobs_encode(data: bytes) -> bytes:
    """Consistent Overhead Byte Stuffing: the output has no 0x00 and is at most ceil(n/254) longer.

    Works a zero-free run at a time (``bytes.split``), not a byte at a time: a 1 KiB frame costs a
    few microseconds instead of tens. The encoding is the canonical one of PROTOCOL.md 2.2."""
    out = bytearray()
    runs = data.split(b"\x00")
    last = len(runs) - 1
    for index, run in enumerate(runs):
        start, end = 0, len(run)
        while end - start >= 254:  # a full block: 0xFF, 254 bytes, no implied zero
            out.append(0xFF)
            out += run[start : start + 254]
            start += 254
        if index == last and start == end and start > 0:
            break  # the data ended right after a full block: no final block
        out.append(end - start + 1)  # its implied zero is the separator (none after the last run)
        out += run[start:end]
    return bytes(out)


def cobs_decode(data: bytes) -> bytes:
    """Inverse of :func:`cobs_encode`; raises :class:`CobsError` on a zero or overrunning code byte."""
    out = bytearray()
    i = 0
    n = len(data)
    while i < n:
        code = data[i]
        if code == 0:
            raise CobsError(f"zero byte at {i}")
        end = i + code
        if end > n:
            raise CobsError(f"code byte at {i} points past the end")
        block = data[i + 1 : end]
        if 0 in block:
            raise CobsError("zero byte inside a block")
        out += block
        i = end
        if code != 0xFF and i < n:
            out.append(0)
    return bytes(out)


@dataclass(frozen=True, kw_only=True)
class Frame:
    """One decoded, CRC-checked frame. The payload is not yet parsed."""

    msg_type: int
    seq: int
    payload: bytes
    flags: int = 0

    def __post_init__(self) -> None:
        if not 0 <= self.msg_type <= 0xFF:
            raise LocalProtocolError(f"msg_type out of range: {self.msg_type}")
        if not 0 <= self.seq < SEQ_MODULUS:
            raise LocalProtocolError(f"seq out of range: {self.seq}")
        if not 0 <= self.flags <= 0xFF:
            raise LocalProtocolError(f"flags out of range: {self.flags}")
        if len(self.payload) > MAX_PAYLOAD:
            raise LocalProtocolError(f"payload of {len(self.payload)} bytes exceeds {MAX_PAYLOAD}")

    def to_raw(self) -> bytes:
        """Header, payload and CRC, before COBS."""
        body = _HEADER.pack(self.msg_type, self.flags, self.seq, len(self.payload)) + self.payload
        return body + _CRC.pack(crc32c(body))

    def to_wire(self) -> bytes:
        """The bytes to write: ``00 || COBS(raw) || 00``."""
        return b"\x00" + cobs_encode(self.to_raw()) + b"\x00"


def parse_raw_frame(raw: bytes) -> Frame | FrameDropped:
    """Check a de-COBSed frame: size, CRC, length field. Never raises."""
    size = len(raw)
    if size < MIN_RAW_FRAME:
        return FrameDropped(reason=DropReason.SHORT, size=size)
    (crc,) = _CRC.unpack_from(raw, size - CRC_SIZE)
    if crc32c(raw[: size - CRC_SIZE]) != crc:
        return FrameDropped(reason=DropReason.CRC, size=size)
    msg_type, flags, seq, length = _HEADER.unpack_from(raw, 0)
    if length > MAX_PAYLOAD:
        return FrameDropped(reason=DropReason.OVERSIZE, size=size, detail=f"payload_len={length}")
    if length != size - HEADER_SIZE - CRC_SIZE:
        return FrameDropped(reason=DropReason.LENGTH, size=size, detail=f"payload_len={length}")
    return Frame(msg_type=msg_type, seq=seq, flags=flags, payload=raw[HEADER_SIZE : size - CRC_SIZE])


class FrameDecoder:
    """Splits a byte stream at 0x00 into frames; holds at most MAX_ENCODED_FRAME bytes of a frame.

    ``feed`` appends; ``next`` returns a :class:`Frame`, a :class:`FrameDropped` or ``None`` (need more
    bytes). Nothing it is fed can make it raise or hold more than ``max_encoded + chunk`` bytes.
    """

    def __init__(self, *, max_encoded: int = MAX_ENCODED_FRAME) -> None:
        self._buf = bytearray()
        self._max = max_encoded
        self._discarding = 0
        """Bytes thrown away of the current over-long run (0: not discarding)."""

    @property
    def buffered(self) -> int:
        return len(self._buf)

    def feed(self, data: bytes) -> None:
        self._buf += data

    def next(self) -> Frame | FrameDropped | None:
        while True:
            end = self._buf.find(DELIMITER)
            if end < 0:
                if len(self._buf) > self._max:
                    # A run this long can never be a frame: drop it now, before it grows.
                    self._discarding += len(self._buf)
                    self._buf.clear()
                return None
            chunk = bytes(self._buf[:end])
            del self._buf[: end + 1]
            if self._discarding:
                size = self._discarding + len(chunk)
                self._discarding = 0
                return FrameDropped(reason=DropReason.OVERSIZE, size=size, detail="no delimiter")
            if not chunk:
                continue  # empty frame between two delimiters: ignored by design
            if len(chunk) > self._max:
                return FrameDropped(reason=DropReason.OVERSIZE, size=len(chunk))
            try:
                raw = cobs_decode(chunk)
            except CobsError as exc:
                return FrameDropped(reason=DropReason.COBS, size=len(chunk), detail=str(exc))
            return parse_raw_frame(raw)

    def flush(self) -> FrameDropped | None:
        """At end of stream: report a trailing partial frame, if any."""
        size = len(self._buf) + self._discarding
        self._buf.clear()
        self._discarding = 0
        if size:
            return FrameDropped(reason=DropReason.SHORT, size=size, detail="partial frame at end of stream")
        return None
