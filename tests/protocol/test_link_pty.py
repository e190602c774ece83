"""Real exchanges over pseudo-terminals through pyserial: the full provisioning run, and every fault."""

from __future__ import annotations

import datetime as dt
import os
import secrets
import threading
import time
from pathlib import Path

import pytest
import serial
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import AttributeOID, NameOID

from firmware_protocol import Lifecycle as WireLifecycle
from firmware_protocol import reset_token, verify_possession
from fixtures.virtual_dut import (
    CLONE_KEY_PEM,
    DEFAULT_RESET_KEY,
    Faults,
    VirtualDevice,
    virtual_device,
    virtual_devices,
)
from station.errors import (
    DeviceDisconnected,
    DeviceLinkError,
    DeviceMisbehaved,
    DeviceRefused,
    DeviceTimeout,
)
from station.ports import ConfigValue, KeyType, Lifecycle, SubjectRequest
from station.transport import LinkPolicy, SerialDeviceLink, list_ports

FAST = LinkPolicy(scale=0.25)
SUBJECT = SubjectRequest(common_name="Acme Sensor 000001", serial_number="ACME-000001", organization="Acme")


def make_ca() -> tuple[ec.EllipticCurvePrivateKey, x509.Certificate]:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "Test CA")])
    now = dt.datetime.now(dt.UTC)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(now)
            .not_valid_after(now + dt.timedelta(days=1))
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .sign(key, hashes.SHA256()))
    return key, cert


CA_KEY, CA_CERT = make_ca()


def issue(csr: x509.CertificateSigningRequest) -> bytes:
    now = dt.datetime.now(dt.UTC)
    cert = (x509.CertificateBuilder().subject_name(csr.subject).issuer_name(CA_CERT.subject)
            .public_key(csr.public_key()).serial_number(x509.random_serial_number())  # type: ignore[arg-type]
            .not_valid_before(now).not_valid_after(now + dt.timedelta(days=1))
            .sign(CA_KEY, hashes.SHA256()))
    return cert.public_bytes(serialization.Encoding.DER)


def provision(link: SerialDeviceLink, key_type: KeyType = KeyType.P256) -> tuple[bytes, bytes]:
    """HELLO to LOCK as the workflow does it; returns (public key, certificate)."""
    info = link.hello()
    assert info.lifecycle is Lifecycle.BLANK
    link.set_config([ConfigValue(key="wifi.ssid", value="factory"),
                     ConfigValue(key="wifi.psk", value="s3cret-pass", secret=True),
                     ConfigValue(key="mqtt.endpoint", value="mqtts://iot.example:8883")])
    public_key = link.generate_key(key_type)
    nonce = secrets.token_bytes(16)
    csr = x509.load_der_x509_csr(link.get_csr(SUBJECT, nonce))
    assert csr.is_signature_valid
    assert csr.public_key().public_bytes(serialization.Encoding.DER,
                                         serialization.PublicFormat.SubjectPublicKeyInfo) == public_key
    challenge = csr.attributes.get_attribute_for_oid(AttributeOID.CHALLENGE_PASSWORD).value
    assert challenge == nonce.hex().encode()
    assert csr.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == SUBJECT.common_name
    cert = issue(csr)
    link.put_cert(cert, [CA_CERT.public_bytes(serialization.Encoding.DER)])
    assert link.status() is Lifecycle.PROVISIONED
    pop_nonce = secrets.token_bytes(32)
    assert verify_possession(public_key, pop_nonce, link.challenge(pop_nonce))
    link.lock()
    assert link.status() is Lifecycle.LOCKED
    return public_key, cert


@pytest.mark.parametrize("key_type", list(KeyType))
def test_full_exchange_hello_to_lock(key_type: KeyType) -> None:
    with virtual_device(key_delay=0.02) as dut, SerialDeviceLink(dut.port, slot="A1", policy=FAST) as link:
        public_key, cert = provision(link, key_type)
        assert dut.lifecycle is WireLifecycle.LOCKED
        assert dut.public_key_der == public_key
        assert dut.certificate_der == cert
        assert dut.chain == [CA_CERT.public_bytes(serialization.Encoding.DER)]
        assert dut.serial_number == "ACME-000001"
        assert dut.config["wifi.psk"] == b"s3cret-pass"
        assert link.hello().serial_number == "ACME-000001"


def test_big_chain_is_chunked_for_a_small_device() -> None:
    with virtual_device(key_delay=0.0, max_payload=256) as dut, \
            SerialDeviceLink(dut.port, policy=FAST) as link:
        link.hello()
        link.generate_key(KeyType.P256)
        csr = x509.load_der_x509_csr(link.get_csr(SUBJECT, bytes(16)))
        chain = [CA_CERT.public_bytes(serialization.Encoding.DER)] * 3
        link.put_cert(issue(csr), chain)
        assert dut.chain == chain
        assert dut.requests.count("put_cert") > 4


def test_many_devices_at_once() -> None:
    with virtual_devices(4, key_delay=0.02) as duts:
        errors: list[BaseException] = []

        def run(dut: VirtualDevice) -> None:
            try:
                with SerialDeviceLink(dut.port, slot=dut.name, policy=FAST) as link:
                    provision(link)
            except BaseException as exc:  # pragma: no cover - reported below
                errors.append(exc)

        threads = [threading.Thread(target=run, args=(d,)) for d in duts]
        for t in threads:
            t.start()
        for t in threads:
            t.join(30)
        assert not errors
        assert all(d.lifecycle is WireLifecycle.LOCKED for d in duts)
        assert len({d.hardware_id for d in duts}) == 4


def test_factory_reset_needs_authorisation_once_locked(tmp_path: Path) -> None:
    state = tmp_path / "unit.json"
    with virtual_device(key_delay=0.0, state_file=state) as dut, \
            SerialDeviceLink(dut.port, policy=FAST) as link:
        provision(link)
        hw = bytes.fromhex(dut.hardware_id)
    # a later run, same unit, from its persisted flash
    with virtual_device(state_file=state) as dut, SerialDeviceLink(dut.port, policy=FAST) as link:
        assert link.hello().lifecycle is Lifecycle.LOCKED
        with pytest.raises(DeviceRefused) as refused:
            link.factory_reset()
        assert refused.value.code == "device_unauthorised"
        with pytest.raises(DeviceRefused):
            link.factory_reset(reset_token(b"\x00" * 32, hw))
        link.factory_reset(reset_token(DEFAULT_RESET_KEY, hw))
        assert link.status() is Lifecycle.BLANK
        assert dut.public_key_der is None
        provision(link)  # re-provisioned


def test_port_held_by_another_process_is_refused(dut: VirtualDevice) -> None:
    with SerialDeviceLink(dut.port, policy=FAST), pytest.raises(DeviceDisconnected) as err:
        SerialDeviceLink(dut.port, policy=FAST)
    assert err.value.code == "port_busy"


def test_missing_port() -> None:
    with pytest.raises(DeviceDisconnected) as err:
        SerialDeviceLink("/dev/does-not-exist", slot="B2")
    assert err.value.context["slot"] == "B2"


def test_list_ports_filters() -> None:
    assert list_ports(vid=0xFFFF, pid=0xFFFF) == []
    assert all(p.device for p in list_ports())


def test_loop_url_opens() -> None:
    link = SerialDeviceLink("loop://", policy=LinkPolicy(scale=0.05, max_attempts=1))
    with pytest.raises(DeviceMisbehaved):  # our own request comes back: not a reply
        link.hello()
    link.close()


# -- faults: each one gives its documented station error ------------------------------------------------


def _link(dut: VirtualDevice, **kw: object) -> SerialDeviceLink:
    return SerialDeviceLink(dut.port, slot="S1", policy=kw.pop("policy", FAST))  # type: ignore[arg-type]


def test_unplug_while_reading_the_csr() -> None:
    with virtual_device(faults=Faults(unplug_at="get_csr"), key_delay=0.0) as dut, _link(dut) as link:
        link.hello()
        link.generate_key(KeyType.P256)
        start = time.monotonic()
        with pytest.raises(DeviceDisconnected) as err:
            link.get_csr(SUBJECT, bytes(16))
        assert time.monotonic() - start < 1.0
        assert err.value.context["step"] == "get_csr"
        assert err.value.context["port"] == dut.port


def test_unplug_from_outside(dut: VirtualDevice) -> None:
    with _link(dut) as link:
        link.hello()
        dut.unplug()
        time.sleep(0.05)
        with pytest.raises(DeviceDisconnected):
            link.status()


def test_silent_device_times_out() -> None:
    with virtual_device(faults=Faults(silent_at="generate_key")) as dut, _link(dut) as link:
        link.hello()
        start = time.monotonic()
        with pytest.raises(DeviceTimeout) as err:
            link.generate_key(KeyType.P256)
        assert err.value.context["step"] == "generate_key"
        assert time.monotonic() - start == pytest.approx(3 * 5.0 * 0.25, abs=0.5)


def test_late_answer_is_retried_with_same_seq_and_executed_once() -> None:
    # HELLO's attempt timeout is 0.125 s here; the device answers 0.3 s late, after two retries.
    with virtual_device(faults=Faults(delay_at="set_config", delay_s=0.3)) as dut, _link(dut) as link:
        link.hello()
        link.set_config([ConfigValue(key="cell.apn", value="iot.example")])
        assert dut.requests.count("set_config") == 1
        assert link.status() is Lifecycle.BLANK  # stale replays do not confuse the next request


def test_slow_key_generation_within_its_timeout() -> None:
    with virtual_device(key_delay=0.6) as dut, _link(dut) as link:
        link.hello()
        link.generate_key(KeyType.P256)
        assert dut.key_generations == 1


def test_reboot_mid_session_then_start_again() -> None:
    with virtual_device(faults=Faults(reboot_at="generate_key"), key_delay=0.0) as dut, _link(dut) as link:
        link.hello()
        with pytest.raises(DeviceDisconnected) as err:
            link.generate_key(KeyType.P256)
        assert err.value.code == "device_rebooted"
        assert dut.key_generations == 0 and dut.public_key_der is None
        assert link.hello().lifecycle is Lifecycle.BLANK  # start again from HELLO
        link.generate_key(KeyType.P256)
        assert dut.key_generations == 1


def test_light_noise_is_absorbed() -> None:
    faults = Faults(corrupt_rate=0.002, garbage=16, seed=7)
    patient = LinkPolicy(scale=0.25, max_attempts=6)
    with virtual_device(faults=faults, key_delay=0.0) as dut, _link(dut, policy=patient) as link:
        provision(link)
        assert dut.key_generations == 1


def test_heavy_corruption_is_a_bad_link() -> None:
    with virtual_device(faults=Faults(corrupt_rate=0.2, seed=1)) as dut, _link(dut) as link, \
            pytest.raises(DeviceLinkError) as err:
        link.hello()
    assert err.value.code == "bad_link"


def test_dropped_bytes_are_a_bad_link() -> None:
    with virtual_device(faults=Faults(drop_rate=0.3, seed=2)) as dut, _link(dut) as link, \
            pytest.raises((DeviceLinkError, DeviceTimeout)):
        link.hello()


def test_flood_neither_hangs_nor_grows() -> None:
    with virtual_device(faults=Faults(flood_at="status", seed=3)) as dut, _link(dut) as link:
        link.hello()
        start = time.monotonic()
        with pytest.raises(DeviceLinkError):
            link.status()
        assert time.monotonic() - start < 3 * 0.5 * 0.25 + 0.5
        assert link._conn._rx.decoder.buffered <= 4096 + 1100


def test_oversize_frame_is_misbehaviour() -> None:
    with virtual_device(faults=Faults(oversize_at="status")) as dut, _link(dut) as link:
        link.hello()
        with pytest.raises(DeviceMisbehaved) as err:
            link.status()
        assert err.value.code == "oversize_frame"


def test_wrong_protocol_version() -> None:
    with virtual_device(faults=Faults(wrong_version=7)) as dut, _link(dut) as link, \
            pytest.raises(DeviceMisbehaved) as err:
        link.hello()
    assert err.value.code == "protocol_version"


def test_already_locked_device() -> None:
    with virtual_device(faults=Faults(report_locked=True)) as dut, _link(dut) as link:
        assert link.hello().lifecycle is Lifecycle.LOCKED
        with pytest.raises(DeviceRefused) as err:
            link.generate_key(KeyType.P256)
        assert err.value.code == "device_locked"


def test_certificate_rejected() -> None:
    with virtual_device(faults=Faults(reject_cert=True), key_delay=0.0) as dut, _link(dut) as link:
        link.hello()
        link.generate_key(KeyType.P256)
        csr = x509.load_der_x509_csr(link.get_csr(SUBJECT, bytes(16)))
        with pytest.raises(DeviceRefused) as err:
            link.put_cert(issue(csr))
        assert err.value.code == "device_cert_rejected"
        assert err.value.context["step"] == "write_cert"


@pytest.mark.parametrize("flaw", ["rsa1024", "p192", "secp256k1"])
def test_weak_or_wrong_curve_key_is_refused_at_generation(flaw: str) -> None:
    with virtual_device(faults=Faults(weak_key=flaw), key_delay=0.0) as dut, _link(dut) as link:  # type: ignore[arg-type]
        link.hello()
        with pytest.raises(DeviceMisbehaved) as err:
            link.generate_key(KeyType.P256)
        assert err.value.code == "wrong_answer"


@pytest.mark.parametrize("flaw", ["rsa1024", "p192", "secp256k1"])
def test_csr_with_weak_key_reaches_the_signer_for_refusal(flaw: str) -> None:
    """The link returns the CSR; the signer's intake (CsrRejected) must refuse its key."""
    with virtual_device(faults=Faults(csr_key=flaw), key_delay=0.0) as dut, _link(dut) as link:  # type: ignore[arg-type]
        link.hello()
        good = link.generate_key(KeyType.P256)
        csr = x509.load_der_x509_csr(link.get_csr(SUBJECT, bytes(16)))
        key = csr.public_key()
        spki = key.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
        assert spki != good
        assert (isinstance(key, rsa.RSAPublicKey) and key.key_size == 1024) or (
            isinstance(key, ec.EllipticCurvePublicKey) and key.curve.name in ("secp192r1", "secp256k1"))


def test_csr_with_bad_signature() -> None:
    with virtual_device(faults=Faults(bad_csr_signature=True), key_delay=0.0) as dut, _link(dut) as link:
        link.hello()
        link.generate_key(KeyType.P256)
        csr = x509.load_der_x509_csr(link.get_csr(SUBJECT, bytes(16)))
        assert not csr.is_signature_valid  # the signer's intake raises CsrRejected on this


def test_wrong_challenge_signature() -> None:
    with virtual_device(faults=Faults(bad_challenge=True), key_delay=0.0) as dut, _link(dut) as link:
        link.hello()
        public_key = link.generate_key(KeyType.P256)
        nonce = secrets.token_bytes(16)
        assert not verify_possession(public_key, nonce, link.challenge(nonce))  # workflow: pop_failed


def test_clones_share_a_key() -> None:
    clone = Faults(clone_key_pem=CLONE_KEY_PEM)
    with virtual_devices(2, faults=clone, key_delay=0.0) as duts:
        keys = []
        for dut in duts:
            with _link(dut) as link:
                link.hello()
                keys.append(link.generate_key(KeyType.P256))
        assert keys[0] == keys[1]  # the audit store's is_key_known catches the second unit
        assert duts[0].hardware_id != duts[1].hardware_id


def test_garbage_before_every_frame() -> None:
    with virtual_device(faults=Faults(garbage=40, seed=5), key_delay=0.0) as dut, _link(dut) as link:
        provision(link)


def test_cli_starts_devices_and_stops_on_sigterm() -> None:
    import subprocess
    import sys
    proc = subprocess.Popen([sys.executable, "-m", "fixtures.virtual_dut", "--count", "2",
                             "--fault", "garbage=4"], stdout=subprocess.PIPE, text=True,
                            cwd=Path(__file__).parents[2])
    try:
        assert proc.stdout is not None
        ports = [proc.stdout.readline().split()[0] for _ in range(2)]
        with SerialDeviceLink(ports[0], policy=FAST) as link:
            assert link.hello().vendor == "Acme"
    finally:
        proc.terminate()
        assert proc.wait(10) == 0
    assert not any(os.path.exists(p) for p in ports)


def test_serial_exception_on_vanished_port(dut: VirtualDevice) -> None:
    with _link(dut) as link:
        link.hello()
        dut.stop()
        with pytest.raises(DeviceDisconnected):
            link.status()
    assert isinstance(serial.SerialException(), IOError)
