"""CA management: create the issuing key, a development root or a CSR, import the chain, report status.

Library functions; :mod:`hsm.cli` is the argparse glue. The CA directory holds ``ca.pem`` (the issuing
CA certificate) and ``chain.pem`` (issuing CA first, then its issuers). The chain can also be stored
in the token as certificate objects labelled like the key, so one HSM carries key and certificate.
"""

from __future__ import annotations

import itertools
import logging
import os
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from pkcs11 import Attribute, CertificateType, ObjectClass

from hsm.errors import CaError
from hsm.keys import CaKey, default_hash
from hsm.profile import NO_EXPIRY

log = logging.getLogger(__name__)

CA_CERT_FILE = "ca.pem"
CHAIN_FILE = "chain.pem"


def _spki(public: Any) -> bytes:
    der: bytes = public.public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return der


REVOCATION_REASONS: dict[str, x509.ReasonFlags] = {
    flag.name: flag for flag in x509.ReasonFlags
    if flag not in (x509.ReasonFlags.remove_from_crl, x509.ReasonFlags.certificate_hold)
}
"""RFC 5280 reasons a device certificate can be revoked for (by their cryptography names); hold and
remove-from-CRL are left out: a device certificate is revoked for good."""


@dataclass(frozen=True, kw_only=True)
class Revoked:
    """One revoked certificate: its serial, when it was revoked and why."""

    serial: int
    revoked_at: datetime
    reason: str


def signed_crl(ca_key: CaKey, ca_cert: x509.Certificate, revoked: list[Revoked], *, days: int = 7,
               now: datetime | None = None) -> x509.CertificateRevocationList:
    """A CRL of ``revoked``, signed in the HSM by the issuing CA, checked against its certificate.

    The CRL number is the issuing time in seconds, so it only ever grows (RFC 5280, 5.2.3)."""
    now = now or datetime.now(UTC)
    public = ca_key.public_key
    builder = (
        x509.CertificateRevocationListBuilder()
        .issuer_name(ca_cert.subject)
        .last_update(now)
        .next_update(now + timedelta(days=days))
        .add_extension(x509.CRLNumber(int(now.timestamp())), critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(public), critical=False)
    )
    for entry in revoked:
        reason = REVOCATION_REASONS.get(entry.reason)
        if reason is None:
            raise CaError(f"unknown revocation reason {entry.reason!r}", code="bad_reason")
        item = (x509.RevokedCertificateBuilder().serial_number(entry.serial)
                .revocation_date(entry.revoked_at))
        if reason is not x509.ReasonFlags.unspecified:
            item = item.add_extension(x509.CRLReason(reason), critical=False)
        builder = builder.add_revoked_certificate(item.build())
    crl = builder.sign(ca_key.crypto_key(), default_hash(public))
    if not crl.is_signature_valid(ca_cert.public_key()):  # type: ignore[arg-type]
        raise CaError("the CRL's signature does not verify against the CA certificate",
                      code="crl_signature")
    return crl


def self_signed_ca(
    ca_key: CaKey, subject: x509.Name, *, days: int | None = 3650, path_length: int = 0,
    now: datetime | None = None,
) -> x509.Certificate:
    """A self-signed CA certificate for development (signed in the HSM). ``days=None``: 9999-12-31."""
    now = now or datetime.now(UTC)
    key = ca_key.crypto_key()
    not_after = (now + timedelta(days=days) if days is not None
                 else datetime.strptime(NO_EXPIRY, "%Y%m%d%H%M%SZ").replace(tzinfo=UTC))
    public = ca_key.public_key
    builder = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(public)
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(minutes=5))
        .not_valid_after(not_after)
        .add_extension(x509.BasicConstraints(ca=True, path_length=path_length), critical=True)
        .add_extension(
            x509.KeyUsage(digital_signature=True, content_commitment=False, key_encipherment=False,
                          data_encipherment=False, key_agreement=False, key_cert_sign=True, crl_sign=True,
                          encipher_only=False, decipher_only=False),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(public), critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(public), critical=False)
    )
    cert = builder.sign(key, default_hash(public))
    cert.verify_directly_issued_by(cert)
    return cert


def ca_csr(ca_key: CaKey, subject: x509.Name) -> x509.CertificateSigningRequest:
    """A CSR for the issuing key, to be signed by an offline root (signed in the HSM)."""
    csr = (
        x509.CertificateSigningRequestBuilder()
        .subject_name(subject)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .sign(ca_key.crypto_key(), default_hash(ca_key.public_key))
    )
    if not csr.is_signature_valid:
        raise CaError("the HSM produced a CSR whose signature does not verify")
    return csr


def load_chain(path: Path) -> list[x509.Certificate]:
    """Certificates from a PEM file (or one DER certificate), in file order."""
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise CaError(f"cannot read CA chain: {exc.strerror}", path=str(path)) from None
    try:
        if b"-----BEGIN" in data:
            certs = x509.load_pem_x509_certificates(data)
        else:
            certs = [x509.load_der_x509_certificate(data)]
    except ValueError as exc:
        raise CaError(f"not a certificate file: {exc}", path=str(path)) from None
    if not certs:
        raise CaError("no certificate in file", path=str(path))
    return certs


def check_chain(ca_key: CaKey, chain: list[x509.Certificate]) -> None:
    """The first certificate holds the HSM key; each is issued by the next; the last may be a root."""
    if _spki(chain[0].public_key()) != ca_key.public_key_der:
        raise CaError("the first certificate of the chain is not for the CA key in the token",
                      key=ca_key.describe())
    for child, parent in itertools.pairwise(chain):
        try:
            child.verify_directly_issued_by(parent)
        except (ValueError, TypeError, InvalidSignature) as exc:
            raise CaError("chain is out of order or broken", subject=child.subject.rfc4514_string(),
                          error=type(exc).__name__) from None
    bc = chain[0].extensions.get_extension_for_class(x509.BasicConstraints).value
    if not bc.ca:
        raise CaError("the issuing certificate is not a CA certificate (basicConstraints CA:FALSE)")


def import_chain(
    ca_key: CaKey, chain: list[x509.Certificate], ca_dir: Path, *, to_token: bool = False
) -> Path:
    """Check and store the chain in ``ca_dir`` (and in the token if asked); returns the chain path."""
    check_chain(ca_key, chain)
    ca_dir.mkdir(parents=True, exist_ok=True)
    pem = b"".join(c.public_bytes(serialization.Encoding.PEM) for c in chain)
    _write_atomic(ca_dir / CHAIN_FILE, pem)
    _write_atomic(ca_dir / CA_CERT_FILE, chain[0].public_bytes(serialization.Encoding.PEM))
    if to_token:
        store_certificate_in_token(ca_key, chain[0])
    log.info("imported CA chain of %d certificate(s) into %s", len(chain), ca_dir)
    return ca_dir / CHAIN_FILE


def _write_atomic(path: Path, data: bytes) -> None:
    tmp = path.with_suffix(path.suffix + ".tmp")
    with open(tmp, "wb") as fh:
        fh.write(data)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)


def store_certificate_in_token(ca_key: CaKey, cert: x509.Certificate) -> None:
    """Store the CA certificate as a CKO_CERTIFICATE object with the key's label and id."""
    der = cert.public_bytes(serialization.Encoding.DER)
    attrs: dict[Attribute, Any] = {
        Attribute.CLASS: ObjectClass.CERTIFICATE,
        Attribute.CERTIFICATE_TYPE: CertificateType.X_509,
        Attribute.TOKEN: True,
        Attribute.PRIVATE: False,
        Attribute.VALUE: der,
        Attribute.SUBJECT: cert.subject.public_bytes(),
        Attribute.ISSUER: cert.issuer.public_bytes(),
        Attribute.SERIAL_NUMBER: cert.serial_number.to_bytes(20, "big").lstrip(b"\0") or b"\0",
    }
    if ca_key.label is not None:
        attrs[Attribute.LABEL] = ca_key.label
    if ca_key.key_id is not None:
        attrs[Attribute.ID] = ca_key.key_id

    def store(session: Any) -> None:
        search: dict[Attribute, Any] = {Attribute.CLASS: ObjectClass.CERTIFICATE}
        if ca_key.label is not None:
            search[Attribute.LABEL] = ca_key.label
        for old in list(session.get_objects(search)):
            old.destroy()
        session.create_object(attrs)

    ca_key.token.run(store, action="store_certificate")


def certificate_from_token(ca_key: CaKey) -> x509.Certificate | None:
    """The CA certificate stored in the token next to the key, if any."""

    def find(session: Any) -> bytes | None:
        search: dict[Attribute, Any] = {Attribute.CLASS: ObjectClass.CERTIFICATE}
        if ca_key.label is not None:
            search[Attribute.LABEL] = ca_key.label
        found = list(session.get_objects(search))
        return bytes(found[0][Attribute.VALUE]) if len(found) == 1 else None

    der = ca_key.token.run(find, action="find_certificate")
    return x509.load_der_x509_certificate(der) if der is not None else None


@dataclass(frozen=True, kw_only=True)
class CaStatus:
    """What ``ca status`` shows."""

    token: dict[str, str]
    key: dict[str, str]
    certificate: dict[str, str] | None
    days_to_expiry: int | None
    matches_key: bool | None


def ca_status(ca_key: CaKey, cert: x509.Certificate | None, *, now: datetime | None = None) -> CaStatus:
    """Token, key attributes, certificate validity and days to expiry."""
    from hsm.token import token_info

    now = now or datetime.now(UTC)
    attrs = ca_key.attributes
    key = {
        "key": ca_key.describe(),
        "type": ca_key.key_type,
        "size": str(ca_key.public_key.key_size),
        "private": str(attrs.private),
        "sensitive": str(attrs.sensitive),
        "extractable": str(attrs.extractable),
        "sign": str(attrs.sign),
        "always_sensitive": str(attrs.always_sensitive),
        "never_extractable": str(attrs.never_extractable),
    }
    if cert is None:
        return CaStatus(token=token_info(ca_key.token), key=key, certificate=None, days_to_expiry=None,
                        matches_key=None)
    info = {
        "subject": cert.subject.rfc4514_string(),
        "issuer": cert.issuer.rfc4514_string(),
        "serial": f"{cert.serial_number:x}",
        "not_before": cert.not_valid_before_utc.isoformat(),
        "not_after": cert.not_valid_after_utc.isoformat(),
    }
    return CaStatus(
        token=token_info(ca_key.token), key=key, certificate=info,
        days_to_expiry=(cert.not_valid_after_utc - now).days,
        matches_key=_spki(cert.public_key()) == ca_key.public_key_der,
    )
