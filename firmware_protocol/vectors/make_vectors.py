"""Regenerate frames.json: ``python -m firmware_protocol.vectors.make_vectors``.

Frames are produced by this package's encoder from fixed inputs, then frozen: a change to the encoder
that alters any byte fails the vector tests until the vectors are regenerated on purpose (and the
spec's version bumped if the wire changed). The corrupt and truncated frames are made by editing a
good frame in the way named by each vector.
"""

from __future__ import annotations

import json
from pathlib import Path

from firmware_protocol import events as ev
from firmware_protocol.codec import Frame, cobs_encode, crc32c
from firmware_protocol.constants import ErrorCode, KeyType, Lifecycle
from firmware_protocol.messages import encode_message, event_fields

HERE = Path(__file__).parent

NONCE = bytes(range(16))
SPKI_P256 = bytes.fromhex(
    "3059301306072a8648ce3d020106082a8648ce3d03010703420004"
    "6b17d1f2e12c4247f8bce6e563a440f277037d812deb33a0f4a13945d898c296"
    "4fe342e2fe1a7f9b8ee7eb4a7c0f9e162bce33576b315ececbb6406837bf51f5")
"""P-256 SPKI whose point is the curve's generator G (a public, well-known point)."""

GOOD: list[tuple[str, ev.Request | ev.Reply, int]] = [
    ("hello", ev.Hello(version_min=1, version_max=1), 0x0001),
    ("hello_reply", ev.HelloReply(version=1, vendor="Acme", model="Sensor-1", hardware_revision="B",
                                  firmware_version="1.4.2", hardware_id=bytes.fromhex("0011223344556677"),
                                  serial_number=None, key_types=(KeyType.P256, KeyType.ED25519),
                                  secure_element=True, max_payload=1024, lifecycle=Lifecycle.BLANK),
     0x0001),
    ("status", ev.GetStatus(), 0x0002),
    ("status_reply", ev.StatusReply(lifecycle=Lifecycle.KEYED), 0x0002),
    ("set_config_secret", ev.SetConfig(key="wifi.psk", value=b"hunter22", secret=True), 0x0003),
    ("set_config_reply", ev.ConfigAck(), 0x0003),
    ("generate_key_p256", ev.GenerateKey(key_type=KeyType.P256, key_slot=0), 0x0004),
    ("generate_key_reply", ev.KeyGenerated(public_key=SPKI_P256), 0x0004),
    ("get_csr", ev.GetCsr(nonce=NONCE, common_name="Acme Sensor 000001", serial_number="SN000001",
                          organization="Acme"), 0x0005),
    ("put_cert_chunk", ev.PutCert(total=600, offset=0, data=b"\x30\x82\x02\x54" + b"\xaa" * 12), 0x0006),
    ("put_cert_ack", ev.CertAck(received=16, complete=False), 0x0006),
    ("challenge", ev.Challenge(nonce=NONCE), 0x0007),
    ("lock", ev.Lock(), 0x0008),
    ("lock_reply", ev.LockReply(lifecycle=Lifecycle.LOCKED), 0x0008),
    ("factory_reset_authorised", ev.FactoryReset(authorisation=b"\x5a" * 32), 0x0009),
    ("error_locked", ev.ErrorReply(code=int(ErrorCode.LOCKED), text="not allowed in LOCKED"), 0x0004),
    ("seq_wraps_high", ev.GetStatus(), 0xFFFF),
    ("cobs_zero_heavy", ev.SetConfig(key="blob", value=bytes(200) + b"\x01" * 56, secret=False), 0x0100),
]


def main() -> None:
    vectors: list[dict[str, object]] = []
    for name, event, seq in GOOD:
        wire = encode_message(event, seq)
        vectors.append({"name": name, "valid": True, "hex": wire.hex(), "seq": seq,
                        "msg_type": int(event.MSG_TYPE), "event": type(event).__name__,
                        "fields": event_fields(event)})
    status = encode_message(ev.GetStatus(), 7)
    raw = Frame(msg_type=0x02, seq=7, payload=b"").to_raw()
    bad_crc = bytearray(raw)
    bad_crc[-1] ^= 0x01
    long_claim = bytearray(raw[:4] + (0xFFFF).to_bytes(2, "little"))
    long_claim += (crc32c(bytes(long_claim))).to_bytes(4, "little")
    mismatch = bytearray(raw[:4] + (5).to_bytes(2, "little"))
    mismatch += (crc32c(bytes(mismatch))).to_bytes(4, "little")
    bad = [
        ("crc_flipped", b"\x00" + cobs_encode(bytes(bad_crc)) + b"\x00", "crc"),
        ("truncated_before_crc", b"\x00" + cobs_encode(raw[:-2]) + b"\x00", "short"),
        ("cobs_code_overruns", b"\x00\x09\x02\x07\x00", "cobs"),
        ("payload_len_65535", b"\x00" + cobs_encode(bytes(long_claim)) + b"\x00", "oversize"),
        ("payload_len_mismatch", b"\x00" + cobs_encode(bytes(mismatch)) + b"\x00", "length"),
        ("no_delimiter_1100_bytes", b"\x01" * 1100 + b"\x00", "oversize"),
    ]
    for name, wire, reason in bad:
        vectors.append({"name": name, "valid": False, "hex": wire.hex(), "reason": reason})
    # A good frame after garbage: the decoder must drop the garbage and still find the frame.
    vectors.append({"name": "garbage_then_status", "valid": True, "hex": (b"\x13\x37\xff" + status).hex(),
                    "seq": 7, "msg_type": 0x02, "event": "GetStatus", "fields": {},
                    "dropped_before": ["cobs"]})
    doc = {
        "crc32c": [{"input_ascii": "123456789", "crc": "e3069283"}],
        "cobs": [
            {"decoded": "00", "encoded": "0101"},
            {"decoded": "0000", "encoded": "010101"},
            {"decoded": "11220033", "encoded": "03112202 33".replace(" ", "")},
            {"decoded": "11223344", "encoded": "0511223344"},
            {"decoded": "11000000", "encoded": "0211010101"},
            {"decoded": "".join(f"{i:02x}" for i in range(1, 255)),
             "encoded": "ff" + "".join(f"{i:02x}" for i in range(1, 255))},
            {"decoded": "00" + "".join(f"{i:02x}" for i in range(1, 255)),
             "encoded": "01ff" + "".join(f"{i:02x}" for i in range(1, 255))},
            {"decoded": "".join(f"{i:02x}" for i in range(1, 256)),
             "encoded": "ff" + "".join(f"{i:02x}" for i in range(1, 255)) + "02ff"},
        ],
        "frames": vectors,
    }
    (HERE / "frames.json").write_text(json.dumps(doc, indent=1) + "\n")


if __name__ == "__main__":
    main()
