"""Station Connection joined to device Connection in memory: whole bytes, single bytes, random chunks."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from firmware_protocol import (
    NEED_DATA,
    PAUSED,
    CertAck,
    Challenge,
    ChallengeReply,
    ConnectionClosed,
    DeviceConnection,
    DropReason,
    DuplicateRequest,
    ErrorCode,
    ErrorReply,
    FrameDropped,
    GenerateKey,
    GetStatus,
    Hello,
    HelloReply,
    KeyGenerated,
    KeyType,
    Lifecycle,
    LocalProtocolError,
    Reply,
    Request,
    StationConnection,
    StatusReply,
    UnexpectedMessage,
    VersionMismatch,
    chunk_cert_bundle,
    encode_cert_bundle,
)
from firmware_protocol.state import DeviceState, StationState
from tests.protocol.strategies import FAST

HELLO_REPLY = HelloReply(version=1, vendor="Acme", model="M", hardware_revision="A", firmware_version="1",
                         hardware_id=b"\x01\x02\x03\x04", key_types=(KeyType.P256,), secure_element=True,
                         max_payload=512, lifecycle=Lifecycle.BLANK)


def answer(request: Request) -> Reply:
    """A minimal in-memory device's answers."""
    if isinstance(request, Hello):
        return HELLO_REPLY
    if isinstance(request, GetStatus):
        return StatusReply(lifecycle=Lifecycle.BLANK)
    if isinstance(request, GenerateKey):
        return KeyGenerated(public_key=b"\x30" * 91)
    if isinstance(request, Challenge):
        return ChallengeReply(signature=request.nonce)
    return CertAck(received=0, complete=False)


class Pipe:
    """Carries bytes between the two connections in chunks chosen by a splitter."""

    def __init__(self, chunks: st.DataObject | None = None, *, single: bool = False) -> None:
        self.station = StationConnection(initial_seq=0xFFFE)
        self.device = DeviceConnection()
        self.chunks = chunks
        self.single = single
        self.executed: list[Request] = []

    def _split(self, data: bytes) -> list[bytes]:
        if self.single:
            return [data[i : i + 1] for i in range(len(data))]
        if self.chunks is None:
            return [data]
        out, i = [], 0
        while i < len(data):
            n = self.chunks.draw(st.integers(1, max(1, len(data) - i)))
            out.append(data[i : i + n])
            i += n
        return out

    def to_device(self, data: bytes) -> bytes:
        """Feed the device; return what it writes back."""
        out = b""
        for piece in self._split(data):
            self.device.receive_data(piece)
            while (event := self.device.next_event()) not in (NEED_DATA, PAUSED):
                if isinstance(event, DuplicateRequest):
                    out += event.reply
                elif isinstance(event, Request):
                    self.executed.append(event)
                    out += self.device.send(answer(event))
        return out

    def to_station(self, data: bytes) -> list[object]:
        events: list[object] = []
        for piece in self._split(data):
            self.station.receive_data(piece)
            while (event := self.station.next_event()) is not NEED_DATA:
                events.append(event)
        return events

    def call(self, request: Request) -> Reply:
        events = self.to_station(self.to_device(self.station.send(request)))
        replies = [e for e in events if isinstance(e, Reply)]
        assert len(replies) == 1, events
        return replies[0]


SCRIPT: list[Request] = [Hello(), GetStatus(), GenerateKey(key_type=KeyType.P256),
                         Challenge(nonce=bytes(range(20)))]


def run_script(pipe: Pipe) -> None:
    assert pipe.call(SCRIPT[0]) == HELLO_REPLY
    assert pipe.station.peer_max_payload == 512
    assert pipe.call(SCRIPT[1]) == StatusReply(lifecycle=Lifecycle.BLANK)
    assert pipe.call(SCRIPT[2]) == KeyGenerated(public_key=b"\x30" * 91)
    assert pipe.call(SCRIPT[3]) == ChallengeReply(signature=bytes(range(20)))
    assert pipe.executed == SCRIPT
    assert pipe.station.state is StationState.IDLE
    assert pipe.device.state is DeviceState.READY


def test_exchange_whole_writes() -> None:
    run_script(Pipe())


def test_exchange_one_byte_at_a_time() -> None:
    run_script(Pipe(single=True))


@FAST
@given(st.data())
def test_exchange_random_chunks(data: st.DataObject) -> None:
    run_script(Pipe(data))


def test_retry_is_answered_from_cache_not_executed_twice() -> None:
    pipe = Pipe()
    pipe.call(Hello())
    first = pipe.to_device(pipe.station.send(GenerateKey(key_type=KeyType.P256)))  # answer lost
    assert first
    replay = pipe.to_device(pipe.station.resend())
    assert replay == first
    assert sum(isinstance(r, GenerateKey) for r in pipe.executed) == 1
    assert pipe.to_station(replay) == [KeyGenerated(public_key=b"\x30" * 91)]
    # a late duplicate of that answer is stale, not a second reply
    (late,) = pipe.to_station(first)
    assert isinstance(late, FrameDropped) and late.reason is DropReason.STALE


def test_seq_wraps() -> None:
    pipe = Pipe()
    for _ in range(4):
        pipe.call(Hello())
    assert pipe.station.outstanding is None


def test_station_cannot_skip_hello() -> None:
    with pytest.raises(LocalProtocolError):
        StationConnection().send(GetStatus())


def test_session_required_after_reboot() -> None:
    pipe = Pipe()
    pipe.call(Hello())
    pipe.device.reboot()
    pipe.device.receive_data(pipe.station.send(GetStatus()))
    event = pipe.device.next_event()
    assert isinstance(event, GetStatus)
    assert pipe.device.state is DeviceState.REFUSE
    with pytest.raises(LocalProtocolError):
        pipe.device.send(StatusReply(lifecycle=Lifecycle.BLANK))
    reply = pipe.device.send(ErrorReply(code=ErrorCode.SESSION_REQUIRED, text="hello first"))
    (error,) = pipe.to_station(reply)
    assert isinstance(error, ErrorReply) and error.error_code is ErrorCode.SESSION_REQUIRED
    assert pipe.station.state is StationState.IDLE


def test_wrong_reply_type_is_a_remote_error() -> None:
    pipe = Pipe()
    pipe.call(Hello())
    pipe.device.receive_data(pipe.station.send(GetStatus()))
    pipe.device.next_event()
    from firmware_protocol.messages import encode_message
    data = encode_message(KeyGenerated(public_key=b"\x01"), pipe.station.outstanding_seq or 0)
    with pytest.raises(UnexpectedMessage):
        pipe.to_station(data)
    assert pipe.station.state is StationState.ERROR
    with pytest.raises(LocalProtocolError):
        pipe.station.send(GetStatus())


def test_version_outside_offer_is_a_remote_error() -> None:
    station = StationConnection()
    device = DeviceConnection()
    device.receive_data(station.send(Hello()))
    device.next_event()
    bad = HelloReply(**{**HELLO_REPLY.__dict__, "version": 9})
    station.receive_data(device.send(bad))
    with pytest.raises(VersionMismatch):
        station.next_event()


def test_malformed_request_gets_error_answer() -> None:
    from firmware_protocol.codec import Frame
    from firmware_protocol.errors import MalformedPayload
    device = DeviceConnection()
    device.receive_data(Frame(msg_type=0x01, seq=3, payload=b"\x01\x01").to_wire())
    with pytest.raises(MalformedPayload) as info:
        device.next_event()
    assert device.next_event() is PAUSED
    data = device.send(ErrorReply(code=info.value.error_code, text="bad"))
    assert data and device.state is DeviceState.NO_SESSION


def test_receive_buffer_is_capped() -> None:
    station = StationConnection(receive_buffer_limit=1000)
    with pytest.raises(LocalProtocolError):
        station.receive_data(b"\x01" * 1001)


def test_eof_reports_partial_frame_then_closed() -> None:
    station = StationConnection()
    station.send(Hello())
    station.receive_data(b"\x00\x05\x01\x02")
    station.receive_eof()
    dropped = station.next_event()
    assert isinstance(dropped, FrameDropped) and dropped.reason is DropReason.SHORT
    assert isinstance(station.next_event(), ConnectionClosed)
    assert station.state is StationState.CLOSED


def test_put_cert_chunks_fit_a_small_device() -> None:
    bundle = encode_cert_bundle(b"\x30" * 700, [b"\x31" * 900])
    chunks = chunk_cert_bundle(bundle, 512)
    station = StationConnection()
    station.peer_max_payload = 512
    station.state = StationState.IDLE
    for c in chunks:
        station.send(c)
        station.state = StationState.IDLE
    assert sum(len(c.data) for c in chunks) == len(bundle)
