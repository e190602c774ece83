"""The two cryptographic rules of the protocol: the proof-of-possession message and the reset token.

Proof of possession (CHALLENGE): the device signs ``CHALLENGE_DOMAIN || nonce``. ECDSA keys sign it
with SHA-256 (DER signature, whatever the curve); Ed25519 signs the message itself (raw 64 bytes).
The domain prefix keeps this signature from ever being valid as a CSR or certificate signature, and
vice versa.

Reset authorisation (FACTORY_RESET of a LOCKED unit): ``HMAC-SHA256(K_reset, RESET_DOMAIN || hw_id)``
where ``K_reset`` is a 32-byte product secret held by the vendor's service and in every unit's
firmware, and ``hw_id`` the unit's raw hardware id from HELLO. The token is per unit, so one leaked
token resets one unit only. It is not fresh: a token, once issued, stays valid for that unit (see
PROTOCOL.md, "Security notes").
"""

from __future__ import annotations

import hashlib
import hmac

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519

from firmware_protocol.constants import CHALLENGE_DOMAIN, RESET_DOMAIN


def challenge_message(nonce: bytes) -> bytes:
    """The exact bytes a device signs to answer CHALLENGE."""
    return CHALLENGE_DOMAIN + nonce


def verify_possession(public_key_der: bytes, nonce: bytes, signature: bytes) -> bool:
    """True if ``signature`` answers CHALLENGE(nonce) for this SubjectPublicKeyInfo DER."""
    key = serialization.load_der_public_key(public_key_der)
    message = challenge_message(nonce)
    try:
        if isinstance(key, ec.EllipticCurvePublicKey):
            key.verify(signature, message, ec.ECDSA(hashes.SHA256()))
        elif isinstance(key, ed25519.Ed25519PublicKey):
            key.verify(signature, message)
        else:
            return False
    except InvalidSignature:
        return False
    return True


def reset_token(reset_key: bytes, hardware_id: bytes) -> bytes:
    """The FACTORY_RESET authorisation for one unit."""
    return hmac.new(reset_key, RESET_DOMAIN + hardware_id, hashlib.sha256).digest()


def check_reset_token(reset_key: bytes, hardware_id: bytes, token: bytes | None) -> bool:
    """Constant-time check of a reset token (device side)."""
    if token is None:
        return False
    return hmac.compare_digest(reset_token(reset_key, hardware_id), token)
