"""Fixtures for hsm/ tests: one real SoftHSM2 token per session, a signer, CSR helpers."""

from __future__ import annotations

import secrets
from collections.abc import Iterator, Sequence

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import AttributeOID

from fixtures.softhsm import TestCa
from hsm.issuer import Identity, Issuer, SubjectFields
from hsm.keys import CaKey
from hsm.token import TokenSession
from station.domain import WorkOrder
from station.ports import DeviceInfo, KeyType, Lifecycle, SubjectRequest
from station.signing import HsmSigner


def make_csr(
    key: object,
    subject: SubjectFields | SubjectRequest | Sequence[tuple[str, str]],
    nonce: bytes | None,
    *,
    extensions: Sequence[tuple[x509.ExtensionType, bool]] = (),
) -> bytes:
    """A CSR (DER) for ``key`` with the subject and the nonce in challengePassword."""
    if isinstance(subject, SubjectFields):
        pairs = subject.attributes()
    elif isinstance(subject, SubjectRequest):
        pairs = SubjectFields(
            common_name=subject.common_name,
            serial_number=subject.serial_number,
            organization=subject.organization,
        ).attributes()
    else:
        pairs = list(subject)
    name = x509.Name([x509.NameAttribute(x509.ObjectIdentifier(o), v) for o, v in pairs])
    builder = x509.CertificateSigningRequestBuilder().subject_name(name)
    if nonce is not None:
        builder = builder.add_attribute(AttributeOID.CHALLENGE_PASSWORD, nonce.hex().encode())
    for ext, critical in extensions:
        builder = builder.add_extension(ext, critical=critical)
    algorithm = None if key.__class__.__name__.startswith("Ed") else hashes.SHA256()
    csr = builder.sign(key, algorithm)  # type: ignore[arg-type]
    return csr.public_bytes(serialization.Encoding.DER)


def identity(n: int = 1) -> Identity:
    return Identity(
        unit_serial=f"LAMP-{n:06d}", hardware_id=f"00A1B2C3D4{n:06X}", product="demo-lamp", work_order="WO-1"
    )


def device(n: int = 1) -> DeviceInfo:
    ident = identity(n)
    return DeviceInfo(
        protocol_version=1,
        vendor="Example",
        model="Lamp",
        hardware_revision="B",
        firmware_version="1.0",
        hardware_id=ident.hardware_id,
        serial_number=None,
        key_types=(KeyType.P256,),
        secure_element=False,
        max_frame=4096,
        lifecycle=Lifecycle.BLANK,
    )


def work_order(profile: str = "tls-client") -> WorkOrder:
    return WorkOrder(number="WO-1", product="demo-lamp", profile=profile, quantity=1000)


@pytest.fixture(scope="session")
def token(softhsm_ca: TestCa) -> Iterator[TokenSession]:
    t = softhsm_ca.open()
    yield t
    t.close()


@pytest.fixture(scope="session")
def ca_key(softhsm_ca: TestCa, token: TokenSession) -> CaKey:
    return CaKey(token, label=softhsm_ca.key_label)


@pytest.fixture(scope="session")
def issuer(softhsm_ca: TestCa, ca_key: CaKey) -> Issuer:
    return Issuer(ca_key, [softhsm_ca.ca_cert()])


@pytest.fixture(scope="session")
def signer(softhsm_ca: TestCa) -> Iterator[HsmSigner]:
    s = HsmSigner.open(
        module_path=softhsm_ca.module_path,
        token_label=softhsm_ca.token_label,
        pin_source=softhsm_ca.pin_source(),
        key_label=softhsm_ca.key_label,
        ca_chain_path=softhsm_ca.ca_dir / "chain.pem",
    )
    yield s
    s.close()


@pytest.fixture
def nonce() -> bytes:
    return secrets.token_bytes(16)


@pytest.fixture
def device_key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())
