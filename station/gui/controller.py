"""The line as the window sees it: work order, slots, results and counts, and starting attempts.

All provisioning decisions the screen needs (may this slot start, what does a result mean for the
tile, how many units are done) live here, not in widgets. The controller writes the models; a
:class:`SlotThread` per slot runs the workflow off the GUI thread.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime

from PySide6.QtCore import QObject, QTimer, Signal

from station.app import Station
from station.audit import WorkOrderCounts
from station.config import SlotConfig
from station.domain import STEP_ORDER, UnitStatus, WorkOrder
from station.errors import AUTO_RETRIES, TRANSIENT_CODES, StationError
from station.gui.models import ResultRow, ResultsModel, SlotListModel, TimelineModel, step_words
from station.gui.session import Session
from station.gui.slots import SlotState, SlotView
from station.gui.theme import PASS_SETTLE_S
from station.gui.worker import SlotThread
from station.roles import Action
from station.transport import LinkPolicy
from station.workflow import UnitResult

log = logging.getLogger(__name__)

_RETRY_DELAY_MS = 500
"""A moment before a transient failure is tried again (the technician sees why first)."""


@dataclass(frozen=True, kw_only=True)
class BannerInfo:
    """What the banner shows; ``None`` fields read as "none yet"."""

    work_order: WorkOrder | None
    counts: WorkOrderCounts | None
    passed_today: int
    failed_today: int
    operator: str | None
    role: str | None

    @property
    def yield_today(self) -> float | None:
        total = self.passed_today + self.failed_today
        return None if total == 0 else self.passed_today / total


class LineController(QObject):
    """Owns the slot workers and the models; the window calls its methods and shows its models."""

    banner_changed = Signal()
    notice = Signal(str, str)
    """(sentence, level) where level is ``info``, ``attention`` or ``alarm``."""
    slot_flash = Signal(int)
    """A scan went to this slot's tile (the tile flashes once)."""
    result_added = Signal(object)
    """The :class:`UnitResult` just finished (tests and the demo wait on this)."""

    def __init__(self, station: Station, slots: Sequence[SlotConfig], session: Session, *,
                 work_orders: Mapping[str, WorkOrder], policy: LinkPolicy | None = None,
                 port_present: Callable[[str], bool] = os.path.exists,
                 parent: QObject | None = None) -> None:
        super().__init__(parent)
        self.station = station
        self.session = session
        self.work_orders = dict(work_orders)
        self.work_order: WorkOrder | None = None
        self.counts: WorkOrderCounts | None = None
        self._slots = list(slots)
        self._policy = policy
        self._port_present = port_present
        self._present = {s.name: port_present(s.port) for s in slots}
        self.auto_start = False
        self.slot_model = SlotListModel([self._initial_view(s) for s in slots], self)
        self.results_model = ResultsModel(parent=self)
        self.timeline_model = TimelineModel(self)
        self._threads: dict[str, SlotThread] = {}
        for s in slots:
            thread = SlotThread(s.name, station.provisioner, self)
            thread.worker.progress.connect(self._on_progress)
            thread.worker.finished.connect(self._on_finished)
            self._threads[s.name] = thread
        self.passed_today, self.failed_today = self._today_counts()
        self._tick = QTimer(self)
        self._tick.setInterval(500)
        self._tick.timeout.connect(self._on_tick)
        self._tick.start()
        session.changed.connect(self._refresh_blocked)
        session.changed.connect(self.banner_changed)
        self._refresh_blocked()

    # -- set-up ------------------------------------------------------------------------------

    def _initial_view(self, slot: SlotConfig) -> SlotView:
        state = SlotState.IDLE if self._present[slot.name] else SlotState.WAITING
        return SlotView(name=slot.name, port=slot.port, state=state)

    def _today_counts(self) -> tuple[int, int]:
        midnight = datetime.now().astimezone().replace(hour=0, minute=0, second=0, microsecond=0)
        passed = failed = 0
        try:
            for unit in self.station.store.list_units(since=midnight):
                if unit.status is UnitStatus.PROVISIONED:
                    passed += 1
                elif unit.status in (UnitStatus.FAILED, UnitStatus.REVOKED):
                    failed += 1
        except StationError:
            log.exception("could not count today's units")
        return passed, failed

    def banner(self) -> BannerInfo:
        op = self.session.operator
        return BannerInfo(work_order=self.work_order, counts=self.counts, passed_today=self.passed_today,
                          failed_today=self.failed_today, operator=op.name if op else None,
                          role=op.role if op else None)

    # -- scans -------------------------------------------------------------------------------

    def select_work_order(self, number: str) -> bool:
        """Make ``number`` the active work order if this station knows it and it has units left."""
        wo = self.work_orders.get(number)
        if wo is None:
            self.notice.emit(f"Work order {number} is not known at this station. "
                             "Check the traveller or call an admin.", "attention")
            return False
        try:
            self.station.store.create_work_order(wo)
        except StationError as exc:
            self.notice.emit(f"Work order {number} cannot be used: {exc.message}", "alarm")
            return False
        self.work_order = wo
        self._refresh_counts()
        self.notice.emit(f"Work order {number} active: {wo.product}, {wo.profile}.", "info")
        self._refresh_blocked()
        self.banner_changed.emit()
        return True

    def bind_label(self, label: str) -> int | None:
        """Bind a scanned unit label to the first free slot with a device and start it."""
        for row, view in enumerate(self.slot_model.views()):
            if view.state in (SlotState.IDLE, SlotState.PASS, SlotState.FAIL) and not view.label:
                self.slot_model.set_view(row, view.with_(label=label))
                self.slot_flash.emit(row)
                self.notice.emit(f"Unit label {label} bound to slot {view.name}.", "info")
                self.start_slot(row)
                return row
        self.notice.emit(f"No free slot for unit label {label}. Wait for a slot to finish.", "attention")
        return None

    # -- starting ----------------------------------------------------------------------------

    def blocked_reason(self) -> str | None:
        """Why no slot may start now, in the technician's words, or None."""
        if self.session.operator is None:
            return "Scan your badge to sign in."
        if self.work_order is None:
            return "Scan a work order to start."
        if self.counts is not None and self.counts.remaining <= 0:
            return "The work order has no units left. Ask a supervisor for a new work order."
        if self.station.provisioner.issuing_stopped:
            return f"Issuing stopped: {self.station.provisioner.issuing_stopped}. Call an admin."
        return None

    def start_slot(self, row: int) -> bool:
        view = self.slot_model.view(row)
        if view.state is SlotState.RUNNING:
            return False
        if not self.session.require(Action.PROVISION, where=f"slot {view.name}"):
            return False
        reason = self.blocked_reason()
        if reason is not None or self.work_order is None or self.session.operator is None:
            self.notice.emit(reason or "Cannot start.", "attention")
            return False
        slot = self._slots[row]
        # Starting a FAIL again (without acknowledging it) retries that unit: only that unit.
        retry_of = view.hardware_id if view.state is SlotState.FAIL and view.hardware_id else None
        run = self.station.slot_runs([slot], operator=self.session.operator.badge_id,
                                     work_order=self.work_order, policy=self._policy,
                                     expected_hardware_ids=[retry_of])[0]
        self.slot_model.set_view(row, SlotView(
            name=view.name, port=view.port, state=SlotState.RUNNING, step="connect", step_no=1,
            step_total=len(STEP_ORDER), label=view.label,
            attempts=view.attempts + 1 if view.state is SlotState.FAIL else 1,  # at this unit
            hardware_id=retry_of or "", started=time.monotonic()))
        self._threads[slot.name].request.emit(run)
        return True

    def start_all(self) -> int:
        """Start every slot that is not running and has a device; returns how many started."""
        if not self.session.require(Action.PROVISION, where="start all"):
            return 0
        started = 0
        for row, view in enumerate(self.slot_model.views()):
            if view.state in (SlotState.IDLE, SlotState.PASS, SlotState.FAIL) and self.start_slot(row):
                started += 1
        return started

    def acknowledge(self, row: int) -> None:
        """A FAIL stays red until acknowledged (HMI.md); then the slot is ready again."""
        view = self.slot_model.view(row)
        if view.state in (SlotState.FAIL, SlotState.PASS):
            self.slot_model.set_view(row, SlotView(name=view.name, port=view.port,
                                                   state=self._rest_state(view.name)))

    def set_auto_start(self, on: bool) -> None:
        self.auto_start = on

    def show_timeline(self, result_row: int) -> ResultRow:
        row = self.results_model.row(result_row)
        self.timeline_model.show(row.result)
        return row

    # -- worker reports (queued to the GUI thread) ----------------------------------------------

    def _on_progress(self, slot: str, step: str, n: int, total: int) -> None:
        row = self.slot_model.row_of(slot)
        view = self.slot_model.view(row)
        if view.state is SlotState.RUNNING:
            self.slot_model.set_view(row, view.with_(step=step, step_no=n, step_total=total))

    def _on_finished(self, result: UnitResult) -> None:
        row = self.slot_model.row_of(result.slot)
        view = self.slot_model.view(row)
        elapsed = time.monotonic() - view.started if view.started else 0.0
        # After "a different unit is in the slot", a retry still wants the unit that failed first.
        hardware_id = view.hardware_id if result.error_code == "identity_changed" and view.hardware_id \
            else result.hardware_id or ""
        common = dict(name=view.name, port=view.port, label=view.label, attempts=view.attempts,
                      unit_serial=result.unit_serial or "", hardware_id=hardware_id,
                      elapsed_s=elapsed, unit_id=result.unit_id, started=time.monotonic())
        if result.ok:
            new = SlotView(state=SlotState.PASS, **common)  # type: ignore[arg-type]
            self.passed_today += 1
        else:
            new = SlotView(state=SlotState.FAIL, step=str(result.failed_step or ""),
                           message=result.message or "Provisioning failed.",
                           hint=result.hint or "Set the device aside for analysis.",
                           error_code=result.error_code or "", critical=result.critical,
                           **common)  # type: ignore[arg-type]
            self.failed_today += 1
        self.slot_model.set_view(row, new)
        if (not result.ok and result.error_code in TRANSIENT_CODES and view.attempts <= AUTO_RETRIES
                and self.blocked_reason() is None):
            # HMI.md: a transient link failure is requeued automatically, a bounded number of
            # times, on the same unit (start_slot retries a FAIL with its hardware id).
            QTimer.singleShot(_RETRY_DELAY_MS, lambda: self._auto_retry(row, result))
        if view.label and result.unit_id is not None:
            try:
                self.station.store.record_event(
                    "unit_label", unit_id=result.unit_id,
                    operator=self.session.operator.badge_id if self.session.operator else None,
                    detail={"label": view.label, "slot": view.name})
            except StationError:
                log.exception("could not record the label of unit %s", result.unit_id)
        self.results_model.add(ResultRow(finished=datetime.now(), result=result, label=view.label))
        self._refresh_counts()
        self._refresh_blocked()
        self.banner_changed.emit()
        self.result_added.emit(result)

    def _auto_retry(self, row: int, result: UnitResult) -> None:
        view = self.slot_model.view(row)
        if view.state is SlotState.FAIL and view.error_code == result.error_code:  # not acknowledged
            self.notice.emit(f"Slot {view.name}: {result.error_code.replace('_', ' ')}, trying the "
                             f"same unit again (attempt {view.attempts + 1}).", "attention")
            self.start_slot(row)

    # -- housekeeping ----------------------------------------------------------------------------

    def _refresh_counts(self) -> None:
        if self.work_order is None:
            self.counts = None
            return
        try:
            self.counts = self.station.store.work_order_counts(self.work_order.number)
        except StationError:
            log.exception("could not read the work order counts")

    def _rest_state(self, name: str) -> SlotState:
        if self.blocked_reason() is not None:
            return SlotState.BLOCKED
        return SlotState.IDLE if self._present.get(name, True) else SlotState.WAITING

    def _refresh_blocked(self) -> None:
        """Idle tiles show what the technician must do before anything can start."""
        reason = self.blocked_reason()
        for row, view in enumerate(self.slot_model.views()):
            if view.state in (SlotState.IDLE, SlotState.BLOCKED, SlotState.WAITING):
                state = self._rest_state(view.name)
                self.slot_model.set_view(row, view.with_(
                    state=state, message=reason or "" if state is SlotState.BLOCKED else ""))

    def _on_tick(self) -> None:
        now = time.monotonic()
        for row, view in enumerate(self.slot_model.views()):
            slot = self._slots[row]
            present = self._port_present(slot.port)
            appeared = present and not self._present[slot.name]
            self._present[slot.name] = present
            if view.state is SlotState.RUNNING and view.started is not None:
                self.slot_model.set_view(row, view.with_(elapsed_s=now - view.started))
            elif view.state is SlotState.PASS and not view.settled and view.started is not None \
                    and now - view.started >= PASS_SETTLE_S:
                self.slot_model.set_view(row, view.with_(settled=True))
            elif view.state in (SlotState.IDLE, SlotState.WAITING, SlotState.BLOCKED):
                state = self._rest_state(view.name)
                if state is not view.state:
                    self.slot_model.set_view(row, view.with_(state=state))
            if appeared and self.auto_start and self.slot_model.view(row).state in (
                    SlotState.IDLE, SlotState.PASS, SlotState.FAIL):
                self.start_slot(row)

    def running(self) -> int:
        return sum(1 for v in self.slot_model.views() if v.state is SlotState.RUNNING)

    def shutdown(self, wait_ms: int = 30_000) -> None:
        """Stop every slot thread after its current attempt (bounded by the transport deadlines)."""
        self._tick.stop()
        for thread in self._threads.values():
            if not thread.stop(wait_ms):
                log.error("slot thread %s did not stop in time", thread.qthread.objectName())


def step_label(view: SlotView) -> str:
    """``step 5 of 13: generate key`` for a running tile."""
    if not view.step_total:
        return ""
    return f"Step {view.step_no} of {view.step_total}: {step_words(view.step)}"
