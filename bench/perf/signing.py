"""Benchmark 1: the station's signing path against the raw PKCS#11 sign loop and the openssl peer.

The station's path per unit is :meth:`HsmSigner.prepare` (CSR parse and checks, subject, TBS build,
lint) then :meth:`HsmSigner.sign` (hash check, HSM signature, assembly, software verification). The
limit is the crypto a unit cannot do without (FIELD-NOTES.md): one raw ``C_Sign`` on the same SoftHSM
key plus two ECDSA verifications (the CSR's, then the new certificate's), each measured here. The
peer is the home-made station: one ``openssl x509 -req`` process per unit with the pkcs11 engine
against the same key.

An extra row, not a target, shows the same three operations done the way a unit needs them,
interleaved per unit in one process (load the CSR, verify it with its own fresh key, sign a
TBS-sized digest in the token, verify that signature with the CA key): the in-process floor under
the station's path, against the tight-loop sum above.
"""

from __future__ import annotations

import hashlib
import os
import secrets
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

import pkcs11
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import AttributeOID, NameOID
from pkcs11 import Mechanism, ObjectClass

from bench.perf.common import Row, bench_ca, median, work_order
from fixtures.softhsm import TestCa
from hsm.der import raw_to_der
from hsm.pin import FixedPin, Pin
from station.ports import DeviceInfo, KeyType, Lifecycle
from station.signing import HsmSigner

ENGINE_PATHS = ("/usr/lib/x86_64-linux-gnu/engines-3/pkcs11.so",
                "/usr/lib/aarch64-linux-gnu/engines-3/pkcs11.so")


def _device(i: int) -> DeviceInfo:
    return DeviceInfo(protocol_version=1, vendor="Acme", model="Sensor-1", hardware_revision="B",
                      firmware_version="1.4.2", hardware_id=f"{i:016x}", serial_number=None,
                      key_types=(KeyType.P256,), secure_element=True, max_frame=1024,
                      lifecycle=Lifecycle.KEYED)


def _csrs(signer: HsmSigner, count: int) -> list[tuple[DeviceInfo, str, bytes, bytes]]:
    """What devices would send: (device, unit serial, nonce, CSR DER), subject as the station asks."""
    wo = work_order(count)
    out = []
    for i in range(count):
        device, serial, nonce = _device(i), f"SNS2-{i:06d}", secrets.token_bytes(16)
        subject = signer.subject_for(device=device, work_order=wo, unit_serial=serial)
        names = [x509.NameAttribute(NameOID.COMMON_NAME, subject.common_name)]
        if subject.serial_number:
            names.append(x509.NameAttribute(NameOID.SERIAL_NUMBER, subject.serial_number))
        if subject.organization:
            names.append(x509.NameAttribute(NameOID.ORGANIZATION_NAME, subject.organization))
        key = ec.generate_private_key(ec.SECP256R1())
        csr = (x509.CertificateSigningRequestBuilder().subject_name(x509.Name(names))
               .add_attribute(AttributeOID.CHALLENGE_PASSWORD, nonce.hex().encode())
               .sign(key, hashes.SHA256()))
        out.append((device, serial, nonce, csr.public_bytes(serialization.Encoding.DER)))
    return out


def _station_round(signer: HsmSigner, batch: list[tuple[DeviceInfo, str, bytes, bytes]]) -> float:
    wo = work_order(len(batch))
    started = time.perf_counter()
    for device, serial, nonce, csr_der in batch:
        prepared = signer.prepare(csr_der=csr_der, nonce=nonce, device=device, work_order=wo,
                                  unit_serial=serial, is_key_known=lambda _fp: False)
        signer.sign(prepared)
    return (time.perf_counter() - started) / len(batch)


def _raw_sign_round(priv: object, count: int) -> float:
    digest = hashlib.sha256(b"tbs").digest()
    sign = priv.sign  # type: ignore[attr-defined]
    started = time.perf_counter()
    for _ in range(count):
        sign(digest, mechanism=Mechanism.ECDSA)
    return (time.perf_counter() - started) / count


def _floor_round(priv: object, ca_pub: ec.EllipticCurvePublicKey, tbs: bytes,
                 batch: list[tuple[DeviceInfo, str, bytes, bytes]]) -> float:
    """Only the essential crypto of each unit, interleaved as the station must do it."""
    sign = priv.sign  # type: ignore[attr-defined]
    algorithm = ec.ECDSA(hashes.SHA256())
    started = time.perf_counter()
    for _, _, _, csr_der in batch:
        csr = x509.load_der_x509_csr(csr_der)
        key = csr.public_key()
        assert isinstance(key, ec.EllipticCurvePublicKey)
        key.verify(csr.signature, csr.tbs_certrequest_bytes, algorithm)
        signature = raw_to_der(sign(hashlib.sha256(tbs).digest(), mechanism=Mechanism.ECDSA))
        ca_pub.verify(signature, tbs, algorithm)
    return (time.perf_counter() - started) / len(batch)


def _verify_round(public: ec.EllipticCurvePublicKey, signature: bytes, data: bytes, count: int) -> float:
    started = time.perf_counter()
    for _ in range(count):
        public.verify(signature, data, ec.ECDSA(hashes.SHA256()))
    return (time.perf_counter() - started) / count


def engine_available() -> bool:
    return shutil.which("openssl") is not None and any(Path(p).exists() for p in ENGINE_PATHS)


def _peer(ca: TestCa, csrs: list[bytes]) -> list[float]:
    """One ``openssl x509 -req`` process per unit, pkcs11 engine, the same SoftHSM key."""
    uri = f"pkcs11:token={ca.token_label};object={ca.key_label};type=private;pin-value={ca.pin}"
    env = {**os.environ, "PKCS11_MODULE_PATH": ca.module_path}
    times = []
    with tempfile.TemporaryDirectory(prefix="station-peer-") as tmp:
        for i, der in enumerate(csrs):
            csr_path = Path(tmp) / f"dev{i}.csr"
            csr_path.write_bytes(x509.load_der_x509_csr(der).public_bytes(serialization.Encoding.PEM))
            out = Path(tmp) / f"dev{i}.pem"
            cmd = ["openssl", "x509", "-req", "-in", str(csr_path), "-CA", str(ca.ca_cert_path),
                   "-engine", "pkcs11", "-CAkeyform", "engine", "-CAkey", uri,
                   "-CAserial", str(Path(tmp) / "ca.srl"), "-CAcreateserial", "-days", "365",
                   "-out", str(out)]
            started = time.perf_counter()
            result = subprocess.run(cmd, env=env, capture_output=True, check=False)
            times.append(time.perf_counter() - started)
            if result.returncode != 0:
                raise RuntimeError(f"openssl peer failed: {result.stderr.decode(errors='replace')[:300]}")
            x509.load_pem_x509_certificate(out.read_bytes()).verify_directly_issued_by(ca.ca_cert())
    return times


def run(*, quick: bool = False) -> list[Row]:
    units, rounds, peer_units = (300, 3, 6) if quick else (1500, 5, 30)
    with bench_ca("bench-sign") as ca:
        signer = HsmSigner.open(module_path=ca.module_path, token_label=ca.token_label,
                                key_label=ca.key_label, pin_source=FixedPin(Pin(ca.pin)),
                                ca_chain_path=ca.ca_dir / "chain.pem")
        try:
            csrs = _csrs(signer, units)
            # The raw loop: its own session on the same token (already logged in by the signer).
            token = pkcs11.lib(ca.module_path).get_token(token_label=ca.token_label)
            session = token.open()
            try:
                priv = session.get_key(object_class=ObjectClass.PRIVATE_KEY, label=ca.key_label)
                wo = work_order(1)
                device, serial, nonce, csr_der = csrs[0]
                sample = x509.load_der_x509_certificate(signer.sign(signer.prepare(
                    csr_der=csr_der, nonce=nonce, device=device, work_order=wo, unit_serial=serial,
                    is_key_known=lambda _fp: False)))
                ca_pub = ca.ca_cert().public_key()
                assert isinstance(ca_pub, ec.EllipticCurvePublicKey)
                sig, tbs = sample.signature, sample.tbs_certificate_bytes
                per = max(1, units // rounds)
                station_t, sign_t, verify_t, floor_t = [], [], [], []
                for r in range(rounds):  # interleaved, so load from others hits all alike
                    batch = csrs[r * per:(r + 1) * per]
                    sign_t.append(_raw_sign_round(priv, per))
                    verify_t.append(_verify_round(ca_pub, sig, tbs, per))
                    floor_t.append(_floor_round(priv, ca_pub, tbs, batch))
                    station_t.append(_station_round(signer, batch))
            finally:
                session.close()
            peer_t = _peer(ca, [c[3] for c in csrs[:peer_units]]) if engine_available() else []
        finally:
            signer.close()
    station_ms = median(station_t) * 1000
    sign_ms, verify_ms = median(sign_t) * 1000, median(verify_t) * 1000
    limit_ms = sign_ms + 2 * verify_ms
    rows = [
        Row(bench="1", figure="signing path, ms/unit (CSR->checks->cert->HSM sign->verify)",
            value=station_ms, unit="ms", reference=f"raw C_Sign {sign_ms:.3f} + 2x verify {verify_ms:.3f}",
            ref_value=limit_ms, target="<= 1.5x", met=station_ms <= 1.5 * limit_ms),
        Row(bench="1", figure="(info) that crypto alone, interleaved per unit, fresh CSR keys",
            value=median(floor_t) * 1000, unit="ms", reference="raw C_Sign + 2x verify",
            ref_value=limit_ms),
    ]
    if peer_t:
        peer_ms = median(peer_t) * 1000
        rows.append(Row(bench="1", figure="signing path vs openssl x509 -req + pkcs11 engine",
                        value=station_ms, unit="ms", reference="openssl process per unit", ref_value=peer_ms,
                        ratio_override=peer_ms / station_ms, target=">= 30x faster",
                        met=peer_ms / station_ms >= 30))
    else:
        rows.append(Row(bench="1", figure="openssl peer", value=0, unit="",
                        reference="libengine-pkcs11-openssl missing", met=None))
    return rows
