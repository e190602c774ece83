"""``python -m bench.perf [--quick] [--only 1,2,...]``: run the benchmarks, print one table.

The last line is a one-line summary: targets met, the headline figures, the run time.
"""

from __future__ import annotations

import argparse
import logging
import platform
import sys
import time
from collections.abc import Callable, Sequence

from bench.perf import audit, line, signing
from bench.perf.common import Row, render

BENCHES: dict[str, Callable[[bool], list[Row]]] = {
    "1": lambda quick: signing.run(quick=quick),
    "2": lambda quick: line.throughput(quick=quick),
    "3": lambda quick: line.overhead_and_wire(quick=quick),  # also bench 4 (same run)
    "5": lambda quick: audit.run(quick=quick),
}


def summary(rows: list[Row], seconds: float, quick: bool) -> str:
    judged = [r for r in rows if r.met is not None]
    missed = [f"{r.bench}:{r.figure.split(',')[0]}" for r in judged if not r.met]
    parts = [f"{sum(bool(r.met) for r in judged)}/{len(judged)} targets met"]
    if missed:
        parts.append("missed " + "; ".join(dict.fromkeys(missed)))
    parts.append(f"{'quick' if quick else 'full'} run {seconds:.0f} s on {platform.machine()}")
    return "SUMMARY: " + " | ".join(parts)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="bench/run", description=__doc__)
    parser.add_argument("--quick", action="store_true", help="a reduced run (under a minute)")
    parser.add_argument("--only", default="", help="comma-separated benchmark numbers (4 runs with 3)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.ERROR)
    wanted = [b.strip() for b in args.only.split(",") if b.strip()] or list(BENCHES)
    wanted = ["3" if b == "4" else b for b in wanted]
    started = time.perf_counter()
    rows: list[Row] = []
    for name in dict.fromkeys(wanted):
        if name not in BENCHES:
            parser.error(f"unknown benchmark {name}; known: 1 2 3 4 5")
        t = time.perf_counter()
        rows += BENCHES[name](args.quick)
        print(f"bench {name}{'+4' if name == '3' else ''}: {time.perf_counter() - t:.1f} s",
              file=sys.stderr, flush=True)
    rows.sort(key=lambda r: r.bench)
    print(render(rows))
    print(summary(rows, time.perf_counter() - started, args.quick))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
