"""``station audit report``: what a QE asks first about a filter, as text or JSON.

Summary counts and yield, yield by hour/shift/day, failures by step and error code (Pareto, with the
cumulative share), per work order; the same numbers the audit view's charts draw.
"""

from __future__ import annotations

from dataclasses import asdict
from typing import Any

from station.reports.export import generated_at, summary_lines
from station.reports.filters import UnitFilter
from station.reports.query import AuditQuery


def build_report(
    query: AuditQuery, f: UnitFilter, *, bucket: str = "shift", last: int = 21
) -> dict[str, Any]:
    """The report as plain data (JSON-ready)."""
    summary = query.summary(f)
    failures = query.failures(f)
    total_failed = sum(x.count for x in failures)
    cumulative = 0
    pareto = []
    for x in failures:
        cumulative += x.count
        pareto.append({**asdict(x), "share_pct": round(100.0 * x.count / total_failed, 2),
                       "cumulative_pct": round(100.0 * cumulative / total_failed, 2)})
    cycle = query.cycle_times(f)
    return {
        "generated_at": generated_at(),
        "filter": f.active_terms,
        "summary": {"units": summary.total, "provisioned": summary.provisioned, "failed": summary.failed,
                    "in_flight": summary.in_flight, "yield_pct": round(summary.yield_pct, 2),
                    "first_started_at": summary.first_at.isoformat() if summary.first_at else None,
                    "last_started_at": summary.last_at.isoformat() if summary.last_at else None},
        "work_orders": summary.work_orders,
        "yield": [{"bucket": b.label, "provisioned": b.ok, "failed": b.failed,
                   "yield_pct": round(b.yield_pct, 2)} for b in query.yield_by(f, bucket, last=last)],
        "failures": pareto,
        "cycle_time_ms": {"median": cycle.median_ms, "p95": cycle.p95_ms},
    }


def format_report(query: AuditQuery, f: UnitFilter, *, bucket: str = "shift", last: int = 21) -> str:
    """The report as text for a terminal or a mail."""
    data = build_report(query, f, bucket=bucket, last=last)
    summary = query.summary(f)
    lines = [f"Audit report - {f.describe()}", f"generated {data['generated_at']}", ""]
    lines += [f"{label + ':':22}{value}" for label, value in summary_lines(summary)]
    cycle = data["cycle_time_ms"]
    if cycle["median"] is not None:
        lines.append(f"{'Cycle time:':22}median {cycle['median'] / 1000:.2f} s, "
                     f"p95 {cycle['p95'] / 1000:.2f} s")
    lines += ["", "Work orders:"]
    for wo in data["work_orders"]:
        lines.append(f"  {wo['work_order']:16} {wo['product']:12} quantity {wo['quantity']:>8}  "
                     f"provisioned {wo['provisioned']:>8}  failed {wo['failed']:>6}  "
                     f"in flight {wo['in_flight']}")
    lines += ["", f"Yield by {bucket}:"]
    for b in data["yield"]:
        lines.append(f"  {b['bucket']:22} provisioned {b['provisioned']:>7}  failed {b['failed']:>5}  "
                     f"yield {b['yield_pct']:6.2f} %")
    lines += ["", "Failures by step and error code (Pareto):"]
    if not data["failures"]:
        lines.append("  none")
    for x in data["failures"]:
        lines.append(f"  {x['step']:18} {x['error_code']:22} {x['count']:>7}  {x['share_pct']:6.2f} %  "
                     f"cum {x['cumulative_pct']:6.2f} %")
    return "\n".join(lines) + "\n"
