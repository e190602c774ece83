"""One unit's provisioning, as an explicit sequence of named, timed, recorded steps.

Theory of operation
-------------------
The workflow talks to three ports (:mod:`station.ports`): a :class:`DeviceLink` for the unit in the
slot, a :class:`Signer` for the issuing CA, and an :class:`AuditStore` for the production log. It never
imports pyserial, PKCS#11 or SQLAlchemy, so it runs the same against in-memory fakes and the real parts.

The safety rule is the order (RELIABILITY.md, after Let's Encrypt's Boulder)::

    identify -> check -> commission -> generate key -> get CSR -> pre-issuance checks
      -> record intent (durable: serial, TBS hash, key fingerprint, quota) -> HSM sign -> verify
      -> record issuance (durable: certificate DER) -> write certificate -> proof of possession
      -> lock -> record completion

A certificate is committed to the audit store before a byte of it goes to the device, so a crash at
any point leaves no certificate on a device that the log lacks. A unit that fails after issuance keeps
its ``issued`` status: when the same hardware id comes back, the workflow re-sends the same certificate
(after the device proves it still holds the key) instead of signing a second one.

Every failure ends as a recorded outcome: the step, the error's code and the technician's sentence
from :func:`station.errors.technician_message`. An :class:`AuditWriteFailed` additionally stops the
provisioner from issuing (fail closed) until a new one is built by an operator.
"""

from __future__ import annotations

import hashlib
import logging
import secrets
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, ed25519

from station.domain import STEP_ORDER, Outcome, Step, StepTiming, UnitRecord, WorkOrder
from station.errors import (
    AuditWriteFailed,
    CsrRejected,
    DeviceMisbehaved,
    IdentityConflict,
    QuotaExhausted,
    StationError,
    is_critical,
    technician_message,
)
from station.ports import (
    AuditStore,
    ConfigValue,
    DeviceInfo,
    DeviceLink,
    KeyType,
    Lifecycle,
    PreparedCertificate,
    Signer,
)

__all__ = [
    "ProgressCallback",
    "Provisioner",
    "SlotJob",
    "UnitResult",
    "challenge_message",
]

log = logging.getLogger(__name__)

ProgressCallback = Callable[[str, Step, int, int], None]
"""Called as ``(slot, step, step_number, step_count)`` when a step starts."""


def challenge_message(nonce: bytes) -> bytes:
    """The bytes a device signs to prove possession (domain-separated, see PROTOCOL.md)."""
    from firmware_protocol import challenge_message as _protocol_challenge_message

    return _protocol_challenge_message(nonce)


@dataclass(frozen=True, kw_only=True)
class SlotJob:
    """What a slot is asked to do: provision the unit on its port under this work order."""

    station: str
    slot: str
    port: str
    operator: str
    work_order: WorkOrder
    expected_hardware_id: str | None = None
    """A retry of a failed attempt: the unit in the slot must still be this one (HMI.md: a retry
    never picks a new target), else the attempt stops at identification (``identity_changed``)."""


@dataclass(frozen=True, kw_only=True)
class UnitResult:
    """The outcome of one provisioning attempt, as the technician's screen and the summary show it."""

    slot: str
    ok: bool
    unit_id: int | None = None
    hardware_id: str | None = None
    unit_serial: str | None = None
    cert_serial: str | None = None
    cert_der: bytes | None = None
    failed_step: Step | None = None
    error_code: str | None = None
    message: str | None = None
    hint: str | None = None
    resumed: bool = False
    critical: bool = False
    """The failure needs a person at once (:func:`station.errors.is_critical`)."""
    timings: tuple[StepTiming, ...] = field(default_factory=tuple)

    @property
    def total_ms(self) -> float:
        return sum(t.duration_ms for t in self.timings)


class _Attempt:
    """Mutable state of one running attempt; private to the workflow."""

    def __init__(self, job: SlotJob) -> None:
        self.job = job
        self.unit_id: int | None = None
        self.device: DeviceInfo | None = None
        self.unit_serial: str | None = None
        self.public_key_sha256: str | None = None
        self.prepared: PreparedCertificate | None = None
        self.cert_der: bytes | None = None
        self.issued = False
        self.resumed = False
        self.current_step = Step.CONNECT
        self.failed_ms = 0.0
        self.timings: list[StepTiming] = []
        self.pending: list[StepTiming] = []
        """Steps that ran before the unit had an audit row (connect, identify): recorded on start."""


class Provisioner:
    """Runs the provisioning sequence for one unit at a time per slot; shared by all slots.

    Thread-safe: each slot's worker calls :meth:`provision` from its own thread. The signer and audit
    store it holds are themselves thread-safe.
    """

    def __init__(self, *, signer: Signer, audit: AuditStore, lock_devices: bool = True) -> None:
        self._signer = signer
        self._audit = audit
        self._lock_devices = lock_devices
        self._stopped_reason: str | None = None
        self._stop_lock = threading.Lock()

    @property
    def issuing_stopped(self) -> str | None:
        """Why issuing stopped (fail closed after an audit write error), or None while healthy."""
        return self._stopped_reason

    def _stop_issuing(self, reason: str) -> None:
        with self._stop_lock:
            if self._stopped_reason is None:
                self._stopped_reason = reason
                log.error("issuing stopped: %s", reason)

    def provision(
        self,
        job: SlotJob,
        open_link: Callable[[], DeviceLink],
        on_progress: ProgressCallback | None = None,
    ) -> UnitResult:
        """Provision the unit in ``job.slot``; never raises for a device, CSR, HSM or audit failure."""
        attempt = _Attempt(job)
        link: DeviceLink | None = None
        try:
            if self._stopped_reason is not None:
                raise AuditWriteFailed(self._stopped_reason, slot=job.slot)
            with self._step(attempt, Step.CONNECT, on_progress):
                link = open_link()
            self._run(attempt, link, on_progress)
            flush = getattr(self._audit, "flush", None)
            if callable(flush):  # events the audit writer took without waiting are durable too
                flush()
        except StationError as error:
            return self._failed(attempt, error, attempt.current_step)
        except Exception as error:  # a bug must still end as a recorded failure, never a traceback
            log.exception("unexpected error in slot %s", job.slot)
            wrapped = StationError(f"internal error: {type(error).__name__}", code="internal_error")
            return self._failed(attempt, wrapped, attempt.current_step)
        finally:
            if link is not None:
                try:
                    link.close()
                except Exception:  # closing a vanished port must not mask the outcome
                    log.debug("closing link for slot %s failed", job.slot, exc_info=True)
        return self._result(attempt)

    # -- the sequence ------------------------------------------------------------------------------

    def _run(self, attempt: _Attempt, link: DeviceLink, on_progress: ProgressCallback | None) -> None:
        job = attempt.job
        audit = self._audit
        signer = self._signer

        with self._step(attempt, Step.IDENTIFY, on_progress) as detail:
            device = link.hello()
            attempt.device = device
            detail.update(hardware_id=device.hardware_id, model=device.model,
                          firmware=device.firmware_version, lifecycle=str(device.lifecycle))
            expected = job.expected_hardware_id
            if expected and device.hardware_id != expected:
                raise DeviceMisbehaved(
                    f"a different unit is in the slot (hardware id {device.hardware_id}, the retry "
                    f"is for {expected})", code="identity_changed", slot=job.slot)

        # An issued-but-not-installed certificate for this hardware id is re-sent, never re-signed.
        resumable = audit.issued_certificate_for(device.hardware_id)
        if resumable is not None and (
            resumable.cert_der is None
            or device.lifecycle not in (Lifecycle.KEYED, Lifecycle.PROVISIONED, Lifecycle.LOCKED)
        ):
            # The device lost the key the certificate is for (it was reset, or rebooted without
            # persisting it): that certificate can never be installed. Settle it so the unit starts
            # afresh; its key and serial stay reserved in the log.
            audit.fail_unit(resumable.unit_id, Step.IDENTIFY, "certificate_orphaned",
                            "the device lost its key before its certificate was installed; "
                            "revoke the certificate")
            resumable = None
        if resumable is not None:
            attempt.unit_id = audit.resume_unit(resumable.unit_id, slot=job.slot,
                                                operator=job.operator).unit_id
            self._flush_pending(attempt)
            self._resume(attempt, link, resumable, on_progress)
            return

        # The unit gets its audit row as soon as we know who it is; steps before are flushed into it.
        attempt.unit_id = audit.start_unit(
            work_order=job.work_order, station=job.station, slot=job.slot,
            operator=job.operator, hardware_id=device.hardware_id,
        )
        self._flush_pending(attempt)

        with self._step(attempt, Step.CHECK, on_progress):
            if device.lifecycle is Lifecycle.LOCKED:
                raise DeviceMisbehaved("the device is already locked", code="device_locked",
                                       slot=job.slot)
            if device.lifecycle is Lifecycle.PROVISIONED:
                raise DeviceMisbehaved("the device already holds a certificate",
                                       code="device_already_provisioned", slot=job.slot)

        with self._step(attempt, Step.COMMISSION, on_progress) as detail:
            values = [ConfigValue(key=k, value=v, secret=s) for k, v, s in job.work_order.commissioning]
            if values:
                link.set_config(values)
            detail.update({v.key: ("<redacted>" if v.secret else v.value) for v in values})

        with self._step(attempt, Step.GENERATE_KEY, on_progress) as detail:
            key_type = self._choose_key_type(device, job.work_order)
            public_key = link.generate_key(key_type)
            attempt.public_key_sha256 = hashlib.sha256(public_key).hexdigest()
            detail.update(key_type=str(key_type), public_key_sha256=attempt.public_key_sha256)

        with self._step(attempt, Step.GET_CSR, on_progress) as detail:
            attempt.unit_serial = audit.next_unit_serial(attempt.unit_id)
            subject = signer.subject_for(device=device, work_order=job.work_order,
                                         unit_serial=attempt.unit_serial)
            nonce = secrets.token_bytes(16)
            csr_der = link.get_csr(subject, nonce)
            detail.update(unit_serial=attempt.unit_serial, csr_bytes=str(len(csr_der)))

        with self._step(attempt, Step.PRE_ISSUANCE, on_progress) as detail:
            prepared = signer.prepare(
                csr_der=csr_der, nonce=nonce, device=device, work_order=job.work_order,
                unit_serial=attempt.unit_serial, is_key_known=audit.is_key_known,
            )
            if prepared.public_key_sha256 != attempt.public_key_sha256:
                raise CsrRejected("the request is for a different key than the device generated",
                                  code="csr_key_mismatch", slot=job.slot)
            attempt.prepared = prepared
            detail.update(cert_serial=format(prepared.serial, "x"), tbs_sha256=prepared.tbs_sha256,
                          profile=prepared.profile)

        with self._step(attempt, Step.SIGN, on_progress):
            if self._stopped_reason is not None:
                raise AuditWriteFailed(self._stopped_reason, slot=job.slot)
            audit.record_intent(attempt.unit_id, prepared)  # durable before the HSM is asked
            cert_der = signer.sign(prepared)

        with self._step(attempt, Step.RECORD_ISSUANCE, on_progress):
            audit.record_issued(attempt.unit_id, cert_der)  # durable before the device sees it
            attempt.cert_der = cert_der
            attempt.issued = True

        cert = x509.load_der_x509_certificate(cert_der)
        with self._step(attempt, Step.WRITE_CERT, on_progress):
            link.put_cert(cert_der, signer.chain())
        with self._step(attempt, Step.PROVE_POSSESSION, on_progress):
            self._prove_possession(link, cert)
        self._lock_and_complete(attempt, link, on_progress)

    def _resume(self, attempt: _Attempt, link: DeviceLink, unit: UnitRecord,
                on_progress: ProgressCallback | None) -> None:
        """Re-send an issued certificate after the device proves it still holds the key."""
        assert unit.cert_der is not None
        attempt.resumed = True
        attempt.issued = True
        attempt.cert_der = unit.cert_der
        attempt.unit_serial = unit.serial_number
        cert = x509.load_der_x509_certificate(unit.cert_der)
        attempt.prepared = PreparedCertificate(
            serial=cert.serial_number, tbs_der=cert.tbs_certificate_bytes,
            tbs_sha256=hashlib.sha256(cert.tbs_certificate_bytes).hexdigest(),
            public_key_sha256=unit.public_key_sha256 or "",
            profile=unit.profile or attempt.job.work_order.profile,
            subject=cert.subject.rfc4514_string(), not_after=cert.not_valid_after_utc.isoformat(),
        )
        with self._step(attempt, Step.PROVE_POSSESSION, on_progress) as detail:
            self._prove_possession(link, cert)
            detail.update(resumed=str(unit.unit_id))
        if attempt.device is not None and attempt.device.lifecycle is Lifecycle.LOCKED:
            # Locked after the certificate went in, before the completion was recorded (a crash or a
            # lost link). A device only locks once it accepted a certificate for its key, and it has
            # just proved it holds this certificate's key (unique in the log): nothing to re-send.
            self._lock_and_complete(attempt, link, on_progress)
            return
        with self._step(attempt, Step.WRITE_CERT, on_progress):
            link.put_cert(unit.cert_der, self._signer.chain())
        self._lock_and_complete(attempt, link, on_progress)

    def _lock_and_complete(self, attempt: _Attempt, link: DeviceLink,
                           on_progress: ProgressCallback | None) -> None:
        assert attempt.unit_id is not None
        if self._lock_devices:
            with self._step(attempt, Step.LOCK, on_progress):
                link.lock()
                # A link whose lock() checks the LOCK reply's lifecycle (the serial transport) has
                # already raised lock_not_held; any other is read back with a STATUS round trip.
                confirmed = getattr(link, "lock_confirms_lifecycle", False) is True
                if not confirmed and link.status() is not Lifecycle.LOCKED:
                    raise DeviceMisbehaved("the lock did not hold", code="lock_not_held",
                                           slot=attempt.job.slot)
        # The ``completed`` event that complete_unit commits is this step's durable record; a
        # separate step event after it would cost the unit one more commit.
        with self._step(attempt, Step.COMPLETE, on_progress, record=False):
            self._audit.complete_unit(attempt.unit_id)

    # -- helpers -----------------------------------------------------------------------------------

    def _choose_key_type(self, device: DeviceInfo, work_order: WorkOrder) -> KeyType:
        for key_type in self._signer.key_types(work_order):
            if key_type in device.key_types:
                return key_type
        raise DeviceMisbehaved(
            f"the device offers no key type the profile allows "
            f"(device: {', '.join(device.key_types) or 'none'})",
            code="no_common_key_type",
        )

    @staticmethod
    def _prove_possession(link: DeviceLink, cert: x509.Certificate) -> None:
        nonce = secrets.token_bytes(32)
        signature = link.challenge(nonce)
        message = challenge_message(nonce)
        public_key = cert.public_key()
        try:
            if isinstance(public_key, ec.EllipticCurvePublicKey):
                public_key.verify(signature, message, ec.ECDSA(hashes.SHA256()))
            elif isinstance(public_key, ed25519.Ed25519PublicKey):
                public_key.verify(signature, message)
            else:
                raise DeviceMisbehaved("the certificate's key type cannot answer a challenge",
                                       code="pop_unsupported_key")
        except (InvalidSignature, ValueError) as exc:
            raise DeviceMisbehaved("the device could not prove it holds the certified key",
                                   code="pop_failed") from exc

    @contextmanager
    def _step(self, attempt: _Attempt, step: Step, on_progress: ProgressCallback | None, *,
              record: bool = True) -> Iterator[dict[str, str]]:
        """Time one step and record it; a failing step is recorded by :meth:`_failed`."""
        if on_progress is not None:
            on_progress(attempt.job.slot, step, STEP_ORDER.index(step) + 1, len(STEP_ORDER))
        attempt.current_step = step
        detail: dict[str, str] = {}
        started = time.perf_counter()
        try:
            yield detail
        except BaseException:
            attempt.failed_ms = (time.perf_counter() - started) * 1000
            raise
        timing = StepTiming(step=step, outcome=Outcome.OK,
                            duration_ms=(time.perf_counter() - started) * 1000, detail=detail)
        attempt.timings.append(timing)
        if not record:
            return
        if attempt.unit_id is None:
            attempt.pending.append(timing)
        else:
            self._record(attempt, timing)

    def _record(self, attempt: _Attempt, timing: StepTiming, *, error: StationError | None = None,
                message: str | None = None) -> None:
        assert attempt.unit_id is not None
        try:
            self._audit.record_step(
                attempt.unit_id, timing.step, ok=timing.outcome is Outcome.OK,
                duration_ms=timing.duration_ms, detail=timing.detail or None,
                error_code=error.code if error else None, error_message=message,
            )
        except AuditWriteFailed as exc:
            self._stop_issuing(exc.message)
            raise

    def _flush_pending(self, attempt: _Attempt) -> None:
        pending, attempt.pending = attempt.pending, []
        for timing in pending:
            self._record(attempt, timing)


    def _failed(self, attempt: _Attempt, error: StationError, step: Step) -> UnitResult:
        job = attempt.job
        error.context.setdefault("slot", job.slot)
        error.context.setdefault("step", str(step))
        message, hint = technician_message(error, str(step))
        log.warning("slot %s: %s failed: %s [%s]", job.slot, step, error, error.code)
        if isinstance(error, AuditWriteFailed):
            self._stop_issuing(error.message)
        timing = StepTiming(step=step, outcome=Outcome.FAILED,
                            duration_ms=attempt.failed_ms,
                            detail={"error_code": error.code})
        attempt.timings.append(timing)
        refused_at_start = attempt.unit_id is None and isinstance(error, (IdentityConflict, QuotaExhausted))
        if self._stopped_reason is None and not refused_at_start:  # the store logs its own refusals
            try:
                if attempt.unit_id is None:
                    # Failed before identification finished: still a recorded attempt.
                    attempt.unit_id = self._audit.start_unit(
                        work_order=job.work_order, station=job.station, slot=job.slot,
                        operator=job.operator,
                        hardware_id=attempt.device.hardware_id if attempt.device else "",
                    )
                    self._flush_pending(attempt)
                self._record(attempt, timing, error=error, message=message)
                if not attempt.issued or error.code == "pop_failed":
                    # Issued-but-not-installed stays ``issued``: the same device gets the same
                    # certificate later. A failed proof of possession marks it for revocation.
                    self._audit.fail_unit(attempt.unit_id, step, error.code, message)
            except StationError as audit_error:
                log.error("slot %s: could not record the failure: %s", job.slot, audit_error)
                if isinstance(audit_error, AuditWriteFailed):
                    self._stop_issuing(audit_error.message)
        return self._result(attempt, failed_step=step, error_code=error.code, message=message,
                            hint=hint, critical=is_critical(error))

    @staticmethod
    def _result(attempt: _Attempt, *, failed_step: Step | None = None, error_code: str | None = None,
                message: str | None = None, hint: str | None = None,
                critical: bool = False) -> UnitResult:
        return UnitResult(
            slot=attempt.job.slot,
            ok=failed_step is None,
            unit_id=attempt.unit_id,
            hardware_id=attempt.device.hardware_id if attempt.device else None,
            unit_serial=attempt.unit_serial,
            cert_serial=format(attempt.prepared.serial, "x") if attempt.prepared else None,
            cert_der=attempt.cert_der,
            failed_step=failed_step,
            error_code=error_code,
            message=message,
            hint=hint,
            resumed=attempt.resumed,
            critical=critical,
            timings=tuple(attempt.timings),
        )

