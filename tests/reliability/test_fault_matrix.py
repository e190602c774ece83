"""The fault and bad-input matrix, end to end: real ptys, SoftHSM, SQLite, the real Line.

Every device row runs one faulty virtual device next to two healthy ones through one station run and
checks, for the faulty slot: the step, the code and the technician's sentence, and the unit recorded
as failed with that step and code; for the healthy slots: provisioned and locked; for the whole run:
the audit chain verifies and every certificate any device holds is in the log (nothing lost).

Rows whose fault is not a device (HSM, database, work order, configuration) have their own tests
below, under the same case ids. Cases covered at unit level elsewhere are listed in
``UNIT_LEVEL_CASES`` (``bench/reliability`` runs those tests too and counts them by case id).
"""

from __future__ import annotations

import os
import secrets
import struct
import subprocess
import sys
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import AttributeOID, NameOID

from firmware_protocol import CsrReply, GetCsr, Lifecycle, MessageType, cobs_decode, cobs_encode, crc32c
from fixtures.crash_station import HeldCertificate, check_invariants
from fixtures.softhsm import TestCa, add_token
from fixtures.virtual_dut import CLONE_KEY_PEM, Faults, VirtualDevice
from station.app import Station, open_station
from station.audit import open_audit_store
from station.config import SlotConfig, parse_config
from station.domain import UnitStatus, WorkOrder
from station.errors import ConfigError, SigningFailed
from station.line import AuditWriter, Line
from station.signing import HsmSigner
from station.transport import LinkPolicy
from station.workflow import Provisioner, UnitResult

POLICY: Final = LinkPolicy(scale=0.25)
HEALTHY_SLOTS: Final = 2

UNIT_LEVEL_CASES: Final[dict[str, str]] = {
    "csr-invalid-point": "tests/hsm/test_refusals.py::test_off_curve_point_and_infinity",
    "csr-duplicate-extension": "tests/hsm/test_refusals.py::test_duplicate_extension",
    "hsm-wrong-pin-tries-left": "tests/hsm/test_token.py::test_wrong_pin_says_tries_left_and_never_shows_pin",
    "hsm-session-lost-twice": "tests/hsm/test_token.py::test_session_lost_twice_is_a_clear_error",
    "hsm-ca-key-extractable": "tests/hsm/test_token.py::test_unsafe_ca_key_refused",
    "hsm-ca-cert-not-matching-key": "tests/hsm/test_token.py::test_ca_certificate_not_matching_key_is_caught",
    "hsm-ca-expired": "tests/hsm/test_refusals.py::test_ca_expired",
    "db-disk-full-tiny-fs": "tests/audit/test_faults.py::test_disk_full_on_a_real_tiny_filesystem",
    "db-read-only-file": "tests/audit/test_faults.py::test_read_only_database_file",
    "db-corrupt-file": "tests/audit/test_faults.py::test_corrupt_file_opens_read_only",
    "db-tampered-event-edited": "tests/audit/test_chain.py::test_edited_event",
    "db-tampered-event-deleted": "tests/audit/test_chain.py::test_deleted_event",
    "db-tampered-unit-row": "tests/audit/test_chain.py::test_edited_unit_row",
    "wo-quota-16-racing-slots": "tests/audit/test_store.py::test_quota_exact_under_16_racing_slots",
    "serial-port-held-by-another-process":
        "tests/protocol/test_link_pty.py::test_port_held_by_another_process_is_refused",
    "serial-reboot-mid-session": "tests/protocol/test_link_pty.py::test_reboot_mid_session_then_start_again",
    "role-technician-admin-gui":
        "tests/gui/test_window.py::test_technician_cannot_leave_kiosk_or_open_configuration",
    "role-technician-admin-cli":
        "tests/station/test_admin_cli.py::test_technician_is_refused_ca_and_operator_admin",
}
"""Matrix cases proven by existing unit-level tests (case id -> pytest node id)."""


# -- devices that misbehave beyond fixtures.virtual_dut.Faults -------------------------------------

CsrMaker = Callable[[Any, GetCsr], bytes]


class CraftedCsrDevice(VirtualDevice):
    """A device whose GET_CSR answer is made by ``make_csr(key, request)``."""

    def __init__(self, *, make_csr: CsrMaker, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._make_csr = make_csr

    def _csr(self, request: GetCsr) -> CsrReply:
        return CsrReply(csr=self._make_csr(self._flash.key, request))


class SeqFaultDevice(VirtualDevice):
    """From request ``from_step`` on, every frame it sends carries seq + ``shift`` (a replayed old
    sequence number with -1, an out-of-order one with +N): correct answers, wrong sequence numbers."""

    def __init__(self, *, from_step: MessageType, shift: int, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._from_step, self._shift, self._active = from_step, shift, False

    def _emit(self, data: bytes, request_type: MessageType | None = None) -> None:
        if request_type is self._from_step:
            self._active = True
        if self._active:
            raw = cobs_decode(data.strip(b"\x00"))[:-4]
            seq = (int.from_bytes(raw[2:4], "little") + self._shift) % 0x10000
            raw = raw[:2] + seq.to_bytes(2, "little") + raw[4:]
            data = b"\x00" + cobs_encode(raw + struct.pack("<I", crc32c(raw))) + b"\x00"
        super()._emit(data, request_type)


def _csr(key: Any, request: GetCsr, *, subject: x509.Name | None = None,
         extensions: Sequence[tuple[x509.ExtensionType, bool]] = ()) -> bytes:
    names = subject or _requested_subject(request)
    builder = (x509.CertificateSigningRequestBuilder().subject_name(names)
               .add_attribute(AttributeOID.CHALLENGE_PASSWORD, request.nonce.hex().encode()))
    for ext, critical in extensions:
        builder = builder.add_extension(ext, critical=critical)
    return builder.sign(key, hashes.SHA256()).public_bytes(serialization.Encoding.DER)


def _requested_subject(request: GetCsr) -> x509.Name:
    """The subject exactly as the station asked for it (as the virtual device builds it)."""
    names = [x509.NameAttribute(NameOID.COMMON_NAME, request.common_name)]
    if request.serial_number:
        names.append(x509.NameAttribute(NameOID.SERIAL_NUMBER, request.serial_number))
    if request.organization:
        names.append(x509.NameAttribute(NameOID.ORGANIZATION_NAME, request.organization))
    return x509.Name(names)


def _other_key_csr(key: Any, request: GetCsr) -> bytes:
    return _csr(ec.generate_private_key(ec.SECP256R1()), request)


def _injected_subject_csr(key: Any, request: GetCsr) -> bytes:
    evil = x509.Name([
        x509.NameAttribute(NameOID.COMMON_NAME, request.common_name + ",O=Evil CA,CN=root\x00"),
        x509.NameAttribute(NameOID.ORGANIZATIONAL_UNIT_NAME, "A" * 60),
    ])
    return _csr(key, request, subject=evil)


def _long_subject_csr(key: Any, request: GetCsr) -> bytes:
    long_cn = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "x" * 500, _validate=False)])
    return _csr(key, request, subject=long_cn)


def _critical_unknown_extension_csr(key: Any, request: GetCsr) -> bytes:
    ext = x509.UnrecognizedExtension(x509.ObjectIdentifier("1.3.6.1.4.1.55555.1"), b"\x05\x00")
    return _csr(key, request, extensions=[(ext, True)])


def _ca_true_csr(key: Any, request: GetCsr) -> bytes:
    return _csr(key, request, extensions=[(x509.BasicConstraints(ca=True, path_length=None), True)])


def _truncated_csr(key: Any, request: GetCsr) -> bytes:
    der = _csr(key, request)
    return der[: len(der) // 2]


def _garbage_csr(key: Any, request: GetCsr) -> bytes:
    return secrets.token_bytes(300)


def _trailing_bytes_csr(key: Any, request: GetCsr) -> bytes:
    return _csr(key, request) + b"\x00\x00"


# -- the device rows -------------------------------------------------------------------------------

@dataclass(frozen=True, kw_only=True)
class Case:
    """One matrix row: the faulty device, and what the station must say and record about it."""

    id: str
    device: Callable[[], VirtualDevice]
    step: str | None
    """Expected failed step; None when the station must absorb the fault and provision the unit."""
    codes: tuple[str, ...] = ()
    words: str = ""
    """A fragment of the technician's sentence (case-insensitive)."""
    status: UnitStatus = UnitStatus.FAILED
    """How the faulty unit must stand in the log afterwards."""
    before: Callable[[], VirtualDevice] | None = None
    """A device provisioned first (alone), e.g. the original a clone copies."""
    notes: str = ""


def _dev(**faults: Any) -> Callable[[], VirtualDevice]:
    return lambda: VirtualDevice(faults=Faults(**faults), key_delay=0.01, name="faulty")


def _crafted(maker: CsrMaker) -> Callable[[], VirtualDevice]:
    return lambda: CraftedCsrDevice(make_csr=maker, key_delay=0.01, name="faulty")


_SHARED_HW: Final = secrets.token_hex(8)

DEVICE_CASES: Final[tuple[Case, ...]] = (
    # Serial
    Case(id="serial-unplug-generate-key", device=_dev(unplug_at="generate_key"), step="generate_key",
         codes=("device_disconnected",), words="disconnected"),
    Case(id="serial-unplug-get-csr", device=_dev(unplug_at="get_csr"), step="get_csr",
         codes=("device_disconnected",), words="disconnected"),
    Case(id="serial-unplug-write-cert", device=_dev(unplug_at="put_cert"), step="write_cert",
         codes=("device_disconnected",), words="disconnected", status=UnitStatus.ISSUED,
         notes="issued-not-installed: stays issued, the same certificate is re-sent later"),
    Case(id="serial-noise-realistic", device=_dev(corrupt_rate=0.002, garbage=16, seed=7), step=None),
    Case(id="serial-drops-realistic", device=_dev(drop_rate=0.001, seed=5), step=None),
    Case(id="serial-corruption-heavy", device=_dev(corrupt_rate=0.2, seed=1), step="identify",
         codes=("bad_link", "device_timeout"), words="device"),
    Case(id="serial-drops-heavy", device=_dev(drop_rate=0.3, seed=2), step="identify",
         codes=("bad_link", "device_timeout"), words="device"),
    Case(id="serial-garbage-heavy", device=_dev(garbage=6000, seed=3), step="identify",
         codes=("bad_link", "device_timeout"), words="device"),
    Case(id="serial-silent", device=_dev(silent_at="get_csr"), step="get_csr",
         codes=("device_timeout",), words="stopped answering"),
    Case(id="serial-flood", device=_dev(flood_at="generate_key", seed=4), step="generate_key",
         codes=("bad_link",), words="garbled"),
    Case(id="serial-oversize-frame", device=_dev(oversize_at="get_csr"), step="get_csr",
         codes=("oversize_frame",), words="wrong answer"),
    Case(id="serial-wrong-protocol-version", device=_dev(wrong_version=9), step="identify",
         codes=("protocol_version",), words="wrong answer"),
    Case(id="serial-replayed-seq",
         device=lambda: SeqFaultDevice(from_step=MessageType.GET_CSR, shift=-1, key_delay=0.01,
                                       name="faulty"),
         step="get_csr", codes=("device_timeout", "bad_link"), words="device"),
    Case(id="serial-out-of-order-seq",
         device=lambda: SeqFaultDevice(from_step=MessageType.GENERATE_KEY, shift=5, key_delay=0.01,
                                       name="faulty"),
         step="generate_key", codes=("device_timeout", "bad_link"), words="device"),
    # CSR and keys
    Case(id="csr-bad-signature", device=_dev(bad_csr_signature=True), step="pre_issuance",
         codes=("csr_signature_invalid",), words="request was refused"),
    Case(id="key-rsa1024-generated", device=_dev(weak_key="rsa1024"), step="generate_key",
         codes=("wrong_answer",), words="wrong answer"),
    Case(id="csr-rsa1024", device=_dev(csr_key="rsa1024"), step="pre_issuance",
         codes=("key_algorithm_not_allowed",), words="request was refused"),
    Case(id="csr-p192", device=_dev(csr_key="p192"), step="pre_issuance",
         codes=("key_curve_not_allowed",), words="request was refused"),
    Case(id="csr-curve-secp256k1", device=_dev(csr_key="secp256k1"), step="pre_issuance",
         codes=("key_curve_not_allowed",), words="request was refused"),
    Case(id="csr-for-another-key", device=_crafted(_other_key_csr), step="pre_issuance",
         codes=("csr_key_mismatch",), words="different key"),
    Case(id="csr-subject-injection", device=_crafted(_injected_subject_csr), step="pre_issuance",
         codes=("subject_mismatch",), words="request was refused"),
    Case(id="csr-subject-very-long", device=_crafted(_long_subject_csr), step="pre_issuance",
         codes=("subject_mismatch", "csr_malformed", "csr_too_large"), words="request was refused"),
    Case(id="csr-unknown-critical-extension", device=_crafted(_critical_unknown_extension_csr),
         step="pre_issuance", codes=("extension_unknown_critical",), words="request was refused"),
    Case(id="csr-asks-ca-true", device=_crafted(_ca_true_csr), step=None,
         notes="ignored: the profile decides; the issued certificate is checked to be CA:FALSE"),
    Case(id="csr-truncated-der", device=_crafted(_truncated_csr), step="pre_issuance",
         codes=("csr_truncated",), words="request was refused"),
    Case(id="csr-garbage-der", device=_crafted(_garbage_csr), step="pre_issuance",
         codes=("csr_malformed",), words="request was refused"),
    Case(id="csr-trailing-bytes", device=_crafted(_trailing_bytes_csr), step="pre_issuance",
         codes=("csr_trailing_bytes",), words="request was refused"),
    # Devices
    Case(id="device-clone-key",
         device=lambda: VirtualDevice(faults=Faults(clone_key_pem=CLONE_KEY_PEM), key_delay=0.01),
         before=lambda: VirtualDevice(faults=Faults(clone_key_pem=CLONE_KEY_PEM), key_delay=0.01),
         step="pre_issuance", codes=("key_already_issued", "identity_conflict"),
         words="refused"),
    Case(id="device-duplicate-hardware-id",
         device=lambda: VirtualDevice(hardware_id=_SHARED_HW, key_delay=0.01),
         before=lambda: VirtualDevice(hardware_id=_SHARED_HW, key_delay=0.01),
         step="identify", codes=("identity_conflict",), words="already in use",
         notes="refused at start by the unique index on active hardware ids; the store logs the refusal"),
    Case(id="device-already-locked", device=_dev(report_locked=True), step="check",
         codes=("device_locked",), words="already locked"),
    Case(id="device-rejects-certificate", device=_dev(reject_cert=True), step="write_cert",
         codes=("device_cert_rejected",), words="refused", status=UnitStatus.ISSUED,
         notes="issued-not-installed: the certificate stays issued for a re-send, never re-signed"),
    Case(id="device-wrong-pop", device=_dev(bad_challenge=True), step="prove_possession",
         codes=("pop_failed",), words="could not prove"),
)


@pytest.fixture
def signer(softhsm_ca: TestCa) -> Iterator[HsmSigner]:
    """Per test: closing a station closes its signer (the composition root owns it)."""
    s = HsmSigner.open(module_path=softhsm_ca.module_path, token_label=softhsm_ca.token_label,
                       pin_source=softhsm_ca.pin_source(), key_label=softhsm_ca.key_label,
                       ca_chain_path=softhsm_ca.ca_dir / "chain.pem")
    yield s
    s.close()


def _work_order(quantity: int = 100) -> WorkOrder:
    return WorkOrder(number=f"WO-MATRIX-{secrets.token_hex(4)}", product="sensor", profile="tls-client",
                     quantity=quantity, serial_format="MX-{seq:06d}-" + secrets.token_hex(3),
                     commissioning=(("wifi.ssid", "line", False), ("wifi.psk", "psk-not-logged", True)))


def _run(station: Station, devices: Sequence[VirtualDevice], wo: WorkOrder) -> list[UnitResult]:
    runs = station.slot_runs([SlotConfig(name=str(i), port=d.port) for i, d in enumerate(devices, 1)],
                             operator="op-matrix", work_order=wo, policy=POLICY)
    return station.line.run(runs, retries=0)  # each fault's first outcome; requeues: test_end_to_end


@dataclass
class Devices:
    started: list[VirtualDevice] = field(default_factory=list)

    def add(self, device: VirtualDevice) -> VirtualDevice:
        self.started.append(device.start())
        return device

    def held(self) -> list[HeldCertificate]:
        return [HeldCertificate(device=d.name, hardware_id=d.hardware_id, cert_der=c,
                                public_key_der=d.public_key_der)
                for d in self.started if (c := d.certificate_der) is not None]


@pytest.fixture
def devices() -> Iterator[Devices]:
    pool = Devices()
    yield pool
    for d in pool.started:
        d.stop()


def _nothing_lost(database: Path, pool: Devices) -> None:
    found = check_invariants(database, pool.held(), revocable_codes=("pop_failed",))
    assert found.certificates_missing == 0 and not found.problems, found.problems


def _assert_failed(result: UnitResult, step: str, codes: Sequence[str], words: str) -> None:
    assert not result.ok, "the fault went unnoticed"
    assert str(result.failed_step) == step, (result.failed_step, result.error_code, result.message)
    assert result.error_code in codes, (result.error_code, result.message)
    assert words.lower() in (result.message or "").lower(), result.message
    assert result.hint, "every failure tells the technician what to do next"


@pytest.mark.parametrize("case", DEVICE_CASES, ids=lambda c: c.id)
def test_device_fault(case: Case, signer: HsmSigner, tmp_path: Path, devices: Devices) -> None:
    database = tmp_path / "audit.db"
    wo = _work_order()
    with open_station(station_id="st-matrix", signer=signer, database=database, work_order=wo) as station:
        if case.before is not None:
            (first,) = _run(station, [devices.add(case.before())], wo)
            assert first.ok, first.message
        faulty = devices.add(case.device())
        healthy = [devices.add(VirtualDevice(key_delay=0.01, name=f"healthy{i}"))
                   for i in range(HEALTHY_SLOTS)]
        results = _run(station, [faulty, *healthy], wo)
        outcome, others = results[0], results[1:]
        if case.step is None:
            assert outcome.ok, (outcome.failed_step, outcome.error_code, outcome.message)
            assert faulty.certificate_der == outcome.cert_der
            cert = x509.load_der_x509_certificate(outcome.cert_der or b"")
            assert not cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
        else:
            _assert_failed(outcome, case.step, case.codes, case.words)
            if outcome.unit_id is not None:
                unit = station.store.get_unit(outcome.unit_id)
                assert unit is not None and unit.status is case.status, unit
                if case.status is UnitStatus.FAILED:
                    assert (str(unit.failed_step), unit.error_code) == (case.step, outcome.error_code)
                    if unit.error_code != "pop_failed":  # that one is held, and marked for revocation
                        assert faulty.certificate_der is None
        for r, d in zip(others, healthy, strict=True):
            assert r.ok, f"healthy slot {r.slot} affected: {r.error_code} {r.message}"
            assert d.certificate_der == r.cert_der and d.lifecycle is Lifecycle.LOCKED
        assert not station.provisioner.issuing_stopped
    _nothing_lost(database, devices)


# -- HSM -------------------------------------------------------------------------------------------

def test_hsm_wrong_pin_at_start(softhsm_ca: TestCa) -> None:
    """case hsm-wrong-pin: one login attempt, a clear error with the tries left if the token says."""
    from hsm.pin import FixedPin, Pin

    other = add_token(softhsm_ca, f"pin-{secrets.token_hex(3)}")
    with pytest.raises(SigningFailed) as err:
        HsmSigner.open(module_path=other.module_path, token_label=other.token_label,
                       pin_source=FixedPin(Pin("not-the-pin-0000")), key_label="none",
                       ca_chain_path=softhsm_ca.ca_dir / "chain.pem")
    text = str(err.value).lower()
    assert "pin" in text and "not-the-pin-0000" not in text
    assert other.pin not in text


def test_hsm_module_failing_mid_run(signer: HsmSigner, tmp_path: Path, devices: Devices,
                                    monkeypatch: pytest.MonkeyPatch) -> None:
    """case hsm-token-removed-mid-run: the session dies and the token is gone from its slot.

    Every slot that reaches signing fails closed at ``sign`` with the signing module's sentence; no
    device gets a certificate; the intents keep their serials (never reused); once the token is back,
    the same devices are provisioned on new serials."""
    from hsm import token as token_module

    token = signer._token
    assert token is not None

    class EmptySlots:
        """The module as it answers once the token is pulled: no token in any slot."""

        def get_tokens(self, **_: object) -> Iterator[object]:
            return iter(())

    database = tmp_path / "audit.db"
    wo = _work_order()
    pool = [devices.add(VirtualDevice(key_delay=0.01)) for _ in range(3)]
    with open_station(station_id="st-matrix", signer=signer, database=database, work_order=wo) as station:
        monkeypatch.setattr(token_module, "load_module", lambda _path: EmptySlots())
        token.run(lambda s: s.close(), action="unplug")  # the session dies behind the signer's back
        results = _run(station, pool, wo)
        for r in results:
            _assert_failed(r, "sign", ("signing_failed",), "signing module")
            assert "token is gone" in (r.message or ""), r.message
        assert all(d.certificate_der is None for d in pool)
        failed_serials = {station.store.get_unit(r.unit_id).cert_serial  # type: ignore[union-attr]
                          for r in results if r.unit_id is not None}
        monkeypatch.undo()
        again = _run(station, pool, wo)
        assert all(r.ok for r in again), [r.message for r in again]
        assert not failed_serials & {r.cert_serial for r in again}
    _nothing_lost(database, devices)


# -- database --------------------------------------------------------------------------------------

def test_db_disk_full_stops_issuing_and_says_so(signer: HsmSigner, tmp_path: Path,
                                                devices: Devices) -> None:
    """case db-disk-full: the database can grow no more mid-run (max_page_count, as a full disk
    answers SQLITE_FULL). Issuing stops before a record could be lost, the sentence says so, and no
    device holds a certificate the log lacks."""
    from station.audit.engine import DURABLE_PRAGMAS

    database = tmp_path / "audit.db"
    wo = _work_order()
    open_audit_store(database, station_id="st-matrix").close()
    pages = int(subprocess.run([sys.executable, "-c", f"import sqlite3;print(sqlite3.connect("
                                f"{str(database)!r}).execute('PRAGMA page_count').fetchone()[0])"],
                               capture_output=True, text=True, check=True).stdout)
    store = open_audit_store(database, station_id="st-matrix",
                             pragmas=dict(DURABLE_PRAGMAS) | {"max_page_count": str(pages + 3)})
    store.create_work_order(wo)
    writer = AuditWriter(store)
    provisioner = Provisioner(signer=signer, audit=writer)
    station = Station(station_id="st-matrix", signer=signer, store=store, writer=writer,
                      provisioner=provisioner, line=Line(provisioner))
    try:
        pool = [devices.add(VirtualDevice(key_delay=0.01)) for _ in range(6)]
        results = _run(station, pool, wo)
        failed = [r for r in results if not r.ok]
        assert failed, "six units fitted in three pages: the simulated disk was not full"
        assert any(r.error_code == "audit_write_failed" for r in failed)
        for r in failed:
            text = (r.message or "").lower()
            assert "cannot be written" in text or "issuing has stopped" in text, text
        assert provisioner.issuing_stopped and "disk full" in provisioner.issuing_stopped
        late = _run(station, [devices.add(VirtualDevice(key_delay=0.01))], wo)
        assert not late[0].ok and late[0].error_code == "audit_write_failed"
    finally:
        writer.close()
        store.close()
    _nothing_lost(database, devices)


# -- work orders, roles, configuration -------------------------------------------------------------

def test_wo_quantity_exhausted(signer: HsmSigner, tmp_path: Path, devices: Devices) -> None:
    """case wo-quantity-exhausted: 5 units racing for a quantity of 3: exactly 3 provisioned, the others
    refused before the HSM is asked, with the work order's sentence."""
    database = tmp_path / "audit.db"
    wo = _work_order(quantity=3)
    with open_station(station_id="st-matrix", signer=signer, database=database, work_order=wo) as station:
        pool = [devices.add(VirtualDevice(key_delay=0.01)) for _ in range(5)]
        results = _run(station, pool, wo)
        assert sum(r.ok for r in results) == 3
        for r in results:
            if not r.ok:
                assert r.error_code == "quota_exhausted" and "no units left" in (r.message or "")
                assert r.cert_serial is None or r.cert_der is None
        assert sum(d.certificate_der is not None for d in pool) == 3
    _nothing_lost(database, devices)


_GOOD_CONFIG: Final = """\
[station]
id = "line1"

[hsm]
module = "/usr/lib/softhsm/libsofthsm2.so"
token_label = "t"
key_label = "k"
pin_source = "env:STATION_HSM_PIN"
ca_chain = "/etc/station/chain.pem"

[database]
url = "/var/lib/station/audit.db"

[work_order]
number = "WO-1"
product = "p"
profile = "tls-client"
quantity = 10

[[slots]]
name = "1"
port = "/dev/ttyUSB0"
"""

CONFIG_CASES: Final = (
    ("config-unknown-key", ("quantity = 10", "quantity = 10\nquantiy = 5"), "work_order.quantiy", 19),
    ("config-wrong-type", ("quantity = 10", 'quantity = "ten"'), "work_order.quantity", 18),
    ("config-negative-quantity", ("quantity = 10", "quantity = -1"), "work_order.quantity", 18),
    ("config-missing-field", ('token_label = "t"\n', ""), "hsm", 4),
    ("config-bad-pin-source", ('pin_source = "env:STATION_HSM_PIN"', 'pin_source = "1234"'),
     "hsm.pin_source", 8),
    ("config-bad-baud", ('port = "/dev/ttyUSB0"', 'port = "/dev/ttyUSB0"\nbaud = 0'), "slots.baud", 23),
)


@pytest.mark.parametrize(("case_id", "edit", "key", "line"), CONFIG_CASES, ids=[c[0] for c in CONFIG_CASES])
def test_config_bad_values(case_id: str, edit: tuple[str, str], key: str, line: int) -> None:
    parse_config(_GOOD_CONFIG, source="station.toml")  # the base is valid
    with pytest.raises(ConfigError) as err:
        parse_config(_GOOD_CONFIG.replace(*edit), source="station.toml")
    assert key in err.value.message and f"line {line}" in err.value.message, err.value.message


def test_config_bad_values_from_the_cli(tmp_path: Path) -> None:
    """case config-cli: ``station provision`` with a bad file: one plain line naming key and line, exit
    2, no traceback, and the station does not start."""
    bad = tmp_path / "station.toml"
    bad.write_text(_GOOD_CONFIG.replace("quantity = 10", 'quantity = "ten"'))
    proc = subprocess.run([sys.executable, "-m", "station.cli", "provision", "--config", str(bad)],
                          capture_output=True, text=True, timeout=60,
                          cwd=Path(__file__).resolve().parents[2], env=dict(os.environ))
    assert proc.returncode == 2, proc.stderr
    assert "work_order.quantity" in proc.stderr and "line 18" in proc.stderr
    assert "Traceback" not in proc.stderr and len(proc.stderr.strip().splitlines()) == 1
