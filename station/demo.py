"""``station demo``: the station's main job on embedded defaults, needing nothing but the install.

It makes (or reuses) a SoftHSM token with an issuing CA in the data directory, starts virtual devices on
pseudo-terminals, provisions them all in parallel through the real serial, HSM and SQLite path,
prints a summary and verifies the audit chain. Nothing here is demo-only logic: the same
:func:`station.app.open_station` and :class:`station.line.Line` run a real line.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from rich.console import Console

from fixtures.softhsm import TestCa, create_test_ca
from fixtures.virtual_dut import CLONE_KEY_PEM, Faults, virtual_devices
from hsm.pin import FilePin
from station.app import open_station
from station.audit import verify_chain
from station.config import SlotConfig
from station.domain import WorkOrder
from station.monitor import LineMonitor, summary_tables
from station.signing import HsmSigner
from station.workflow import UnitResult

__all__ = ["FAULT_PRESETS", "DemoOutcome", "demo_signer", "demo_work_order", "run_demo"]

FAULT_PRESETS: dict[str, Faults] = {
    "unplug": Faults(unplug_at="generate_key"),
    "silent": Faults(silent_at="get_csr"),
    "noise": Faults(corrupt_rate=0.002, garbage=16, seed=7),
    "bad-csr": Faults(bad_csr_signature=True),
    "weak-key": Faults(weak_key="rsa1024"),
    "wrong-curve": Faults(weak_key="secp256k1"),
    "clone": Faults(clone_key_pem=CLONE_KEY_PEM),
    "locked": Faults(report_locked=True),
    "reject-cert": Faults(reject_cert=True),
    "bad-pop": Faults(bad_challenge=True),
    "wrong-version": Faults(wrong_version=9),
}
"""Named faults for ``--faults``: each makes one virtual device misbehave in a realistic way."""

_CA_STATE = "demo-ca.json"
_PIN_FILE = "hsm-pin"


@dataclass(frozen=True, kw_only=True)
class DemoOutcome:
    results: list[UnitResult]
    chain_ok: bool
    chain_summary: str
    wall_seconds: float
    database: Path


def _demo_ca(data_dir: Path) -> tuple[TestCa | None, dict[str, str]]:
    """Create the demo token and CA once per data directory; later runs reuse it (PIN from a 0600 file)."""
    hsm_dir = data_dir / "hsm"
    state_file = hsm_dir / _CA_STATE
    if state_file.exists():
        state: dict[str, str] = json.loads(state_file.read_text())
        os.environ["SOFTHSM2_CONF"] = state["conf"]
        return None, state
    test_ca = create_test_ca(hsm_dir, label="station-demo", key_label="issuing-ca")
    pin_file = hsm_dir / _PIN_FILE
    fd = os.open(pin_file, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(test_ca.pin)
    state = {
        "module": test_ca.module_path, "token_label": test_ca.token_label,
        "key_label": test_ca.key_label, "ca_chain": str(test_ca.ca_dir / "chain.pem"),
        "conf": str(test_ca.conf_path), "pin_file": str(pin_file),
    }
    state_file.write_text(json.dumps(state, indent=2))
    return test_ca, state


def parse_faults(spec: str, units: int) -> list[Faults | None]:
    """``"unplug,clone,clone"`` -> the first devices get those faults, the rest are healthy."""
    names = [n.strip() for n in spec.split(",") if n.strip()] if spec else []
    unknown = [n for n in names if n not in FAULT_PRESETS]
    if unknown:
        raise ValueError(f"unknown fault {', '.join(unknown)}; known: {', '.join(FAULT_PRESETS)}")
    if len(names) > units:
        raise ValueError(f"{len(names)} faults for {units} units")
    return [FAULT_PRESETS[n] for n in names] + [None] * (units - len(names))


def demo_signer(data_dir: Path) -> HsmSigner:
    """The demo's HSM signer over the token and CA in ``data_dir`` (made on first use)."""
    _, ca = _demo_ca(data_dir)
    return HsmSigner.open(module_path=ca["module"], token_label=ca["token_label"],
                          key_label=ca["key_label"], pin_source=FilePin(Path(ca["pin_file"])),
                          ca_chain_path=Path(ca["ca_chain"]))


def demo_work_order(units: int, *, number: str | None = None) -> WorkOrder:
    """The demo's work order: a fresh number per run unless ``number`` is given."""
    stamp = time.strftime("%Y%m%d-%H%M%S")
    return WorkOrder(
        number=number or f"WO-DEMO-{stamp}-{secrets.token_hex(3)}", product="sensor-v2", profile="tls-client",
        quantity=units, serial_format="SNS2-{seq:06d}",
        commissioning=(("wifi.ssid", "factory-line-1", False),
                       ("wifi.passphrase", "demo-passphrase-not-secret-elsewhere", True),
                       ("mqtt.endpoint", "mqtts://broker.example.net:8883", False)),
    )


def run_demo(*, units: int = 8, data_dir: Path | None = None, faults: str = "",
             key_delay: float = 0.08, baud: int | None = None,
             console: Console | None = None) -> DemoOutcome:
    """Provision ``units`` virtual devices in parallel; returns the results and the chain check."""
    console = console or Console()
    plans = parse_faults(faults, units)
    keep = data_dir is not None
    root = Path(data_dir) if data_dir is not None else Path(tempfile.mkdtemp(prefix="station-demo-"))
    root.mkdir(parents=True, exist_ok=True)
    try:
        signer = demo_signer(root)
        database = root / "audit.db"
        work_order = demo_work_order(units)
        with open_station(station_id="demo-station", signer=signer, database=database,
                          work_order=work_order) as station, \
                virtual_devices(units, faults=plans, key_delay=key_delay, baud=baud) as devices:
            runs = station.slot_runs(
                [SlotConfig(name=str(i), port=d.port) for i, d in enumerate(devices, start=1)],
                operator="demo-operator", work_order=work_order,
            )
            started = time.perf_counter()
            with LineMonitor([r.job.slot for r in runs], console) as monitor:
                results = station.line.run(runs, on_progress=monitor.on_progress,
                                           on_result=monitor.on_result)
            wall = time.perf_counter() - started
        verdict = verify_chain(database)
        for table in summary_tables(results, wall):
            console.print(table)
        console.print(f"Audit chain: {verdict.summary()}")
        console.print(f"Audit database: {database}" if keep else
                      "Results discarded (pass --data-dir DIR to keep the database, token and CA).")
        return DemoOutcome(results=results, chain_ok=verdict.ok, chain_summary=verdict.summary(),
                           wall_seconds=wall, database=database)
    finally:
        if not keep:
            shutil.rmtree(root, ignore_errors=True)


def demo_exit_code(outcome: DemoOutcome, faults: Sequence[Faults | None]) -> int:
    """0 when the chain verifies and every device without an injected fault passed."""
    healthy_failed = [r for r, f in zip(outcome.results, faults, strict=True) if f is None and not r.ok]
    return 0 if outcome.chain_ok and not healthy_failed else 1
