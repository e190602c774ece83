"""``station audit verify|show|export``: the log, checked and read from the command line.

``DB`` is a SQLAlchemy URL or a path to a SQLite file. Every subcommand returns an exit code:
0 success, 1 a broken chain or nothing found, 2 the database could not be read.
"""

from __future__ import annotations

import argparse
import csv
import json
import sys
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Final, TextIO

from station.audit.store import SqlAuditStore
from station.audit.verify import VerifyResult, verify_chain
from station.domain import UnitRecord
from station.errors import StationError

EXPORT_COLUMNS: Final = (
    "unit_id", "work_order", "station", "slot", "operator", "hardware_id", "serial_number", "status",
    "started_at", "finished_at", "public_key_sha256", "cert_serial", "profile", "failed_step",
    "error_code", "error_message", "cert_der_hex",
)
"""Export columns. No secret is ever in a unit row, so exports cannot leak one."""


def register(subparsers: Any) -> argparse.ArgumentParser:
    """Add the ``audit`` command (with its subcommands) to the station's top-level parser."""
    audit: argparse.ArgumentParser = subparsers.add_parser(
        "audit", help="verify, inspect and export the production log"
    )
    sub = audit.add_subparsers(dest="audit_command", required=True)

    verify = sub.add_parser("verify", help="check the hash chain and unit rows; exit 1 if broken")
    verify.add_argument("--db", required=True, help="SQLAlchemy URL or SQLite file path")
    verify.add_argument("--quiet", action="store_true", help="no progress output")
    verify.set_defaults(func=cmd_verify)

    show = sub.add_parser("show", help="one unit and its timeline, by unit or certificate serial")
    show.add_argument("--db", required=True)
    show.add_argument("--serial", required=True, help="unit serial number or certificate serial (hex)")
    show.set_defaults(func=cmd_show)

    export = sub.add_parser("export", help="stream units to CSV or JSON lines")
    export.add_argument("--db", required=True)
    export.add_argument("--format", choices=("csv", "json"), required=True)
    export.add_argument("--out", required=True, help="output file ('-' for stdout)")
    export.add_argument("--work-order")
    export.add_argument("--outcome", choices=("ok", "failed"))
    export.add_argument("--since", type=_timestamp, help="ISO date/time, UTC if no zone given")
    export.add_argument("--until", type=_timestamp, help="ISO date/time (exclusive)")
    export.set_defaults(func=cmd_export)
    return audit


def _timestamp(text: str) -> datetime:
    try:
        value = datetime.fromisoformat(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"not an ISO date/time: {text!r}") from exc
    return value if value.tzinfo else value.replace(tzinfo=UTC)


def _open_reader(db: str) -> SqlAuditStore:
    """Open without migrating or checking pragmas: reading must not write to the database."""
    from station.audit.engine import OpenChecks, build_engine, to_url

    return SqlAuditStore(build_engine(to_url(db)), station_id="audit-cli",
                         checks=OpenChecks(durability_problem=None, integrity_problem="opened for reading"))


def cmd_verify(args: argparse.Namespace) -> int:
    def progress(done: int, total: int) -> None:
        if not args.quiet and total:
            print(f"\rchecked {done}/{total} rows", end="", file=sys.stderr, flush=True)

    try:
        result: VerifyResult = verify_chain(args.db, progress_callback=progress)
    except StationError as exc:
        print(f"\ncannot verify: {exc}", file=sys.stderr)
        return 2
    if not args.quiet:
        print(file=sys.stderr)
    print(result.summary())
    return 0 if result.ok else 1


def cmd_show(args: argparse.Namespace) -> int:
    store = _open_reader(args.db)
    try:
        unit = store.get_unit_by_serial(args.serial)
        if unit is None:
            print(f"no unit with serial or certificate serial {args.serial!r}", file=sys.stderr)
            return 1
        for name, value in _unit_fields(unit).items():
            if name != "cert_der_hex":
                print(f"{name:18} {value}")
        print("timeline:")
        for ev in store.events(unit_id=unit.unit_id):
            what = ev.step or ev.kind
            took = f" {ev.duration_ms:.1f} ms" if ev.duration_ms is not None else ""
            err = f" [{ev.error_code}] {ev.error_message or ''}" if ev.error_code else ""
            print(f"  #{ev.seq:<6} {ev.occurred_at}  {what:18} {ev.outcome or '':6}{took}{err}")
        return 0
    except Exception as exc:  # the command line reports, it does not trace back
        print(f"cannot read the audit database: {exc}", file=sys.stderr)
        return 2
    finally:
        store.close()


def _unit_fields(unit: UnitRecord) -> dict[str, str]:
    def text(value: object) -> str:
        if value is None:
            return ""
        if isinstance(value, datetime):
            return value.isoformat()
        return str(value)

    return {
        "unit_id": str(unit.unit_id), "work_order": unit.work_order, "station": unit.station,
        "slot": unit.slot, "operator": unit.operator, "hardware_id": unit.hardware_id,
        "serial_number": text(unit.serial_number), "status": str(unit.status),
        "started_at": text(unit.started_at), "finished_at": text(unit.finished_at),
        "public_key_sha256": text(unit.public_key_sha256), "cert_serial": text(unit.cert_serial),
        "profile": text(unit.profile), "failed_step": text(unit.failed_step),
        "error_code": text(unit.error_code), "error_message": text(unit.error_message),
        "cert_der_hex": unit.cert_der.hex() if unit.cert_der else "",
    }


def cmd_export(args: argparse.Namespace) -> int:
    store = _open_reader(args.db)
    try:
        units = store.list_units(work_order=args.work_order, outcome=args.outcome, since=args.since,
                                 until=args.until)
        if args.out == "-":
            count = _write(units, args.format, sys.stdout)
        else:
            with Path(args.out).open("w", encoding="utf-8", newline="") as out:
                count = _write(units, args.format, out)
        print(f"exported {count} units", file=sys.stderr)
        return 0
    except Exception as exc:
        print(f"export failed: {exc}", file=sys.stderr)
        return 2
    finally:
        store.close()


def _write(units: Iterator[UnitRecord], fmt: str, out: TextIO) -> int:
    """Write row by row: memory stays flat however many units the shift made."""
    count = 0
    if fmt == "csv":
        writer = csv.DictWriter(out, fieldnames=EXPORT_COLUMNS)
        writer.writeheader()
        for unit in units:
            writer.writerow(_unit_fields(unit))
            count += 1
    else:
        for unit in units:
            out.write(json.dumps(_unit_fields(unit), sort_keys=True) + "\n")
            count += 1
    return count
