"""The GUI's two ways to get a station: the embedded demo parts, or a configuration file.

Embedded (``station gui`` without ``--config``, and ``station demo --gui``): the same SoftHSM token and
CA as ``station demo`` (:func:`station.demo.demo_signer`), virtual devices on pseudo-terminals as the
fixture slots, SQLite in the data directory, and three seeded operators whose badges and PINs are
printed on the sign-in page. Nothing here is Qt; :mod:`station.gui.app` puts a window on top.
"""

from __future__ import annotations

import contextlib
import shutil
import tempfile
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Final

from fixtures.virtual_dut import Faults, VirtualDevice, virtual_devices
from station.app import Station, open_station, open_station_from_config
from station.config import ScannerConfig, SlotConfig, load_config
from station.demo import demo_signer, demo_work_order
from station.domain import WorkOrder
from station.transport import LinkPolicy

DEMO_OPERATORS: Final = (
    ("B-1001", "Tess Technician", "technician", "1234"),
    ("B-2001", "Quinn Quality", "quality", "2345"),
    ("B-9001", "Ada Admin", "admin", "9876"),
)
"""Demo-only operators (badge, name, role, PIN); a real station adds its own, PINs hashed."""

DEMO_HINT: Final = ("Demo station. Badges: B-1001 technician (PIN 1234), B-2001 quality (PIN 2345), "
                    "B-9001 admin (PIN 9876). Work orders: {orders}.")


@dataclass(kw_only=True)
class StationParts:
    """Everything the window needs from the headless station, however it was built."""

    station: Station
    slots: list[SlotConfig]
    work_orders: dict[str, WorkOrder]
    database: str
    mode: str
    token_label: str = ""
    key_label: str = ""
    policy: LinkPolicy | None = None
    sign_in_hint: str = ""
    devices: list[VirtualDevice] = field(default_factory=list)
    scanner: ScannerConfig = field(default_factory=ScannerConfig)
    """This site's label patterns and scanner prefix."""


def demo_work_orders(units: int) -> dict[str, WorkOrder]:
    """Two demo work orders with fixed numbers, so they can be printed as barcodes."""
    orders = [demo_work_order(max(units * 4, 16), number="WO-DEMO-1001"),
              demo_work_order(max(units, 4), number="WO-DEMO-1002")]
    return {wo.number: wo for wo in orders}


@contextlib.contextmanager
def embedded_station(*, units: int = 4, data_dir: Path | None = None,
                     faults: Sequence[Faults | None] | None = None, key_delay: float = 0.08,
                     policy: LinkPolicy | None = None,
                     extra_work_orders: Mapping[str, WorkOrder] | None = None) -> Iterator[StationParts]:
    """The demo station with ``units`` virtual devices as its slots; cleans up what it made."""
    keep = data_dir is not None
    root = Path(data_dir) if data_dir is not None else Path(tempfile.mkdtemp(prefix="station-gui-"))
    root.mkdir(parents=True, exist_ok=True)
    database = root / "audit.db"
    fresh = not database.exists()
    plans: list[Faults] = [f or Faults() for f in (faults or [None] * units)]
    try:
        signer = demo_signer(root)
        orders = demo_work_orders(units)
        orders.update(extra_work_orders or {})
        with open_station(station_id="demo-station", signer=signer, database=database) as station, \
                virtual_devices(units, faults=plans, key_delay=key_delay) as devices:
            if fresh:
                for badge, name, role, pin in DEMO_OPERATORS:
                    station.store.add_operator(badge_id=badge, name=name, role=role, pin=pin)
            slots = [SlotConfig(name=str(i), port=d.port) for i, d in enumerate(devices, start=1)]
            yield StationParts(
                station=station, slots=slots, work_orders=orders, database=str(database),
                mode="embedded demo", token_label="station-demo", key_label="issuing-ca",
                policy=policy, sign_in_hint=DEMO_HINT.format(orders=", ".join(orders)),
                devices=devices)
    finally:
        if not keep:
            shutil.rmtree(root, ignore_errors=True)


@contextlib.contextmanager
def configured_station(config_path: Path) -> Iterator[StationParts]:
    """A real station from its configuration file (HSM, database, slots, work order)."""
    config = load_config(config_path)
    with open_station_from_config(config) as station:
        yield StationParts(
            station=station, slots=list(config.slots),
            work_orders={config.work_order.number: config.work_order},
            database=_redact_url(config.database_url), mode=f"configured ({config_path.name})",
            token_label=config.hsm.token_label, key_label=config.hsm.key_label,
            scanner=config.scanner)


def _redact_url(url: str) -> str:
    """A database URL without its password (it is shown on the admin page)."""
    if "://" in url and "@" in url:
        scheme, rest = url.split("://", 1)
        creds, host = rest.rsplit("@", 1)
        return f"{scheme}://{creds.split(':', 1)[0]}:***@{host}"
    return url
