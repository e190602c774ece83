"""The quality engineer's filter: one frozen value shared by the audit view and ``station audit``.

The GUI's filter bar and the CLI's ``--work-order/--outcome/--since/...`` options both build a
:class:`UnitFilter`; :mod:`station.reports.query` turns it into one SQL ``WHERE`` clause, so the view,
the exports and the reports can never disagree about which units a filter means.
"""

from __future__ import annotations

from dataclasses import dataclass, fields, replace
from datetime import UTC, datetime
from typing import Final

OUTCOMES: Final = ("ok", "failed", "in_flight")
"""``ok``: provisioned; ``failed``: failed or revoked; ``in_flight``: started, intent or issued."""


def as_utc(value: datetime) -> datetime:
    """Naive datetimes are UTC (as stored); aware ones are converted."""
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


@dataclass(frozen=True, kw_only=True)
class UnitFilter:
    """Which units to show or export. ``None`` (or empty) means "any"; all given terms must hold.

    ``since`` is inclusive and ``until`` exclusive, on the unit's start time. ``search`` matches the
    start of a unit serial, hardware id, certificate serial (hex, ``0x``/colons allowed) or a
    certificate or public-key SHA-256 fingerprint.
    """

    since: datetime | None = None
    until: datetime | None = None
    work_order: str | None = None
    product: str | None = None
    station: str | None = None
    operator: str | None = None
    outcome: str | None = None
    failed_step: str | None = None
    error_code: str | None = None
    search: str | None = None

    def __post_init__(self) -> None:
        for f in fields(self):
            value = getattr(self, f.name)
            if isinstance(value, str) and not value.strip():
                object.__setattr__(self, f.name, None)
            elif isinstance(value, str):
                object.__setattr__(self, f.name, value.strip())
        if self.outcome is not None and self.outcome not in OUTCOMES:
            raise ValueError(f"outcome must be one of {OUTCOMES}, not {self.outcome!r}")
        for name in ("since", "until"):
            value = getattr(self, name)
            if value is not None:
                object.__setattr__(self, name, as_utc(value))
        if self.since and self.until and self.until <= self.since:
            raise ValueError("'until' must be after 'since'")

    def with_(self, **changes: object) -> UnitFilter:
        """A copy with some terms changed (the view edits one term at a time)."""
        return replace(self, **changes)  # type: ignore[arg-type]

    @property
    def active_terms(self) -> dict[str, str]:
        """The terms that are set, as text: for report headers and status lines."""
        out: dict[str, str] = {}
        for f in fields(self):
            value = getattr(self, f.name)
            if value is not None:
                out[f.name] = value.isoformat() if isinstance(value, datetime) else str(value)
        return out

    def describe(self) -> str:
        terms = self.active_terms
        return ", ".join(f"{k}={v}" for k, v in terms.items()) if terms else "all units"
