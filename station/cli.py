"""The ``station`` command. Its spellings are fixed: scripts on the line call them.

::

    station demo [--units N] [--data-dir DIR] [--faults LIST]
    station provision --config FILE [--operator NAME]
    station ports [--vid HEX] [--pid HEX]
    station audit verify|show|export --db DB ...
    station ca init|csr|import-chain|audit-key|status ...
    station crl --config FILE --out FILE
    station operator add|list --db DB ...

Admin commands (``ca init|csr|import-chain|audit-key``, ``operator add``) name the acting operator with
``--as BADGE`` (or STATION_OPERATOR) and the station's audit database (``--station-db`` or
STATION_DB; ``operator`` uses its own ``--db``); the role check and its outcome are in the audit log.

Every failure a user can cause ends as one clear line on stderr and a non-zero exit code, never a
traceback; ``--debug`` shows tracebacks for developers.
"""

from __future__ import annotations

import argparse
import getpass
import logging
import os
import sys
import time
from collections.abc import Sequence
from pathlib import Path

from rich.console import Console
from rich.table import Table

from station.errors import StationError

__all__ = ["build_parser", "main"]


def _cmd_demo(args: argparse.Namespace) -> int:
    from station.demo import demo_exit_code, parse_faults, run_demo

    try:
        plans = parse_faults(args.faults, args.units)
    except ValueError as exc:
        raise SystemExit(f"station demo: {exc}") from exc
    if args.gui:
        from station.gui.demo import run_demo_gui

        return run_demo_gui(units=args.units, data_dir=args.data_dir, faults=args.faults,
                            key_delay=args.key_delay)
    outcome = run_demo(units=args.units, data_dir=args.data_dir, faults=args.faults,
                       key_delay=args.key_delay, baud=args.baud)
    return demo_exit_code(outcome, plans)


def _cmd_provision(args: argparse.Namespace) -> int:
    from station.app import open_station_from_config
    from station.config import load_config
    from station.monitor import LineMonitor, summary_tables

    config = load_config(args.config)
    console = Console()
    operator = args.operator or config.operator
    with open_station_from_config(config) as station:
        for unit in station.interrupted:
            console.print(f"[yellow]Interrupted by a previous run:[/] unit {unit.unit_id} "
                          f"(hardware id {unit.hardware_id}), now {unit.status}")
        runs = station.slot_runs(config.slots, operator=operator, work_order=config.work_order)
        started = time.perf_counter()
        with LineMonitor([s.name for s in config.slots], console) as monitor:
            results = station.line.run(runs, on_progress=monitor.on_progress,
                                       on_result=monitor.on_result)
        for table in summary_tables(results, time.perf_counter() - started):
            console.print(table)
        if station.provisioner.issuing_stopped:
            console.print(f"[bold red]Issuing stopped:[/] {station.provisioner.issuing_stopped}")
    return 0 if all(r.ok for r in results) else 1


def _cmd_crl(args: argparse.Namespace) -> int:
    from cryptography import x509
    from cryptography.hazmat.primitives import serialization

    from hsm.ca import Revoked
    from hsm.pin import pin_source_from_spec
    from station.audit import open_audit_store
    from station.config import load_config
    from station.signing import HsmSigner

    config = load_config(args.config)
    store = open_audit_store(config.database_url, station_id=config.station_id)
    try:
        revoked = [Revoked(serial=int(serial, 16), revoked_at=at, reason=reason)
                   for serial, at, reason in store.revoked_certificates()]
        signer = HsmSigner.open(
            module_path=config.hsm.module, token_label=config.hsm.token_label,
            key_label=config.hsm.key_label, pin_source=pin_source_from_spec(config.hsm.pin_source),
            ca_chain_path=Path(config.hsm.ca_chain))
        try:
            der = signer.sign_crl(revoked, days=args.days)
        finally:
            signer.close()
        store.record_event("crl_signed", operator=args.acting,
                           detail={"entries": str(len(revoked)), "days": str(args.days)})
    finally:
        store.close()
    data = x509.load_der_x509_crl(der).public_bytes(serialization.Encoding.PEM) \
        if args.out.suffix == ".pem" else der
    args.out.write_bytes(data)
    print(f"CRL with {len(revoked)} revoked certificate(s) written to {args.out}")
    return 0


def _cmd_ports(args: argparse.Namespace) -> int:
    from station.transport import list_ports

    ports = list_ports(vid=args.vid, pid=args.pid)
    table = Table(title="Serial ports")
    for column in ("device", "VID:PID", "serial", "manufacturer", "product", "location"):
        table.add_column(column)
    for p in ports:
        vidpid = f"{p.vid:04x}:{p.pid:04x}" if p.vid is not None and p.pid is not None else ""
        table.add_row(p.device, vidpid, p.serial_number or "", p.manufacturer or "", p.product or "",
                      p.location or "")
    Console().print(table if ports else "No matching serial ports.")
    return 0


def _cmd_operator_add(args: argparse.Namespace) -> int:
    from station.audit import open_audit_store

    pin = os.environ.get(args.pin_env) if args.pin_env else getpass.getpass(f"New PIN for {args.badge}: ")
    if not pin:
        raise SystemExit(f"station operator add: no PIN (environment variable {args.pin_env} is empty)")
    store = open_audit_store(args.db, station_id="cli")
    try:
        store.add_operator(badge_id=args.badge, name=args.name, role=args.role, pin=pin, by=args.acting)
    finally:
        store.close()
    print(f"operator {args.badge} ({args.role}) added")
    return 0


def _cmd_operator_list(args: argparse.Namespace) -> int:
    from station.audit import open_audit_store

    store = open_audit_store(args.db, station_id="cli")
    try:
        table = Table(title="Operators")
        for column in ("badge", "name", "role"):
            table.add_column(column)
        for op in store.operators():
            table.add_row(op.badge_id, op.name, op.role)
    finally:
        store.close()
    Console().print(table)
    return 0


# (command, subcommand) -> what the acting operator's role must allow.
_ADMIN_COMMANDS: dict[tuple[str, str], str] = {
    ("ca", "init"): "manage_ca",
    ("ca", "csr"): "manage_ca",
    ("ca", "import-chain"): "manage_ca",
    ("ca", "audit-key"): "manage_ca",
    ("operator", "add"): "manage_operators",
    ("audit", "revoke"): "revoke",
    ("crl", ""): "revoke",
}


def _check_admin(args: argparse.Namespace) -> None:
    """Refuse (and log) an admin command unless an admin is named; sets ``args.acting``."""
    sub = (getattr(args, "ca_command", None) or getattr(args, "operator_command", None)
           or getattr(args, "audit_command", None))
    action_name = _ADMIN_COMMANDS.get((args.command, sub or ""))
    args.acting = None
    if action_name is None:
        return
    from station.admin import authorise
    from station.audit import open_audit_store
    from station.roles import Action

    db = getattr(args, "db", None) if args.command in ("operator", "audit") else args.station_db
    if not db and args.command == "crl":
        from station.config import load_config

        db = load_config(args.config).database_url
    if not db:
        raise SystemExit(f"station {args.command} {sub}: an admin command needs the station's audit "
                         "database (--station-db DB or STATION_DB) to check who you are")
    store = open_audit_store(db, station_id="cli")
    try:
        args.acting = authorise(store, badge=args.acting_badge, action=Action(action_name),
                                command=f"station {args.command} {sub}",
                                bootstrap=args.command == "operator" and args.role == "admin")
    finally:
        store.close()


def _hex(text: str) -> int:
    return int(text, 16)


def build_parser() -> argparse.ArgumentParser:
    from hsm import cli as hsm_cli
    from station.audit import cli as audit_cli

    parser = argparse.ArgumentParser(prog="station", description="Factory provisioning station.")
    parser.add_argument("--debug", action="store_true", help="verbose logs and tracebacks")
    parser.add_argument("--as", dest="acting_badge", metavar="BADGE",
                        default=os.environ.get("STATION_OPERATOR"),
                        help="the operator doing an admin command (PIN from STATION_OPERATOR_PIN or "
                             "a prompt)")
    parser.add_argument("--station-db", metavar="DB", default=os.environ.get("STATION_DB"),
                        help="the station's audit database, where operators and roles live")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    demo = sub.add_parser("demo", help="provision virtual devices through a throw-away SoftHSM CA")
    demo.add_argument("--units", type=int, default=8, help="number of virtual devices (default 8)")
    demo.add_argument("--data-dir", type=Path, default=None,
                      help="keep the database (DIR/audit.db), the token and the CA here")
    demo.add_argument("--faults", default="",
                      help="comma-separated faults for the first devices, e.g. unplug,bad-csr,clone")
    demo.add_argument("--key-delay", type=float, default=0.08,
                      help="virtual key generation time in seconds (default 0.08)")
    demo.add_argument("--baud", type=int, default=None,
                      help="simulate wire time at this baud rate (default: none)")
    demo.add_argument("--gui", action="store_true", help="run the demo in the technician window")
    demo.set_defaults(func=_cmd_demo)

    provision = sub.add_parser("provision", help="provision the units in the configured slots")
    provision.add_argument("--config", type=Path, required=True, help="station configuration (TOML)")
    provision.add_argument("--operator", help="operator name or badge (default from the config)")
    provision.set_defaults(func=_cmd_provision)

    ports = sub.add_parser("ports", help="list USB-serial ports, optionally by USB VID/PID")
    ports.add_argument("--vid", type=_hex, help="USB vendor id, hex")
    ports.add_argument("--pid", type=_hex, help="USB product id, hex")
    ports.set_defaults(func=_cmd_ports)

    crl = sub.add_parser("crl", help="sign a CRL of the revoked certificates in the HSM (quality or "
                                     "admin, with --as)")
    crl.add_argument("--config", type=Path, required=True, help="station configuration (TOML)")
    crl.add_argument("--out", type=Path, required=True, help="the CRL file (DER; .pem for PEM)")
    crl.add_argument("--days", type=int, default=7, help="until the next CRL is due (default 7)")
    crl.set_defaults(func=_cmd_crl)

    operator = sub.add_parser("operator", help="the station's operators and their roles")
    op_sub = operator.add_subparsers(dest="operator_command", required=True)
    add = op_sub.add_parser("add", help="add an operator (admin only; the first admin bootstraps)")
    add.add_argument("--db", required=True, help="SQLAlchemy URL or SQLite file path")
    add.add_argument("--badge", required=True)
    add.add_argument("--name", required=True)
    add.add_argument("--role", required=True, choices=("technician", "quality", "admin"))
    add.add_argument("--pin-env", metavar="VAR",
                     help="read the new operator's PIN from this environment variable (default: prompt)")
    add.set_defaults(func=_cmd_operator_add)
    listing = op_sub.add_parser("list", help="list operators")
    listing.add_argument("--db", required=True)
    listing.set_defaults(func=_cmd_operator_list)

    audit_cli.register(sub)
    hsm_cli.register(sub)
    try:  # the Qt GUI is an optional extra (PySide6); the headless station works without it
        from station.gui import cli as gui_cli
    except ImportError:
        pass
    else:
        gui_cli.register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.debug else logging.ERROR,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        _check_admin(args)
        code: int = args.func(args)
    except StationError as exc:
        if args.debug:
            raise
        print(f"station {args.command}: {exc.message}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    return code


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
