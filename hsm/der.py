"""ECDSA signature codec: the token's raw ``r || s`` to X.509's DER ``SEQUENCE { INTEGER r, INTEGER s }``.

PKCS#11 ``CKM_ECDSA`` returns r and s as two big-endian integers of the curve's byte length, each
padded with leading zeros. DER wants minimal two's-complement INTEGERs: strip leading zeros, then
add one ``00`` back when the top bit is set (else the integer reads as negative). Those two details
are what naive converters get wrong, so the tests run this on many real and random signatures.
"""

from __future__ import annotations

from typing import Final

_SEQUENCE: Final = 0x30
_INTEGER: Final = 0x02


def _der_length(n: int) -> bytes:
    if n < 0x80:
        return bytes([n])
    body = n.to_bytes((n.bit_length() + 7) // 8, "big")
    return bytes([0x80 | len(body)]) + body


def _der_integer(value: int) -> bytes:
    if value < 0:
        raise ValueError("ECDSA r and s are positive")
    # bit_length // 8 + 1 bytes is minimal and always leaves the sign bit clear (0x80 -> 00 80).
    body = value.to_bytes(value.bit_length() // 8 + 1, "big")
    return bytes([_INTEGER]) + _der_length(len(body)) + body


def encode_rs(r: int, s: int) -> bytes:
    """DER ``Ecdsa-Sig-Value`` for integers r and s."""
    content = _der_integer(r) + _der_integer(s)
    return bytes([_SEQUENCE]) + _der_length(len(content)) + content


def raw_to_der(raw: bytes) -> bytes:
    """Convert a PKCS#11 raw ``r || s`` signature (even length) to DER."""
    if not raw or len(raw) % 2:
        raise ValueError(f"raw ECDSA signature must have an even, non-zero length, got {len(raw)}")
    half = len(raw) // 2
    r = int.from_bytes(raw[:half], "big")
    s = int.from_bytes(raw[half:], "big")
    if r == 0 or s == 0:
        raise ValueError("ECDSA signature with r or s equal to zero")
    return encode_rs(r, s)


def max_der_size(field_bytes: int) -> int:
    """Longest DER signature for a curve whose order has ``field_bytes`` bytes (both ints top-bit set)."""
    big = (1 << (8 * field_bytes)) - 1
    return len(encode_rs(big, big))
