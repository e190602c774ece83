"""The cloud's view of an identity: the device's key and issued certificate complete mutual TLS with a
server that trusts only the station's CA (TLS 1.2 and 1.3), and a certificate from elsewhere does not."""

from __future__ import annotations

import datetime as dt
import json
import socket
import ssl
import threading
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from fixtures.softhsm import TestCa
from fixtures.virtual_dut import VirtualDevice
from station.app import open_station
from station.config import SlotConfig
from station.domain import WorkOrder
from station.signing import HsmSigner


def _self_signed(common_name: str, *, server: bool) -> tuple[ec.EllipticCurvePrivateKey, x509.Certificate]:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
    now = dt.datetime.now(dt.UTC)
    builder = (
        x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5)).not_valid_after(now + dt.timedelta(days=1))
    )
    if server:
        builder = builder.add_extension(x509.SubjectAlternativeName([x509.DNSName("localhost")]),
                                        critical=False).add_extension(
            x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
    else:
        builder = builder.add_extension(
            x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False)
    return key, builder.sign(key, hashes.SHA256())


def _pem_files(directory: Path, name: str, key: ec.EllipticCurvePrivateKey | bytes,
               certs: list[bytes]) -> tuple[Path, Path]:
    key_pem = key if isinstance(key, bytes) else key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    key_path, cert_path = directory / f"{name}.key", directory / f"{name}.pem"
    key_path.write_bytes(key_pem)
    cert_path.write_bytes(b"".join(
        x509.load_der_x509_certificate(c).public_bytes(serialization.Encoding.PEM) for c in certs))
    return key_path, cert_path


class _Server:
    """A one-connection-at-a-time TLS server on loopback that demands a client certificate."""

    def __init__(self, context: ssl.SSLContext) -> None:
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        self.context = context
        self.peers: list[str] = []
        self.errors: list[str] = []
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            try:
                with self.context.wrap_socket(conn, server_side=True) as tls:
                    peer = tls.getpeercert()
                    subject = dict(item[0] for item in peer["subject"])  # type: ignore[index]
                    self.peers.append(f"{tls.version()} {subject['commonName']}")
                    tls.sendall(b"hello device\n")
            except (ssl.SSLError, OSError) as exc:
                self.errors.append(str(exc))

    def close(self) -> None:
        self.sock.close()


@pytest.fixture
def provisioned(tmp_path: Path, softhsm_ca: TestCa) -> tuple[bytes, bytes, list[bytes], str]:
    """A virtual device provisioned through the real station: (key PEM, cert DER, chain, serial)."""
    signer = HsmSigner.open(
        module_path=softhsm_ca.module_path, token_label=softhsm_ca.token_label,
        pin_source=softhsm_ca.pin_source(), key_label=softhsm_ca.key_label,
        ca_chain_path=softhsm_ca.ca_dir / "chain.pem",
    )
    wo = WorkOrder(number="WO-TLS", product="sensor-v2", profile="tls-client", quantity=5)
    state = tmp_path / "dut.json"
    with open_station(station_id="tls", signer=signer, database=tmp_path / "audit.db") as station, \
            VirtualDevice(state_file=state, key_delay=0.0) as device:
        (result,) = station.line.run(station.slot_runs(
            [SlotConfig(name="1", port=device.port)], operator="op", work_order=wo))
        assert result.ok, result.message
        assert device.certificate_der is not None
        cert, chain = device.certificate_der, device.chain
    # The simulated secure element's flash dump is the only place the private key exists.
    key_pem = json.loads(state.read_text())["private_key_pem"].encode()
    return key_pem, cert, chain, result.unit_serial or ""


@pytest.mark.parametrize("version", [ssl.TLSVersion.TLSv1_2, ssl.TLSVersion.TLSv1_3])
def test_device_identity_completes_mutual_tls(
        tmp_path: Path, softhsm_ca: TestCa, provisioned: tuple[bytes, bytes, list[bytes], str],
        version: ssl.TLSVersion) -> None:
    key_pem, cert_der, chain, unit_serial = provisioned
    server_key, server_cert = _self_signed("localhost", server=True)
    server_key_path, server_cert_path = _pem_files(
        tmp_path, "server", server_key, [server_cert.public_bytes(serialization.Encoding.DER)])

    server_ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server_ctx.minimum_version = server_ctx.maximum_version = version
    server_ctx.load_cert_chain(server_cert_path, server_key_path)
    server_ctx.verify_mode = ssl.CERT_REQUIRED
    server_ctx.load_verify_locations(cafile=str(softhsm_ca.ca_cert_path))  # trusts only the station CA

    client_key_path, client_cert_path = _pem_files(tmp_path, "device", key_pem, [cert_der, *chain])
    client_ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    client_ctx.minimum_version = client_ctx.maximum_version = version
    client_ctx.load_verify_locations(cafile=str(server_cert_path))
    client_ctx.load_cert_chain(client_cert_path, client_key_path)

    server = _Server(server_ctx)
    try:
        with socket.create_connection(("127.0.0.1", server.port)) as raw, \
                client_ctx.wrap_socket(raw, server_hostname="localhost") as tls:
            negotiated = tls.version()
            assert tls.recv(64) == b"hello device\n"
        assert negotiated == {ssl.TLSVersion.TLSv1_2: "TLSv1.2", ssl.TLSVersion.TLSv1_3: "TLSv1.3"}[version]
        assert server.peers == [f"{negotiated} {unit_serial}"]

        # A device certificate from any other CA is refused by the same server.
        rogue_key, rogue_cert = _self_signed(unit_serial, server=False)
        rogue_key_path, rogue_cert_path = _pem_files(
            tmp_path, "rogue", rogue_key, [rogue_cert.public_bytes(serialization.Encoding.DER)])
        rogue_ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        rogue_ctx.minimum_version = rogue_ctx.maximum_version = version
        rogue_ctx.load_verify_locations(cafile=str(server_cert_path))
        rogue_ctx.load_cert_chain(rogue_cert_path, rogue_key_path)
        with pytest.raises((ssl.SSLError, ConnectionError)), \
                socket.create_connection(("127.0.0.1", server.port)) as raw, \
                rogue_ctx.wrap_socket(raw, server_hostname="localhost") as tls:
            tls.recv(64)  # TLS 1.3 reports the server's refusal on the first read
        assert len(server.peers) == 1
    finally:
        server.close()
