"""firmware_protocol/vectors/frames.json checked both ways."""

from __future__ import annotations

import json
from importlib import resources
from typing import Any

import pytest

from firmware_protocol import events as ev
from firmware_protocol.codec import Frame, FrameDecoder, cobs_decode, cobs_encode, crc32c
from firmware_protocol.messages import decode_payload, encode_message, event_fields

DOC: dict[str, Any] = json.loads(
    resources.files("firmware_protocol").joinpath("vectors/frames.json").read_text())
CLASSES = {cls.__name__: cls for cls in (*ev.REQUEST_TYPES.values(), *ev.REPLY_TYPES.values())}


def test_crc_vectors() -> None:
    for v in DOC["crc32c"]:
        assert f"{crc32c(v['input_ascii'].encode()):08x}" == v["crc"]


@pytest.mark.parametrize("v", DOC["cobs"], ids=lambda v: v["decoded"][:12])
def test_cobs_vectors(v: dict[str, str]) -> None:
    assert cobs_encode(bytes.fromhex(v["decoded"])).hex() == v["encoded"]
    assert cobs_decode(bytes.fromhex(v["encoded"])).hex() == v["decoded"]


def _decode_all(wire: bytes) -> list[Frame | ev.FrameDropped]:
    decoder = FrameDecoder()
    decoder.feed(wire)
    out: list[Frame | ev.FrameDropped] = []
    while (item := decoder.next()) is not None:
        out.append(item)
    return out


@pytest.mark.parametrize("v", DOC["frames"], ids=lambda v: v["name"])
def test_frame_vectors(v: dict[str, Any]) -> None:
    wire = bytes.fromhex(v["hex"])
    items = _decode_all(wire)
    if not v["valid"]:
        assert len(items) == 1
        assert isinstance(items[0], ev.FrameDropped)
        assert items[0].reason.value == v["reason"]
        return
    dropped = [i.reason.value for i in items if isinstance(i, ev.FrameDropped)]
    assert dropped == v.get("dropped_before", [])
    frame = items[-1]
    assert isinstance(frame, Frame)
    assert (frame.seq, frame.msg_type) == (v["seq"], v["msg_type"])
    event = decode_payload(frame.msg_type, frame.payload)
    assert type(event).__name__ == v["event"]
    assert event_fields(event) == v["fields"]
    # and back: meaning -> bytes
    rebuilt = _rebuild(CLASSES[v["event"]], v["fields"])
    assert rebuilt == event
    if "dropped_before" not in v:
        assert encode_message(rebuilt, v["seq"]) == wire


def _rebuild(cls: type[ev.Request | ev.Reply], fields: dict[str, Any]) -> ev.Request | ev.Reply:
    from firmware_protocol.constants import KeyType, Lifecycle
    kwargs: dict[str, Any] = {}
    for name, value in fields.items():
        if name == "lifecycle":
            value = Lifecycle[value]
        elif name == "key_type":
            value = KeyType[value]
        elif name == "key_types":
            value = tuple(KeyType[k] for k in value)
        elif isinstance(value, str) and name in {"hardware_id", "value", "public_key", "nonce", "data",
                                                  "authorisation", "csr", "signature"}:
            value = bytes.fromhex(value)
        kwargs[name] = value
    return cls(**kwargs)
