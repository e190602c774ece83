"""Fuzz targets shared by the hypothesis tests and ``bench/fuzz.py``.

A target takes bytes and either returns normally or raises the one error family its layer is allowed
to raise for bad input; anything else escaping is a crash. ``mutate`` makes inputs from valid seeds
(bit flips, byte edits, splices, truncations, length-field tweaks, random bytes), so most inputs get
past the first checks instead of dying at the CRC.
"""

from __future__ import annotations

import contextlib
import json
import random
import secrets
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Final

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import AttributeOID, NameOID

from firmware_protocol import NEED_DATA, ConnectionClosed, FrameDecoder, StationConnection
from firmware_protocol.codec import Frame
from firmware_protocol.constants import MAX_ENCODED_FRAME
from firmware_protocol.errors import LocalProtocolError, RemoteProtocolError
from firmware_protocol.messages import decode_payload

VECTORS: Final = Path(__file__).resolve().parents[2] / "firmware_protocol" / "vectors" / "frames.json"
_BOUND: Final = MAX_ENCODED_FRAME + 4096
"""The decoder never holds more than a maximum frame plus one read chunk."""


def frame_seeds() -> list[bytes]:
    """Every frame in the protocol's vector file (valid and invalid), as wire bytes."""
    doc = json.loads(VECTORS.read_text())
    return [bytes.fromhex(v["hex"]) for v in doc["frames"]]


def decode_stream(data: bytes) -> int:
    """Frame decoder + message parser on a byte stream; returns how many frames decoded."""
    decoder = FrameDecoder()
    frames = 0
    for start in range(0, len(data), 97):  # arbitrary chunking: the decoder must not care
        decoder.feed(data[start:start + 97])
        while (item := decoder.next()) is not None:
            if decoder.buffered > _BOUND:
                raise AssertionError(f"decoder holds {decoder.buffered} bytes")
            if isinstance(item, Frame):
                frames += 1
                with contextlib.suppress(RemoteProtocolError):  # the one allowed answer
                    decode_payload(item.msg_type, item.payload)
    decoder.flush()
    return frames


def station_receive(data: bytes) -> None:
    """The station's sans-I/O connection fed device bytes while a request is outstanding."""
    from firmware_protocol.events import GetStatus, Hello

    conn = StationConnection(initial_seq=data[0] if data else 1)
    conn.send(Hello(version_min=1, version_max=1))
    for start in range(0, max(len(data), 1), 4096):  # as the transport reads: bounded chunks
        conn.receive_data(data[start:start + 4096])
        for _ in range(4096):
            try:
                event = conn.next_event()
            except RemoteProtocolError:
                return
            if event is NEED_DATA:
                break
            if conn.outstanding_seq is None:
                try:
                    conn.send(GetStatus())
                except LocalProtocolError:  # a state that refuses to send: the table's call
                    return
    conn.receive_eof()
    try:
        for _ in range(len(data) // 2 + 16):  # after EOF: what is left, then ConnectionClosed
            if isinstance(conn.next_event(), ConnectionClosed):
                return
    except RemoteProtocolError:
        return
    raise AssertionError("no ConnectionClosed after end of stream")


def mutate(rng: random.Random, seeds: Sequence[bytes]) -> bytes:
    """One mutated input from the seeds."""
    data = bytearray(rng.choice(seeds))
    for _ in range(rng.randint(1, 4)):
        op = rng.randrange(8)
        if op == 0 and data:  # bit flip
            i = rng.randrange(len(data))
            data[i] ^= 1 << rng.randrange(8)
        elif op == 1 and data:  # byte set (often a delimiter or 0xff)
            data[rng.randrange(len(data))] = rng.choice((0, 0xFF, 0x80, rng.randrange(256)))
        elif op == 2:  # insert random bytes
            i = rng.randrange(len(data) + 1)
            data[i:i] = rng.randbytes(rng.randint(1, 16))
        elif op == 3 and data:  # delete a run
            i = rng.randrange(len(data))
            del data[i:i + rng.randint(1, 16)]
        elif op == 4:  # truncate
            del data[rng.randrange(len(data) + 1):]
        elif op == 5:  # splice another seed
            data += rng.choice(seeds)[rng.randrange(8):]
        elif op == 6:  # repeat a block (floods, huge runs)
            data = data * rng.randint(2, 8)
        else:  # pure noise
            data = bytearray(rng.randbytes(rng.randint(0, 512)))
    return bytes(data)


# -- CSR intake ------------------------------------------------------------------------------------

@dataclass(frozen=True, kw_only=True)
class CsrIntake:
    """The pre-issuance checks of :class:`hsm.issuer.Issuer` with everything they need."""

    check: Callable[[bytes], None]
    """The checks, with the one allowed refusal (IssuanceRefused) swallowed."""
    raw_check: Callable[[bytes], None]
    """The checks as they are: a refusal raises."""
    seeds: list[bytes]


def csr_seeds(common_name: str, nonce: bytes) -> list[bytes]:
    """Valid CSRs (P-256, P-384, Ed25519-free: the profile's keys) plus a few with extensions."""
    out = []
    for curve in (ec.SECP256R1(), ec.SECP384R1()):
        key = ec.generate_private_key(curve)
        builder = (x509.CertificateSigningRequestBuilder()
                   .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)]))
                   .add_attribute(AttributeOID.CHALLENGE_PASSWORD, nonce.hex().encode()))
        out.append(builder.sign(key, hashes.SHA256()).public_bytes(serialization.Encoding.DER))
        with_ext = builder.add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        out.append(with_ext.sign(key, hashes.SHA256()).public_bytes(serialization.Encoding.DER))
    return out


def csr_intake(issuer: object) -> CsrIntake:
    """Bind the checks of ``issuer`` (an :class:`hsm.issuer.Issuer`) for the tls-client profile."""
    from hsm.errors import IssuanceRefused
    from hsm.issuer import Identity, Issuer
    from hsm.profile import load_profile

    assert isinstance(issuer, Issuer)
    profile = load_profile("tls-client")
    identity = Identity(unit_serial="FZ-000001", hardware_id="00A1B2C3D4E5F607", product="fuzz",
                        work_order="WO-FUZZ")
    expected = issuer.subject_fields(profile, identity)
    nonce = secrets.token_bytes(16)

    def raw_check(data: bytes) -> None:
        issuer.check_csr(data, profile=profile, expected=expected, nonce=nonce,
                         is_key_known=lambda _fp: False)

    def check(data: bytes) -> None:
        with contextlib.suppress(IssuanceRefused):
            raw_check(data)

    return CsrIntake(check=check, raw_check=raw_check, seeds=csr_seeds(expected.common_name, nonce))
