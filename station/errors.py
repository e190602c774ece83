"""The station's one error tree, and the technician's sentence for each error.

::

    StationError                      every failure the station reports carries context
    ├── DeviceError                   the unit on the fixture (slot, port)
    │   ├── DeviceDisconnected        port vanished / unplugged
    │   ├── DeviceTimeout             device stopped answering
    │   ├── DeviceLinkError           garbled or malformed frames beyond the retry budget
    │   ├── DeviceRefused             device answered ERROR (code, text)
    │   └── DeviceMisbehaved          device answered, but wrongly (wrong identity, bad proof, ...)
    ├── CsrRejected                   a pre-issuance check refused the CSR (reason code)
    ├── IdentityConflict              key, hardware id or serial already issued
    ├── QuotaExhausted                work order has no units left
    ├── SigningFailed                 HSM refused or produced a certificate that fails verification
    ├── AuditWriteFailed              the audit log cannot be written: station stops issuing
    ├── AuditIntegrityError           the audit chain or database failed verification
    └── ConfigError                   bad configuration (names the key and line)

Lower layers (pyserial, PKCS#11, SQLAlchemy) are translated into this tree in exactly one place each:
the serial transport, the signer adapter, the audit store. The technician's sentence comes from
:func:`technician_message`, one table, not strings scattered through the code.
"""

from __future__ import annotations

from typing import Any


class StationError(Exception):
    """Base of every error the station reports. ``code`` is stable and recorded in the audit log."""

    code: str = "station_error"

    def __init__(self, message: str, *, code: str | None = None, **context: Any) -> None:
        super().__init__(message)
        self.message = message
        if code is not None:
            self.code = code
        self.context: dict[str, Any] = {k: v for k, v in context.items() if v is not None}

    def __str__(self) -> str:
        if not self.context:
            return self.message
        ctx = ", ".join(f"{k}={v}" for k, v in sorted(self.context.items()))
        return f"{self.message} ({ctx})"


class DeviceError(StationError):
    code = "device_error"


class DeviceDisconnected(DeviceError):
    code = "device_disconnected"


class DeviceTimeout(DeviceError):
    code = "device_timeout"


class DeviceLinkError(DeviceError):
    code = "bad_link"


class DeviceRefused(DeviceError):
    code = "device_refused"


class DeviceMisbehaved(DeviceError):
    code = "device_misbehaved"


class CsrRejected(StationError):
    code = "csr_rejected"


class IdentityConflict(StationError):
    code = "identity_conflict"


class QuotaExhausted(StationError):
    code = "quota_exhausted"


class SigningFailed(StationError):
    code = "signing_failed"


class AuditWriteFailed(StationError):
    code = "audit_write_failed"


class AuditIntegrityError(StationError):
    code = "audit_integrity"


class ConfigError(StationError):
    code = "config_error"


_STEP_WORDS: dict[str, str] = {
    "connect": "connecting",
    "identify": "identification",
    "check": "the identity check",
    "commission": "writing the network settings",
    "generate_key": "key generation",
    "get_csr": "reading the certificate request",
    "pre_issuance": "checking the certificate request",
    "sign": "signing",
    "record_issuance": "recording the certificate",
    "write_cert": "writing the certificate",
    "prove_possession": "the key check",
    "lock": "locking",
    "complete": "finishing",
}

# (error class, sentence template, what to do next). First match wins, so subclasses come first.
_MESSAGES: tuple[tuple[type[StationError], str, str], ...] = (
    (DeviceDisconnected, "Device disconnected during {step}.", "Reseat the device and retry."),
    (DeviceTimeout, "Device stopped answering during {step}.", "Reseat the device and retry."),
    (DeviceLinkError, "Too many garbled messages from the device during {step}.",
     "Check the cable and fixture contacts, then retry."),
    (DeviceRefused, "The device refused {step}: {detail}.",
     "Set the device aside for analysis."),
    (DeviceMisbehaved, "The device gave a wrong answer during {step}: {detail}.",
     "Set the device aside for analysis."),
    (CsrRejected, "The device's certificate request was refused: {detail}.",
     "Set the device aside for analysis."),
    (IdentityConflict, "This device's identity is already in use: {detail}.",
     "Set the device aside and call quality."),
    (QuotaExhausted, "The work order has no units left.",
     "Stop and ask a supervisor for a new work order."),
    (SigningFailed, "The signing module failed: {detail}.", "Stop the line and call an admin."),
    (AuditWriteFailed, "The production log cannot be written: {detail}. Issuing has stopped.",
     "Stop the line and call an admin."),
    (AuditIntegrityError, "The production log failed its integrity check: {detail}.",
     "Stop the line and call quality."),
    (ConfigError, "The station configuration is invalid: {detail}.", "Call an admin."),
    (StationError, "Provisioning failed during {step}: {detail}.", "Retry; if it fails again, "
     "set the device aside."),
)


TRANSIENT_CODES: frozenset[str] = frozenset({"device_timeout", "bad_link", "device_rebooted"})
"""Link failures worth one more try on the same unit (HMI.md: parallel runs fail more than single
ones): a lost answer, garbled frames, a device that restarted. An unplugged device, a refusal or a
wrong answer is not retried: a person has to look."""

AUTO_RETRIES: int = 2
"""How many times a transient failure is requeued automatically, each attempt logged."""

CRITICAL_CODES: frozenset[str] = frozenset({"pop_failed", "csr_key_mismatch"})
"""Device failures that make the unit's identity suspect (a clone, a key it cannot prove)."""


_CODE_HINTS: dict[str, str] = {
    "identity_changed": "Put back the unit that failed, or acknowledge the failure to start a new one.",
}
"""What to do next for codes whose class's general advice does not fit."""

_CRITICAL_HINTS: dict[str, str] = {
    "pop_failed": "Set the device aside and call quality: its certificate will be revoked.",
    "csr_key_mismatch": "Set the device aside and call quality: it asked for a certificate for a "
                        "key it did not make.",
}


def is_critical(error: StationError) -> bool:
    """A failure a person must act on at once (the tile flashes until acknowledged, HMI.md): the
    station cannot issue (HSM, audit log), or the unit's identity is suspect."""
    return isinstance(error, (SigningFailed, AuditWriteFailed, AuditIntegrityError, IdentityConflict)) \
        or error.code in CRITICAL_CODES


def technician_message(error: StationError, step: str | None = None) -> tuple[str, str]:
    """Return (what happened, what to do next) in words a line technician understands."""
    step_name = step or str(error.context.get("step", ""))
    step_words = _STEP_WORDS.get(step_name, step_name.replace("_", " ") or "provisioning")
    for cls, template, hint in _MESSAGES:
        if isinstance(error, cls):
            hint = _CRITICAL_HINTS.get(error.code, _CODE_HINTS.get(error.code, hint))
            return template.format(step=step_words, detail=error.message), hint
    raise AssertionError("unreachable: StationError is the last row")  # pragma: no cover
