"""Framing and payload codecs: round trips, and a decoder that no input can break."""

from __future__ import annotations

import contextlib

import pytest
from hypothesis import given
from hypothesis import strategies as st

from firmware_protocol import events as ev
from firmware_protocol.codec import (
    CobsError,
    Frame,
    FrameDecoder,
    cobs_decode,
    cobs_encode,
    crc32c,
    crc32c_table_driven,
    parse_raw_frame,
)
from firmware_protocol.constants import MAX_ENCODED_FRAME, MAX_PAYLOAD
from firmware_protocol.errors import LocalProtocolError, MalformedPayload, RemoteProtocolError
from firmware_protocol.messages import (
    chunk_cert_bundle,
    decode_payload,
    encode_cert_bundle,
    encode_message,
    encode_payload,
    encode_tlv,
    split_cert_bundle,
)
from tests.protocol.strategies import FAST, replies, requests


def drain(decoder: FrameDecoder) -> list[Frame | ev.FrameDropped]:
    out: list[Frame | ev.FrameDropped] = []
    while (item := decoder.next()) is not None:
        out.append(item)
    return out


def test_crc32c_check_value() -> None:
    assert crc32c(b"123456789") == 0xE3069283
    assert crc32c_table_driven(b"123456789") == 0xE3069283


def test_crc32c_uses_the_c_implementation() -> None:
    """google-crc32c is a dependency: the station must not fall back to the Python loop unnoticed."""
    import firmware_protocol.codec as codec

    assert codec._fast_crc32c is not None


@FAST
@given(st.binary(max_size=2100), st.integers(0, 0xFFFFFFFF))
def test_crc32c_library_and_table_agree(data: bytes, start: int) -> None:
    assert crc32c(data, start) == crc32c_table_driven(data, start)
    half = len(data) // 2
    assert crc32c(data[half:], crc32c(data[:half])) == crc32c(data)


@FAST
@given(st.binary(max_size=2000))
def test_cobs_round_trip_has_no_zero_and_bounded_overhead(data: bytes) -> None:
    enc = cobs_encode(data)
    assert 0 not in enc
    assert len(enc) <= len(data) + len(data) // 254 + 1
    assert cobs_decode(enc) == data


def _cobs_reference(data: bytes) -> bytes:
    """PROTOCOL.md 2.2 read literally, a byte at a time (what a device's C loop does)."""
    out, block, need_final = bytearray(), bytearray(), True
    for b in data:
        if b == 0:
            out += bytes([len(block) + 1]) + block
            block.clear()
            need_final = True
        else:
            block.append(b)
            need_final = True
            if len(block) == 254:
                out += b"\xff" + block
                block.clear()
                need_final = False
    if need_final:
        out += bytes([len(block) + 1]) + block
    return bytes(out)


@FAST
@given(st.lists(st.sampled_from([b"\x00", b"\x01", b"\xff" * 253, b"\x07" * 254, b"\x09" * 255]),
                max_size=8).map(b"".join) | st.binary(max_size=1100))
def test_cobs_encoding_is_the_canonical_one(data: bytes) -> None:
    """Runs of exactly 253/254/255 bytes next to zeros and the end are where encoders differ."""
    assert cobs_encode(data) == _cobs_reference(data)


@FAST
@given(st.binary(max_size=300))
def test_cobs_decode_only_raises_cobs_error(data: bytes) -> None:
    with contextlib.suppress(CobsError):
        cobs_decode(data)


@FAST
@given(st.integers(0, 255), st.integers(0, 0xFFFF), st.binary(max_size=MAX_PAYLOAD))
def test_frame_round_trip(msg_type: int, seq: int, payload: bytes) -> None:
    frame = Frame(msg_type=msg_type, seq=seq, payload=payload)
    wire = frame.to_wire()
    assert len(wire) <= MAX_ENCODED_FRAME + 2
    decoder = FrameDecoder()
    decoder.feed(wire)
    assert drain(decoder) == [frame]


def test_frame_refuses_oversize_payload() -> None:
    with pytest.raises(LocalProtocolError):
        Frame(msg_type=1, seq=0, payload=bytes(MAX_PAYLOAD + 1))


@FAST
@given(requests | replies, st.integers(0, 0xFFFF))
def test_event_round_trip(event: ev.Request | ev.Reply, seq: int) -> None:
    decoder = FrameDecoder()
    decoder.feed(encode_message(event, seq))
    (frame,) = drain(decoder)
    assert isinstance(frame, Frame)
    assert frame.seq == seq
    assert decode_payload(frame.msg_type, frame.payload) == event


@FAST
@given(st.lists(st.binary(max_size=1500), max_size=6), requests, st.integers(0, 0xFFFF))
def test_decoder_survives_garbage_and_recovers(garbage: list[bytes], event: ev.Request, seq: int) -> None:
    """Arbitrary bytes give only frames or drops, never an exception; the next good frame is found."""
    good = encode_message(event, seq)
    decoder = FrameDecoder()
    for chunk in garbage:
        decoder.feed(chunk)
        for item in drain(decoder):
            assert isinstance(item, Frame | ev.FrameDropped)
        assert decoder.buffered <= MAX_ENCODED_FRAME + 1
    decoder.feed(good)
    items = drain(decoder)
    assert all(isinstance(i, Frame | ev.FrameDropped) for i in items)
    assert items[-1] == Frame(msg_type=event.MSG_TYPE, seq=seq, payload=encode_payload(event))


@FAST
@given(st.binary(max_size=1200))
def test_parse_raw_frame_never_raises(raw: bytes) -> None:
    assert isinstance(parse_raw_frame(raw), Frame | ev.FrameDropped)


@FAST
@given(st.integers(0, 255), st.binary(max_size=1200))
def test_decode_payload_only_raises_remote_errors(msg_type: int, payload: bytes) -> None:
    with contextlib.suppress(RemoteProtocolError):
        decode_payload(msg_type, payload)


@FAST
@given(requests, st.integers(0, 80), st.integers(0, 7))
def test_single_bit_flip_is_always_caught(event: ev.Request, pos: int, bit: int) -> None:
    """CRC-32C catches every 1-bit error; the frame is dropped, never mis-decoded."""
    frame = Frame(msg_type=event.MSG_TYPE, seq=9, payload=encode_payload(event))
    raw = bytearray(frame.to_raw())
    raw[pos % len(raw)] ^= 1 << bit
    assert isinstance(parse_raw_frame(bytes(raw)), ev.FrameDropped)


def test_tlv_rules() -> None:
    hello = encode_tlv([(0x01, b"\x01"), (0x02, b"\x01")])
    assert decode_payload(0x01, hello + encode_tlv([(0xEE, b"future")])) == ev.Hello()
    with pytest.raises(MalformedPayload, match="repeated"):
        decode_payload(0x01, hello + encode_tlv([(0x01, b"\x01")]))
    with pytest.raises(MalformedPayload, match="missing"):
        decode_payload(0x01, encode_tlv([(0x01, b"\x01")]))
    with pytest.raises(MalformedPayload, match="expected 1"):
        decode_payload(0x01, encode_tlv([(0x01, b"\x01\x00"), (0x02, b"\x01")]))
    with pytest.raises(MalformedPayload, match="claims"):
        decode_payload(0x01, encode_tlv([(0x01, b"\x01")]) + b"\x02\x05\x00\x01")
    with pytest.raises(MalformedPayload):
        decode_payload(0x01, encode_tlv([(0x01, b"\x02"), (0x02, b"\x01")]))  # min > max


def test_huge_length_claim_never_allocates() -> None:
    decoder = FrameDecoder()
    for _ in range(100):
        decoder.feed(b"\x5a" * 4096)
        assert drain(decoder) == []
        assert decoder.buffered <= MAX_ENCODED_FRAME + 4096
    decoder.feed(b"\x00")
    (dropped,) = drain(decoder)
    assert isinstance(dropped, ev.FrameDropped) and dropped.reason is ev.DropReason.OVERSIZE


@FAST
@given(st.lists(st.binary(min_size=1, max_size=1500), min_size=1, max_size=3), st.integers(256, 1024))
def test_cert_bundle_chunks_reassemble(certs: list[bytes], max_payload: int) -> None:
    bundle = encode_cert_bundle(certs[0], certs[1:])
    chunks = chunk_cert_bundle(bundle, max_payload)
    assert all(len(encode_payload(c)) <= max_payload for c in chunks)
    assert b"".join(c.data for c in chunks) == bundle
    assert split_cert_bundle(bundle) == certs


def test_events_validate_fields() -> None:
    with pytest.raises(LocalProtocolError):
        ev.GetCsr(nonce=b"short", common_name="x")
    with pytest.raises(LocalProtocolError):
        ev.SetConfig(key="bad key!", value=b"")
    with pytest.raises(LocalProtocolError):
        ev.FactoryReset(authorisation=b"\x00" * 31)
    with pytest.raises(LocalProtocolError):
        ev.PutCert(total=10, offset=8, data=b"abc")
    with pytest.raises(TypeError):
        ev.Challenge(b"\x00" * 16)  # type: ignore[misc]  # keyword-only
    assert "hunter2" not in repr(ev.SetConfig(key="wifi.psk", value=b"hunter2", secret=True))
