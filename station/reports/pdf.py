"""The work-order report as PDF: summary, yield, failures by reason, then every unit's serial and
certificate fingerprint, suitable as a certificate of conformance.

Drawn on a reportlab canvas line by line from one database cursor: no list of units is ever built
(a platypus story would hold every row as a flowable). reportlab itself keeps each finished page's
compressed content until ``save()``, about 3 kB a page of 85 units, so a 50,000-unit work order
costs ~2 MB; CSV and JSON are the flat-memory exports for whole databases. Text is real PDF text:
the tests read it back with pypdf.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Final

from reportlab.lib.pagesizes import A4
from reportlab.pdfgen.canvas import Canvas

from station.reports.export import ProgressCallback, generated_at, summary_lines
from station.reports.filters import UnitFilter
from station.reports.query import AuditQuery

MARGIN: Final = 42.0
LINE: Final = 9.0
UNIT_COLUMNS: Final = ("serial_number", "status", "cert_serial", "cert_sha256")


class _Pages:
    """A cursor down the page that starts a new page (with a running header) when it runs out."""

    def __init__(self, canvas: Canvas, title: str) -> None:
        self.c = canvas
        self.title = title
        self.width, self.height = A4
        self.page = 0
        self.y = 0.0
        self.on_new_page: Callable[[], None] | None = None
        self.new_page(first=True)

    def new_page(self, *, first: bool = False) -> None:
        if not first:
            self.c.showPage()
        self.page += 1
        self.y = self.height - MARGIN
        self.c.setFont("Helvetica", 7)
        self.c.drawString(MARGIN, MARGIN / 2, f"{self.title} - page {self.page}")
        if not first and self.on_new_page is not None:
            self.on_new_page()

    def need(self, height: float) -> None:
        if self.y - height < MARGIN:
            self.new_page()

    def text(self, text: str, *, font: str = "Helvetica", size: float = 9.0, x: float = MARGIN,
             gap: float | None = None) -> None:
        step = gap if gap is not None else size * 1.35
        self.need(step)
        self.c.setFont(font, size)
        self.c.drawString(x, self.y - size, text)
        self.y -= step


def write_pdf(query: AuditQuery, f: UnitFilter, path: Path, *,
              progress: ProgressCallback | None = None) -> int:
    """Write the report for the filtered units (normally one work order); returns the unit count."""
    summary = query.summary(f)
    failures = query.failures(f)
    hourly = query.yield_by(f, "shift", last=12)
    title = (f"Certificate of conformance - work order {f.work_order}" if f.work_order
             else "Production report")
    canvas = Canvas(str(path), pagesize=A4, pageCompression=1)
    canvas.setTitle(title)
    canvas.setAuthor("provisioning station")
    pages = _Pages(canvas, title)
    pages.text(title, font="Helvetica-Bold", size=15, gap=22)
    pages.text(f"Filter: {f.describe()}", size=8)
    pages.text(f"Generated {generated_at()} from the hash-chained audit log", size=8, gap=16)

    for wo in summary.work_orders:
        pages.text(f"Work order {wo['work_order']}: product {wo['product']}, profile {wo['profile']}, "
                   f"authorised quantity {wo['quantity']}", size=9)
    pages.y -= 6
    pages.text("Summary", font="Helvetica-Bold", size=11, gap=15)
    for label, value in summary_lines(summary):
        pages.text(f"{label}:", size=9, gap=0)
        pages.text(value, size=9, x=MARGIN + 110)

    pages.y -= 6
    pages.text("Yield by shift (last shifts in the filter)", font="Helvetica-Bold", size=11, gap=15)
    if not hourly:
        pages.text("no units", size=9)
    for b in hourly:
        pages.text(f"{b.label:<22} provisioned {b.ok:>7}   failed {b.failed:>6}   yield {b.yield_pct:6.2f} %",
                   font="Courier", size=8)

    pages.y -= 6
    pages.text("Failures by reason", font="Helvetica-Bold", size=11, gap=15)
    if not failures:
        pages.text("no failures", size=9)
    total_failed = sum(x.count for x in failures) or 1
    for x in failures:
        pages.text(f"{x.step:<18} {x.error_code:<22} {x.count:>7}  {100.0 * x.count / total_failed:6.2f} %",
                   font="Courier", size=8)

    pages.y -= 6
    pages.text("Units: serial, status, certificate serial, certificate SHA-256 fingerprint",
               font="Helvetica-Bold", size=11, gap=15)

    def header() -> None:
        pages.text(f"{'serial':<18}{'status':<12}{'certificate serial':<34}certificate sha-256",
                   font="Courier-Bold", size=6.5, gap=LINE)

    header()
    pages.on_new_page = header
    count = 0
    total = summary.total
    for serial, status, cert_serial, cert_sha in query.stream(f, UNIT_COLUMNS):
        pages.text(f"{serial or '-':<18}{status:<12}{cert_serial or '-':<34}{cert_sha or '-'}",
                   font="Courier", size=6.5, gap=LINE)
        count += 1
        if progress is not None and count % 10_000 == 0:
            progress(count, total)
    pages.on_new_page = None
    pages.y -= 8
    pages.text(f"{count} units listed. The audit chain of this database can be checked with "
               "'station audit verify'.", size=8)
    canvas.showPage()
    canvas.save()
    if progress is not None:
        progress(count, max(total, count))
    return count
