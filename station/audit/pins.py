"""Operator PINs: only a salted scrypt hash is ever stored, and compared in constant time."""

from __future__ import annotations

import hashlib
import hmac
import secrets
from typing import Final

_N: Final = 2**14
_R: Final = 8
_P: Final = 1
_SALT_BYTES: Final = 16
_DKLEN: Final = 32


def hash_pin(pin: str) -> str:
    """``scrypt$n$r$p$salt$hash`` (hex): the parameters travel with the hash so they can be raised later."""
    if not pin:
        raise ValueError("PIN must not be empty")
    salt = secrets.token_bytes(_SALT_BYTES)
    digest = hashlib.scrypt(pin.encode("utf-8"), salt=salt, n=_N, r=_R, p=_P, dklen=_DKLEN)
    return f"scrypt${_N}${_R}${_P}${salt.hex()}${digest.hex()}"


def check_pin(pin: str, pin_hash: str) -> bool:
    """True if ``pin`` matches; a malformed hash never matches."""
    try:
        scheme, n, r, p, salt_hex, digest_hex = pin_hash.split("$")
        if scheme != "scrypt":
            return False
        expected = bytes.fromhex(digest_hex)
        actual = hashlib.scrypt(
            pin.encode("utf-8"), salt=bytes.fromhex(salt_hex), n=int(n), r=int(r), p=int(p),
            dklen=len(expected), maxmem=256 * 1024 * 1024,
        )
    except (ValueError, TypeError):
        return False
    return hmac.compare_digest(actual, expected)
