"""The protocol's one error tree.

::

    ProtocolError                  anything that breaks the protocol's rules
    ├── LocalProtocolError         WE broke them: bad field value, send in the wrong state, full buffer
    └── RemoteProtocolError        the PEER broke them (frames already passed CRC)
        ├── MalformedPayload       TLV truncated, duplicate tag, missing or out-of-range field
        ├── UnknownMessage         a message type we do not know, or one that is not a reply
        ├── UnexpectedMessage      a valid message that does not answer the outstanding request
        └── VersionMismatch        HELLO reply with a version we did not offer

Corrupt bytes on the wire are not exceptions: the decoder reports them as a ``FrameDropped`` event
(reason: CRC, COBS, length, oversize) and carries on at the next delimiter, because noise is expected
on a UART and the caller decides when "too many" has been reached. A remote error carries
``error_code``, the ERROR code a device answers with.
"""

from __future__ import annotations

from firmware_protocol.constants import ErrorCode


class ProtocolError(Exception):
    """Base of every protocol error."""


class LocalProtocolError(ProtocolError, ValueError):
    """We broke the rules (a caller bug): an invalid event field or a send in the wrong state."""


class RemoteProtocolError(ProtocolError):
    """The peer broke the rules. ``error_code`` is what a device answers in ERROR."""

    error_code: ErrorCode = ErrorCode.MALFORMED


class MalformedPayload(RemoteProtocolError):
    """The payload does not parse as the message's TLV fields."""

    error_code = ErrorCode.MALFORMED


class UnknownMessage(RemoteProtocolError):
    """A message type this side does not know or does not accept."""

    error_code = ErrorCode.UNKNOWN_MESSAGE


class UnexpectedMessage(RemoteProtocolError):
    """A valid reply that does not answer the outstanding request."""

    error_code = ErrorCode.UNKNOWN_MESSAGE


class VersionMismatch(RemoteProtocolError):
    """The device chose a protocol version outside the range the station offered."""

    error_code = ErrorCode.UNSUPPORTED_VERSION
