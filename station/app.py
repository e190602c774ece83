"""The composition root: the one place the real parts are built and wired together.

The CLI, the demo and the GUI all call :func:`open_station`; nothing else constructs a signer, an
audit engine or serial links, so a per-unit set-up (HSM login, database connection) cannot creep in.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any

from station.audit import SqlAuditStore, open_audit_store
from station.audit.checkpoint import Checkpoint, append_checkpoint
from station.config import SlotConfig, StationConfig
from station.domain import UnitRecord, WorkOrder
from station.errors import StationError
from station.line import AuditWriter, Line, SlotRun
from station.ports import DeviceLink, Signer
from station.transport import LinkPolicy, SerialDeviceLink
from station.workflow import ProgressCallback, Provisioner, SlotJob, UnitResult

__all__ = ["Station", "open_station", "open_station_from_config"]

log = logging.getLogger(__name__)


@dataclass
class Station:
    """A running station: one signer, one audit store behind one writer, one provisioner."""

    station_id: str
    signer: Signer
    store: SqlAuditStore
    writer: AuditWriter
    provisioner: Provisioner
    line: Line
    interrupted: Sequence[UnitRecord] = ()
    """Units a previous run left mid-flight (settled at start-up, shown to the operator)."""

    def slot_runs(self, slots: Sequence[SlotConfig], *, operator: str, work_order: WorkOrder,
                  policy: LinkPolicy | None = None,
                  expected_hardware_ids: Sequence[str | None] | None = None) -> list[SlotRun]:
        """One :class:`SlotRun` per slot, each opening its own serial link when it starts.

        ``expected_hardware_ids`` (per slot): retries that must find the same unit in the slot."""
        expected = list(expected_hardware_ids or [None] * len(slots))

        def opener(slot: SlotConfig) -> DeviceLink:
            return SerialDeviceLink(slot.port, baudrate=slot.baud, slot=slot.name, policy=policy)

        return [
            SlotRun(
                job=SlotJob(station=self.station_id, slot=s.name, port=s.port, operator=operator,
                            work_order=work_order, expected_hardware_id=hw),
                open_link=lambda s=s: opener(s),  # type: ignore[misc]
            )
            for s, hw in zip(slots, expected, strict=True)
        ]

    checkpoints: Checkpoints | None = None
    """Signed audit checkpoints (None when the token has no audit key)."""

    _closed: bool = field(default=False, init=False, repr=False)

    def close(self) -> None:
        """Commit what the writer holds, sign a last checkpoint (shift end), release the parts."""
        if self._closed:
            return
        self._closed = True
        try:
            self.writer.close()
            if self.checkpoints is not None:
                self.checkpoints.take()
        finally:
            self.store.close()
            close = getattr(self.signer, "close", None)
            if callable(close):
                close()

    def __enter__(self) -> Station:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()


class Checkpoints:
    """Signed checkpoints of the audit chain: every ``every`` provisioned units, and at close.

    Each is recorded in the database and appended to ``path`` (the copy kept off the station) when
    one is given. A checkpoint that cannot be made is logged and production goes on: the chain
    itself is unaffected, and the next checkpoint covers everything before it."""

    def __init__(self, store: SqlAuditStore, sign: Callable[[bytes], tuple[bytes, bytes]], *,
                 path: Path | None, every: int) -> None:
        self._store = store
        self._sign = sign
        self.path = path
        self._every = max(1, every)
        self._count = 0
        self._lock = threading.Lock()

    def unit_finished(self, result: UnitResult) -> None:
        if not result.ok:
            return
        with self._lock:
            self._count += 1
            due = self._count % self._every == 0
        if due:
            self.take()

    def take(self) -> Checkpoint | None:
        try:
            checkpoint = self._store.record_checkpoint(self._sign)
            if self.path is not None:
                append_checkpoint(self.path, checkpoint)
        except (StationError, OSError) as exc:
            log.error("audit checkpoint failed: %s", exc)
            return None
        log.info("audit checkpoint: seq %d, hash %s", checkpoint.seq, checkpoint.hash[:16])
        return checkpoint


class _CheckpointingProvisioner(Provisioner):
    """The provisioner, telling the checkpoints about each finished unit."""

    def __init__(self, *, checkpoints: Checkpoints | None, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._checkpoints = checkpoints

    def provision(self, job: SlotJob, open_link: Callable[[], DeviceLink],
                  on_progress: ProgressCallback | None = None) -> UnitResult:
        result = super().provision(job, open_link, on_progress)
        if self._checkpoints is not None:
            self._checkpoints.unit_finished(result)
        return result


def default_checkpoint_file(database: str | Path) -> Path | None:
    """``<file>.checkpoints`` next to a SQLite file; none for a database URL."""
    text = str(database)
    if "://" in text and not text.startswith("sqlite:///"):
        return None
    path = Path(text.removeprefix("sqlite:///"))
    return path.with_name(path.name + ".checkpoints")


def open_station(*, station_id: str, signer: Signer, database: str | Path,
                 work_order: WorkOrder | None = None, lock_devices: bool = True,
                 checkpoint_file: str | Path | None = None, checkpoint_every: int = 100) -> Station:
    """Open the audit store (checked for durability), settle interrupted units, wire the workflow.

    With a signer that holds an audit key, the chain is checkpointed every ``checkpoint_every``
    provisioned units and at close, into ``checkpoint_file`` (default: next to a SQLite file)."""
    store = open_audit_store(database, station_id=station_id)
    try:
        interrupted = store.mark_interrupted()
        for unit in interrupted:
            log.warning("unit %s (hardware id %s) was interrupted by a previous run: %s",
                        unit.unit_id, unit.hardware_id, unit.status)
        if work_order is not None:
            store.create_work_order(work_order)
    except BaseException:
        store.close()
        raise
    checkpoints: Checkpoints | None = None
    sign = getattr(signer, "sign_checkpoint", None)
    if callable(sign) and getattr(signer, "can_sign_checkpoints", False):
        path = Path(checkpoint_file) if checkpoint_file is not None else default_checkpoint_file(database)
        checkpoints = Checkpoints(store, sign, path=path, every=checkpoint_every)
    writer = AuditWriter(store)
    provisioner = _CheckpointingProvisioner(signer=signer, audit=writer, lock_devices=lock_devices,
                                            checkpoints=checkpoints)
    return Station(station_id=station_id, signer=signer, store=store, writer=writer,
                   provisioner=provisioner, line=Line(provisioner), interrupted=interrupted,
                   checkpoints=checkpoints)


def open_station_from_config(config: StationConfig) -> Station:
    """Build the HSM signer from the configuration and open the station around it."""
    from hsm.pin import pin_source_from_spec
    from station.signing import HsmSigner

    signer = HsmSigner.open(
        module_path=config.hsm.module, token_label=config.hsm.token_label,
        key_label=config.hsm.key_label, pin_source=pin_source_from_spec(config.hsm.pin_source),
        ca_chain_path=Path(config.hsm.ca_chain),
    )
    try:
        return open_station(station_id=config.station_id, signer=signer,
                            database=config.database_url, work_order=config.work_order,
                            lock_devices=config.lock_devices, checkpoint_file=config.checkpoint_file)
    except BaseException:
        signer.close()
        raise
