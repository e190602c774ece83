"""Many fixture slots at once: one worker thread per slot, a shared signer, one audit writer.

A slow or dead device only ever blocks its own worker: each device call has its own deadline in the
transport, the signer queues slots on one HSM session, and every audit write goes through the single
:class:`AuditWriter` thread, so SQLite sees one writer and the commit order is the log order.
"""

from __future__ import annotations

import contextlib
import logging
import queue
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, replace
from typing import Any, TypeVar

from station.domain import Step, UnitRecord, WorkOrder
from station.errors import AUTO_RETRIES, TRANSIENT_CODES, AuditWriteFailed
from station.ports import AuditStore, DeviceLink, PreparedCertificate
from station.workflow import ProgressCallback, Provisioner, SlotJob, UnitResult

__all__ = ["AuditWriter", "Line", "SlotRun"]

log = logging.getLogger(__name__)

T = TypeVar("T")


@dataclass(slots=True)
class _Item:
    """A queued call."""

    call: Callable[[], Any]
    done: Future[Any] | None
    """For a durable call: resolved when the transaction holding it has committed (or failed)."""
    early: Future[Any] | None = None
    """Resolved with the call's result as soon as it ran, before the commit (early reply)."""
    owner: int | None = None
    """For a call nobody waits to commit (step event, early reply): the thread that queued it, whose
    outstanding count the batch settles when it commits, and which hears if it failed."""

_STOP: float = -1.0
"""What :meth:`AuditWriter._next` returns as the deadline when it took the stop marker."""


class AuditWriter:
    """An :class:`AuditStore` that runs every call on one dedicated thread, with group commit.

    The writer takes every call queued at the moment (several slots' calls) and runs them in one
    transaction of the store (:meth:`SqlAuditStore.batch`), so they share one COMMIT and one fsync.
    A caller still returns only after the transaction holding ITS call has committed, so durability on
    return holds; every write reaches the store from this one thread, and the queue order is the log
    order. The two reads (``is_key_known``, ``issued_certificate_for``) run on the caller's thread.

    Three kinds of call, as the :class:`AuditStore` contract allows:

    * plain step events (``record_step`` of a step that went well) are not waited for at all;
    * ``start_unit`` and ``next_unit_serial`` reply early: their caller gets the unit id or serial
      (or the refusal) as soon as the call ran in the open transaction, and talks to its device while
      the transaction commits;
    * the safety records (intent, issued, complete, failures, resumption) are durable on return.

    FIFO order puts every earlier call of the same slot in the same or an earlier commit than its
    next durable call. If an earlier call's commit failed, the next call of the same thread raises
    that failure instead of returning (fail closed); :meth:`flush` waits for this thread's calls.
    """

    def __init__(self, store: AuditStore, *, name: str = "audit-writer", max_batch: int = 256,
                 linger_s: float = 0.05, hold_s: float = 0.001) -> None:
        self._store = store
        self._max_batch = max_batch
        self._linger_s = linger_s
        self._hold_s = hold_s
        self._queue: queue.SimpleQueue[_Item | None] = queue.SimpleQueue()
        self._failed: dict[int, BaseException] = {}
        self._outstanding: dict[int, int] = {}
        """Per caller thread: calls queued without waiting for their commit, not yet committed."""
        self._failed_lock = threading.Lock()
        self._thread = threading.Thread(target=self._serve, name=name, daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        while True:
            first = self._queue.get()
            if first is None or self._run_batch(first):
                return

    def _run_batch(self, first: _Item) -> bool:
        """Run ``first`` and the calls queued behind it in one transaction, each as it arrives.

        Calls run the moment they are taken, so the step events a slot queues while it talks to its
        device are already in the transaction when the slot's next awaited call arrives: that call
        costs its slot only its own statements and the COMMIT. The batch commits once it holds an
        awaited call and the queue is empty or ``hold_s`` has passed since that call came (under
        load the queue is never empty: calls keep arriving), after ``max_batch`` calls, or when a
        batch nobody waits for has been open ``linger_s``. Returns whether the writer was asked to
        stop.
        """
        batch = getattr(self._store, "batch", None)
        done: list[tuple[Future[Any], bool, Any]] = []
        owners: list[int] = []
        failures: dict[int, BaseException] = {}
        taken = 0
        stopping = False
        try:
            with batch() if callable(batch) else contextlib.nullcontext():
                item: _Item | None = first
                awaited = False
                deadline = time.monotonic() + self._linger_s
                while item is not None:
                    taken += 1
                    if item.done is not None and not awaited:
                        awaited = True
                        deadline = min(deadline, time.monotonic() + self._hold_s)
                    self._run_item(item, done, owners, failures)
                    if taken >= self._max_batch:
                        break
                    item, deadline = self._next(awaited, deadline)
                    stopping = item is None and deadline == _STOP
        except BaseException as exc:  # the COMMIT failed: nothing of this batch is durable
            error = exc if isinstance(exc, AuditWriteFailed) else AuditWriteFailed(
                f"audit commit failed: {exc}", code="audit_commit_failed")
            self._settle(owners, dict.fromkeys(owners, error))
            for future, _, _ in done:
                future.set_exception(error)
            return stopping
        self._settle(owners, failures)
        for future, ok, value in done:
            if ok:
                future.set_result(value)
            else:
                future.set_exception(value)
        return stopping

    @staticmethod
    def _run_item(item: _Item, done: list[tuple[Future[Any], bool, Any]], owners: list[int],
                  failures: dict[int, BaseException]) -> None:
        """Run one call in the open transaction; record how its caller is to hear of it."""
        if item.done is not None and not item.done.set_running_or_notify_cancel():
            return
        if item.owner is not None:
            owners.append(item.owner)
        try:
            result = item.call()
        except BaseException as exc:
            if item.done is not None:
                done.append((item.done, False, exc))
            elif item.early is not None:  # a refusal: its caller hears it now; the batch goes on
                item.early.set_exception(exc)
            elif item.owner is not None:  # a step event: its thread's next call raises this
                failures.setdefault(item.owner, exc)
            return
        if item.early is not None:
            item.early.set_result(result)
        if item.done is not None:
            done.append((item.done, True, result))

    def _next(self, awaited: bool, deadline: float) -> tuple[_Item | None, float]:
        """The next queued call for this batch, or None to commit now (deadline ``_STOP``: stop)."""
        now = time.monotonic()
        if now >= deadline:
            return None, deadline
        try:
            item = self._queue.get_nowait()
        except queue.Empty:
            if awaited:
                return None, deadline
            try:
                item = self._queue.get(timeout=deadline - now)
            except queue.Empty:
                return None, deadline
        if item is None:
            return None, _STOP
        return item, deadline

    def _call(self, call: Callable[[], T]) -> T:
        """Run ``call`` on the writer; return once its transaction has committed."""
        if not self._thread.is_alive():
            raise AuditWriteFailed("the audit writer has stopped", code="audit_writer_stopped")
        future: Future[T] = Future()
        self._queue.put(_Item(call, future))
        return self._outcome(future)

    def _call_early(self, call: Callable[[], T]) -> T:
        """Run ``call`` on the writer; return its result as soon as it ran, before the commit.

        The commit is tracked like a step event's: its failure surfaces on this thread's next call.
        """
        if not self._thread.is_alive():
            raise AuditWriteFailed("the audit writer has stopped", code="audit_writer_stopped")
        self._raise_deferred()
        early: Future[T] = Future()
        self._queue.put(_Item(call, None, early, self._tracked()))
        return self._outcome(early)

    def _outcome(self, future: Future[T]) -> T:
        """The call's result; but if an earlier call of this thread failed to commit, that failure.

        It is the cause: a call that ran after it may fail only because the earlier rows are gone
        (an unknown unit id), and it comes first in the log order either way."""
        try:
            result = future.result()
        except BaseException:
            self._raise_deferred()
            raise
        self._raise_deferred()
        return result

    def _post(self, call: Callable[[], None]) -> None:
        """Queue a call nobody waits for; its failure surfaces on this thread's next call."""
        if not self._thread.is_alive():
            raise AuditWriteFailed("the audit writer has stopped", code="audit_writer_stopped")
        self._raise_deferred()
        self._queue.put(_Item(call, None, None, self._tracked()))

    def _tracked(self) -> int:
        """Count one more call of this thread as outstanding (until its batch settles it)."""
        owner = threading.get_ident()
        with self._failed_lock:
            self._outstanding[owner] = self._outstanding.get(owner, 0) + 1
        return owner

    def _settle(self, owners: list[int], failures: Mapping[int, BaseException]) -> None:
        """After a batch: its untracked calls are no longer outstanding; note their failures."""
        if not owners and not failures:
            return
        with self._failed_lock:
            for owner in owners:
                left = self._outstanding.get(owner, 1) - 1
                if left:
                    self._outstanding[owner] = left
                else:
                    self._outstanding.pop(owner, None)
            for owner, exc in failures.items():
                self._failed.setdefault(owner, exc)

    def _raise_deferred(self) -> None:
        with self._failed_lock:
            exc = self._failed.pop(threading.get_ident(), None)
        if exc is not None:
            raise exc

    def flush(self) -> None:
        """Return once everything this thread queued is durable (raises a deferred failure).

        Free when the thread's last awaited call already committed all its events (FIFO order puts
        them in the same or an earlier transaction)."""
        with self._failed_lock:
            outstanding = self._outstanding.get(threading.get_ident(), 0)
        if outstanding:
            self._call(lambda: None)
        else:
            self._raise_deferred()

    def close(self) -> None:
        """Stop the writer thread after the calls already queued."""
        if self._thread.is_alive():
            self._queue.put(None)
            self._thread.join()

    # -- AuditStore ----------------------------------------------------------------------------

    def start_unit(self, *, work_order: WorkOrder, station: str, slot: str, operator: str,
                   hardware_id: str) -> int:
        return self._call_early(lambda: self._store.start_unit(
            work_order=work_order, station=station, slot=slot, operator=operator,
            hardware_id=hardware_id))

    def record_step(self, unit_id: int, step: Step, *, ok: bool, duration_ms: float,
                    detail: dict[str, str] | None = None, error_code: str | None = None,
                    error_message: str | None = None) -> None:
        def call() -> None:
            self._store.record_step(unit_id, step, ok=ok, duration_ms=duration_ms, detail=detail,
                                    error_code=error_code, error_message=error_message)
        if ok and error_code is None:
            self._post(call)  # a plain step event: committed with the next record someone waits for
        else:
            self._call(call)

    def next_unit_serial(self, unit_id: int) -> str:
        return self._call_early(lambda: self._store.next_unit_serial(unit_id))

    def record_intent(self, unit_id: int, prepared: PreparedCertificate) -> None:
        self._call(lambda: self._store.record_intent(unit_id, prepared))

    def record_issued(self, unit_id: int, cert_der: bytes) -> None:
        self._call(lambda: self._store.record_issued(unit_id, cert_der))

    def complete_unit(self, unit_id: int) -> None:
        self._call(lambda: self._store.complete_unit(unit_id))

    def fail_unit(self, unit_id: int, step: Step, error_code: str, error_message: str) -> None:
        self._call(lambda: self._store.fail_unit(unit_id, step, error_code, error_message))

    # The two reads run on the caller's thread in their own read transaction (WAL: they never wait
    # for the writer): no queue hop, no empty group commit. They see what is committed, which is all
    # a slot needs: its own earlier records were awaited, and the unique indexes, not these reads,
    # are what refuse a duplicate key or a second active unit.

    def is_key_known(self, public_key_sha256: str) -> bool:
        self._raise_deferred()
        return self._store.is_key_known(public_key_sha256)

    def issued_certificate_for(self, hardware_id: str) -> UnitRecord | None:
        self._raise_deferred()
        return self._store.issued_certificate_for(hardware_id)

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
        retries: int = AUTO_RETRIES,
    ) -> list[UnitResult]:
        """Provision every slot; results come back in slot order.

        A transient link failure (:data:`~station.errors.TRANSIENT_CODES`) is tried again on the same
        unit up to ``retries`` times; every attempt is its own recorded result (``on_result``)."""
        if not slots:
            return []

        def work(run: SlotRun) -> UnitResult:
            job = run.job
            for attempt in range(retries + 1):
                result = self._provisioner.provision(job, run.open_link, on_progress)
                if on_result is not None:
                    try:
                        on_result(result)
                    except Exception:  # a display callback must never lose a slot's result
                        log.exception("result callback failed for slot %s", job.slot)
                if result.ok or result.error_code not in TRANSIENT_CODES or attempt == retries:
                    return result
                log.info("slot %s: %s, trying the same unit again (%d of %d)", job.slot,
                         result.error_code, attempt + 1, retries)
                if result.hardware_id:
                    job = replace(job, expected_hardware_id=result.hardware_id)
            raise AssertionError("unreachable")  # pragma: no cover

        with ThreadPoolExecutor(max_workers=len(slots), thread_name_prefix="slot") as pool:
            return list(pool.map(work, slots))
