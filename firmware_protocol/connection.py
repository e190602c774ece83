"""Sans-I/O connections for both ends of the link, in the manner of h11.

``receive_data(bytes)`` only buffers; ``next_event()`` parses and returns one event, ``NEED_DATA``
(or, on the device, ``PAUSED`` while a request awaits its answer); ``send(event)`` returns the bytes to
write; ``receive_eof()`` marks the end of the stream explicitly (a serial read that returns ``b""`` is a
timeout, not an end). Neither class does I/O, keeps time or starts threads: deadlines and retries
belong to the caller (see ``station.transport``), which calls ``StationConnection.resend()`` to repeat
the outstanding request byte for byte.
"""

from __future__ import annotations

from firmware_protocol.codec import Frame, FrameDecoder
from firmware_protocol.constants import (
    MAX_PAYLOAD,
    RECEIVE_BUFFER_LIMIT,
    SEQ_MODULUS,
    SUPPORTED_VERSIONS,
    MessageType,
)
from firmware_protocol.errors import (
    LocalProtocolError,
    RemoteProtocolError,
    UnexpectedMessage,
    UnknownMessage,
    VersionMismatch,
)
from firmware_protocol.events import (
    NEED_DATA,
    PAUSED,
    ConnectionClosed,
    DropReason,
    DuplicateRequest,
    ErrorReply,
    FrameDropped,
    Hello,
    HelloReply,
    NeedData,
    Paused,
    Reply,
    Request,
)
from firmware_protocol.messages import decode_payload, encode_message, encode_payload
from firmware_protocol.state import (
    DeviceInput,
    DeviceState,
    StationInput,
    StationState,
    device_transition,
    station_transition,
)

StationEvent = Reply | FrameDropped | ConnectionClosed
"""What ``StationConnection.next_event`` can return besides NEED_DATA."""

DeviceEvent = Request | FrameDropped | DuplicateRequest | ConnectionClosed
"""What ``DeviceConnection.next_event`` can return besides NEED_DATA and PAUSED."""


class _Receiver:
    """Buffer, decoder and end-of-stream flag shared by both ends."""

    def __init__(self, limit: int) -> None:
        self.decoder = FrameDecoder()
        self.limit = limit
        self.eof = False
        self.eof_reported = False

    def receive_data(self, data: bytes) -> None:
        if self.eof:
            raise LocalProtocolError("receive_data after receive_eof")
        if self.decoder.buffered + len(data) > self.limit:
            raise LocalProtocolError(
                f"receive buffer limit {self.limit} exceeded: call next_event() between reads")
        self.decoder.feed(data)

    def next_item(self) -> Frame | FrameDropped | ConnectionClosed | None:
        item = self.decoder.next()
        if item is not None:
            return item
        if self.eof:
            tail = self.decoder.flush()
            if tail is not None:
                return tail
            return ConnectionClosed()
        return None


class StationConnection:
    """The station's end: sends requests, matches replies by sequence number.

    ``initial_seq`` should be random per link, so a device that kept the cache of an earlier
    session can never mistake a new request for a retry.
    """

    def __init__(self, *, initial_seq: int = 1, versions: tuple[int, int] = SUPPORTED_VERSIONS,
                 receive_buffer_limit: int = RECEIVE_BUFFER_LIMIT) -> None:
        if not 0 <= initial_seq < SEQ_MODULUS:
            raise LocalProtocolError("initial_seq must be a u16")
        self.state = StationState.START
        self._rx = _Receiver(receive_buffer_limit)
        self._next_seq = initial_seq
        self._versions = versions
        self._outstanding: tuple[Request, int, bytes] | None = None
        self.version: int | None = None
        """Negotiated protocol version, once HELLO was answered."""
        self.peer_max_payload: int = MAX_PAYLOAD
        """The device's MAX_PAYLOAD from HELLO (the station never sends more)."""

    @property
    def outstanding(self) -> Request | None:
        """The request awaiting an answer, if any."""
        return None if self._outstanding is None else self._outstanding[0]

    @property
    def outstanding_seq(self) -> int | None:
        return None if self._outstanding is None else self._outstanding[1]

    def send(self, event: Request) -> bytes:
        """Encode a new request with the next sequence number; returns the bytes to write."""
        if not isinstance(event, Request):
            raise LocalProtocolError(f"the station sends requests, not {type(event).__name__}")
        step = StationInput.SEND_HELLO if isinstance(event, Hello) else StationInput.SEND_REQUEST
        new_state = station_transition(self.state, step)
        seq = self._next_seq
        payload = encode_payload(event)
        if len(payload) > self.peer_max_payload:
            raise LocalProtocolError(
                f"{event.MSG_TYPE.name} payload of {len(payload)} bytes exceeds the device's "
                f"max of {self.peer_max_payload}")
        data = Frame(msg_type=event.MSG_TYPE, seq=seq, payload=payload).to_wire()
        self._next_seq = (seq + 1) % SEQ_MODULUS
        self._outstanding = (event, seq, data)
        self.state = new_state
        return data

    def resend(self) -> bytes:
        """The outstanding request again, byte for byte (same seq): the device replays its answer."""
        self.state = station_transition(self.state, StationInput.RETRY)
        assert self._outstanding is not None
        return self._outstanding[2]

    def receive_data(self, data: bytes) -> None:
        """Buffer bytes read from the wire. Raises LocalProtocolError past the buffer limit."""
        self._rx.receive_data(data)

    def receive_eof(self) -> None:
        """The stream has ended; buffered frames are still returned, then ConnectionClosed."""
        self._rx.eof = True

    def next_event(self) -> StationEvent | NeedData:
        """Next event, or NEED_DATA. Raises RemoteProtocolError (state ERROR) for a bad reply."""
        while True:
            item = self._rx.next_item()
            if item is None:
                return NEED_DATA
            if isinstance(item, ConnectionClosed):
                self.state = station_transition(self.state, StationInput.EOF)
                self._outstanding = None
                return item
            if isinstance(item, FrameDropped):
                return item
            return self._on_frame(item)

    def _on_frame(self, frame: Frame) -> StationEvent:
        if self._outstanding is None or frame.seq != self._outstanding[1]:
            # A late duplicate of an answer already taken (after a retry), or noise that passed CRC.
            return FrameDropped(reason=DropReason.STALE, size=len(frame.payload),
                                detail=f"type=0x{frame.msg_type:02x} seq={frame.seq}")
        request = self._outstanding[0]
        try:
            if frame.msg_type < 0x80:
                raise UnknownMessage(f"device sent a request type 0x{frame.msg_type:02x}")
            reply = decode_payload(frame.msg_type, frame.payload)
            assert isinstance(reply, Reply)
            if isinstance(reply, ErrorReply):
                self.state = station_transition(self.state, StationInput.RECV_ERROR)
                self._outstanding = None
                return reply
            if reply.MSG_TYPE is not request.MSG_TYPE.reply_type():
                raise UnexpectedMessage(
                    f"{reply.MSG_TYPE.name} does not answer {request.MSG_TYPE.name}")
            if isinstance(reply, HelloReply):
                lo, hi = self._versions
                if not lo <= reply.version <= hi:
                    raise VersionMismatch(f"device chose version {reply.version}, offered {lo}..{hi}")
                self.version = reply.version
                self.peer_max_payload = reply.max_payload
        except RemoteProtocolError:
            self.state = StationState.ERROR
            self._outstanding = None
            raise
        self.state = station_transition(self.state, StationInput.RECV_REPLY)
        self._outstanding = None
        return reply


class DeviceConnection:
    """The device's end: one request at a time, answers cached for replay by sequence number."""

    def __init__(self, *, receive_buffer_limit: int = RECEIVE_BUFFER_LIMIT) -> None:
        self.state = DeviceState.NO_SESSION
        self._rx = _Receiver(receive_buffer_limit)
        self._current: tuple[int, int, bytes, MessageType | None] | None = None
        """(seq, msg_type, payload, request type if known) of the request being answered."""
        self._cache: tuple[tuple[int, int, bytes], bytes] | None = None
        """(seq, msg_type, payload) of the last answered request, and the answer's bytes."""

    @property
    def current_request_type(self) -> MessageType | None:
        return None if self._current is None else self._current[3]

    def receive_data(self, data: bytes) -> None:
        self._rx.receive_data(data)

    def receive_eof(self) -> None:
        self._rx.eof = True

    def reboot(self) -> None:
        """Forget the session, the buffered bytes and the replay cache, as a power cycle does."""
        self.state = device_transition(self.state, DeviceInput.REBOOT)
        self._rx = _Receiver(self._rx.limit)
        self._current = None
        self._cache = None

    def next_event(self) -> DeviceEvent | NeedData | Paused:
        """Next request (or drop/duplicate/close), NEED_DATA, or PAUSED while one is unanswered.

        A request that does not parse raises RemoteProtocolError; the connection is then waiting for
        the application to ``send`` an ErrorReply with the exception's ``error_code``.
        """
        if self.state in (DeviceState.ANSWER, DeviceState.ANSWER_HELLO, DeviceState.REFUSE):
            return PAUSED
        while True:
            item = self._rx.next_item()
            if item is None:
                return NEED_DATA
            if isinstance(item, ConnectionClosed):
                self.state = device_transition(self.state, DeviceInput.EOF)
                return item
            if isinstance(item, FrameDropped):
                return item
            return self._on_frame(item)

    def _on_frame(self, frame: Frame) -> DeviceEvent:
        key = (frame.seq, frame.msg_type, frame.payload)
        if self._cache is not None and self._cache[0] == key:
            return DuplicateRequest(seq=frame.seq, reply=self._cache[1])
        try:
            if frame.msg_type >= 0x80:
                raise UnknownMessage(f"0x{frame.msg_type:02x} is not a request")
            request = decode_payload(frame.msg_type, frame.payload)
        except RemoteProtocolError:
            known = frame.msg_type in MessageType._value2member_map_
            self._current = (frame.seq, frame.msg_type, frame.payload,
                             MessageType(frame.msg_type) if known else None)
            self.state = device_transition(self.state, DeviceInput.RECV_INVALID)
            raise
        assert isinstance(request, Request)
        step = DeviceInput.RECV_HELLO if isinstance(request, Hello) else DeviceInput.RECV_REQUEST
        self.state = device_transition(self.state, step)
        self._current = (frame.seq, frame.msg_type, frame.payload, request.MSG_TYPE)
        return request

    def send(self, reply: Reply) -> bytes:
        """Encode the answer to the current request (same seq) and cache it for replay."""
        if not isinstance(reply, Reply):
            raise LocalProtocolError(f"the device sends replies, not {type(reply).__name__}")
        is_error = isinstance(reply, ErrorReply)
        new_state = device_transition(self.state, DeviceInput.SEND_ERROR if is_error
                                      else DeviceInput.SEND_REPLY)
        assert self._current is not None
        seq, msg_type, payload, request_type = self._current
        if not is_error and (request_type is None or reply.MSG_TYPE is not request_type.reply_type()):
            raise LocalProtocolError(f"{reply.MSG_TYPE.name} does not answer message 0x{msg_type:02x}")
        data = encode_message(reply, seq)
        self._cache = ((seq, msg_type, payload), data)
        self._current = None
        self.state = new_state
        return data
