"""``station gui``: the technician window, on a configured station or the embedded demo parts.

::

    station gui [--config FILE | --demo-units N [--data-dir DIR] [--faults LIST]]
                [--kiosk] [--idle-timeout S] [--screenshots DIR]

PySide6 is imported only when the command runs, so ``station --help`` works without it.
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path
from typing import Any


def _cmd_gui(args: argparse.Namespace) -> int:
    if args.screenshots is not None:
        os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
        from station.gui.screenshots import capture

        for path in capture(args.screenshots, data_dir=args.data_dir):
            print(path)
        return 0
    from station.gui.app import run_window

    if args.config is not None:
        from station.gui.embedded import configured_station

        with configured_station(args.config) as parts:
            return run_window(parts, kiosk=args.kiosk, idle_timeout_s=args.idle_timeout)
    from station.gui.demo import run_demo_gui

    try:
        return run_demo_gui(units=args.demo_units, data_dir=args.data_dir, faults=args.faults,
                            key_delay=args.key_delay, kiosk=args.kiosk, idle_timeout_s=args.idle_timeout)
    except ValueError as exc:
        raise SystemExit(f"station gui: {exc}") from exc


def register(subparsers: Any) -> None:
    """Add ``station gui`` to the top-level parser."""
    gui = subparsers.add_parser("gui", help="the technician station window (Qt); --kiosk for CM sites")
    gui.add_argument("--config", type=Path, default=None,
                     help="station configuration (TOML); without it, the embedded demo station")
    gui.add_argument("--demo-units", type=int, default=4,
                     help="embedded mode: virtual devices as fixture slots (default 4)")
    gui.add_argument("--data-dir", type=Path, default=None,
                     help="embedded mode: keep the database, token and CA here (default: temporary)")
    gui.add_argument("--faults", default="", help="embedded mode: faults for the first devices, "
                     "e.g. bad-csr,unplug (as station demo)")
    gui.add_argument("--key-delay", type=float, default=0.08,
                     help="embedded mode: virtual key generation time in seconds")
    gui.add_argument("--kiosk", action="store_true",
                     help="full screen, no frame; closing needs the admin role")
    gui.add_argument("--idle-timeout", type=float, default=300.0, metavar="S",
                     help="sign out after S seconds without input (default 300)")
    gui.add_argument("--screenshots", type=Path, default=None, metavar="DIR",
                     help="write PNGs of the main screens into DIR offscreen, then exit")
    gui.set_defaults(func=_cmd_gui)
