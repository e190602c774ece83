"""``station demo --gui``: the demo's virtual devices, CA and database, in the technician window."""

from __future__ import annotations

from pathlib import Path

from station.demo import parse_faults
from station.gui.app import run_window
from station.gui.embedded import embedded_station


def run_demo_gui(*, units: int = 8, data_dir: Path | None = None, faults: str = "",
                 key_delay: float = 0.08, kiosk: bool = False, idle_timeout_s: float = 300.0) -> int:
    """Open the window over ``units`` virtual devices (the first ones with ``faults``)."""
    plans = parse_faults(faults, units)
    with embedded_station(units=units, data_dir=data_dir, faults=plans, key_delay=key_delay) as parts:
        return run_window(parts, kiosk=kiosk, idle_timeout_s=idle_timeout_s)
