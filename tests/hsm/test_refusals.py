"""Every pre-issuance refusal, each with its reason code, before anything is signed."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from asn1crypto import csr as a1csr
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import AttributeOID, ExtendedKeyUsageOID

from hsm.errors import IssuanceRefused
from hsm.issuer import REASONS, Issuer
from hsm.keys import CaKey
from hsm.profile import Profile, load_profile
from tests.hsm.conftest import identity, make_csr

TLS = load_profile("tls-client")


def fields(issuer: Issuer, profile: Profile = TLS) -> Any:
    return issuer.subject_fields(profile, identity())


def refused(
    issuer: Issuer, csr: bytes, nonce: bytes, reason: str, *, profile: Profile = TLS, **kw: Any
) -> IssuanceRefused:
    assert reason in REASONS
    ident = kw.pop("ident", identity())
    with pytest.raises(IssuanceRefused) as info:
        issuer.prepare(csr, profile=profile, identity=ident, nonce=nonce, **kw)
    assert info.value.reason == reason, str(info.value)
    assert info.value.code == reason
    return info.value


def resign(csr_der: bytes, key: ec.EllipticCurvePrivateKey, mutate: Callable[[Any], None]) -> bytes:
    """Edit a CSR's CertificationRequestInfo with asn1crypto and sign it again (valid signature)."""
    req = a1csr.CertificationRequest.load(csr_der)
    info = req["certification_request_info"]
    mutate(info)
    tbs = info.dump(force=True)
    sig = key.sign(tbs, ec.ECDSA(hashes.SHA256()))
    out = a1csr.CertificationRequest(
        {
            "certification_request_info": a1csr.CertificationRequestInfo.load(tbs),
            "signature_algorithm": req["signature_algorithm"],
            "signature": sig,
        }
    )
    return bytes(out.dump())


def with_public_key_bytes(csr_der: bytes, point: bytes) -> bytes:
    req = a1csr.CertificationRequest.load(csr_der)
    info = req["certification_request_info"]
    spki = info["subject_pk_info"]
    new_spki = spki.__class__({"algorithm": spki["algorithm"], "public_key": point})
    new_info = a1csr.CertificationRequestInfo(
        {
            "version": info["version"],
            "subject": info["subject"],
            "subject_pk_info": new_spki,
            "attributes": info["attributes"],
        }
    )
    return bytes(
        a1csr.CertificationRequest(
            {
                "certification_request_info": new_info,
                "signature_algorithm": req["signature_algorithm"],
                "signature": req["signature"],
            }
        ).dump()
    )


def test_good_csr_passes(issuer: Issuer, device_key: ec.EllipticCurvePrivateKey, nonce: bytes) -> None:
    issuer.prepare(make_csr(device_key, fields(issuer), nonce), profile=TLS, identity=identity(), nonce=nonce)


def test_bad_signature(issuer: Issuer, device_key: ec.EllipticCurvePrivateKey, nonce: bytes) -> None:
    csr = bytearray(make_csr(device_key, fields(issuer), nonce))
    csr[-3] ^= 0x01
    refused(issuer, bytes(csr), nonce, "csr_signature_invalid")


def test_signature_by_another_key(
    issuer: Issuer, device_key: ec.EllipticCurvePrivateKey, nonce: bytes
) -> None:
    other = ec.generate_private_key(ec.SECP256R1())
    good = make_csr(device_key, fields(issuer), nonce)
    forged = resign(good, other, lambda info: None)
    refused(issuer, forged, nonce, "csr_signature_invalid")


@pytest.mark.parametrize(
    ("make_key", "profile_name", "reason"),
    [
        (lambda: rsa.generate_private_key(65537, 1024), "aws-iot", "key_too_small"),
        (lambda: rsa.generate_private_key(65537, 2048), "tls-client", "key_algorithm_not_allowed"),
        (lambda: ec.generate_private_key(ec.SECP256K1()), "tls-client", "key_curve_not_allowed"),
        (lambda: ec.generate_private_key(ec.SECP192R1()), "tls-client", "key_curve_not_allowed"),
        (lambda: ec.generate_private_key(ec.SECP384R1()), "matter-dac", "key_curve_not_allowed"),
        (lambda: ec.generate_private_key(ec.BrainpoolP256R1()), "tls-client", "key_curve_not_allowed"),
    ],
)
def test_key_outside_profile(
    issuer: Issuer, nonce: bytes, make_key: Callable[[], Any], profile_name: str, reason: str
) -> None:
    profile = load_profile(profile_name)
    refused(issuer, make_csr(make_key(), fields(issuer, profile), nonce), nonce, reason, profile=profile)


def test_off_curve_point_and_infinity(
    issuer: Issuer, device_key: ec.EllipticCurvePrivateKey, nonce: bytes
) -> None:
    good = make_csr(device_key, fields(issuer), nonce)
    numbers = device_key.public_key().public_numbers()
    off = b"\x04" + numbers.x.to_bytes(32, "big") + ((numbers.y + 1) % (1 << 256)).to_bytes(32, "big")
    refused(issuer, with_public_key_bytes(good, off), nonce, "key_invalid")
    refused(issuer, with_public_key_bytes(good, b"\x00"), nonce, "key_invalid")


def test_size_and_framing(issuer: Issuer, device_key: ec.EllipticCurvePrivateKey, nonce: bytes) -> None:
    good = make_csr(device_key, fields(issuer), nonce)
    refused(issuer, b"\x30\x82\x13\x88" + b"\x00" * 5000, nonce, "csr_too_large")
    refused(issuer, good[:-7], nonce, "csr_truncated")
    refused(issuer, good + b"\x00", nonce, "csr_trailing_bytes")
    refused(issuer, b"not a certificate request at all", nonce, "csr_malformed")
    refused(issuer, b"\x30\x80" + good[2:] + b"\x00\x00", nonce, "csr_malformed")  # BER indefinite length
    inner = bytearray(good)
    inner[10] ^= 0xFF  # garbage inside a well-framed outer SEQUENCE
    refused(issuer, bytes(inner), nonce, "csr_malformed")
    refused(issuer, b"\x30\x03\x30\x01\x00", nonce, "csr_malformed")  # deep-nested/garbage content


def test_unknown_critical_extension(
    issuer: Issuer, device_key: ec.EllipticCurvePrivateKey, nonce: bytes
) -> None:
    ext = x509.UnrecognizedExtension(x509.ObjectIdentifier("1.3.6.1.4.1.55555.1"), b"\x05\x00")
    refused(
        issuer,
        make_csr(device_key, fields(issuer), nonce, extensions=[(ext, True)]),
        nonce,
        "extension_unknown_critical",
    )
    # the same extension, not critical, is ignored
    issuer.prepare(
        make_csr(device_key, fields(issuer), nonce, extensions=[(ext, False)]),
        profile=TLS,
        identity=identity(),
        nonce=nonce,
    )


def test_duplicate_extension(issuer: Issuer, device_key: ec.EllipticCurvePrivateKey, nonce: bytes) -> None:
    good = make_csr(
        device_key,
        fields(issuer),
        nonce,
        extensions=[(x509.BasicConstraints(ca=False, path_length=None), True)],
    )

    def duplicate(info: Any) -> None:
        for attr in info["attributes"]:
            if attr["type"].native == "extension_request":
                exts = attr["values"][0]
                exts.append(exts[0].copy())

    refused(issuer, resign(good, device_key, duplicate), nonce, "extension_duplicate")


def test_nonce(issuer: Issuer, device_key: ec.EllipticCurvePrivateKey, nonce: bytes) -> None:
    refused(issuer, make_csr(device_key, fields(issuer), None), nonce, "nonce_missing")
    refused(issuer, make_csr(device_key, fields(issuer), b"\x00" * 16), nonce, "nonce_mismatch")
    name = x509.Name(
        [x509.NameAttribute(x509.ObjectIdentifier(o), v) for o, v in fields(issuer).attributes()]
    )
    upper = (
        x509.CertificateSigningRequestBuilder()
        .subject_name(name)
        .add_attribute(AttributeOID.CHALLENGE_PASSWORD, nonce.hex().upper().encode())
        .sign(device_key, hashes.SHA256())
        .public_bytes(serialization.Encoding.DER)
    )
    refused(issuer, upper, nonce, "nonce_mismatch")  # the nonce is lowercase hex, exactly


def test_subject_mismatch_and_invalid(
    issuer: Issuer, device_key: ec.EllipticCurvePrivateKey, nonce: bytes
) -> None:
    wrong = replace(fields(issuer), common_name="LAMP-999999")
    refused(issuer, make_csr(device_key, wrong, nonce), nonce, "subject_mismatch")
    extra = [*fields(issuer).attributes(), ("2.5.4.11", "extra OU")]
    refused(issuer, make_csr(device_key, extra, nonce), nonce, "subject_mismatch")
    bad_identity = replace(identity(), hardware_id="00A1\x00B2")
    refused(issuer, make_csr(device_key, fields(issuer), nonce), nonce, "subject_invalid", ident=bad_identity)
    long_identity = replace(identity(), unit_serial="X" * 65)
    refused(
        issuer, make_csr(device_key, fields(issuer), nonce), nonce, "subject_invalid", ident=long_identity
    )


def test_key_already_issued_and_ca_key(
    issuer: Issuer, ca_key: CaKey, device_key: ec.EllipticCurvePrivateKey, nonce: bytes
) -> None:
    asked: list[str] = []

    def known(fp: str) -> bool:
        asked.append(fp)
        return True

    refused(
        issuer, make_csr(device_key, fields(issuer), nonce), nonce, "key_already_issued", is_key_known=known
    )
    assert len(asked) == 1 and len(asked[0]) == 64
    csr_with_ca_key = make_csr(ca_key.crypto_key(), fields(issuer), nonce)  # signed in the HSM
    refused(issuer, csr_with_ca_key, nonce, "key_is_ca_key")


def _profile_file(tmp_path: Path, **changes: str) -> Profile:
    text = (Path(__file__).parents[2] / "hsm/profiles/tls-client.toml").read_text()
    for old, new in changes.items():
        text = text.replace(old, new)
    path = tmp_path / "custom.toml"
    path.write_text(text)
    return load_profile(path)


def test_validity_beyond_ca_refused_or_clamped(
    issuer: Issuer, softhsm_ca: Any, device_key: ec.EllipticCurvePrivateKey, nonce: bytes, tmp_path: Path
) -> None:
    profile = _profile_file(
        tmp_path, **{'beyond_ca = "clamp"': 'beyond_ca = "refuse"', "days = 3650": "days = 20000"}
    )
    csr = make_csr(device_key, fields(issuer, profile), nonce)
    refused(issuer, csr, nonce, "validity_exceeds_ca", profile=profile)
    clamped = _profile_file(tmp_path, **{"days = 3650": "days = 20000"})
    prepared = issuer.prepare(csr, profile=clamped, identity=identity(), nonce=nonce)
    cert = x509.load_der_x509_certificate(issuer.sign(prepared.tbs_der))
    assert cert.not_valid_after_utc == softhsm_ca.ca_cert().not_valid_after_utc


def test_certificate_too_large(
    issuer: Issuer, device_key: ec.EllipticCurvePrivateKey, nonce: bytes, tmp_path: Path
) -> None:
    profile = _profile_file(tmp_path, **{"max_certificate_der = 2048": "max_certificate_der = 300"})
    refused(
        issuer,
        make_csr(device_key, fields(issuer, profile), nonce),
        nonce,
        "certificate_too_large",
        profile=profile,
    )


def test_ca_expired(
    softhsm_ca: Any, ca_key: CaKey, device_key: ec.EllipticCurvePrivateKey, nonce: bytes
) -> None:
    late = Issuer(ca_key, [softhsm_ca.ca_cert()], clock=lambda: datetime.now(UTC) + timedelta(days=40000))
    refused(late, make_csr(device_key, fields(late), nonce), nonce, "ca_expired")


def test_csr_requests_are_ignored(
    issuer: Issuer, device_key: ec.EllipticCurvePrivateKey, nonce: bytes
) -> None:
    """CA:TRUE, extra EKUs and SANs in the CSR do not reach the certificate: the profile decides."""
    csr = make_csr(
        device_key,
        fields(issuer),
        nonce,
        extensions=[
            (x509.BasicConstraints(ca=True, path_length=None), True),
            (
                x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CODE_SIGNING]),
                False,
            ),
            (x509.SubjectAlternativeName([x509.DNSName("bank.example.com")]), False),
        ],
    )
    prepared = issuer.prepare(csr, profile=TLS, identity=identity(), nonce=nonce)
    cert = x509.load_der_x509_certificate(issuer.sign(prepared.tbs_der))
    assert not cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    assert list(cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value) == [
        ExtendedKeyUsageOID.CLIENT_AUTH
    ]
    sans = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert sans.get_values_for_type(x509.DNSName) == []


def test_sign_refuses_unprepared_and_double_sign(
    issuer: Issuer, device_key: ec.EllipticCurvePrivateKey, nonce: bytes
) -> None:
    from hsm.errors import CertificateCheckFailed

    prepared = issuer.prepare(
        make_csr(device_key, fields(issuer), nonce), profile=TLS, identity=identity(), nonce=nonce
    )
    issuer.sign(prepared.tbs_der)
    with pytest.raises(CertificateCheckFailed) as info:
        issuer.sign(prepared.tbs_der)
    assert info.value.code == "not_prepared"
