"""Issuing device certificates in two phases: check and build (nothing signed), then sign and verify.

Theory of operation, after Boulder's signing path (RELIABILITY.md):

1. :meth:`Issuer.prepare` runs every pre-issuance check on the CSR, in a fixed order, and refuses with
   :class:`~hsm.errors.IssuanceRefused` and one of the :data:`REASONS` codes before the HSM is asked
   anything. It then writes the TBS certificate: the exact bytes the HSM will sign, whose SHA-256 the
   station records in its intent row. Per profile, cryptography's ``CertificateBuilder`` (with a
   *capture* key that signs nothing) builds one template certificate, which is linted as a whole and
   cut into fixed parts (:mod:`hsm.tbs`); per unit only serial, validity, subject values, public key,
   SKI and SANs are written into it, and the lint checks those fields. The builder stays the
   specification: :meth:`Issuer.reference_tbs` builds any unit's TBS with it, and the tests check
   the two agree byte for byte. The size limit (Matter: 600 bytes) is checked on an upper bound
   (the longest DER signature).
2. :meth:`Issuer.sign` signs exactly those bytes in the token (host-side hash, ``CKM_ECDSA``),
   assembles the certificate directly in DER (``SEQUENCE { tbs, the TBS's own signature
   AlgorithmIdentifier, BIT STRING signature }``: three byte strings and two headers, no re-parse or
   re-encode of the TBS) and verifies it in software with cryptography: the certificate parses, the
   TBS inside is byte-identical to the one prepared (so its issuer is the CA certificate's subject,
   checked once per template), and its signature verifies with the CA certificate's public key
   (loaded once). A faulty HSM, a swapped key or a CA certificate that does not match the key gives
   :class:`~hsm.errors.CertificateCheckFailed`; nothing unverified leaves this module. Each prepared
   TBS is signed at most once and only if this issuer prepared it.

Subjects come from the profile's templates and the station's own identity data, never from the CSR;
the CSR's subject must merely equal what the station asked for. Extensions in the CSR (CA:TRUE, EKUs,
SANs) are ignored: the profile decides. Validity that would outlive the CA certificate is clamped to
the CA's notAfter (profile ``beyond_ca = "clamp"``, the built-ins) or refused with
``validity_exceeds_ca`` (``beyond_ca = "refuse"``).
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import os
import re
import secrets
import threading
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from functools import cached_property, lru_cache
from typing import Any, Final

from cryptography import x509
from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, padding, rsa
from cryptography.x509.oid import AttributeOID, ExtendedKeyUsageOID, NameOID, SignatureAlgorithmOID

from hsm.errors import CertificateCheckFailed, HsmError, IssuanceRefused, ProfileError
from hsm.keys import CaKey, SignHash, capture_key, default_hash
from hsm.profile import Profile
from hsm.tbs import SAN_DNS, SAN_EMAIL, SAN_URI, NameSlot, NotEncodable, TbsTemplate, encoded_size, read, tlv

log = logging.getLogger(__name__)

MATTER_VID_OID: Final = x509.ObjectIdentifier("1.3.6.1.4.1.37244.2.1")
MATTER_PID_OID: Final = x509.ObjectIdentifier("1.3.6.1.4.1.37244.2.2")

REASONS: Final[dict[str, str]] = {
    "csr_too_large": "the CSR is larger than the profile allows",
    "csr_malformed": "the CSR is not valid DER (garbage, indefinite length, bad structure)",
    "csr_truncated": "the CSR ends before its DER length says",
    "csr_trailing_bytes": "the CSR has bytes after its DER structure",
    "csr_signature_invalid": "the CSR's signature does not verify with its own public key",
    "key_invalid": "the public key cannot be loaded (off-curve point, point at infinity, bad encoding)",
    "key_algorithm_not_allowed": "the key algorithm is not allowed by the profile",
    "key_curve_not_allowed": "the EC curve is not allowed by the profile (e.g. P-192, secp256k1)",
    "key_too_small": "the RSA key is smaller than the profile allows (minimum 2048 bits)",
    "extension_duplicate": "an extension appears twice in the CSR",
    "extension_unknown_critical": "the CSR carries a critical extension the station does not know",
    "nonce_missing": "the CSR has no challengePassword carrying the station's nonce",
    "nonce_mismatch": "the CSR's challengePassword is not this exchange's nonce (replayed CSR?)",
    "subject_invalid": "a subject value built for this unit is empty, too long or has control characters",
    "subject_mismatch": "the CSR's subject differs from what the station asked for",
    "key_already_issued": "this public key already has a certificate (cloned or replayed key)",
    "key_is_ca_key": "the CSR's public key is the CA's own key",
    "ca_expired": "the CA certificate is expired or not yet valid",
    "validity_exceeds_ca": "the certificate would outlive the CA certificate (profile says refuse)",
    "certificate_too_large": "the certificate would exceed the profile's DER size limit",
    "lint_failed": "the to-be-signed certificate breaks a profile rule",
}
"""Every reason code :class:`IssuanceRefused` can carry, with its meaning."""

_CURVE_NAMES: Final[dict[str, str]] = {"secp256r1": "p256", "secp384r1": "p384"}
_KU_FIELDS: Final = ("digital_signature", "content_commitment", "key_encipherment", "data_encipherment",
                     "key_agreement", "key_cert_sign", "crl_sign")
_EKU_OIDS: Final = {
    "client_auth": ExtendedKeyUsageOID.CLIENT_AUTH,
    "server_auth": ExtendedKeyUsageOID.SERVER_AUTH,
    "code_signing": ExtendedKeyUsageOID.CODE_SIGNING,
    "email_protection": ExtendedKeyUsageOID.EMAIL_PROTECTION,
}
_HASHES: Final[dict[str, SignHash]] = {
    "sha256": hashes.SHA256(), "sha384": hashes.SHA384(), "sha512": hashes.SHA512(),
}
_MAX_PENDING: Final = 4096
"""Prepared-but-unsigned TBS kept per issuer; the oldest are forgotten (and can no longer be signed)."""
_SPKI: Final = serialization.PublicFormat.SubjectPublicKeyInfo
_CONTROL: Final = re.compile(r"[\x00-\x1f\x7f]")
"""Characters a subject value may not carry."""
_CN_MAX_UTF8: Final = 64
"""ub-common-name; cryptography's NameAttribute counts it in UTF-8 bytes and refuses more."""
_MAX_PLANS: Final = 64
"""Profile templates kept per issuer (a station uses a handful of profiles)."""
_SAN_TAGS: Final[dict[str, int]] = {"uri": SAN_URI, "dns": SAN_DNS, "email": SAN_EMAIL}
_GENERAL_NAMES: Final[dict[str, Callable[[str], x509.GeneralName]]] = {
    "uri": x509.UniformResourceIdentifier, "dns": x509.DNSName, "email": x509.RFC822Name,
}
_ECDSA_CSR_HASHES: Final[dict[x509.ObjectIdentifier, ec.ECDSA]] = {
    SignatureAlgorithmOID.ECDSA_WITH_SHA256: ec.ECDSA(hashes.SHA256()),
    SignatureAlgorithmOID.ECDSA_WITH_SHA384: ec.ECDSA(hashes.SHA384()),
    SignatureAlgorithmOID.ECDSA_WITH_SHA512: ec.ECDSA(hashes.SHA512()),
}
"""CSR signature algorithms verified directly with the already-loaded key (others: cryptography's
``is_signature_valid``, which loads the key a second time)."""
_RFC4514_SPECIALS: Final = {ord(c): "\\" + c for c in '\\",+;<>'} | {0: "\\00"}


@dataclass(frozen=True, kw_only=True)
class Identity:
    """What the station itself knows about the unit (HELLO, work order, reserved serial)."""

    unit_serial: str
    hardware_id: str
    product: str
    work_order: str
    vendor: str = ""
    model: str = ""


@dataclass(frozen=True, kw_only=True)
class SubjectFields:
    """The subject the station asks the device to put in its CSR."""

    common_name: str
    serial_number: str | None = None
    organization: str | None = None

    def attributes(self) -> list[tuple[str, str]]:
        out = [(NameOID.COMMON_NAME.dotted_string, self.common_name)]
        if self.serial_number:
            out.append((NameOID.SERIAL_NUMBER.dotted_string, self.serial_number))
        if self.organization:
            out.append((NameOID.ORGANIZATION_NAME.dotted_string, self.organization))
        return out


@dataclass(frozen=True, kw_only=True)
class _Plan:
    """What is fixed per profile for one issuer: the linted template and how its TBS is signed/checked."""

    profile: Profile
    template: TbsTemplate
    oids: tuple[x509.ObjectIdentifier, ...]
    """The subject attribute OIDs in certificate order (one per template slot)."""
    labels: tuple[str, ...]
    """The RFC 4514 attribute type for each, as cryptography's ``rfc4514_string`` names it."""
    csr_order: tuple[int, ...] | None
    """Template slots in the order the station asks the device for them (SubjectFields.attributes),
    when each slot encodes as cryptography encodes that attribute in a CSR; else None."""
    hash_name: str
    pss: bool
    trailer: int
    """Bytes after the TBS inside the certificate at most: algorithm and the longest signature."""
    verify: Callable[[bytes, bytes], None]
    """verify(signature, tbs) with the CA certificate's key; raises InvalidSignature."""


def _san_der(entries: Sequence[tuple[str, str]]) -> list[tuple[int, bytes]]:
    """(GeneralName tag, IA5String bytes) per SAN entry; UnicodeEncodeError when a value is not ASCII
    (cryptography's GeneralName types refuse those too)."""
    return [(_SAN_TAGS[kind], value.encode("ascii")) for kind, value in entries]


def rfc4514_escape(value: str) -> str:
    """An attribute value escaped as RFC 4514 section 2.4 says (and cryptography's ``rfc4514_string``
    does): the specials anywhere, NUL as ``\\00``, a leading ``#``, a leading space unless it is also
    the last character, and a trailing space."""
    if not value:
        return ""
    out = value.translate(_RFC4514_SPECIALS)
    if out[0] == "#" or (out[0] == " " and len(out) > 1):
        out = "\\" + out
    if out[-1] == " ":
        out = out[:-1] + "\\ "
    return out


def _rfc4514_label(oid: x509.ObjectIdentifier) -> str:
    """The attribute type cryptography writes for ``oid`` in an RFC 4514 string (CN, O, or dotted)."""
    return x509.NameAttribute(oid, "x").rfc4514_string().rpartition("=")[0]


def _spki(public: Any) -> bytes:
    """SubjectPublicKeyInfo DER, as cryptography encodes it (and as the builder puts it in a TBS)."""
    out: bytes = public.public_bytes(serialization.Encoding.DER, _SPKI)
    return out


@lru_cache(maxsize=16)
def _iso(moment: datetime) -> str:
    """``YYYY-MM-DDTHH:MM:SSZ`` (what the intent row records as notAfter)."""
    return (f"{moment.year:04d}-{moment.month:02d}-{moment.day:02d}"
            f"T{moment.hour:02d}:{moment.minute:02d}:{moment.second:02d}Z")


_CSR_NAME_SLOTS: dict[str, NameSlot] = {}
"""Per subject OID (dotted): how cryptography encodes it in a Name, learned from cryptography itself."""


def _csr_name_slot(dotted: str) -> NameSlot:
    slot = _CSR_NAME_SLOTS.get(dotted)
    if slot is None:
        name = x509.Name([x509.NameAttribute(x509.ObjectIdentifier(dotted), "x")]).public_bytes()
        slot = TbsTemplate._split_name(name, 2, len(name))[0]
        _CSR_NAME_SLOTS[dotted] = slot
    return slot


def _csr_parts(csr_der: bytes) -> tuple[bytes, bytes] | None:
    """(subject Name DER, SubjectPublicKeyInfo DER) of a CSR that cryptography has already parsed,
    cut from the bytes as sent; None if they cannot be cut."""
    try:
        _, start, end = read(csr_der, 0)
        _, info, info_end = read(csr_der, start, end)
        _, _, version_end = read(csr_der, info, info_end)
        _, _, subject_end = read(csr_der, version_end, info_end)
        _, _, spki_end = read(csr_der, subject_end, info_end)
    except ValueError:
        return None
    return csr_der[version_end:subject_end], csr_der[subject_end:spki_end]


_SPKI_SHAPES: dict[str, tuple[bytes, int]] = {}
"""Per key kind with a fixed-size encoding (P-256, P-384, Ed25519): the bytes cryptography writes
before the key's coordinates in a SubjectPublicKeyInfo, and the total length. Learned from
cryptography itself, once."""
_FIXED_SPKI_KEYS: Final[dict[str, Callable[[], Any]]] = {
    "secp256r1": lambda: ec.generate_private_key(ec.SECP256R1()).public_key(),
    "secp384r1": lambda: ec.generate_private_key(ec.SECP384R1()).public_key(),
    "ed25519": lambda: ed25519.Ed25519PrivateKey.generate().public_key(),
}
_KEY_BYTES: Final = {"secp256r1": 64, "secp384r1": 96, "ed25519": 32}


def _canonical_spki(public: Any, sent: bytes | None) -> bytes:
    """The key's SubjectPublicKeyInfo as cryptography encodes it (what the builder writes and what
    is fingerprinted). The CSR's own bytes are that encoding when they have its exact prefix and
    length (the rest is the point the key was loaded from); anything else is re-encoded."""
    if sent is not None:
        kind = public.curve.name if isinstance(public, ec.EllipticCurvePublicKey) else (
            "ed25519" if isinstance(public, ed25519.Ed25519PublicKey) else "")
        if kind in _FIXED_SPKI_KEYS:
            shape = _SPKI_SHAPES.get(kind)
            if shape is None:
                reference = _spki(_FIXED_SPKI_KEYS[kind]())
                shape = _SPKI_SHAPES[kind] = (reference[:-_KEY_BYTES[kind]], len(reference))
            if len(sent) == shape[1] and sent.startswith(shape[0]):
                return sent
    return _spki(public)


def _der(tag: int, content: bytes) -> bytes:
    """One DER element: tag, definite length (short or long form), content."""
    n = len(content)
    if n < 0x80:
        return bytes((tag, n)) + content
    size = n.to_bytes((n.bit_length() + 7) // 8, "big")
    return bytes((tag, 0x80 | len(size))) + size + content


def _der_next(data: bytes, offset: int) -> tuple[int, int]:
    """(tag, end offset) of the DER element at ``offset``; only definite lengths (DER)."""
    if offset + 2 > len(data):
        raise CertificateCheckFailed("TBS certificate truncated")
    tag, first = data[offset], data[offset + 1]
    start = offset + 2
    if first < 0x80:
        length = first
    else:
        count = first & 0x7F
        if not 1 <= count <= 4 or start + count > len(data):
            raise CertificateCheckFailed("TBS certificate has a bad DER length")
        length = int.from_bytes(data[start:start + count], "big")
        start += count
    end = start + length
    if end > len(data):
        raise CertificateCheckFailed("TBS certificate truncated")
    return tag, end


def _tbs_signature_algorithm(tbs_der: bytes) -> bytes:
    """The DER of the TBS certificate's ``signature`` AlgorithmIdentifier (its third or second field)."""
    tag, end = _der_next(tbs_der, 0)
    if tag != 0x30 or end != len(tbs_der):
        raise CertificateCheckFailed("TBS certificate is not one DER SEQUENCE")
    offset = 2 if tbs_der[1] < 0x80 else 2 + (tbs_der[1] & 0x7F)
    tag, after = _der_next(tbs_der, offset)
    if tag == 0xA0:  # [0] version
        offset = after
        tag, after = _der_next(tbs_der, offset)
    if tag != 0x02:  # serialNumber
        raise CertificateCheckFailed("TBS certificate has no serial number where expected")
    tag, end = _der_next(tbs_der, after)
    if tag != 0x30:
        raise CertificateCheckFailed("TBS certificate has no signature algorithm where expected")
    return tbs_der[after:end]


@dataclass(frozen=True, kw_only=True)
class Prepared:
    """A checked, built, unsigned certificate: ``tbs_der`` is exactly what will be signed."""

    serial: int
    tbs_der: bytes
    tbs_sha256: str
    public_key_sha256: str
    profile: str
    subject: str
    not_after: str
    max_der_size: int


def public_key_sha256(public_key_der: bytes) -> str:
    """The key fingerprint used for clone detection: SHA-256 of SubjectPublicKeyInfo DER, lowercase hex."""
    return hashlib.sha256(public_key_der).hexdigest()


class _SerialSource:
    """128-bit serials cut from OS CSPRNG output fetched 4 KiB at a time.

    Why: one ``getrandom`` system call per unit is a measurable part of the signing path on a VM.
    Each serial is still 16 fresh bytes that no other serial shares; the buffer is per process (a
    forked child starts with an empty one, so parent and child never hand out the same bytes) and
    taken under a lock.
    """

    _CHUNK: Final = 16 * 256

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._buffer = b""
        self._offset = 0
        os.register_at_fork(after_in_child=self._forget)

    def _forget(self) -> None:
        self._lock = threading.Lock()
        self._buffer, self._offset = b"", 0

    def take(self) -> bytes:
        with self._lock:
            if self._offset >= len(self._buffer):
                self._buffer, self._offset = secrets.token_bytes(self._CHUNK), 0
            start = self._offset
            self._offset = start + 16
            chunk = self._buffer[start:start + 16]
        return chunk


_SERIALS: Final = _SerialSource()


def random_serial() -> int:
    """128 bits from the OS CSPRNG, positive and non-zero: at most 17 DER octets (limit is 20)."""
    while True:
        serial = int.from_bytes(_SERIALS.take(), "big")
        if serial:
            return serial


def _refuse(reason: str, detail: str | None = None, **context: Any) -> IssuanceRefused:
    text = REASONS[reason] + (f": {detail}" if detail else "")
    return IssuanceRefused(reason, text, **context)


def _check_der_frame(data: bytes) -> None:
    """The outer TLV must be one definite-length SEQUENCE spanning the whole input, no more, no less."""
    if len(data) < 2 or data[0] != 0x30:
        raise _refuse("csr_malformed", "not a DER SEQUENCE")
    first = data[1]
    if first == 0x80:
        raise _refuse("csr_malformed", "indefinite length (BER, not DER)")
    if first < 0x80:
        header, length = 2, first
    else:
        n = first & 0x7F
        if n > 4 or len(data) < 2 + n:
            raise _refuse("csr_malformed", "bad length field")
        header, length = 2 + n, int.from_bytes(data[2:2 + n], "big")
    total = header + length
    if total > len(data):
        raise _refuse("csr_truncated", f"{len(data)} of {total} bytes")
    if total < len(data):
        raise _refuse("csr_trailing_bytes", f"{len(data) - total} extra bytes")


def _csr_signature_valid(csr: x509.CertificateSigningRequest, public: Any) -> bool:
    """The CSR's signature verifies with its own key: ECDSA and Ed25519 directly with the key already
    loaded, anything else through cryptography's ``is_signature_valid``."""
    try:
        oid = csr.signature_algorithm_oid
        if isinstance(public, ec.EllipticCurvePublicKey) and oid in _ECDSA_CSR_HASHES:
            public.verify(csr.signature, csr.tbs_certrequest_bytes, _ECDSA_CSR_HASHES[oid])
            return True
        if isinstance(public, ed25519.Ed25519PublicKey) and oid == SignatureAlgorithmOID.ED25519:
            public.verify(csr.signature, csr.tbs_certrequest_bytes)
            return True
        return csr.is_signature_valid
    except (ValueError, UnsupportedAlgorithm, InvalidSignature):
        return False


def _clean(value: str, what: str, *, max_utf8: int | None = None) -> str:
    """A subject value: 1..64 characters, no control characters, and at most ``max_utf8`` bytes in
    UTF-8 where the certificate's writer counts bytes (cryptography does for commonName)."""
    if not value or len(value) > 64 or _CONTROL.search(value):
        raise _refuse("subject_invalid", what)
    if max_utf8 is not None and len(value.encode("utf-8", "surrogatepass")) > max_utf8:
        raise _refuse("subject_invalid", f"{what} is longer than {max_utf8} bytes in UTF-8")
    return value


class Issuer:
    """Checks CSRs, builds TBS certificates and signs them with the CA key in the token.

    ``chain`` is the CA certificate chain, issuing CA first. Thread-safe: the token session
    serialises PKCS#11 calls; everything else is per call or under a small lock.
    """

    def __init__(
        self,
        ca_key: CaKey,
        chain: Sequence[x509.Certificate],
        *,
        rsa_pss: bool = False,
        clock: Callable[[], datetime] | None = None,
    ) -> None:
        if not chain:
            raise ProfileError("the CA certificate chain is empty")
        self.ca_key = ca_key
        self.chain = tuple(chain)
        self.ca_cert = chain[0]
        self._rsa_pss = rsa_pss
        self._clock = clock or (lambda: datetime.now(UTC))
        self._pending: OrderedDict[str, _Plan] = OrderedDict()
        """Prepared TBS (by SHA-256) not yet signed, each with the plan that says how to sign it."""
        self._pending_lock = threading.Lock()
        self._plans: OrderedDict[int, _Plan] = OrderedDict()
        self._plans_lock = threading.Lock()
        self._ca_public = self.ca_cert.public_key()
        self._ca_validity = (self.ca_cert.not_valid_before_utc, self.ca_cert.not_valid_after_utc)
        self._ca_key_hashes = {
            public_key_sha256(c.public_key().public_bytes(
                serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo))
            for c in self.chain
        } | {public_key_sha256(ca_key.public_key_der)}

    # -- subject -------------------------------------------------------------------------------

    def subject_fields(self, profile: Profile, identity: Identity) -> SubjectFields:
        """The subject from the profile's templates and the station's identity data."""
        values = {
            "unit_serial": identity.unit_serial, "hardware_id": identity.hardware_id,
            "product": identity.product, "work_order": identity.work_order,
            "vendor": identity.vendor, "model": identity.model,
        }

        def fill(template: str, what: str, max_utf8: int | None = None) -> str | None:
            if not template:
                return None
            try:
                value = template.format_map(values)
            except (KeyError, ValueError, IndexError):
                raise ProfileError("bad subject template", profile=profile.name, field=what) from None
            return _clean(value, what, max_utf8=max_utf8)

        cn = fill(profile.common_name, "common_name", _CN_MAX_UTF8)
        if cn is None:
            raise ProfileError("subject.common_name is required", profile=profile.name)
        return SubjectFields(
            common_name=cn,
            serial_number=fill(profile.serial_number, "serial_number"),
            organization=fill(profile.organization, "organization"),
        )

    # -- phase 1 -------------------------------------------------------------------------------

    def check_csr(
        self,
        csr_der: bytes,
        *,
        profile: Profile,
        expected: SubjectFields,
        nonce: bytes,
        is_key_known: Callable[[str], bool] | None = None,
    ) -> tuple[x509.CertificateSigningRequest, Any, str]:
        """Every pre-issuance check on the CSR. Returns (csr, public key, key fingerprint)."""
        csr, public, fingerprint, _ = self._check_csr(
            csr_der, profile=profile, expected=expected, nonce=nonce, is_key_known=is_key_known
        )
        return csr, public, fingerprint

    def _check_csr(
        self,
        csr_der: bytes,
        *,
        profile: Profile,
        expected: SubjectFields,
        nonce: bytes,
        is_key_known: Callable[[str], bool] | None,
        wanted_subject: bytes | None = None,
    ) -> tuple[x509.CertificateSigningRequest, Any, str, bytes]:
        """:meth:`check_csr`, also returning the SubjectPublicKeyInfo DER it fingerprinted.
        ``wanted_subject``: the expected subject's DER in request order, when the caller has it."""
        if len(csr_der) > profile.max_csr_der:
            raise _refuse("csr_too_large", f"{len(csr_der)} > {profile.max_csr_der} bytes")
        _check_der_frame(csr_der)
        try:
            csr = x509.load_der_x509_csr(csr_der)
        except (ValueError, x509.InvalidVersion) as exc:  # InvalidVersion is not a ValueError
            raise _refuse("csr_malformed", str(exc)[:120]) from None
        try:
            public = csr.public_key()
        except (ValueError, UnsupportedAlgorithm) as exc:
            raise _refuse("key_invalid", str(exc)[:120]) from None
        self._check_key(public, profile)
        if not _csr_signature_valid(csr, public):
            raise _refuse("csr_signature_invalid")
        try:
            extensions = list(csr.extensions)
        except x509.DuplicateExtension as exc:
            raise _refuse("extension_duplicate", exc.oid.dotted_string) from None
        except ValueError as exc:
            raise _refuse("csr_malformed", f"extensions: {str(exc)[:100]}") from None
        for ext in extensions:
            if ext.critical and isinstance(ext.value, x509.UnrecognizedExtension):
                raise _refuse("extension_unknown_critical", ext.oid.dotted_string)
        self._check_nonce(csr, nonce)
        parts = _csr_parts(csr_der)
        if not self._subject_matches(csr, None if parts is None else parts[0], expected, wanted_subject):
            raise _refuse("subject_mismatch", f"CSR has {csr.subject.rfc4514_string()[:200]!r}")
        spki = _canonical_spki(public, None if parts is None else parts[1])
        fingerprint = public_key_sha256(spki)
        if fingerprint in self._ca_key_hashes:
            raise _refuse("key_is_ca_key")
        if is_key_known is not None and is_key_known(fingerprint):
            raise _refuse("key_already_issued", public_key_sha256=fingerprint)
        return csr, public, fingerprint, spki

    @staticmethod
    def _subject_matches(
        csr: x509.CertificateSigningRequest, subject: bytes | None, expected: SubjectFields,
        wanted: bytes | None = None,
    ) -> bool:
        """The CSR's subject has exactly the expected attributes, in any order and string type.

        First a byte comparison with ``wanted``, the subject as cryptography would encode the expected
        attributes in the order the station asked for them (equal bytes mean equal attributes); when
        that differs, the attribute-by-attribute comparison decides.
        """
        pairs = expected.attributes()
        if subject is not None:
            if wanted is None:
                try:
                    wanted = tlv(0x30, b"".join([_csr_name_slot(oid).encode(value) for oid, value in pairs]))
                except NotEncodable:
                    wanted = b""
            if subject == wanted:
                return True
        try:
            got = sorted((a.oid.dotted_string, str(a.value)) for a in csr.subject)
        except ValueError as exc:
            raise _refuse("csr_malformed", f"subject: {str(exc)[:100]}") from None
        return got == sorted(pairs)

    @staticmethod
    def _check_key(public: Any, profile: Profile) -> None:
        allowed = profile.allowed_keys
        if isinstance(public, ec.EllipticCurvePublicKey):
            name = _CURVE_NAMES.get(public.curve.name)
            if name is None or name not in allowed:
                raise _refuse("key_curve_not_allowed", public.curve.name)
        elif isinstance(public, rsa.RSAPublicKey):
            if "rsa" not in allowed:
                raise _refuse("key_algorithm_not_allowed", "RSA")
            if public.key_size < profile.rsa_min_bits:
                raise _refuse("key_too_small", f"RSA {public.key_size} < {profile.rsa_min_bits} bits")
        elif isinstance(public, ed25519.Ed25519PublicKey):
            if "ed25519" not in allowed:
                raise _refuse("key_algorithm_not_allowed", "Ed25519")
        else:
            raise _refuse("key_algorithm_not_allowed", type(public).__name__)

    @staticmethod
    def _check_nonce(csr: x509.CertificateSigningRequest, nonce: bytes) -> None:
        try:
            attr = csr.attributes.get_attribute_for_oid(AttributeOID.CHALLENGE_PASSWORD)
        except x509.AttributeNotFound:
            raise _refuse("nonce_missing") from None
        except ValueError as exc:
            raise _refuse("csr_malformed", f"attributes: {str(exc)[:100]}") from None
        if not hmac.compare_digest(attr.value, nonce.hex().encode("ascii")):
            raise _refuse("nonce_mismatch")

    def _validity(self, profile: Profile) -> tuple[datetime, datetime]:
        now = self._clock()
        ca_from, ca_until = self._ca_validity
        if not ca_from <= now <= ca_until:
            raise _refuse("ca_expired", f"CA valid {ca_from:%Y-%m-%d} to {ca_until:%Y-%m-%d}")
        not_before = max(now - timedelta(minutes=profile.backdate_minutes), ca_from)
        if profile.not_after is not None:
            not_after = profile.not_after
        else:
            assert profile.days is not None
            not_after = now + timedelta(days=profile.days)
        if not_after > ca_until:
            if profile.beyond_ca == "refuse":
                raise _refuse("validity_exceeds_ca", f"{not_after:%Y-%m-%d} > CA {ca_until:%Y-%m-%d}")
            not_after = ca_until
        return not_before.replace(microsecond=0), not_after.replace(microsecond=0)

    def _signature_hash(self, profile: Profile) -> SignHash:
        if profile.require_ca_curve is not None:
            pub = self.ca_key.public_key
            want = {"P-256": "secp256r1", "P-384": "secp384r1"}.get(profile.require_ca_curve)
            if not isinstance(pub, ec.EllipticCurvePublicKey) or pub.curve.name != want:
                raise ProfileError(f"profile needs a {profile.require_ca_curve} CA key", profile=profile.name)
        if profile.hash == "auto":
            return default_hash(self.ca_key.public_key)
        return _HASHES[profile.hash]

    @staticmethod
    def _subject_attributes(profile: Profile, fields: SubjectFields, identity: Identity,
                            matter_params: dict[str, str] | None) -> list[tuple[x509.ObjectIdentifier, str]]:
        """The certificate's subject, in order: the one place that order is decided (both paths)."""
        attrs: list[tuple[x509.ObjectIdentifier, str]] = []
        if fields.organization:
            attrs.append((NameOID.ORGANIZATION_NAME, fields.organization))
        attrs.append((NameOID.COMMON_NAME, fields.common_name))
        if fields.serial_number:
            attrs.append((NameOID.SERIAL_NUMBER, fields.serial_number))
        if profile.matter:
            vid, pid = profile.matter_ids(identity.product, matter_params)
            attrs.append((MATTER_VID_OID, vid))
            attrs.append((MATTER_PID_OID, pid))
        return attrs

    @staticmethod
    def _san_entries(profile: Profile, identity: Identity) -> list[tuple[str, str]]:
        """(kind, value) for each of the profile's SAN templates, filled from the identity."""
        values = {"unit_serial": identity.unit_serial, "hardware_id": identity.hardware_id,
                  "product": identity.product, "work_order": identity.work_order}
        out = []
        for entry in profile.subject_alt_names:
            kind, _, template = entry.partition(":")
            try:
                out.append((kind, template.format_map(values)))
            except (KeyError, ValueError, IndexError):
                raise ProfileError("bad SAN template", profile=profile.name) from None
        return out

    # -- the per-profile plan --------------------------------------------------------------------

    def _plan(self, profile: Profile) -> _Plan:
        """The plan for ``profile`` (built on first use, then cached; keyed by the profile object)."""
        with self._plans_lock:
            plan = self._plans.get(id(profile))
        if plan is not None and plan.profile is profile:
            return plan
        plan = self._build_plan(profile)
        with self._plans_lock:
            self._plans[id(profile)] = plan  # the plan holds the profile, so the id is not reused
            while len(self._plans) > _MAX_PLANS:
                self._plans.popitem(last=False)
        return plan

    def _build_plan(self, profile: Profile) -> _Plan:
        """Build the template with cryptography, lint it whole, split it, and prove the split.

        The proof: the template is filled again with its own serial, validity, subject values, key
        and SANs, and must come out byte-identical, before any unit uses it.
        """
        hash_alg = self._signature_hash(profile)
        pss = self._padding(hash_alg) is not None
        placeholder = SubjectFields(
            common_name="x", serial_number="x" if profile.serial_number else None,
            organization="x" if profile.organization else None,
        )
        filler = Identity(unit_serial="x", hardware_id="x", product="", work_order="x")
        attrs = self._subject_attributes(profile, placeholder, filler, None)
        sans = self._san_entries(profile, filler)
        key = ec.generate_private_key(ec.SECP256R1()).public_key()
        not_before, not_after = datetime(2030, 1, 2, 3, 4, 5, tzinfo=UTC), datetime(9999, 12, 31, 23, 59, 59,
                                                                                     tzinfo=UTC)
        template_cert = self._reference_certificate(
            profile, attrs, key, random_serial(), not_before, not_after, sans, hash_alg
        )
        self._lint(template_cert, profile)
        try:
            template = TbsTemplate.split(template_cert.tbs_certificate_bytes)
            if template.issuer != self.ca_cert.subject.public_bytes():
                raise ValueError("issuer name differs from the CA certificate's subject")
            spki = _spki(key)
            again = template.build(
                serial=template_cert.serial_number, not_before=not_before, not_after=not_after,
                subject=[v for _, v in attrs], spki_der=spki, sans=_san_der(sans),
            )
            if again != template_cert.tbs_certificate_bytes:
                raise ValueError("the filled template differs from what the builder produced")
        except ValueError as exc:
            raise ProfileError(f"cannot use this profile's certificate as a template: {exc}",
                               profile=profile.name) from None
        capture = capture_key(self.ca_key.public_key)
        dummy = capture.sign(b"", ec.ECDSA(hash_alg)) if isinstance(capture, ec.EllipticCurvePrivateKey) \
            else capture.sign(b"", padding.PKCS1v15(), hash_alg)
        return _Plan(
            profile=profile, template=template, oids=tuple(o for o, _ in attrs),
            labels=tuple(_rfc4514_label(o) for o, _ in attrs), hash_name=hash_alg.name, pss=pss,
            csr_order=self._csr_order(template, [o.dotted_string for o, _ in attrs], placeholder),
            trailer=len(template.signature_algorithm) + len(tlv(0x03, b"\x00" + dummy)),
            verify=self._verifier(hash_alg, pss),
        )

    @staticmethod
    def _csr_order(template: TbsTemplate, dotted: list[str], fields: SubjectFields) -> tuple[int, ...] | None:
        order = []
        for oid, _ in fields.attributes():
            if oid not in dotted or template.subject[dotted.index(oid)] != _csr_name_slot(oid):
                return None
            order.append(dotted.index(oid))
        return tuple(order)

    def _verifier(self, hash_alg: SignHash, pss: bool) -> Callable[[bytes, bytes], None]:
        """verify(signature, tbs) with the CA certificate's key, loaded once; raises InvalidSignature."""
        public = self._ca_public
        if isinstance(public, ec.EllipticCurvePublicKey):
            algorithm = ec.ECDSA(hash_alg)
            return lambda signature, data: public.verify(signature, data, algorithm)
        if isinstance(public, rsa.RSAPublicKey):
            pad: padding.AsymmetricPadding = (
                padding.PSS(mgf=padding.MGF1(hash_alg), salt_length=hash_alg.digest_size) if pss
                else padding.PKCS1v15()
            )
            return lambda signature, data: public.verify(signature, data, pad, hash_alg)

        def mismatch(signature: bytes, data: bytes) -> None:
            raise InvalidSignature("the CA certificate's key is neither EC nor RSA")
        return mismatch

    def _reference_certificate(
        self,
        profile: Profile,
        subject: Sequence[tuple[x509.ObjectIdentifier, str]],
        public: Any,
        serial: int,
        not_before: datetime,
        not_after: datetime,
        sans: Sequence[tuple[str, str]],
        hash_alg: SignHash,
    ) -> x509.Certificate:
        """The certificate as cryptography's ``CertificateBuilder`` makes it (capture-signed)."""
        builder = (
            x509.CertificateBuilder()
            .issuer_name(self.ca_cert.subject)
            .subject_name(x509.Name([x509.NameAttribute(o, v) for o, v in subject]))
            .public_key(public)
            .serial_number(serial)
            .not_valid_before(not_before)
            .not_valid_after(not_after)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None),
                           critical=profile.basic_constraints_critical)
        )
        ku = {f: f in profile.key_usage for f in _KU_FIELDS}
        builder = builder.add_extension(
            x509.KeyUsage(**ku, encipher_only=False, decipher_only=False), critical=profile.key_usage_critical
        )
        if profile.extended_key_usage:
            builder = builder.add_extension(
                x509.ExtendedKeyUsage([_EKU_OIDS[e] for e in profile.extended_key_usage]), critical=False
            )
        if profile.subject_key_identifier:
            builder = builder.add_extension(x509.SubjectKeyIdentifier.from_public_key(public), critical=False)
        if profile.authority_key_identifier:
            builder = builder.add_extension(self._aki, critical=False)
        if sans:
            names = [_GENERAL_NAMES[kind](value) for kind, value in sans]
            builder = builder.add_extension(x509.SubjectAlternativeName(names), critical=False)
        capture = capture_key(self.ca_key.public_key)
        return builder.sign(capture, hash_alg, rsa_padding=self._padding(hash_alg))

    def reference_tbs(
        self,
        profile: Profile,
        identity: Identity,
        public: Any,
        *,
        serial: int,
        not_before: datetime,
        not_after: datetime,
        matter_params: dict[str, str] | None = None,
    ) -> bytes:
        """A unit's TBS as cryptography's ``CertificateBuilder`` builds it: the specification of
        :meth:`build_tbs`, kept for the equivalence tests (no checks, nothing recorded)."""
        fields = self.subject_fields(profile, identity)
        attrs = self._subject_attributes(profile, fields, identity, matter_params)
        sans = self._san_entries(profile, identity)
        cert = self._reference_certificate(profile, attrs, public, serial, not_before, not_after, sans,
                                           self._signature_hash(profile))
        return cert.tbs_certificate_bytes

    def build_tbs(
        self,
        profile: Profile,
        identity: Identity,
        public: Any,
        *,
        serial: int,
        not_before: datetime,
        not_after: datetime,
        matter_params: dict[str, str] | None = None,
    ) -> bytes:
        """A unit's TBS from the profile's template (what :meth:`prepare` signs; no CSR checks)."""
        plan = self._plan(profile)
        fields = self.subject_fields(profile, identity)
        _, rdns = self._subject(plan, fields, identity, matter_params)
        return self._fill(plan, identity, rdns, _spki(public), serial, not_before, not_after)

    def _subject(
        self, plan: _Plan, fields: SubjectFields, identity: Identity, matter_params: dict[str, str] | None
    ) -> tuple[list[str], list[bytes] | NotEncodable]:
        """The subject values in certificate order, and their encoded RDNs (or why they cannot be)."""
        attrs = self._subject_attributes(plan.profile, fields, identity, matter_params)
        if tuple(o for o, _ in attrs) != plan.oids:
            raise _refuse("lint_failed", "subject attributes differ from the profile's template")
        values = [v for _, v in attrs]
        try:
            return values, plan.template.rdns(values)
        except NotEncodable as exc:
            return values, exc

    def _fill(
        self,
        plan: _Plan,
        identity: Identity,
        rdns: list[bytes] | NotEncodable,
        spki: bytes,
        serial: int,
        not_before: datetime,
        not_after: datetime,
    ) -> bytes:
        """Write one unit's fields into the template; refuses what cannot be encoded."""
        if isinstance(rdns, NotEncodable):
            raise _refuse("subject_invalid", str(rdns))
        try:
            san_der = _san_der(self._san_entries(plan.profile, identity))
        except UnicodeEncodeError:
            raise _refuse("subject_invalid", "a subjectAltName value is not ASCII") from None
        try:
            return plan.template.assemble(serial=serial, not_before=not_before, not_after=not_after,
                                          rdns=rdns, spki_der=spki, sans=san_der)
        except ValueError as exc:
            raise _refuse("lint_failed", str(exc)) from None

    def prepare(
        self,
        csr_der: bytes,
        *,
        profile: Profile,
        identity: Identity,
        nonce: bytes,
        is_key_known: Callable[[str], bool] | None = None,
        matter_params: dict[str, str] | None = None,
    ) -> Prepared:
        """Check the CSR and build the TBS certificate. Nothing is signed; raises IssuanceRefused."""
        plan = self._plan(profile)
        fields = self.subject_fields(profile, identity)
        values, rdns = self._subject(plan, fields, identity, matter_params)
        # The CSR must carry the subject the station asked for: the same RDN bytes, in request order.
        wanted = None if isinstance(rdns, NotEncodable) or plan.csr_order is None else \
            tlv(0x30, b"".join([rdns[i] for i in plan.csr_order]))
        _, public, fingerprint, spki = self._check_csr(
            csr_der, profile=profile, expected=fields, nonce=nonce, is_key_known=is_key_known,
            wanted_subject=wanted,
        )
        not_before, not_after = self._validity(profile)
        serial = random_serial()
        tbs = self._fill(plan, identity, rdns, spki, serial, not_before, not_after)
        size = encoded_size(len(tbs) + plan.trailer)
        if size > profile.max_certificate_der:
            raise _refuse("certificate_too_large", f"up to {size} > {profile.max_certificate_der} bytes")
        self._lint_unit(plan, serial, public)
        tbs_hash = hashlib.sha256(tbs).hexdigest()
        with self._pending_lock:
            self._pending[tbs_hash] = plan
            while len(self._pending) > _MAX_PENDING:
                self._pending.popitem(last=False)
        log.debug("prepared certificate serial=%x profile=%s tbs_sha256=%s", serial, profile.name, tbs_hash)
        return Prepared(
            serial=serial, tbs_der=tbs, tbs_sha256=tbs_hash, public_key_sha256=fingerprint,
            profile=profile.name,
            subject=",".join([f"{label}={rfc4514_escape(value)}" for label, value
                              in zip(reversed(plan.labels), reversed(values), strict=True)]),
            not_after=_iso(not_after), max_der_size=size,
        )

    def _padding(self, hash_alg: hashes.HashAlgorithm) -> padding.PSS | None:
        if self.ca_key.key_type == "rsa" and self._rsa_pss:
            return padding.PSS(mgf=padding.MGF1(hash_alg), salt_length=padding.PSS.DIGEST_LENGTH)
        return None

    @cached_property
    def _aki(self) -> x509.AuthorityKeyIdentifier:
        """From the CA certificate's SKI, else from the CA key (per CA, so computed once)."""
        try:
            ski = self.ca_cert.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
            return x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ski)
        except x509.ExtensionNotFound:
            return x509.AuthorityKeyIdentifier.from_issuer_public_key(self.ca_key.public_key)

    def _lint(self, cert: x509.Certificate, profile: Profile) -> None:
        """Profile rules on a whole certificate: run once per profile on its template.

        Of these, only the serial, the public key and the subject values vary per unit; the rest is
        the template's, byte for byte. :meth:`_lint_unit` checks those per unit.
        """
        if cert.version is not x509.Version.v3:
            raise _refuse("lint_failed", "not X.509 v3")
        if not 0 < cert.serial_number < (1 << 159):
            raise _refuse("lint_failed", "serial out of range")
        bc = cert.extensions.get_extension_for_class(x509.BasicConstraints).value
        if bc.ca:
            raise _refuse("lint_failed", "CA:TRUE")
        if profile.matter:
            vids = cert.subject.get_attributes_for_oid(MATTER_VID_OID)
            pids = cert.subject.get_attributes_for_oid(MATTER_PID_OID)
            if len(vids) != 1 or len(pids) != 1:
                raise _refuse("lint_failed", "Matter DAC needs exactly one VID and one PID")
            if cert.signature_hash_algorithm is None or cert.signature_hash_algorithm.name != "sha256":
                raise _refuse("lint_failed", "Matter DAC must be signed with ECDSA-SHA256")
            pub = cert.public_key()
            if not isinstance(pub, ec.EllipticCurvePublicKey) or pub.curve.name != "secp256r1":
                raise _refuse("lint_failed", "Matter DAC key must be P-256")
            ku = cert.extensions.get_extension_for_class(x509.KeyUsage)
            if not ku.critical or not ku.value.digital_signature or ku.value.key_cert_sign:
                raise _refuse("lint_failed", "Matter DAC key usage must be digitalSignature, critical")

    @staticmethod
    def _lint_unit(plan: _Plan, serial: int, public: Any) -> None:
        """The per-unit part of :meth:`_lint` (the subject OIDs were matched in :meth:`_fill`)."""
        if not 0 < serial < (1 << 159):
            raise _refuse("lint_failed", "serial out of range")
        if plan.profile.matter and not (isinstance(public, ec.EllipticCurvePublicKey)
                                        and public.curve.name == "secp256r1"):
            raise _refuse("lint_failed", "Matter DAC key must be P-256")

    # -- phase 2 -------------------------------------------------------------------------------

    def sign(self, tbs_der: bytes) -> bytes:
        """Sign exactly ``tbs_der`` (prepared by this issuer) in the HSM, assemble, verify, return DER."""
        sha256 = hashlib.sha256(tbs_der).digest()
        tbs_hash = sha256.hex()
        with self._pending_lock:
            plan = self._pending.get(tbs_hash)
        if plan is None:
            raise CertificateCheckFailed(
                "refusing to sign bytes this signer did not prepare (or already signed)",
                code="not_prepared", tbs_sha256=tbs_hash,
            )
        # The TBS names its own signature algorithm (the template's); the certificate repeats it outside.
        digest = sha256 if plan.hash_name == "sha256" else hashlib.new(plan.hash_name, tbs_der).digest()
        signature = self.ca_key.sign_digest(digest, plan.hash_name, pss=plan.pss)
        cert_der = _der(0x30, tbs_der + plan.template.signature_algorithm + _der(0x03, b"\x00" + signature))
        self._check_issued(cert_der, tbs_der, plan.verify)
        with self._pending_lock:
            self._pending.pop(tbs_hash, None)
        return cert_der

    def _check_issued(self, cert_der: bytes, tbs_der: bytes, verify: Callable[[bytes, bytes], None]) -> None:
        """The software check of :meth:`sign`, with the CA key and hash the template fixed."""
        try:
            cert = x509.load_der_x509_certificate(cert_der)
            if cert.tbs_certificate_bytes != tbs_der:
                raise CertificateCheckFailed("assembled certificate does not carry the prepared TBS bytes")
            verify(cert.signature, tbs_der)
        except HsmError:
            raise
        except (ValueError, TypeError, InvalidSignature, UnsupportedAlgorithm) as exc:
            raise self._verify_failed(exc) from exc

    @staticmethod
    def _verify_failed(exc: Exception) -> CertificateCheckFailed:
        log.error("HSM output failed verification against the CA certificate: %s", type(exc).__name__)
        return CertificateCheckFailed(
            "the HSM's signature does not verify with the CA certificate "
            "(faulty HSM, wrong key, or CA certificate does not match the key)",
            error=type(exc).__name__,
        )

    def verify_issued(self, cert_der: bytes, tbs_der: bytes) -> x509.Certificate:
        """Software check (cryptography, not the HSM) of any certificate against the CA certificate."""
        try:
            cert = x509.load_der_x509_certificate(cert_der)
            if cert.tbs_certificate_bytes != tbs_der:
                raise CertificateCheckFailed("assembled certificate does not carry the prepared TBS bytes")
            cert.verify_directly_issued_by(self.ca_cert)
        except HsmError:
            raise
        except (ValueError, TypeError, InvalidSignature, UnsupportedAlgorithm) as exc:
            raise self._verify_failed(exc) from exc
        return cert
