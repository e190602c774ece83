"""One worker per slot, living on its own QThread: the window never waits on a device or the HSM.

The worker calls :meth:`station.workflow.Provisioner.provision` (which never raises for a device, CSR,
HSM or audit failure) and reports by signals; Qt queues them to the GUI thread because the receivers
live there. A hung device blocks only its own thread until the transport's deadline ends it.
"""

from __future__ import annotations

import logging

from PySide6.QtCore import QObject, QThread, Signal, Slot

from station.domain import Step
from station.line import SlotRun
from station.workflow import Provisioner, UnitResult

log = logging.getLogger(__name__)


class SlotWorker(QObject):
    """Runs one slot's attempts, one at a time, on the thread it was moved to."""

    progress = Signal(str, str, int, int)
    """(slot, step, step number, step count) when a step starts."""
    finished = Signal(object)
    """The :class:`UnitResult` of the attempt."""

    def __init__(self, provisioner: Provisioner) -> None:
        super().__init__()
        self._provisioner = provisioner

    @Slot(object)
    def run(self, run: SlotRun) -> None:
        def on_progress(slot: str, step: Step, n: int, total: int) -> None:
            self.progress.emit(slot, str(step), n, total)

        try:
            result = self._provisioner.provision(run.job, run.open_link, on_progress)
        except Exception as exc:  # provision() does not raise; this guards the screen against a bug
            log.exception("slot %s worker failed", run.job.slot)
            result = UnitResult(slot=run.job.slot, ok=False, error_code="internal_error",
                                message=f"Internal error: {type(exc).__name__}.",
                                hint="Call an admin.")
        self.finished.emit(result)


class SlotThread(QObject):
    """A worker and its thread, started together and stopped together."""

    request = Signal(object)
    """Emit a :class:`SlotRun` to start an attempt on the worker's thread."""

    def __init__(self, name: str, provisioner: Provisioner, parent: QObject | None = None) -> None:
        super().__init__(parent)
        self.qthread = QThread()
        self.qthread.setObjectName(f"slot-{name}")
        self.worker = SlotWorker(provisioner)
        self.worker.moveToThread(self.qthread)
        self.request.connect(self.worker.run)
        self.qthread.start()

    def stop(self, wait_ms: int = 30_000) -> bool:
        """Let the current attempt finish (bounded by the transport's deadlines), then end the thread."""
        self.qthread.quit()
        return self.qthread.wait(wait_ms)
