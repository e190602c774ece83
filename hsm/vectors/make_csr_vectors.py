"""Write ``hsm/vectors/csr/``: one CSR per pre-issuance refusal, and ``manifest.json``.

Run ``python -m hsm.vectors.make_csr_vectors`` only when the checks change on purpose; the files are
then part of the review. Every CSR is made for the fixed context in the manifest (profile, the
unit's identity, the station's nonce): a firmware team or another CA front end can feed the same
files to its own checks and compare the reasons. ``tests/hsm/test_csr_vectors.py`` holds the station
to them. ECDSA signatures are randomised, so regenerating changes the bytes, not the outcomes.
"""

from __future__ import annotations

import json
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

from asn1crypto import csr as a1csr
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import AttributeOID

HERE = Path(__file__).parent / "csr"
NONCE = bytes.fromhex("5eed0f00d5eed0f00d5eed0f00d5eed0")
IDENTITY = {"unit_serial": "LAMP-000001", "hardware_id": "00A1B2C3D4000001", "product": "demo-lamp",
            "work_order": "WO-1"}


def _csr(key: Any, attributes: list[tuple[str, str]], nonce: str | None = NONCE.hex(),
         extensions: list[tuple[x509.ExtensionType, bool]] | None = None) -> bytes:
    name = x509.Name([x509.NameAttribute(x509.ObjectIdentifier(o), v) for o, v in attributes])
    builder = x509.CertificateSigningRequestBuilder().subject_name(name)
    if nonce is not None:
        builder = builder.add_attribute(AttributeOID.CHALLENGE_PASSWORD, nonce.encode())
    for ext, critical in extensions or []:
        builder = builder.add_extension(ext, critical=critical)
    return builder.sign(key, hashes.SHA256()).public_bytes(serialization.Encoding.DER)


def _resign(der: bytes, key: ec.EllipticCurvePrivateKey, mutate: Callable[[Any], None]) -> bytes:
    req = a1csr.CertificationRequest.load(der)
    info = req["certification_request_info"]
    mutate(info)
    tbs = info.dump(force=True)
    return bytes(a1csr.CertificationRequest({
        "certification_request_info": a1csr.CertificationRequestInfo.load(tbs),
        "signature_algorithm": req["signature_algorithm"],
        "signature": key.sign(tbs, ec.ECDSA(hashes.SHA256())),
    }).dump())


def _with_point(der: bytes, point: bytes) -> bytes:
    req = a1csr.CertificationRequest.load(der)
    info = req["certification_request_info"]
    spki = info["subject_pk_info"]
    new_info = a1csr.CertificationRequestInfo({
        "version": info["version"], "subject": info["subject"], "attributes": info["attributes"],
        "subject_pk_info": spki.__class__({"algorithm": spki["algorithm"], "public_key": point}),
    })
    return bytes(a1csr.CertificationRequest({
        "certification_request_info": new_info, "signature_algorithm": req["signature_algorithm"],
        "signature": req["signature"]}).dump())


def make(subject: list[tuple[str, str]]) -> list[tuple[str, str, str, bytes]]:
    """(file name, profile, expected outcome, DER) for ``subject``, the station's subject in context."""
    key = ec.derive_private_key(0x5EED_0000_0000_0001, ec.SECP256R1())
    other = ec.derive_private_key(0x5EED_0000_0000_0002, ec.SECP256R1())
    good = _csr(key, subject)
    numbers = key.public_key().public_numbers()
    off_curve = b"\x04" + numbers.x.to_bytes(32, "big") + ((numbers.y + 1) % (1 << 256)).to_bytes(32, "big")
    bad_signature = bytearray(good)
    bad_signature[-3] ^= 0x01

    def duplicate(info: Any) -> None:
        for attr in info["attributes"]:
            if attr["type"].native == "extension_request":
                exts = attr["values"][0]
                exts.append(exts[0].copy())

    with_bc = _csr(key, subject, extensions=[(x509.BasicConstraints(ca=False, path_length=None), True)])
    unknown = x509.UnrecognizedExtension(x509.ObjectIdentifier("1.3.6.1.4.1.55555.1"), b"\x05\x00")
    return [
        ("good_p256.der", "tls-client", "ok", good),
        ("bad_signature.der", "tls-client", "csr_signature_invalid", bytes(bad_signature)),
        ("signed_by_another_key.der", "tls-client", "csr_signature_invalid",
         _resign(good, other, lambda info: None)),
        ("rsa_1024.der", "aws-iot", "key_too_small",
         _csr(rsa.generate_private_key(65537, 1024), subject)),
        ("rsa_2048_not_in_profile.der", "tls-client", "key_algorithm_not_allowed",
         _csr(rsa.generate_private_key(65537, 2048), subject)),
        ("secp256k1.der", "tls-client", "key_curve_not_allowed",
         _csr(ec.generate_private_key(ec.SECP256K1()), subject)),
        ("p192.der", "tls-client", "key_curve_not_allowed",
         _csr(ec.generate_private_key(ec.SECP192R1()), subject)),
        ("off_curve_point.der", "tls-client", "key_invalid", _with_point(good, off_curve)),
        ("point_at_infinity.der", "tls-client", "key_invalid", _with_point(good, b"\x00")),
        ("truncated.der", "tls-client", "csr_truncated", good[:-7]),
        ("trailing_byte.der", "tls-client", "csr_trailing_bytes", good + b"\x00"),
        ("duplicate_extension.der", "tls-client", "extension_duplicate", _resign(with_bc, key, duplicate)),
        ("unknown_critical_extension.der", "tls-client", "extension_unknown_critical",
         _csr(key, subject, extensions=[(unknown, True)])),
        ("no_nonce.der", "tls-client", "nonce_missing", _csr(key, subject, nonce=None)),
        ("other_nonce.der", "tls-client", "nonce_mismatch", _csr(key, subject, nonce="00" * 16)),
        ("uppercase_nonce.der", "tls-client", "nonce_mismatch",
         _csr(key, subject, nonce=NONCE.hex().upper())),
        ("other_subject.der", "tls-client", "subject_mismatch",
         _csr(key, [(o, "LAMP-999999" if o == "2.5.4.3" else v) for o, v in subject])),
        ("extra_ou.der", "tls-client", "subject_mismatch", _csr(key, [*subject, ("2.5.4.11", "extra OU")])),
    ]


def main() -> None:
    from fixtures.softhsm import create_test_ca
    from hsm.issuer import Identity, Issuer
    from hsm.keys import CaKey
    from hsm.profile import load_profile

    with tempfile.TemporaryDirectory() as tmp:
        ca = create_test_ca(Path(tmp))
        token = ca.open()
        try:
            issuer = Issuer(CaKey(token, label=ca.key_label), [ca.ca_cert()])
            subject = issuer.subject_fields(load_profile("tls-client"), Identity(**IDENTITY)).attributes()
        finally:
            token.close()
    HERE.mkdir(parents=True, exist_ok=True)
    cases = make(subject)
    for name, _, _, der in cases:
        (HERE / name).write_bytes(der)
    manifest = {"nonce_hex": NONCE.hex(), "identity": IDENTITY,
                "vectors": [{"file": n, "profile": p, "expect": e} for n, p, e, _ in cases]}
    (HERE / "manifest.json").write_text(json.dumps(manifest, indent=1) + "\n")
    print(f"wrote {len(cases)} CSRs to {HERE}")


if __name__ == "__main__":
    main()
