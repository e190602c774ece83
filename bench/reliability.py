"""The reliability figures of issue 7, one ``name: value`` a line.

    bench/reliability [--kills 200] [--fuzz 1000000] [--seed S]

* ``kills``, ``certificates_checked``, ``certificates_missing``: the SIGKILL campaign of
  :mod:`fixtures.crash_station` (station in a child process, devices in this one);
* ``fault_cases``, ``fault_cases_passed``: pytest runs the end-to-end matrix
  (tests/reliability/test_fault_matrix.py) and the unit-level tests it references by case id
  (``UNIT_LEVEL_CASES``); each test item is one case, counted from pytest's JUnit XML;
* ``fuzz_inputs``, ``fuzz_crashes``: ``bench/fuzz.py`` (decoder/parser inputs plus CSR intake inputs).
"""

from __future__ import annotations

import argparse
import random
import subprocess
import sys
import tempfile
import time
import xml.etree.ElementTree as ET
from collections.abc import Sequence
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def fault_matrix() -> tuple[int, int, list[str]]:
    """Run the matrix and the referenced unit-level cases; (cases, passed, failed ids)."""
    from tests.reliability.test_fault_matrix import UNIT_LEVEL_CASES

    with tempfile.TemporaryDirectory(prefix="matrix-") as tmp:
        junit = Path(tmp) / "matrix.xml"
        nodes = ["tests/reliability/test_fault_matrix.py", *sorted(set(UNIT_LEVEL_CASES.values()))]
        # SQLite is the station's database here; the PostgreSQL variants need a server (tests/audit).
        subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
                        "-k", "not postgresql",
                        f"--junitxml={junit}", *nodes], cwd=ROOT, stdout=subprocess.DEVNULL,
                       stderr=subprocess.DEVNULL, check=False)
        cases = passed = 0
        failed: list[str] = []
        for case in ET.parse(junit).getroot().iter("testcase"):
            cases += 1
            if any(case.find(tag) is not None for tag in ("failure", "error", "skipped")):
                failed.append(f"{case.get('classname')}::{case.get('name')}")
            else:
                passed += 1
    return cases, passed, failed


def run_fuzz(inputs: int, seed: int) -> dict[str, int]:
    """bench/fuzz.py in its own process (it makes its own SoftHSM token; one module per process)."""
    proc = subprocess.run([sys.executable, str(ROOT / "bench" / "fuzz.py"), "--inputs", str(inputs),
                           "--seed", str(seed)], cwd=ROOT, capture_output=True, text=True, check=False)
    sys.stderr.write(proc.stderr)
    out = dict(line.split(": ", 1) for line in proc.stdout.splitlines() if ": " in line)
    if "fuzz_crashes" not in out:
        return {"fuzz_inputs": 0, "decoder_inputs": 0, "csr_inputs": 0, "fuzz_crashes": 1}
    return {k: int(float(v)) for k, v in out.items()}


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Reliability figures (issue 7).")
    parser.add_argument("--kills", type=int, default=200, help="SIGKILLs of the station (default 200)")
    parser.add_argument("--fuzz", type=int, default=1_000_000, help="decoder inputs (default 1,000,000)")
    parser.add_argument("--seed", type=int, default=None)
    args = parser.parse_args(argv)
    seed = args.seed if args.seed is not None else random.randrange(1 << 32)
    started = time.monotonic()

    from fixtures.crash_station import run_campaign

    crash = run_campaign(kills=args.kills, slots=4, seed=seed) if args.kills else None
    cases, passed, failed = fault_matrix()
    fuzz = run_fuzz(args.fuzz, seed) if args.fuzz else None

    figures: dict[str, object] = {
        "seed": seed,
        "kills": crash.kills if crash else 0,
        "station_runs": crash.runs if crash else 0,
        "certificates_checked": crash.certificates_checked if crash else 0,
        "certificates_missing": crash.certificates_missing if crash else 0,
        "interrupted_units": crash.interrupted_units if crash else 0,
        "resumed_units": crash.resumed_units if crash else 0,
        "crash_problems": len(crash.problems) if crash else 0,
        "fault_cases": cases,
        "fault_cases_passed": passed,
        "fuzz_inputs": fuzz["fuzz_inputs"] if fuzz else 0,
        "fuzz_decoder_inputs": fuzz["decoder_inputs"] if fuzz else 0,
        "fuzz_csr_inputs": fuzz["csr_inputs"] if fuzz else 0,
        "fuzz_crashes": fuzz["fuzz_crashes"] if fuzz else 0,
        "seconds": round(time.monotonic() - started),
    }
    for name, value in figures.items():
        print(f"{name}: {value}")
    for problem in (crash.problems if crash else [])[:20]:
        print(f"crash problem: {problem}", file=sys.stderr)
    for case in failed:
        print(f"fault case failed: {case}", file=sys.stderr)
    ok = (not crash or crash.ok) and passed == cases and (not fuzz or fuzz["fuzz_crashes"] == 0)
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
