"""The composition root: the one place the real parts are built and wired together.

The CLI, the demo and the GUI all call :func:`open_station`; nothing else constructs a signer, an
audit engine or serial links, so a per-unit set-up (HSM login, database connection) cannot creep in.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType

from station.audit import SqlAuditStore, open_audit_store
from station.config import SlotConfig, StationConfig
from station.domain import UnitRecord, WorkOrder
from station.line import AuditWriter, Line, SlotRun
from station.ports import DeviceLink, Signer
from station.transport import LinkPolicy, SerialDeviceLink
from station.workflow import Provisioner, SlotJob

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
                  policy: LinkPolicy | None = None) -> list[SlotRun]:
        """One :class:`SlotRun` per slot, each opening its own serial link when it starts."""

        def opener(slot: SlotConfig) -> DeviceLink:
            return SerialDeviceLink(slot.port, baudrate=slot.baud, slot=slot.name, policy=policy)

        return [
            SlotRun(
                job=SlotJob(station=self.station_id, slot=s.name, port=s.port, operator=operator,
                            work_order=work_order),
                open_link=lambda s=s: opener(s),  # type: ignore[misc]
            )
            for s in slots
        ]

    def close(self) -> None:
        self.writer.close()
        self.store.close()
        close = getattr(self.signer, "close", None)
        if callable(close):
            close()

    def __enter__(self) -> Station:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()


def open_station(*, station_id: str, signer: Signer, database: str | Path,
                 work_order: WorkOrder | None = None, lock_devices: bool = True) -> Station:
    """Open the audit store (checked for durability), settle interrupted units, wire the workflow."""
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
    writer = AuditWriter(store)
    provisioner = Provisioner(signer=signer, audit=writer, lock_devices=lock_devices)
    return Station(station_id=station_id, signer=signer, store=store, writer=writer,
                   provisioner=provisioner, line=Line(provisioner), interrupted=interrupted)


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
                            lock_devices=config.lock_devices)
    except BaseException:
        signer.close()
        raise
