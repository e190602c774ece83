"""Each built-in profile issues a certificate that chains to the CA (cryptography and openssl)."""

from __future__ import annotations

import subprocess
from datetime import UTC, datetime
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import NameOID

from fixtures.softhsm import TestCa, add_ca_key
from hsm.issuer import MATTER_PID_OID, MATTER_VID_OID, Issuer
from hsm.keys import CaKey
from hsm.profile import builtin_profiles, load_profile
from hsm.token import TokenSession
from tests.hsm.conftest import identity, make_csr


def issue(issuer: Issuer, profile_name: str, key: object, nonce: bytes, n: int = 1) -> x509.Certificate:
    profile = load_profile(profile_name)
    ident = identity(n)
    csr = make_csr(key, issuer.subject_fields(profile, ident), nonce)
    prepared = issuer.prepare(csr, profile=profile, identity=ident, nonce=nonce)
    der = issuer.sign(prepared.tbs_der)
    cert = x509.load_der_x509_certificate(der)
    assert cert.tbs_certificate_bytes == prepared.tbs_der
    assert cert.serial_number == prepared.serial
    return cert


def test_builtins_present() -> None:
    assert {"tls-client", "aws-iot", "matter-dac"} <= set(builtin_profiles())


@pytest.mark.parametrize("profile_name", ["tls-client", "aws-iot", "matter-dac"])
def test_each_profile_chains_to_ca(
    profile_name: str, issuer: Issuer, softhsm_ca: TestCa, nonce: bytes, tmp_path: Path
) -> None:
    key = ec.generate_private_key(ec.SECP256R1())
    cert = issue(issuer, profile_name, key, nonce)
    ca = softhsm_ca.ca_cert()
    cert.verify_directly_issued_by(ca)
    assert 0 < cert.serial_number < (1 << 128) + 1
    assert cert.not_valid_after_utc <= ca.not_valid_after_utc  # clamped to the CA
    assert (datetime.now(UTC) - cert.not_valid_before_utc).total_seconds() >= 4 * 60  # backdated
    assert cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == identity().unit_serial
    bc = cert.extensions.get_extension_for_class(x509.BasicConstraints)
    assert bc.critical and not bc.value.ca
    ku = cert.extensions.get_extension_for_class(x509.KeyUsage)
    assert ku.critical and ku.value.digital_signature and not ku.value.key_cert_sign
    ski = cert.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
    aki = cert.extensions.get_extension_for_class(x509.AuthorityKeyIdentifier).value
    assert ski.digest == x509.SubjectKeyIdentifier.from_public_key(key.public_key()).digest
    assert aki.key_identifier == ca.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value.digest
    # openssl, an independent implementation, agrees.
    leaf = tmp_path / "leaf.pem"
    leaf.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    out = subprocess.run(
        ["openssl", "verify", "-x509_strict", "-CAfile", str(softhsm_ca.ca_cert_path), str(leaf)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert out.returncode == 0, out.stdout + out.stderr


def test_tls_client_passes_cryptography_client_verification(
    issuer: Issuer, softhsm_ca: TestCa, nonce: bytes
) -> None:
    from cryptography.x509.verification import PolicyBuilder, Store

    cert = issue(issuer, "tls-client", ec.generate_private_key(ec.SECP256R1()), nonce)
    verifier = PolicyBuilder().store(Store([softhsm_ca.ca_cert()])).build_client_verifier()
    verified = verifier.verify(cert, [])
    assert verified.chain[-1] == softhsm_ca.ca_cert()


def test_matter_dac_rules(issuer: Issuer, nonce: bytes) -> None:
    cert = issue(issuer, "matter-dac", ec.generate_private_key(ec.SECP256R1()), nonce)
    der = cert.public_bytes(serialization.Encoding.DER)
    assert len(der) <= 600
    assert cert.signature_hash_algorithm is not None and cert.signature_hash_algorithm.name == "sha256"
    vid = cert.subject.get_attributes_for_oid(MATTER_VID_OID)[0]
    pid = cert.subject.get_attributes_for_oid(MATTER_PID_OID)[0]
    assert (vid.value, pid.value) == ("FFF1", "8001")  # product demo-lamp overrides the default PID
    assert vid._type == x509.name._ASN1Type.UTF8String and pid._type == x509.name._ASN1Type.UTF8String
    assert not cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    with pytest.raises(x509.ExtensionNotFound):
        cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage)


def test_matter_vid_pid_override(issuer: Issuer, nonce: bytes) -> None:
    profile = load_profile("matter-dac")
    ident = identity(7)
    csr = make_csr(ec.generate_private_key(ec.SECP256R1()), issuer.subject_fields(profile, ident), nonce)
    prepared = issuer.prepare(
        csr, profile=profile, identity=ident, nonce=nonce, matter_params={"vid": "136B", "pid": "0A0B"}
    )
    cert = x509.load_der_x509_certificate(issuer.sign(prepared.tbs_der))
    assert cert.subject.get_attributes_for_oid(MATTER_VID_OID)[0].value == "136B"
    assert cert.subject.get_attributes_for_oid(MATTER_PID_OID)[0].value == "0A0B"


def test_device_keys_p384_ed25519_rsa(issuer: Issuer, nonce: bytes) -> None:
    from cryptography.hazmat.primitives.asymmetric import ed25519

    issue(issuer, "tls-client", ec.generate_private_key(ec.SECP384R1()), nonce)
    issue(issuer, "tls-client", ed25519.Ed25519PrivateKey.generate(), nonce)
    issue(issuer, "aws-iot", rsa.generate_private_key(65537, 2048), nonce)


def test_p384_and_rsa_ca_keys(softhsm_ca: TestCa, nonce: bytes) -> None:
    for algorithm, expected_hash in (("P-384", "sha384"), ("RSA-2048", "sha256")):
        ca = add_ca_key(softhsm_ca, f"ca-{algorithm.lower()}", algorithm=algorithm)
        token: TokenSession = ca.open()
        try:
            iss = Issuer(CaKey(token, label=ca.key_label), [ca.ca_cert()])
            cert = issue(iss, "tls-client", ec.generate_private_key(ec.SECP256R1()), nonce)
            cert.verify_directly_issued_by(ca.ca_cert())
            assert cert.signature_hash_algorithm is not None
            assert cert.signature_hash_algorithm.name == expected_hash
            if algorithm.startswith("RSA"):
                pss = Issuer(CaKey(token, label=ca.key_label), [ca.ca_cert()], rsa_pss=True)
                cert = issue(pss, "tls-client", ec.generate_private_key(ec.SECP256R1()), nonce)
                cert.verify_directly_issued_by(ca.ca_cert())
                assert cert.signature_algorithm_oid.dotted_string == "1.2.840.113549.1.1.10"
        finally:
            token.close()


def test_crl_builder_signs_through_hsm(ca_key: CaKey, softhsm_ca: TestCa) -> None:
    ca = softhsm_ca.ca_cert()
    now = datetime.now(UTC)
    crl = (
        x509.CertificateRevocationListBuilder()
        .issuer_name(ca.subject)
        .last_update(now)
        .next_update(now.replace(year=now.year + 1))
        .add_revoked_certificate(
            x509.RevokedCertificateBuilder().serial_number(12345).revocation_date(now).build()
        )
        .sign(ca_key.crypto_key(), hashes.SHA256())  # type: ignore[arg-type]
    )
    assert crl.is_signature_valid(ca.public_key())  # type: ignore[arg-type]


def test_hsm_key_refuses_export(ca_key: CaKey) -> None:
    key = ca_key.crypto_key()
    with pytest.raises(TypeError):
        key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
