"""What every benchmark shares: the result row, the table, a throw-away CA, timing helpers."""

from __future__ import annotations

import atexit
import os
import statistics
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fixtures.softhsm import TestCa, create_test_ca
from station.domain import WorkOrder


@dataclass(frozen=True, kw_only=True)
class Row:
    """One line of the table: a figure, its reference measured in the same run, and the target."""

    bench: str
    figure: str
    value: float
    unit: str
    reference: str = ""
    ref_value: float | None = None
    target: str = ""
    met: bool | None = None
    ratio_override: float | None = None

    @property
    def ratio(self) -> float | None:
        if self.ratio_override is not None:
            return self.ratio_override
        if self.ref_value in (None, 0.0):
            return None
        assert self.ref_value is not None
        return self.value / self.ref_value


def fmt(value: float) -> str:
    """Numbers readable at a glance: 3 significant digits, thousands grouped."""
    if value >= 1000:
        return f"{value:,.0f}"
    if value >= 100:
        return f"{value:.0f}"
    if value >= 10:
        return f"{value:.1f}"
    return f"{value:.3g}"


def render(rows: list[Row]) -> str:
    """The rows as a Markdown table (readable in a terminal and pasteable into the README)."""
    head = ["#", "figure", "value", "reference (same run)", "ref value", "ratio", "target", "met"]
    lines = [head]
    for r in rows:
        ratio = r.ratio
        lines.append([
            r.bench, r.figure, f"{fmt(r.value)} {r.unit}".strip(), r.reference,
            "" if r.ref_value is None else f"{fmt(r.ref_value)} {r.unit}".strip(),
            "" if ratio is None else f"{ratio:.3g}x",
            r.target, {True: "yes", False: "NO", None: ""}[r.met],
        ])
    widths = [max(len(line[i]) for line in lines) for i in range(len(head))]
    out = []
    for n, line in enumerate(lines):
        out.append("| " + " | ".join(c.ljust(w) for c, w in zip(line, widths, strict=True)) + " |")
        if n == 0:
            out.append("|" + "|".join("-" * (w + 2) for w in widths) + "|")
    return "\n".join(out)


def percentile(values: list[float], q: float) -> float:
    """The q-quantile (0..1) by the nearest-rank method."""
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, round(q * len(ordered) + 0.5) - 1))
    return ordered[index]


def median(values: list[float]) -> float:
    return statistics.median(values)


_CA: list[TestCa] = []


@contextmanager
def bench_ca(label: str = "bench") -> Iterator[TestCa]:
    """The run's throw-away SoftHSM token and P-256 CA (one per process: python-pkcs11 caches the
    module with its token directory), removed at exit."""
    if not _CA:
        tmp = tempfile.TemporaryDirectory(prefix=f"station-{label}-")
        atexit.register(tmp.cleanup)
        _CA.append(create_test_ca(Path(tmp.name) / "hsm", label=label, key_label="issuing-ca"))
    yield _CA[0]


def work_order(quantity: int, tag: str = "") -> WorkOrder:
    """A tls-client work order with the demo's commissioning values."""
    return WorkOrder(
        number=f"WO-BENCH-{tag}{os.getpid()}-{time.monotonic_ns()}", product="sensor-v2",
        profile="tls-client", quantity=quantity, serial_format="SNS2-{seq:06d}",
        commissioning=(("wifi.ssid", "factory-line-1", False),
                       ("wifi.passphrase", "bench-passphrase-0123456789", True),
                       ("mqtt.endpoint", "mqtts://broker.example.net:8883", False)),
    )


class Intervals:
    """Thread-safe record of (thread, kind, start, end) intervals, for attributing time per unit."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.items: list[tuple[int, str, float, float]] = []

    def add(self, kind: str, start: float, end: float) -> None:
        with self._lock:
            self.items.append((threading.get_ident(), kind, start, end))

    def wrap(self, kind: str, func: Callable[..., Any]) -> Callable[..., Any]:
        def timed(*args: Any, **kwargs: Any) -> Any:
            start = time.perf_counter()
            try:
                return func(*args, **kwargs)
            finally:
                self.add(kind, start, time.perf_counter())
        return timed

    def total(self, kind: str, start: float, end: float, thread: int | None = None) -> float:
        """Seconds of ``kind`` intervals inside [start, end] (optionally of one thread)."""
        with self._lock:
            items = list(self.items)
        return sum(
            max(0.0, min(e, end) - max(s, start))
            for t, k, s, e in items
            if k == kind and (thread is None or t == thread)
        )

    def overlap(self, kind: str, within: str, start: float, end: float, thread: int) -> float:
        """Seconds of ``kind`` intervals (any thread) that fall inside ``within`` intervals of ``thread``."""
        with self._lock:
            items = list(self.items)
        outer = [(s, e) for t, k, s, e in items if k == within and t == thread and e >= start and s <= end]
        inner = [(s, e) for _, k, s, e in items if k == kind and e >= start and s <= end]
        return sum(max(0.0, min(e1, e2) - max(s1, s2)) for s1, e1 in outer for s2, e2 in inner)
