"""What a slot tile shows, as plain values: the state machine's words, no Qt.

The workflow owns the transitions (HMI.md "Slot states, explicit"); this module only names the states
the screen can show and carries one slot's snapshot from the controller to the model.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, replace


class SlotState(enum.StrEnum):
    """What the technician sees on a tile. Every state has a word and an icon, never colour alone."""

    WAITING = "waiting"
    """No device on the slot's port: insert one."""
    IDLE = "idle"
    """A device is present (or the port cannot tell): ready to start."""
    RUNNING = "running"
    PASS = "pass"
    FAIL = "fail"
    BLOCKED = "blocked"
    """Cannot start: nobody signed in, no work order, or the work order is used up."""


@dataclass(frozen=True, kw_only=True)
class SlotView:
    """One slot's snapshot, replaced (never mutated) on every change."""

    name: str
    port: str
    state: SlotState = SlotState.IDLE
    step: str = ""
    step_no: int = 0
    step_total: int = 0
    unit_serial: str = ""
    hardware_id: str = ""
    label: str = ""
    """The unit label scanned for this slot, if any."""
    message: str = ""
    hint: str = ""
    error_code: str = ""
    critical: bool = False
    """A FAIL a person must act on at once: the tile flashes until acknowledged."""
    attempts: int = 0
    started: float | None = None
    """``time.monotonic()`` when the current attempt started."""
    elapsed_s: float = 0.0
    settled: bool = False
    """A PASS that has been on screen long enough to settle to neutral (HMI.md)."""
    unit_id: int | None = None

    def with_(self, **changes: object) -> SlotView:
        return replace(self, **changes)  # type: ignore[arg-type]
