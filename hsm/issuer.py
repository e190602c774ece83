"""Issuing device certificates in two phases: check and build (nothing signed), then sign and verify.

Theory of operation, after Boulder's signing path (RELIABILITY.md):

1. :meth:`Issuer.prepare` runs every pre-issuance check on the CSR, in a fixed order, and refuses with
   :class:`~hsm.errors.IssuanceRefused` and one of the :data:`REASONS` codes before the HSM is asked
   anything. It then builds the certificate with cryptography's ``CertificateBuilder`` and a *capture*
   key that signs nothing, and keeps ``tbs_certificate_bytes``: the exact bytes the HSM will sign,
   whose SHA-256 the station records in its intent row. The capture signature has the longest DER
   length, so the size limit (Matter: 600 bytes) is checked on an upper bound.
2. :meth:`Issuer.sign` signs exactly those bytes in the token (host-side hash, ``CKM_ECDSA``),
   assembles the certificate directly in DER (``SEQUENCE { tbs, the TBS's own signature
   AlgorithmIdentifier, BIT STRING signature }``: three byte strings and two headers, no re-parse or
   re-encode of the TBS) and verifies it against the CA certificate in software with cryptography,
   which also checks the TBS inside is byte-identical to the one prepared. A faulty HSM, a swapped
   key or a CA certificate that does not match the key gives
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
import secrets
import threading
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, Final

from cryptography import x509
from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, padding, rsa
from cryptography.x509.oid import AttributeOID, ExtendedKeyUsageOID, NameOID

from hsm.errors import CertificateCheckFailed, HsmError, IssuanceRefused, ProfileError
from hsm.keys import CaKey, SignHash, capture_key, default_hash
from hsm.profile import Profile

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
class _Pending:
    """What :meth:`Issuer.prepare` recorded for a TBS it built: how that TBS is to be signed."""

    profile: str
    hash_name: str
    pss: bool


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


def random_serial() -> int:
    """128 bits from the OS CSPRNG, positive and non-zero: at most 17 DER octets (limit is 20)."""
    while True:
        serial = int.from_bytes(secrets.token_bytes(16), "big")
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


def _clean(value: str, what: str) -> str:
    if not value or len(value) > 64 or any(ord(c) < 0x20 or ord(c) == 0x7F for c in value):
        raise _refuse("subject_invalid", what)
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
        self._pending: OrderedDict[str, _Pending] = OrderedDict()
        self._pending_lock = threading.Lock()
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

        def fill(template: str, what: str) -> str | None:
            if not template:
                return None
            try:
                return _clean(template.format_map(values), what)
            except (KeyError, ValueError, IndexError):
                raise ProfileError("bad subject template", profile=profile.name, field=what) from None

        cn = fill(profile.common_name, "common_name")
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
        try:
            valid = csr.is_signature_valid
        except (ValueError, UnsupportedAlgorithm, InvalidSignature):
            valid = False
        if not valid:
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
        try:
            got = sorted((a.oid.dotted_string, str(a.value)) for a in csr.subject)
        except ValueError as exc:
            raise _refuse("csr_malformed", f"subject: {str(exc)[:100]}") from None
        if got != sorted(expected.attributes()):
            raise _refuse("subject_mismatch", f"CSR has {csr.subject.rfc4514_string()[:200]!r}")
        spki = public.public_bytes(
            serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
        )
        fingerprint = public_key_sha256(spki)
        if fingerprint in self._ca_key_hashes:
            raise _refuse("key_is_ca_key")
        if is_key_known is not None and is_key_known(fingerprint):
            raise _refuse("key_already_issued", public_key_sha256=fingerprint)
        return csr, public, fingerprint

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
        ca_from, ca_until = self.ca_cert.not_valid_before_utc, self.ca_cert.not_valid_after_utc
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

    def _name(self, profile: Profile, fields: SubjectFields, identity: Identity,
              matter_params: dict[str, str] | None) -> x509.Name:
        attrs: list[x509.NameAttribute[str]] = []
        if fields.organization:
            attrs.append(x509.NameAttribute(NameOID.ORGANIZATION_NAME, fields.organization))
        attrs.append(x509.NameAttribute(NameOID.COMMON_NAME, fields.common_name))
        if fields.serial_number:
            attrs.append(x509.NameAttribute(NameOID.SERIAL_NUMBER, fields.serial_number))
        if profile.matter:
            vid, pid = profile.matter_ids(identity.product, matter_params)
            attrs.append(x509.NameAttribute(MATTER_VID_OID, vid))
            attrs.append(x509.NameAttribute(MATTER_PID_OID, pid))
        return x509.Name(attrs)

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
        hash_alg = self._signature_hash(profile)
        fields = self.subject_fields(profile, identity)
        _, public, fingerprint = self.check_csr(
            csr_der, profile=profile, expected=fields, nonce=nonce, is_key_known=is_key_known
        )
        not_before, not_after = self._validity(profile)
        serial = random_serial()
        builder = (
            x509.CertificateBuilder()
            .issuer_name(self.ca_cert.subject)
            .subject_name(self._name(profile, fields, identity, matter_params))
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
            builder = builder.add_extension(self._aki(), critical=False)
        sans = self._sans(profile, identity)
        if sans:
            builder = builder.add_extension(x509.SubjectAlternativeName(sans), critical=False)
        captured = builder.sign(
            capture_key(self.ca_key.public_key), hash_alg, rsa_padding=self._padding(hash_alg)
        )
        size = len(captured.public_bytes(serialization.Encoding.DER))
        if size > profile.max_certificate_der:
            raise _refuse("certificate_too_large", f"up to {size} > {profile.max_certificate_der} bytes")
        self._lint(captured, profile)
        tbs = captured.tbs_certificate_bytes
        tbs_hash = hashlib.sha256(tbs).hexdigest()
        with self._pending_lock:
            self._pending[tbs_hash] = _Pending(profile=profile.name, hash_name=hash_alg.name,
                                               pss=self._padding(hash_alg) is not None)
            while len(self._pending) > _MAX_PENDING:
                self._pending.popitem(last=False)
        log.debug("prepared certificate serial=%x profile=%s tbs_sha256=%s", serial, profile.name, tbs_hash)
        return Prepared(
            serial=serial, tbs_der=tbs, tbs_sha256=tbs_hash, public_key_sha256=fingerprint,
            profile=profile.name, subject=captured.subject.rfc4514_string(),
            not_after=not_after.strftime("%Y-%m-%dT%H:%M:%SZ"), max_der_size=size,
        )

    def _padding(self, hash_alg: hashes.HashAlgorithm) -> padding.PSS | None:
        if self.ca_key.key_type == "rsa" and self._rsa_pss:
            return padding.PSS(mgf=padding.MGF1(hash_alg), salt_length=padding.PSS.DIGEST_LENGTH)
        return None

    def _aki(self) -> x509.AuthorityKeyIdentifier:
        try:
            ski = self.ca_cert.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
            return x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ski)
        except x509.ExtensionNotFound:
            return x509.AuthorityKeyIdentifier.from_issuer_public_key(self.ca_key.public_key)

    @staticmethod
    def _sans(profile: Profile, identity: Identity) -> list[x509.GeneralName]:
        values = {"unit_serial": identity.unit_serial, "hardware_id": identity.hardware_id,
                  "product": identity.product, "work_order": identity.work_order}
        out: list[x509.GeneralName] = []
        for entry in profile.subject_alt_names:
            kind, _, template = entry.partition(":")
            try:
                value = template.format_map(values)
            except (KeyError, ValueError):
                raise ProfileError("bad SAN template", profile=profile.name) from None
            if kind == "uri":
                out.append(x509.UniformResourceIdentifier(value))
            elif kind == "dns":
                out.append(x509.DNSName(value))
            else:
                out.append(x509.RFC822Name(value))
        return out

    def _lint(self, cert: x509.Certificate, profile: Profile) -> None:
        """Profile rules checked on what is about to be signed (a second pair of eyes on the builder)."""
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

    # -- phase 2 -------------------------------------------------------------------------------

    def sign(self, tbs_der: bytes) -> bytes:
        """Sign exactly ``tbs_der`` (prepared by this issuer) in the HSM, assemble, verify, return DER."""
        tbs_hash = hashlib.sha256(tbs_der).hexdigest()
        with self._pending_lock:
            pending = self._pending.get(tbs_hash)
        if pending is None:
            raise CertificateCheckFailed(
                "refusing to sign bytes this signer did not prepare (or already signed)",
                code="not_prepared", tbs_sha256=tbs_hash,
            )
        # The TBS names its own signature algorithm; the certificate repeats it verbatim outside.
        algorithm = _tbs_signature_algorithm(tbs_der)
        digest = hashlib.new(pending.hash_name, tbs_der).digest()
        signature = self.ca_key.sign_digest(digest, pending.hash_name, pss=pending.pss)
        cert_der = _der(0x30, tbs_der + algorithm + _der(0x03, b"\x00" + signature))
        self.verify_issued(cert_der, tbs_der)
        with self._pending_lock:
            self._pending.pop(tbs_hash, None)
        return cert_der

    def verify_issued(self, cert_der: bytes, tbs_der: bytes) -> x509.Certificate:
        """Software check (cryptography, not the HSM) that the certificate is what we meant to issue."""
        try:
            cert = x509.load_der_x509_certificate(cert_der)
            if cert.tbs_certificate_bytes != tbs_der:
                raise CertificateCheckFailed("assembled certificate does not carry the prepared TBS bytes")
            cert.verify_directly_issued_by(self.ca_cert)
        except HsmError:
            raise
        except (ValueError, TypeError, InvalidSignature, UnsupportedAlgorithm) as exc:
            log.error("HSM output failed verification against the CA certificate: %s", type(exc).__name__)
            raise CertificateCheckFailed(
                "the HSM's signature does not verify with the CA certificate "
                "(faulty HSM, wrong key, or CA certificate does not match the key)",
                error=type(exc).__name__,
            ) from exc
        return cert
