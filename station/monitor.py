"""Live per-slot progress and the end-of-run summary for the command line (rich).

The monitor only shows state handed to it by the workflow's callbacks; it holds no provisioning logic.
On a terminal it redraws a table per slot; elsewhere (CI logs, pipes) it prints one line per result.
"""

from __future__ import annotations

import statistics
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from types import TracebackType

from rich.console import Console
from rich.live import Live
from rich.markup import escape
from rich.table import Table

from station.domain import STEP_ORDER, Step
from station.workflow import UnitResult

__all__ = ["LineMonitor", "summary_tables"]


@dataclass
class _SlotView:
    slot: str
    step: Step | None = None
    number: int = 0
    started: float = field(default_factory=time.monotonic)
    result: UnitResult | None = None


class LineMonitor:
    """Thread-safe sink for ``on_progress`` and ``on_result``; a context manager around the run."""

    def __init__(self, slots: Sequence[str], console: Console | None = None) -> None:
        self._console = console or Console()
        self._views = {s: _SlotView(s) for s in slots}
        self._lock = threading.Lock()
        self._live: Live | None = None

    def __enter__(self) -> LineMonitor:
        if self._console.is_terminal:
            self._live = Live(self._render(), console=self._console, refresh_per_second=8,
                              get_renderable=self._render)
            self._live.__enter__()
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        if self._live is not None:
            self._live.__exit__(exc_type, exc, tb)

    def on_progress(self, slot: str, step: Step, number: int, total: int) -> None:
        with self._lock:
            view = self._views.setdefault(slot, _SlotView(slot))
            if step is Step.CONNECT:
                view.started = time.monotonic()
            view.step, view.number = step, number

    def on_result(self, result: UnitResult) -> None:
        with self._lock:
            self._views.setdefault(result.slot, _SlotView(result.slot)).result = result
        if self._live is None:
            if result.ok:
                self._console.print(f"slot {result.slot}: PASS {result.unit_serial} "
                                    f"({result.total_ms:.0f} ms)", highlight=False)
            else:
                self._console.print(f"slot {result.slot}: FAIL at {result.failed_step}: "
                                    f"{result.message} {result.hint}", highlight=False)

    def _render(self) -> Table:
        table = Table(title="Fixture slots", expand=False)
        for column in ("slot", "state", "step", "unit", "elapsed"):
            table.add_column(column)
        with self._lock:
            views = list(self._views.values())
        for view in views:
            result = view.result
            if result is None:
                state = "RUNNING" if view.step else "WAIT"
                step = f"{view.step} ({view.number}/{len(STEP_ORDER)})" if view.step else ""
                elapsed = f"{time.monotonic() - view.started:.1f} s" if view.step else ""
                table.add_row(view.slot, state, step, "", elapsed)
            elif result.ok:
                table.add_row(view.slot, "[green]✔ PASS[/]", "done", result.unit_serial or "",
                              f"{result.total_ms / 1000:.2f} s")
            else:
                table.add_row(view.slot, "[bold red]✘ FAIL[/]",
                              escape(f"{result.failed_step}: {result.message}"),
                              result.hardware_id or "", f"{result.total_ms / 1000:.2f} s")
        return table


def summary_tables(results: Sequence[UnitResult], wall_seconds: float) -> list[Table]:
    """The end-of-run summary: one row per unit, then per-step timing statistics."""
    units = Table(title="Units")
    for column in ("slot", "result", "unit serial", "hardware id", "cert serial", "time", "reason"):
        units.add_column(column)
    for r in results:
        units.add_row(
            r.slot, "[green]PASS[/]" if r.ok else "[red]FAIL[/]", r.unit_serial or "",
            r.hardware_id or "", (r.cert_serial or "")[:16], f"{r.total_ms:.0f} ms",
            "" if r.ok else escape(f"{r.failed_step} [{r.error_code}] {r.message}"),
        )
    steps = Table(title="Step times (ms, passing steps)")
    for column in ("step", "n", "median", "p90", "max"):
        steps.add_column(column, justify="right" if column != "step" else "left")
    for step in STEP_ORDER:
        durations = sorted(t.duration_ms for r in results for t in r.timings
                           if t.step is step and t.outcome == "ok")
        if not durations:
            continue
        p90 = durations[min(len(durations) - 1, int(0.9 * len(durations)))]
        steps.add_row(str(step), str(len(durations)), f"{statistics.median(durations):.1f}",
                      f"{p90:.1f}", f"{durations[-1]:.1f}")
    passed = sum(r.ok for r in results)
    totals = Table(title="Totals")
    for column in ("units", "passed", "failed", "wall time", "units/hour"):
        totals.add_column(column, justify="right")
    rate = passed / wall_seconds * 3600 if wall_seconds > 0 else 0.0
    totals.add_row(str(len(results)), str(passed), str(len(results) - passed),
                   f"{wall_seconds:.2f} s", f"{rate:.0f}")
    return [units, steps, totals]
