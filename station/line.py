"""Many fixture slots at once: one worker thread per slot, a shared signer, one audit writer.

A slow or dead device only ever blocks its own worker: each device call has its own deadline in the
transport, the signer queues slots on one HSM session, and every audit write goes through the single
:class:`AuditWriter` thread, so SQLite sees one writer and the commit order is the log order.
"""

from __future__ import annotations

import logging
import queue
import threading
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, TypeVar

from station.domain import Step, UnitRecord, WorkOrder
from station.errors import AuditWriteFailed
from station.ports import AuditStore, DeviceLink, PreparedCertificate
from station.workflow import ProgressCallback, Provisioner, SlotJob, UnitResult

__all__ = ["AuditWriter", "Line", "SlotRun"]

log = logging.getLogger(__name__)

T = TypeVar("T")


class AuditWriter:
    """An :class:`AuditStore` that runs every call on one dedicated thread.

    Callers block until their call has committed (or failed), so durability on return still holds;
    the store underneath only ever sees one thread.
    """

    def __init__(self, store: AuditStore, *, name: str = "audit-writer") -> None:
        self._store = store
        self._queue: queue.SimpleQueue[tuple[Callable[[], Any], Future[Any]] | None] = queue.SimpleQueue()
        self._thread = threading.Thread(target=self._serve, name=name, daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        while True:
            item = self._queue.get()
            if item is None:
                return
            call, future = item
            if not future.set_running_or_notify_cancel():
                continue
            try:
                future.set_result(call())
            except BaseException as exc:
                future.set_exception(exc)

    def _call(self, call: Callable[[], T]) -> T:
        if not self._thread.is_alive():
            raise AuditWriteFailed("the audit writer has stopped", code="audit_writer_stopped")
        future: Future[T] = Future()
        self._queue.put((call, future))
        return future.result()

    def close(self) -> None:
        """Stop the writer thread after the calls already queued."""
        if self._thread.is_alive():
            self._queue.put(None)
            self._thread.join()

    # -- AuditStore ----------------------------------------------------------------------------

    def start_unit(self, *, work_order: WorkOrder, station: str, slot: str, operator: str,
                   hardware_id: str) -> int:
        return self._call(lambda: self._store.start_unit(
            work_order=work_order, station=station, slot=slot, operator=operator,
            hardware_id=hardware_id))

    def record_step(self, unit_id: int, step: Step, *, ok: bool, duration_ms: float,
                    detail: dict[str, str] | None = None, error_code: str | None = None,
                    error_message: str | None = None) -> None:
        self._call(lambda: self._store.record_step(
            unit_id, step, ok=ok, duration_ms=duration_ms, detail=detail, error_code=error_code,
            error_message=error_message))

    def next_unit_serial(self, unit_id: int) -> str:
        return self._call(lambda: self._store.next_unit_serial(unit_id))

    def record_intent(self, unit_id: int, prepared: PreparedCertificate) -> None:
        self._call(lambda: self._store.record_intent(unit_id, prepared))

    def record_issued(self, unit_id: int, cert_der: bytes) -> None:
        self._call(lambda: self._store.record_issued(unit_id, cert_der))

    def complete_unit(self, unit_id: int) -> None:
        self._call(lambda: self._store.complete_unit(unit_id))

    def fail_unit(self, unit_id: int, step: Step, error_code: str, error_message: str) -> None:
        self._call(lambda: self._store.fail_unit(unit_id, step, error_code, error_message))

    def is_key_known(self, public_key_sha256: str) -> bool:
        return self._call(lambda: self._store.is_key_known(public_key_sha256))

    def issued_certificate_for(self, hardware_id: str) -> UnitRecord | None:
        return self._call(lambda: self._store.issued_certificate_for(hardware_id))

    def resume_unit(self, unit_id: int, *, slot: str, operator: str) -> UnitRecord:
        return self._call(lambda: self._store.resume_unit(unit_id, slot=slot, operator=operator))


@dataclass(frozen=True, kw_only=True)
class SlotRun:
    """One slot's part in a run: the job and how to open its device."""

    job: SlotJob
    open_link: Callable[[], DeviceLink]


class Line:
    """Runs one provisioning attempt on each of many slots in parallel."""

    def __init__(self, provisioner: Provisioner) -> None:
        self._provisioner = provisioner

    def run(
        self,
        slots: Sequence[SlotRun],
        *,
        on_progress: ProgressCallback | None = None,
        on_result: Callable[[UnitResult], None] | None = None,
    ) -> list[UnitResult]:
        """Provision every slot once; results come back in slot order."""
        if not slots:
            return []

        def work(run: SlotRun) -> UnitResult:
            result = self._provisioner.provision(run.job, run.open_link, on_progress)
            if on_result is not None:
                try:
                    on_result(result)
                except Exception:  # a display callback must never lose a slot's result
                    log.exception("result callback failed for slot %s", run.job.slot)
            return result

        with ThreadPoolExecutor(max_workers=len(slots), thread_name_prefix="slot") as pool:
            return list(pool.map(work, slots))
