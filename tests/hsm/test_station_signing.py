"""HsmSigner as the station's Signer port: subjects, prepare/sign, chain, error mapping."""

from __future__ import annotations

import hashlib
from dataclasses import replace

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec

from fixtures.softhsm import TestCa
from station.errors import ConfigError, CsrRejected, SigningFailed
from station.ports import KeyType
from station.signing import HsmSigner
from tests.hsm.conftest import device, make_csr, work_order


@pytest.mark.parametrize("profile", ["tls-client", "aws-iot", "matter-dac"])
def test_signer_round_trip(signer: HsmSigner, softhsm_ca: TestCa, profile: str, nonce: bytes) -> None:
    wo = work_order(profile)
    dev = device(3)
    subject = signer.subject_for(device=dev, work_order=wo, unit_serial="LAMP-000003")
    assert subject.common_name == "LAMP-000003"
    key = ec.generate_private_key(ec.SECP256R1())
    prepared = signer.prepare(
        csr_der=make_csr(key, subject, nonce),
        nonce=nonce,
        device=dev,
        work_order=wo,
        unit_serial="LAMP-000003",
        is_key_known=lambda fp: False,
    )
    assert prepared.tbs_sha256 == hashlib.sha256(prepared.tbs_der).hexdigest()
    assert prepared.profile == profile
    cert = x509.load_der_x509_certificate(signer.sign(prepared))
    assert cert.tbs_certificate_bytes == prepared.tbs_der
    chain = [x509.load_der_x509_certificate(d) for d in signer.chain()]
    cert.verify_directly_issued_by(chain[0])


def test_subject_and_key_types(signer: HsmSigner) -> None:
    dev = device(5)
    s = signer.subject_for(device=dev, work_order=work_order(), unit_serial="LAMP-000005")
    assert (s.common_name, s.serial_number, s.organization) == (
        "LAMP-000005",
        dev.hardware_id,
        "Example Devices Ltd",
    )
    assert list(signer.key_types(work_order("matter-dac"))) == [KeyType.P256]
    assert list(signer.key_types(work_order())) == [KeyType.P256, KeyType.P384, KeyType.ED25519]


def test_refusal_maps_to_csr_rejected_with_reason(signer: HsmSigner, nonce: bytes) -> None:
    wo, dev = work_order(), device(1)
    subject = signer.subject_for(device=dev, work_order=wo, unit_serial="LAMP-000001")
    csr = make_csr(ec.generate_private_key(ec.SECP256K1()), subject, nonce)
    with pytest.raises(CsrRejected) as info:
        signer.prepare(csr_der=csr, nonce=nonce, device=dev, work_order=wo, unit_serial="LAMP-000001")
    assert info.value.code == "key_curve_not_allowed"
    good = make_csr(ec.generate_private_key(ec.SECP256R1()), subject, nonce)
    with pytest.raises(CsrRejected) as info:
        signer.prepare(
            csr_der=good,
            nonce=nonce,
            device=dev,
            work_order=wo,
            unit_serial="LAMP-000001",
            is_key_known=lambda fp: True,
        )
    assert info.value.code == "key_already_issued"


def test_unknown_profile_is_config_error(signer: HsmSigner) -> None:
    with pytest.raises(ConfigError):
        signer.key_types(work_order("no-such-profile"))


def test_tampered_prepared_is_signing_failed(signer: HsmSigner, nonce: bytes) -> None:
    wo, dev = work_order(), device(2)
    subject = signer.subject_for(device=dev, work_order=wo, unit_serial="LAMP-000002")
    prepared = signer.prepare(
        csr_der=make_csr(ec.generate_private_key(ec.SECP256R1()), subject, nonce),
        nonce=nonce,
        device=dev,
        work_order=wo,
        unit_serial="LAMP-000002",
    )
    with pytest.raises(SigningFailed):
        signer.sign(replace(prepared, tbs_der=prepared.tbs_der[:-1] + b"\x00"))
    with pytest.raises(SigningFailed):
        bad = prepared.tbs_der[:-1] + b"\x00"
        signer.sign(replace(prepared, tbs_der=bad, tbs_sha256=hashlib.sha256(bad).hexdigest()))
    signer.sign(prepared)  # the genuine one still signs


def test_open_refuses_wrong_pin_with_signing_error(softhsm_ca: TestCa) -> None:
    from hsm.pin import FixedPin, Pin

    with pytest.raises(Exception) as info:
        HsmSigner.open(
            module_path=softhsm_ca.module_path,
            token_label=softhsm_ca.token_label,
            pin_source=FixedPin(Pin("not-the-pin")),
            key_label=softhsm_ca.key_label,
            ca_chain_path=softhsm_ca.ca_dir / "chain.pem",
        )
    assert "not-the-pin" not in str(info.value) and "not-the-pin" not in repr(info.value)
