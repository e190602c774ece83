"""``station audit verify|show|export|report|seed``: the log, checked and read from the command line.

``DB`` is a SQLAlchemy URL or a path to a SQLite file. Every subcommand returns an exit code:
0 success, 1 a broken chain or nothing found, 2 the database could not be read.

``export`` and ``report`` take the audit view's filters (``--work-order``, ``--product``,
``--station``, ``--operator``, ``--outcome``, ``--failed-step``, ``--error-code``, ``--search``,
``--since``, ``--until``), built into the same :class:`station.reports.UnitFilter` the GUI uses.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from hsm.ca import REVOCATION_REASONS
from station.audit.checkpoint import read_checkpoints
from station.audit.store import SqlAuditStore
from station.audit.verify import VerifyResult, verify_chain
from station.domain import UnitRecord
from station.errors import StationError
from station.reports.export import EXPORT_COLUMNS, FORMATS, export, write_csv, write_json
from station.reports.filters import OUTCOMES, UnitFilter
from station.reports.query import AuditQuery
from station.reports.report import build_report, format_report

__all__ = ["EXPORT_COLUMNS", "filter_from_args", "register"]



def register(subparsers: Any) -> argparse.ArgumentParser:
    """Add the ``audit`` command (with its subcommands) to the station's top-level parser."""
    audit: argparse.ArgumentParser = subparsers.add_parser(
        "audit", help="verify, inspect and export the production log"
    )
    sub = audit.add_subparsers(dest="audit_command", required=True)

    verify = sub.add_parser("verify", help="check the hash chain and unit rows; exit 1 if broken")
    verify.add_argument("--db", required=True, help="SQLAlchemy URL or SQLite file path")
    verify.add_argument("--quiet", action="store_true", help="no progress output")
    verify.add_argument("--checkpoints", type=Path, metavar="FILE",
                        help="signed checkpoints kept off the station: the log must reach and match "
                             "every one (catches an older copy of the database put back)")
    verify.set_defaults(func=cmd_verify)

    revoke = sub.add_parser("revoke", help="revoke a unit's certificate (quality or admin, with --as)")
    revoke.add_argument("--db", required=True)
    revoke.add_argument("--serial", required=True, help="unit serial number or certificate serial (hex)")
    revoke.add_argument("--reason", required=True, choices=sorted(REVOCATION_REASONS),
                        help="RFC 5280 reason")
    revoke.add_argument("--note", default="", help="why, in words (recorded in the log)")
    revoke.set_defaults(func=cmd_revoke)

    show = sub.add_parser("show", help="one unit and its timeline, by unit or certificate serial")
    show.add_argument("--db", required=True)
    show.add_argument("--serial", required=True, help="unit serial number or certificate serial (hex)")
    show.set_defaults(func=cmd_show)

    export = sub.add_parser("export", help="stream the filtered units to CSV, JSON lines or a PDF report")
    export.add_argument("--db", required=True)
    export.add_argument("--format", choices=FORMATS, required=True)
    export.add_argument("--out", required=True, help="output file ('-' for stdout; csv/json only)")
    export.add_argument("--quiet", action="store_true", help="no progress bar")
    _add_filters(export)
    export.set_defaults(func=cmd_export)

    report = sub.add_parser("report", help="summary, yield and failures by reason for the filtered units")
    report.add_argument("--db", required=True)
    report.add_argument("--format", choices=("text", "json"), default="text")
    report.add_argument("--by", choices=("hour", "shift", "day"), default="shift", help="yield buckets")
    report.add_argument("--pdf", help="also write the PDF report (certificate of conformance) here")
    _add_filters(report)
    report.set_defaults(func=cmd_report)

    seed = sub.add_parser("seed", help="make a realistic audit database for tests and benchmarks")
    seed.add_argument("--db", required=True, help="SQLite file (created, or appended to)")
    seed.add_argument("--units", type=int, required=True)
    seed.add_argument("--seed", type=int, default=1, help="random seed (default 1)")
    seed.add_argument("--work-orders", type=int, default=None)
    seed.add_argument("--failure-rate", type=float, default=0.03)
    seed.add_argument("--quiet", action="store_true")
    seed.set_defaults(func=cmd_seed)
    return audit


def _add_filters(parser: argparse.ArgumentParser) -> None:
    """The audit view's filters, as options (one spelling for export and report)."""
    parser.add_argument("--work-order")
    parser.add_argument("--product")
    parser.add_argument("--station")
    parser.add_argument("--operator")
    parser.add_argument("--outcome", choices=OUTCOMES)
    parser.add_argument("--failed-step", help="units that failed at this step")
    parser.add_argument("--error-code")
    parser.add_argument("--search", help="start of a unit serial, hardware id, cert serial or fingerprint")
    parser.add_argument("--since", type=_timestamp, help="ISO date/time, UTC if no zone given")
    parser.add_argument("--until", type=_timestamp, help="ISO date/time (exclusive)")


def filter_from_args(args: argparse.Namespace) -> UnitFilter:
    return UnitFilter(
        work_order=args.work_order, product=args.product, station=args.station, operator=args.operator,
        outcome=args.outcome, failed_step=args.failed_step, error_code=args.error_code,
        search=args.search, since=args.since, until=args.until,
    )


class _ProgressBar:
    """A one-line progress bar on stderr (only when stderr is a terminal or asked for)."""

    def __init__(self, label: str, *, enabled: bool) -> None:
        self.label = label
        self.enabled = enabled
        self.started = time.perf_counter()

    def __call__(self, done: int, total: int) -> None:
        if not self.enabled:
            return
        frac = done / total if total else 1.0
        bar = "#" * int(frac * 30)
        rate = done / max(time.perf_counter() - self.started, 1e-6)
        print(f"\r{self.label} [{bar:<30}] {done}/{total} ({rate:,.0f}/s)", end="", file=sys.stderr,
              flush=True)

    def close(self) -> None:
        if self.enabled:
            print(file=sys.stderr)


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
        kept = read_checkpoints(args.checkpoints) if args.checkpoints is not None else []
    except (OSError, ValueError) as exc:
        print(f"cannot read the checkpoint file: {exc}", file=sys.stderr)
        return 2
    try:
        result: VerifyResult = verify_chain(args.db, progress_callback=progress, checkpoints=kept)
    except StationError as exc:
        print(f"\ncannot verify: {exc}", file=sys.stderr)
        return 2
    if not args.quiet:
        print(file=sys.stderr)
    print(result.summary())
    return 0 if result.ok else 1


def cmd_revoke(args: argparse.Namespace) -> int:
    """Revoke for good; the acting operator (``--as``, checked by the CLI) is recorded."""
    from station.audit import open_audit_store

    store = open_audit_store(args.db, station_id="cli")
    try:
        unit = store.revoke(args.serial, reason=args.reason, operator=args.acting or "unknown",
                            note=args.note)
    except ValueError as exc:
        print(f"not revoked: {exc}", file=sys.stderr)
        return 1
    finally:
        store.close()
    print(f"revoked the certificate {unit.cert_serial} of unit {unit.unit_id} ({unit.serial_number}); "
          "publish a new CRL (station crl) so verifiers learn of it")
    return 0


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
    try:
        unit_filter = filter_from_args(args)
    except ValueError as exc:
        print(f"bad filter: {exc}", file=sys.stderr)
        return 2
    if args.out == "-" and args.format == "pdf":
        print("a PDF needs --out FILE", file=sys.stderr)
        return 2
    store = _open_reader(args.db)
    bar = _ProgressBar(f"export {args.format}", enabled=not args.quiet and args.out != "-")
    try:
        query = AuditQuery(store)
        if args.out == "-":
            writer = write_csv if args.format == "csv" else write_json
            count = writer(query, unit_filter, sys.stdout)
        else:
            count = export(query, unit_filter, args.format, Path(args.out), progress=bar)
        bar.close()
        print(f"exported {count} units", file=sys.stderr)
        return 0
    except Exception as exc:
        bar.close()
        print(f"export failed: {exc}", file=sys.stderr)
        return 2
    finally:
        store.close()


def cmd_report(args: argparse.Namespace) -> int:
    try:
        unit_filter = filter_from_args(args)
    except ValueError as exc:
        print(f"bad filter: {exc}", file=sys.stderr)
        return 2
    store = _open_reader(args.db)
    try:
        query = AuditQuery(store)
        if args.format == "json":
            print(json.dumps(build_report(query, unit_filter, bucket=args.by), indent=2, default=str))
        else:
            print(format_report(query, unit_filter, bucket=args.by), end="")
        if args.pdf:
            count = export(query, unit_filter, "pdf", Path(args.pdf))
            print(f"wrote {args.pdf} ({count} units)", file=sys.stderr)
        return 0
    except Exception as exc:
        print(f"report failed: {exc}", file=sys.stderr)
        return 2
    finally:
        store.close()


def cmd_seed(args: argparse.Namespace) -> int:
    from station.reports.seed import seed_database

    bar = _ProgressBar("seed", enabled=not args.quiet)
    try:
        result = seed_database(args.db, args.units, seed=args.seed, work_orders=args.work_orders,
                               failure_rate=args.failure_rate, progress=bar)
    except (ValueError, StationError) as exc:
        bar.close()
        print(f"seed failed: {exc}", file=sys.stderr)
        return 2
    bar.close()
    print(f"seeded {result.units} units ({result.failed} failed), {result.events} events, "
          f"{result.work_orders} work orders in {result.seconds:.1f} s "
          f"({result.units_per_second:,.0f} units/s); head seq {result.head_seq}; "
          f"{result.db_bytes / 1e6:,.0f} MB")
    return 0
