"""What the factory floor talks about: work orders, units, steps, outcomes.

Plain frozen values shared by the workflow, the audit store and the user interfaces. Nothing here
knows about serial ports, PKCS#11 or SQL.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from datetime import datetime


class Step(enum.StrEnum):
    """The named steps of one unit's provisioning, in the order the workflow runs them."""

    CONNECT = "connect"
    IDENTIFY = "identify"
    CHECK = "check"
    COMMISSION = "commission"
    GENERATE_KEY = "generate_key"
    GET_CSR = "get_csr"
    PRE_ISSUANCE = "pre_issuance"
    SIGN = "sign"
    RECORD_ISSUANCE = "record_issuance"
    WRITE_CERT = "write_cert"
    PROVE_POSSESSION = "prove_possession"
    LOCK = "lock"
    COMPLETE = "complete"


STEP_ORDER: tuple[Step, ...] = tuple(Step)
"""Steps in execution order; the GUI shows "step n of N" from this."""


class UnitStatus(enum.StrEnum):
    """Where a unit stands in the audit log.

    ``IN_PROGRESS`` -> ``INTENT`` (serial reserved, about to sign) -> ``ISSUED`` (certificate committed,
    maybe not yet on the device) -> ``PROVISIONED``. ``FAILED`` may follow any state. A unit found in
    ``INTENT`` or ``ISSUED`` by a new run was interrupted (crash, power loss) and is shown as such.
    """

    IN_PROGRESS = "in_progress"
    INTENT = "intent"
    ISSUED = "issued"
    PROVISIONED = "provisioned"
    FAILED = "failed"
    REVOKED = "revoked"


class Outcome(enum.StrEnum):
    OK = "ok"
    FAILED = "failed"


@dataclass(frozen=True, kw_only=True)
class WorkOrder:
    """A brand owner's authorisation to provision ``quantity`` units of one product."""

    number: str
    product: str
    profile: str
    quantity: int
    serial_format: str = "{product}-{seq:06d}"
    commissioning: tuple[tuple[str, str, bool], ...] = ()
    """Network values written to each unit: (key, value, is_secret)."""

    def __post_init__(self) -> None:
        if not self.number:
            raise ValueError("work order number must not be empty")
        if self.quantity < 0:
            raise ValueError("work order quantity must be >= 0")


@dataclass(frozen=True, kw_only=True)
class UnitRecord:
    """A unit as the audit store knows it (one provisioning attempt of one device)."""

    unit_id: int
    work_order: str
    station: str
    slot: str
    operator: str
    hardware_id: str
    serial_number: str | None
    status: UnitStatus
    started_at: datetime
    finished_at: datetime | None = None
    public_key_sha256: str | None = None
    cert_serial: str | None = None
    cert_der: bytes | None = None
    profile: str | None = None
    failed_step: Step | None = None
    error_code: str | None = None
    error_message: str | None = None


@dataclass(frozen=True, kw_only=True)
class StepTiming:
    step: Step
    outcome: Outcome
    duration_ms: float
    detail: dict[str, str] = field(default_factory=dict)
