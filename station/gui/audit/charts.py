"""Charts drawn with QPainter (QtCharts is not installed, FIELD-NOTES.md): yield per hour or shift,
failures by step and error code as a Pareto, and the cycle-time distribution.

Each chart is a plain widget holding already-aggregated numbers (the database did the ``GROUP BY``);
painting never touches the store. Neutral greys with one accent, words and numbers on every bar, so
nothing depends on colour alone (HMI.md).
"""

from __future__ import annotations

import math
from itertools import pairwise
from typing import Final

from PySide6.QtCore import QPointF, QRectF, Qt
from PySide6.QtGui import QColor, QFont, QPainter, QPaintEvent, QPen
from PySide6.QtWidgets import QComboBox, QHBoxLayout, QLabel, QVBoxLayout, QWidget

from station.gui.theme import BLUE, MUTED, RED, TEXT, TILE
from station.reports.filters import UnitFilter
from station.reports.query import AuditQuery, Failures, Histogram, YieldBucket

GREY: Final = "#8c8c8c"
LIGHT: Final = "#bdbdbd"


class _Chart(QWidget):
    """Title, plot rectangle and axes; subclasses draw the data."""

    def __init__(self, title: str, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.title = title
        self.setMinimumSize(360, 240)
        self.empty_text = "no data for this filter"

    def plot_rect(self) -> QRectF:
        return QRectF(56, 34, max(self.width() - 56 - 52, 10), max(self.height() - 34 - 64, 10))

    def has_data(self) -> bool:
        return False

    def paintEvent(self, event: QPaintEvent) -> None:  # noqa: N802 - Qt's name
        p = QPainter(self)
        p.setRenderHint(QPainter.RenderHint.Antialiasing)
        p.fillRect(self.rect(), QColor(TILE))
        font = QFont(self.font())
        font.setBold(True)
        font.setPointSizeF(font.pointSizeF() * 1.15)
        p.setFont(font)
        p.setPen(QColor(TEXT))
        p.drawText(QRectF(8, 4, self.width() - 16, 26), Qt.AlignmentFlag.AlignLeft
                   | Qt.AlignmentFlag.AlignVCenter, self.title)
        p.setFont(self.font())
        if not self.has_data():
            p.setPen(QColor(MUTED))
            p.drawText(self.rect(), Qt.AlignmentFlag.AlignCenter, self.empty_text)
        else:
            self.draw(p, self.plot_rect())
        p.end()

    def draw(self, p: QPainter, r: QRectF) -> None:
        raise NotImplementedError

    @staticmethod
    def axes(p: QPainter, r: QRectF, y_max: float, *, label: str, right: str | None = None) -> None:
        p.setPen(QPen(QColor(MUTED), 1))
        p.drawLine(r.bottomLeft(), r.bottomRight())
        p.drawLine(r.bottomLeft(), r.topLeft())
        for i in range(5):
            y = r.bottom() - r.height() * i / 4
            p.setPen(QPen(QColor(LIGHT), 1, Qt.PenStyle.DotLine))
            p.drawLine(QPointF(r.left(), y), QPointF(r.right(), y))
            p.setPen(QColor(MUTED))
            p.drawText(QRectF(0, y - 8, r.left() - 6, 16), Qt.AlignmentFlag.AlignRight
                       | Qt.AlignmentFlag.AlignVCenter, _short(y_max * i / 4))
            if right is not None:
                p.drawText(QRectF(r.right() + 4, y - 8, 48, 16), Qt.AlignmentFlag.AlignLeft
                           | Qt.AlignmentFlag.AlignVCenter, f"{25 * i}%")
        p.save()
        p.translate(12, r.center().y())
        p.rotate(-90)
        p.drawText(QRectF(-r.height() / 2, -8, r.height(), 16), Qt.AlignmentFlag.AlignCenter, label)
        p.restore()


def nice_top(value: float) -> float:
    """The axis top: the smallest 4 x (1, 2, 2.5 or 5 x 10^k) at or above ``value``, never a
    fraction of a unit (counts are whole), so every tick label is a distinct round number."""
    if value <= 0:
        return 4.0
    exp = 10.0 ** math.floor(math.log10(value / 4))
    for m in (1.0, 2.0, 2.5, 5.0, 10.0):
        step = max(m * exp, 1.0)
        if step * 4 >= value:
            return step * 4
    return value


def _short(value: float) -> str:
    if value != int(value):
        return f"{value:.1f}"
    if value >= 10_000:
        return f"{value / 1000:.0f}k"
    if value >= 1000:
        return f"{value / 1000:.1f}k"
    return f"{value:.0f}"


class YieldChart(_Chart):
    """Stacked bars (provisioned grey, failed red) per bucket, with the yield as a line (right axis)."""

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__("Yield per shift", parent)
        self.buckets: list[YieldBucket] = []

    def plot_rect(self) -> QRectF:
        r = super().plot_rect()  # room on the right for the last slanted label
        return QRectF(r.left(), r.top(), r.width() - 40, r.height())

    def set_data(self, buckets: list[YieldBucket], bucket: str) -> None:
        self.buckets = buckets
        self.title = f"Yield per {bucket} (last {len(buckets)})"
        self.update()

    def has_data(self) -> bool:
        return bool(self.buckets)

    def draw(self, p: QPainter, r: QRectF) -> None:
        top = nice_top(max(b.ok + b.failed for b in self.buckets))
        self.axes(p, r, top, label="units", right="yield")
        n = len(self.buckets)
        slot = r.width() / n
        w = max(slot * 0.7, 2)
        points: list[QPointF] = []
        step = max(1, -(-n // max(int(r.width() / 60), 1)))  # a label every ~60 px, never crowded
        for i, b in enumerate(self.buckets):
            x = r.left() + i * slot + (slot - w) / 2
            ok_h = r.height() * b.ok / top
            fail_h = r.height() * b.failed / top
            p.fillRect(QRectF(x, r.bottom() - ok_h, w, ok_h), QColor(GREY))
            p.fillRect(QRectF(x, r.bottom() - ok_h - fail_h, w, fail_h), QColor(RED))
            points.append(QPointF(x + w / 2, r.bottom() - r.height() * b.yield_pct / 100.0))
            if i % step == 0:
                p.setPen(QColor(MUTED))
                p.save()
                p.translate(x + w / 2, r.bottom() + 4)
                p.rotate(30)
                p.drawText(QRectF(0, 0, 110, 14), Qt.AlignmentFlag.AlignLeft, b.label[5:])
                p.restore()
        p.setPen(QPen(QColor(BLUE), 2))
        for a, c in pairwise(points):
            p.drawLine(a, c)
        for pt in points:
            p.drawEllipse(pt, 2.5, 2.5)
        ok = sum(b.ok for b in self.buckets)
        failed = sum(b.failed for b in self.buckets)
        overall = 100.0 * ok / (ok + failed) if ok + failed else 0.0
        p.setPen(QColor(TEXT))
        p.drawText(QRectF(r.left(), 4, r.width(), 26), Qt.AlignmentFlag.AlignRight
                   | Qt.AlignmentFlag.AlignVCenter,
                   f"grey PASS, red FAIL, blue line yield: {overall:.2f} %")


class ParetoChart(_Chart):
    """Failures by step and error code, most frequent first, with the cumulative share (right axis)."""

    def __init__(self, parent: QWidget | None = None, *, top: int = 12) -> None:
        super().__init__("Failures by step and error code (Pareto)", parent)
        self.rows: list[Failures] = []
        self.top = top

    def set_data(self, rows: list[Failures]) -> None:
        self.rows = rows
        self.update()

    def has_data(self) -> bool:
        return bool(self.rows)

    def plot_rect(self) -> QRectF:
        r = super().plot_rect()
        return QRectF(r.left(), r.top(), r.width(), r.height() - 70)

    def draw(self, p: QPainter, r: QRectF) -> None:
        shown = self.rows[: self.top]
        rest = sum(x.count for x in self.rows[self.top:])
        total = sum(x.count for x in self.rows) or 1
        top = nice_top(max(x.count for x in shown) * 1.15)  # headroom for the count above the bar
        self.axes(p, r, top, label="failed units", right="cumulative")
        slot = r.width() / len(shown)
        w = slot * 0.7
        cumulative = 0
        points = []
        for i, x in enumerate(shown):
            cumulative += x.count
            left = r.left() + i * slot + (slot - w) / 2
            h = r.height() * x.count / top
            p.fillRect(QRectF(left, r.bottom() - h, w, h), QColor(RED if i == 0 else GREY))
            p.setPen(QColor(TEXT))
            p.drawText(QRectF(left - 10, r.bottom() - h - 16, w + 20, 14), Qt.AlignmentFlag.AlignCenter,
                       str(x.count))
            points.append(QPointF(left + w / 2, r.bottom() - r.height() * cumulative / total))
            p.setPen(QColor(MUTED))
            p.save()
            p.translate(left + w / 2 - 4, r.bottom() + 4)
            p.rotate(40)
            p.drawText(QRectF(0, 0, 170, 28), Qt.AlignmentFlag.AlignLeft, f"{x.step}\n{x.error_code}")
            p.restore()
        p.setPen(QPen(QColor(BLUE), 2))
        for a, c in pairwise(points):
            p.drawLine(a, c)
        for pt in points:
            p.drawEllipse(pt, 2.5, 2.5)
        note = f"{total} failed units" + (f"; {rest} in {len(self.rows) - self.top} smaller reasons"
                                            if rest else "")
        p.setPen(QColor(TEXT))
        p.drawText(QRectF(r.left(), 4, r.width(), 26), Qt.AlignmentFlag.AlignRight
                   | Qt.AlignmentFlag.AlignVCenter, note)


class HistogramChart(_Chart):
    """Cycle time of provisioned units, binned; median and 95th percentile marked."""

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__("Cycle time of provisioned units", parent)
        self.hist = Histogram(edges=[], counts=[])

    def set_data(self, hist: Histogram) -> None:
        self.hist = hist
        self.update()

    def has_data(self) -> bool:
        return bool(self.hist.counts) and sum(self.hist.counts) > 0

    def draw(self, p: QPainter, r: QRectF) -> None:
        h = self.hist
        top = nice_top(max(h.counts))
        self.axes(p, r, top, label="units")
        lo, hi = h.edges[0], h.edges[-1]
        slot = r.width() / len(h.counts)
        for i, n in enumerate(h.counts):
            bar = r.height() * n / top
            p.fillRect(QRectF(r.left() + i * slot + 1, r.bottom() - bar, slot - 2, bar), QColor(GREY))
        p.setPen(QColor(MUTED))
        for i in range(0, len(h.edges), max(1, len(h.edges) // 6)):
            x = r.left() + i * slot
            p.drawText(QRectF(x - 30, r.bottom() + 4, 60, 14), Qt.AlignmentFlag.AlignCenter,
                       f"{h.edges[i] / 1000:.2f}")
        p.drawText(QRectF(r.left(), r.bottom() + 20, r.width(), 16), Qt.AlignmentFlag.AlignCenter,
                   "seconds from start to finish")
        for line, (value, name) in enumerate(((h.median_ms, "median"), (h.p95_ms, "p95"))):
            if value is None or hi <= lo:
                continue
            x = r.left() + r.width() * (value - lo) / (hi - lo)
            p.setPen(QPen(QColor(BLUE), 2, Qt.PenStyle.DashLine))
            p.drawLine(QPointF(x, r.top()), QPointF(x, r.bottom()))
            p.setPen(QColor(BLUE))
            # one text line each, so close values never print on top of each other
            p.drawText(QRectF(x + 4, r.top() + 16 * line, 140, 14), Qt.AlignmentFlag.AlignLeft,
                       f"{name} {value / 1000:.2f} s")


class ChartsPanel(QWidget):
    """The three charts for the current filter; refreshed on demand (aggregates run in the database)."""

    def __init__(self, query: AuditQuery, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self._query = query
        self._filter = UnitFilter()
        self.yield_chart = YieldChart()
        self.pareto = ParetoChart()
        self.cycle = HistogramChart()
        self.bucket = QComboBox()
        self.bucket.addItems(["shift", "hour", "day"])
        self.bucket.currentTextChanged.connect(lambda _t: self.refresh())
        self.note = QLabel()
        bar = QHBoxLayout()
        bar.addWidget(QLabel("Yield per"))
        bar.addWidget(self.bucket)
        bar.addStretch(1)
        bar.addWidget(self.note)
        lower = QHBoxLayout()
        lower.addWidget(self.pareto, 3)
        lower.addWidget(self.cycle, 2)
        layout = QVBoxLayout(self)
        layout.addLayout(bar)
        layout.addWidget(self.yield_chart, 1)
        layout.addLayout(lower, 1)
        self.stale = True

    def set_filter(self, unit_filter: UnitFilter) -> None:
        self._filter = unit_filter
        self.stale = True

    def refresh(self) -> None:
        f = self._filter
        bucket = self.bucket.currentText()
        self.yield_chart.set_data(self._query.yield_by(f, bucket, last=36), bucket)
        self.pareto.set_data(self._query.failures(f))
        self.cycle.set_data(self._query.cycle_times(f))
        self.note.setText(f"Filter: {f.describe()}")
        self.stale = False
