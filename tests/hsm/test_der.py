"""The raw r||s -> DER codec, on random integers and on many real HSM signatures."""

from __future__ import annotations

import hashlib

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import (
    Prehashed,
    decode_dss_signature,
    encode_dss_signature,
)
from hypothesis import given, settings
from hypothesis import strategies as st

from hsm.der import encode_rs, max_der_size, raw_to_der
from hsm.keys import CaKey

P256_ORDER = 0xFFFFFFFF00000000FFFFFFFFFFFFFFFFBCE6FAADA7179E84F3B9CAC2FC632551
edge_ints = st.one_of(
    st.integers(min_value=1, max_value=P256_ORDER - 1),
    st.integers(min_value=1, max_value=255),  # many leading zero bytes
    st.sampled_from([0x7F, 0x80, 0xFF, 0x100, 1 << 255, (1 << 256) - 1, (1 << 248) - 1, 1 << 247]),
)


@given(edge_ints, edge_ints)
@settings(max_examples=2000)
def test_encode_matches_cryptography(r: int, s: int) -> None:
    der = encode_rs(r, s)
    assert der == encode_dss_signature(r, s)
    assert decode_dss_signature(der) == (r, s)


@given(st.integers(min_value=1, max_value=(1 << 384) - 1), st.integers(min_value=1, max_value=(1 << 384) - 1))
@settings(max_examples=500)
def test_raw_to_der_roundtrip_p384_width(r: int, s: int) -> None:
    raw = r.to_bytes(48, "big") + s.to_bytes(48, "big")
    der = raw_to_der(raw)
    assert decode_dss_signature(der) == (r, s)
    assert len(der) <= max_der_size(48)


def test_raw_to_der_rejects_odd_and_zero() -> None:
    for bad in (b"", b"\x01", b"\x00" * 64, b"\x00" * 32 + b"\x01" * 32):
        try:
            raw_to_der(bad)
        except ValueError:
            continue
        raise AssertionError(f"accepted {bad.hex()}")


def test_many_real_hsm_signatures_verify(ca_key: CaKey) -> None:
    """500 signatures from the token: about 1 in 256 has a short r or s, half have the top bit set."""
    public = ca_key.public_key
    assert isinstance(public, ec.EllipticCurvePublicKey)
    lengths = set()
    for i in range(500):
        digest = hashlib.sha256(i.to_bytes(4, "big")).digest()
        der = ca_key.sign_digest(digest, "sha256")
        lengths.add(len(der))
        public.verify(der, digest, ec.ECDSA(Prehashed(hashes.SHA256())))
    assert len(lengths) > 1  # both 0x00-padded and unpadded integers were seen
