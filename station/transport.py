"""The serial adapter for :class:`station.ports.DeviceLink`: pyserial below, firmware_protocol above.

One request at a time: send, then read with a blocking read whose timeout is the time left to the
attempt's deadline (no polling sleeps). A request is retried with the SAME bytes (same sequence
number) when its deadline passes, or shortly after a corrupt frame; the device answers a retry from
its cache, so nothing is executed twice. Per-request timeouts, attempts and the bad-frame budget come
from the spec (``firmware_protocol.constants``) and can be scaled for tests with :class:`LinkPolicy`.

Memory stays bounded whatever the device sends: each read takes at most ``READ_CHUNK`` bytes, the
decoder keeps at most one maximum frame, and every request has a hard deadline
(``max_attempts * timeout``), so a flooding device cannot hang the link.

Every pyserial error, OSError and protocol error is translated into the station's error tree in one
place, :meth:`SerialDeviceLink._translate`:

==========================================================  ===================================
what happened                                               station error (code)
==========================================================  ===================================
port missing / open fails / read or write fails / EOF       DeviceDisconnected (device_disconnected)
port locked by another process (exclusive open)             DeviceDisconnected (port_busy)
device answers SESSION_REQUIRED mid-session (it rebooted)   DeviceDisconnected (device_rebooted)
no answer within all attempts; write timeout                DeviceTimeout (device_timeout)
corrupt frames beyond the budget, or every attempt corrupt  DeviceLinkError (bad_link)
device answered ERROR                                       DeviceRefused (device_<error name>)
wrong protocol version in HELLO                             DeviceMisbehaved (protocol_version)
oversize frame on two attempts                              DeviceMisbehaved (oversize_frame)
reply to another request, malformed or unknown message      DeviceMisbehaved (protocol_violation)
public key of the wrong type, bad ack, wrong lifecycle      DeviceMisbehaved (wrong_answer)
LOCK answered with a lifecycle other than LOCKED            DeviceMisbehaved (lock_not_held)
==========================================================  ===================================

Errors carry ``slot``, ``port``, ``step`` (a :class:`station.domain.Step` value) and ``request``.
After any DeviceError other than DeviceRefused the session is gone: call :meth:`hello` again.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import secrets
import select
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Final, Protocol, TypeVar, cast

import serial
import serial.tools.list_ports
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519

import firmware_protocol as fp
from firmware_protocol.constants import (
    BAD_FRAME_BUDGET,
    BAD_FRAME_SETTLE_S,
    MAX_ATTEMPTS,
    TIMEOUTS_S,
    ErrorCode,
    MessageType,
)
from station.domain import Step
from station.errors import (
    DeviceDisconnected,
    DeviceError,
    DeviceLinkError,
    DeviceMisbehaved,
    DeviceRefused,
    DeviceTimeout,
)
from station.ports import ConfigValue, DeviceInfo, KeyType, Lifecycle, SubjectRequest

__all__ = ["LinkPolicy", "PortInfo", "SerialDeviceLink", "list_ports"]

log = logging.getLogger(__name__)

try:  # pyserial lets termios.error (not an OSError) escape from tcflush on a vanished port
    import termios

    _PORT_ERRORS: tuple[type[BaseException], ...] = (serial.SerialException, OSError, termios.error)
except ImportError:  # pragma: no cover - not POSIX
    _PORT_ERRORS = (serial.SerialException, OSError)

READ_CHUNK: Final = 4096
"""Most bytes taken from the port per read."""

_STEP_OF: Final[dict[MessageType, str]] = {
    MessageType.HELLO: Step.IDENTIFY,
    MessageType.STATUS: Step.CHECK,
    MessageType.SET_CONFIG: Step.COMMISSION,
    MessageType.GENERATE_KEY: Step.GENERATE_KEY,
    MessageType.GET_CSR: Step.GET_CSR,
    MessageType.PUT_CERT: Step.WRITE_CERT,
    MessageType.CHALLENGE: Step.PROVE_POSSESSION,
    MessageType.LOCK: Step.LOCK,
    MessageType.FACTORY_RESET: "factory_reset",
}
"""The workflow step a request usually belongs to (error context)."""

_KEY_TYPES: Final = {fp.KeyType.P256: KeyType.P256, fp.KeyType.P384: KeyType.P384,
                     fp.KeyType.ED25519: KeyType.ED25519}
_WIRE_KEY_TYPES: Final = {v: k for k, v in _KEY_TYPES.items()}
_LIFECYCLES: Final = {fp.Lifecycle.BLANK: Lifecycle.BLANK, fp.Lifecycle.KEYED: Lifecycle.KEYED,
                      fp.Lifecycle.PROVISIONED: Lifecycle.PROVISIONED,
                      fp.Lifecycle.LOCKED: Lifecycle.LOCKED}


@dataclass(frozen=True, kw_only=True)
class LinkPolicy:
    """Timeouts and retry budget. The defaults are the spec's; tests pass ``scale`` < 1."""

    timeouts: Mapping[MessageType, float] = field(default_factory=lambda: dict(TIMEOUTS_S))
    scale: float = 1.0
    max_attempts: int = MAX_ATTEMPTS
    bad_frame_budget: int = BAD_FRAME_BUDGET
    settle_s: float = BAD_FRAME_SETTLE_S
    write_timeout_s: float = 1.0

    def __post_init__(self) -> None:
        if self.scale <= 0 or self.max_attempts < 1 or self.bad_frame_budget < 0:
            raise ValueError("scale must be > 0, max_attempts >= 1, bad_frame_budget >= 0")

    def timeout_for(self, msg_type: MessageType) -> float:
        """Per-attempt timeout of one request, in seconds."""
        return self.timeouts[msg_type] * self.scale


@dataclass(frozen=True, kw_only=True)
class PortInfo:
    """A serial port as the OS lists it."""

    device: str
    vid: int | None
    pid: int | None
    serial_number: str | None
    manufacturer: str | None
    product: str | None
    description: str
    location: str | None
    hwid: str


def list_ports(vid: int | None = None, pid: int | None = None) -> list[PortInfo]:
    """USB-serial ports (and their /dev/serial/by-id links), optionally filtered by USB VID/PID."""
    found = []
    for p in serial.tools.list_ports.comports(include_links=True):
        if vid is not None and p.vid != vid:
            continue
        if pid is not None and p.pid != pid:
            continue
        found.append(PortInfo(device=p.device, vid=p.vid, pid=p.pid, serial_number=p.serial_number,
                              manufacturer=p.manufacturer, product=p.product,
                              description=p.description or "", location=p.location, hwid=p.hwid or ""))
    return sorted(found, key=lambda p: p.device)


# Internal outcomes of one exchange; _translate turns each into a station error.
class _Timeout(Exception):
    pass


class _BadLink(Exception):
    pass


class _Oversize(Exception):
    pass


class _Closed(Exception):
    pass


class _Refused(Exception):
    def __init__(self, reply: fp.ErrorReply) -> None:
        super().__init__(reply.text)
        self.reply = reply


class _WrongAnswer(Exception):
    pass


class _LockNotHeld(Exception):
    pass


R = TypeVar("R", bound=fp.Reply)


class _Port(Protocol):
    """The part of a pyserial port the link uses (types-pyserial's SerialBase lacks some of it)."""

    timeout: float | None
    dtr: bool
    rts: bool

    @property
    def in_waiting(self) -> int: ...
    def open(self) -> None: ...
    def close(self) -> None: ...
    def read(self, size: int = 1) -> bytes: ...
    def write(self, data: bytes, /) -> int | None: ...
    def reset_input_buffer(self) -> None: ...


def _fileno(ser: _Port) -> int | None:
    """The port's descriptor, or None for a pyserial URL handler that has none."""
    fileno = getattr(ser, "fileno", None)
    if fileno is None:
        return None
    try:
        fd = fileno()
    except (AttributeError, OSError, ValueError, serial.SerialException):
        return None
    return fd if isinstance(fd, int) else None


class SerialDeviceLink:
    """A :class:`station.ports.DeviceLink` over a serial port (or any pyserial URL, e.g. ``loop://``).

    Opens the port at construction (exclusive, DTR/RTS set before open so the board is not reset by
    accident) and raises DeviceDisconnected if it cannot. Not thread-safe: one link per slot thread.
    """

    def __init__(
        self,
        port: str,
        *,
        baudrate: int = 115200,
        slot: str | None = None,
        policy: LinkPolicy | None = None,
        dtr: bool = False,
        rts: bool = False,
    ) -> None:
        self.port = port
        self.slot = slot
        self.policy = policy or LinkPolicy()
        self._conn = self._new_connection()
        self._ser: _Port | None = None
        self._fd: int | None = None
        self._request: MessageType | None = None
        with self._translate(None):
            ser = cast(_Port, serial.serial_for_url(
                port, do_not_open=True, baudrate=baudrate, timeout=0.1,
                write_timeout=self.policy.write_timeout_s, exclusive=True))
            ser.dtr = dtr
            ser.rts = rts
            ser.open()
            self._ser = ser
            self._fd = _fileno(ser)
            if self._fd is not None:
                ser.timeout = 0  # reads take what has arrived; select() does the waiting
        log.debug("opened %s (slot %s)", port, slot)

    @staticmethod
    def _new_connection() -> fp.StationConnection:
        return fp.StationConnection(initial_seq=secrets.randbelow(1 << 16))

    def __enter__(self) -> SerialDeviceLink:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- DeviceLink -----------------------------------------------------------------------------

    def hello(self) -> DeviceInfo:
        self._conn = self._new_connection()
        reply = self._exchange(fp.Hello(), fp.HelloReply)
        return DeviceInfo(
            protocol_version=reply.version, vendor=reply.vendor, model=reply.model,
            hardware_revision=reply.hardware_revision, firmware_version=reply.firmware_version,
            hardware_id=reply.hardware_id.hex(), serial_number=reply.serial_number,
            key_types=tuple(_KEY_TYPES[k] for k in reply.key_types),
            secure_element=reply.secure_element, max_frame=reply.max_payload,
            lifecycle=_LIFECYCLES[reply.lifecycle])

    def status(self) -> Lifecycle:
        return _LIFECYCLES[self._exchange(fp.GetStatus(), fp.StatusReply).lifecycle]

    def set_config(self, values: Sequence[ConfigValue]) -> None:
        for v in values:
            self._exchange(fp.SetConfig(key=v.key, value=v.value.encode("utf-8"), secret=v.secret),
                           fp.ConfigAck)

    def generate_key(self, key_type: KeyType, key_slot: int = 0) -> bytes:
        reply = self._exchange(fp.GenerateKey(key_type=_WIRE_KEY_TYPES[key_type], key_slot=key_slot),
                               fp.KeyGenerated)
        with self._translate(MessageType.GENERATE_KEY):
            _check_key_type(reply.public_key, key_type)
        return reply.public_key

    def get_csr(self, subject: SubjectRequest, nonce: bytes, key_slot: int = 0) -> bytes:
        request = fp.GetCsr(nonce=nonce, common_name=subject.common_name,
                            serial_number=subject.serial_number, organization=subject.organization,
                            key_slot=key_slot)
        return self._exchange(request, fp.CsrReply).csr

    def put_cert(self, cert_der: bytes, chain: Sequence[bytes] = (), key_slot: int = 0) -> None:
        bundle = fp.encode_cert_bundle(cert_der, tuple(chain))
        chunks = fp.chunk_cert_bundle(bundle, self._conn.peer_max_payload, key_slot)
        for i, chunk in enumerate(chunks):
            ack = self._exchange(chunk, fp.CertAck)
            last = i == len(chunks) - 1
            with self._translate(MessageType.PUT_CERT):
                if ack.received != chunk.offset + len(chunk.data) or ack.complete != last:
                    raise _WrongAnswer(f"PUT_CERT ack received={ack.received} complete={ack.complete} "
                                       f"for {chunk.offset + len(chunk.data)}/{chunk.total}")

    def challenge(self, nonce: bytes, key_slot: int = 0) -> bytes:
        return self._exchange(fp.Challenge(nonce=nonce, key_slot=key_slot), fp.ChallengeReply).signature

    lock_confirms_lifecycle: Final = True
    """:meth:`lock` itself checks the lifecycle the device reports in its LOCK reply (a unit that does
    not say LOCKED raises ``lock_not_held``), so the workflow needs no STATUS read-back round trip."""

    def lock(self) -> None:
        reply = self._exchange(fp.Lock(), fp.LockReply)
        with self._translate(MessageType.LOCK):
            if reply.lifecycle is not fp.Lifecycle.LOCKED:
                raise _LockNotHeld(f"the lock did not hold: LOCK answered with lifecycle "
                                   f"{reply.lifecycle.name}")

    def factory_reset(self, authorisation: bytes | None = None) -> None:
        reply = self._exchange(fp.FactoryReset(authorisation=authorisation), fp.ResetReply)
        with self._translate(MessageType.FACTORY_RESET):
            if reply.lifecycle is not fp.Lifecycle.BLANK:
                raise _WrongAnswer(f"FACTORY_RESET answered with lifecycle {reply.lifecycle.name}")

    def close(self) -> None:
        ser, self._ser = self._ser, None
        if ser is not None:
            with contextlib.suppress(Exception):
                ser.close()

    # -- the exchange ---------------------------------------------------------------------------

    def _exchange(self, request: fp.Request, expect: type[R]) -> R:
        """Send one request and return its reply, retrying with the same seq; errors translated."""
        with self._translate(request.MSG_TYPE):
            reply = self._roundtrip(request)
            if not isinstance(reply, expect):  # pragma: no cover - the connection checks this first
                raise _WrongAnswer(f"{type(reply).__name__} does not answer {request.MSG_TYPE.name}")
            return reply
        raise AssertionError("unreachable")  # pragma: no cover

    def _roundtrip(self, request: fp.Request) -> fp.Reply:
        ser = self._ser
        if ser is None:
            raise _Closed("link is closed")
        policy = self.policy
        timeout = policy.timeout_for(request.MSG_TYPE)
        ser.reset_input_buffer()  # late replays of earlier requests are of no use now
        self._write(ser, self._conn.send(request))
        log.debug("%s -> %r", self.port, request)
        attempts, bad, oversize = 1, 0, 0
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                if attempts >= policy.max_attempts:
                    if bad:
                        raise _BadLink(f"{bad} corrupt frames and no good answer in {attempts} attempts")
                    raise _Timeout(f"no answer to {request.MSG_TYPE.name} in {attempts} attempts "
                                   f"of {timeout:.2f}s")
                attempts += 1
                log.info("%s: retrying %s (attempt %d)", self.port, request.MSG_TYPE.name, attempts)
                self._write(ser, self._conn.resend())
                deadline = time.monotonic() + timeout
                continue
            chunk = self._read(ser, left)
            if not chunk:
                continue  # read timeout: the loop head decides
            self._conn.receive_data(chunk)
            while True:
                event = self._conn.next_event()
                if event is fp.NEED_DATA:
                    break
                if isinstance(event, fp.FrameDropped):
                    if event.reason is fp.DropReason.STALE:
                        continue
                    bad += 1
                    log.debug("%s: dropped frame (%s, %d bytes)", self.port, event.reason, event.size)
                    if event.reason is fp.DropReason.OVERSIZE:
                        oversize += 1
                        if oversize >= 2:
                            raise _Oversize(f"frames of {event.size} bytes exceed the maximum")
                    if bad > policy.bad_frame_budget:
                        raise _BadLink(f"{bad} corrupt frames while waiting for "
                                       f"{request.MSG_TYPE.name}")
                    deadline = min(deadline, time.monotonic() + policy.settle_s)
                    continue
                if isinstance(event, fp.ConnectionClosed):  # pragma: no cover - serial has no EOF
                    raise _Closed("end of stream")
                if isinstance(event, fp.ErrorReply):
                    raise _Refused(event)
                log.debug("%s <- %r", self.port, event)
                return event

    def _read(self, ser: _Port, timeout: float) -> bytes:
        """What has arrived, waiting up to ``timeout`` for the first byte; b"" if nothing came.

        On a real port: one select() and one read() on its (non-blocking) descriptor. Through
        pyserial's read, each wait reprogrammed the port (tcsetattr, when the timeout changes), asked
        for the bytes waiting (ioctl) and selected again: five system calls where two do, each one a
        release and re-acquisition of the interpreter lock that 16 slot threads and the audit writer
        share. Ports without a descriptor (pyserial URLs such as ``loop://``) use pyserial's read.
        """
        fd = self._fd
        if fd is None:
            ser.timeout = timeout
            return ser.read(min(max(ser.in_waiting, 1), READ_CHUNK))
        ready, _, _ = select.select([fd], [], [], timeout)
        if not ready:
            return b""
        try:
            data = os.read(fd, READ_CHUNK)
        except (BlockingIOError, InterruptedError):
            return b""
        if not data:  # readable but empty: the USB adapter or the pty went away
            raise serial.SerialException("device reports readiness to read but returned no data "
                                         "(device disconnected?)")
        return data

    def _write(self, ser: _Port, data: bytes) -> None:
        """Write a frame: straight to the descriptor when it takes it all (it nearly always does),
        through pyserial's write (which waits for room, up to its write timeout) for the rest."""
        fd = self._fd
        if fd is not None:
            try:
                written = os.write(fd, data)
            except BlockingIOError:
                written = 0
            if written == len(data):
                return
            data = data[written:]
        ser.write(data)

    @contextlib.contextmanager
    def _translate(self, msg_type: MessageType | None) -> Iterator[None]:
        """THE place where pyserial, OS and protocol errors become station errors."""
        context: dict[str, Any] = {
            "slot": self.slot, "port": self.port,
            "step": _STEP_OF[msg_type] if msg_type is not None else Step.CONNECT,
            "request": msg_type.name if msg_type is not None else None,
        }
        try:
            yield
        except _Refused as exc:
            code = exc.reply.error_code
            if code is ErrorCode.SESSION_REQUIRED and msg_type is not MessageType.HELLO:
                self._conn = self._new_connection()
                raise DeviceDisconnected("the device restarted and lost the session",
                                         code="device_rebooted", **context) from None
            name = code.name.lower() if code is not None else f"0x{exc.reply.code:04x}"
            raise DeviceRefused(f"{name}: {exc.reply.text}" if exc.reply.text else name,
                                code=f"device_{name}", device_code=exc.reply.code, **context) from None
        except (DeviceError, fp.LocalProtocolError):
            raise  # already translated, or our own bug (e.g. a nonce too short): not the device's fault
        except Exception as exc:
            self._conn = self._new_connection()  # the session cannot be trusted any more
            raise self._station_error(exc, context) from exc

    @staticmethod
    def _station_error(exc: Exception, context: dict[str, Any]) -> DeviceError:
        if isinstance(exc, _Timeout):
            return DeviceTimeout(str(exc), **context)
        if isinstance(exc, serial.SerialTimeoutException):
            return DeviceTimeout(f"write timed out: {exc}", **context)
        if isinstance(exc, _BadLink):
            return DeviceLinkError(str(exc), **context)
        if isinstance(exc, _Oversize):
            return DeviceMisbehaved(str(exc), code="oversize_frame", **context)
        if isinstance(exc, fp.VersionMismatch):
            return DeviceMisbehaved(str(exc), code="protocol_version", **context)
        if isinstance(exc, fp.RemoteProtocolError):
            return DeviceMisbehaved(str(exc), code="protocol_violation", **context)
        if isinstance(exc, _WrongAnswer):
            return DeviceMisbehaved(str(exc), code="wrong_answer", **context)
        if isinstance(exc, _LockNotHeld):
            return DeviceMisbehaved(str(exc), code="lock_not_held", **context)
        if isinstance(exc, _PORT_ERRORS):
            if getattr(exc, "errno", None) in (errno.EAGAIN, errno.EWOULDBLOCK, errno.EBUSY):
                return DeviceDisconnected(f"port in use by another program: {exc}", code="port_busy",
                                          **context)
            return DeviceDisconnected(f"serial port failed: {exc}", **context)
        if isinstance(exc, _Closed):
            return DeviceDisconnected(str(exc), **context)
        raise exc  # not a device problem: let the bug surface unchanged


def _check_key_type(spki: bytes, key_type: KeyType) -> None:
    """The device must return a key of the type asked for (weak or wrong-curve keys are wrong answers)."""
    try:
        key = serialization.load_der_public_key(spki)
    except ValueError as exc:
        raise _WrongAnswer(f"public key does not parse: {exc}") from None
    if key_type is KeyType.ED25519:
        ok = isinstance(key, ed25519.Ed25519PublicKey)
    else:
        curve = ec.SECP256R1 if key_type is KeyType.P256 else ec.SECP384R1
        ok = isinstance(key, ec.EllipticCurvePublicKey) and isinstance(key.curve, curve)
    if not ok:
        what = type(key).__name__
        if isinstance(key, ec.EllipticCurvePublicKey):
            what = key.curve.name
        raise _WrongAnswer(f"asked for a {key_type} key, got {what}")
