"""Barcode scanners type like keyboards: recognise their scans wherever the focus is.

Two parts. :class:`ScanClassifier` is pure: it strips the configured prefix, matches the text against
the work order, badge and unit label patterns, and drops an identical rescan within two seconds.
:class:`ScannerFilter` is an application-level Qt event filter (HMI.md): keys typed while no text box
has focus are collected and submitted on Enter, so a scan "into the window" lands in the right place
without a click. While a text box has focus, human-speed typing goes to the box as usual; a fast burst
ending with Enter that matches a pattern is taken back out of the box and routed as a scan.
"""

from __future__ import annotations

import enum
import re
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from PySide6.QtCore import QEvent, QObject, Qt, Signal
from PySide6.QtGui import QKeyEvent
from PySide6.QtWidgets import QAbstractSpinBox, QLineEdit, QPlainTextEdit, QTextEdit, QWidget
from shiboken6 import Shiboken

from station.config import ScannerConfig


class ScanKind(enum.StrEnum):
    WORK_ORDER = "work_order"
    BADGE = "badge"
    UNIT_LABEL = "unit_label"
    UNKNOWN = "unknown"


@dataclass(frozen=True, kw_only=True)
class ScanPatterns:
    """Regular expressions a whole scan must match; configurable per site."""

    work_order: str = ScannerConfig.work_order
    badge: str = ScannerConfig.badge
    unit_label: str = ScannerConfig.unit_label
    prefix: str = ""
    """Characters a configured scanner sends before the code (stripped); empty for none."""


@dataclass(frozen=True, kw_only=True)
class Scan:
    kind: ScanKind
    text: str
    manual: bool = False


@dataclass
class ScanClassifier:
    """Pattern check and rescan suppression; ``clock`` is injectable for tests."""

    patterns: ScanPatterns = field(default_factory=ScanPatterns)
    rescan_window_s: float = 2.0
    clock: Callable[[], float] = time.monotonic
    _last: tuple[str, float] | None = None

    def classify(self, raw: str, *, manual: bool = False) -> Scan | None:
        """The scan, or None for an empty text or an identical rescan inside the window."""
        text = raw.strip()
        if self.patterns.prefix and text.startswith(self.patterns.prefix):
            text = text[len(self.patterns.prefix):]
        if not text:
            return None
        now = self.clock()
        if self._last is not None and self._last[0] == text and now - self._last[1] < self.rescan_window_s:
            return None
        self._last = (text, now)
        for kind, pattern in ((ScanKind.WORK_ORDER, self.patterns.work_order),
                              (ScanKind.BADGE, self.patterns.badge),
                              (ScanKind.UNIT_LABEL, self.patterns.unit_label)):
            if re.fullmatch(pattern, text):
                return Scan(kind=kind, text=text, manual=manual)
        return Scan(kind=ScanKind.UNKNOWN, text=text, manual=manual)

    def recognised(self, raw: str) -> bool:
        """Whether ``raw`` would match a pattern (no rescan bookkeeping)."""
        text = raw.strip().removeprefix(self.patterns.prefix) if self.patterns.prefix else raw.strip()
        return any(re.fullmatch(p, text) for p in (self.patterns.work_order, self.patterns.badge,
                                                   self.patterns.unit_label))


_EventId = tuple[int, int, str, int]
"""(C++ address, key, text, timestamp): the same event re-offered to a parent."""

_TEXT_INPUTS = (QLineEdit, QTextEdit, QPlainTextEdit, QAbstractSpinBox)
_ENTER_KEYS = (Qt.Key.Key_Return, Qt.Key.Key_Enter)
_MODIFIERS = (Qt.KeyboardModifier.ControlModifier | Qt.KeyboardModifier.AltModifier
              | Qt.KeyboardModifier.MetaModifier)


class ScannerFilter(QObject):
    """Install on the QApplication; emits :attr:`scanned` for every scan or manual entry."""

    scanned = Signal(object)
    """A :class:`Scan` (work order, badge, unit label or unknown)."""

    def __init__(self, classifier: ScanClassifier | None = None, *, scan_gap_ms: float = 40.0,
                 min_length: int = 5, stale_s: float = 3.0, parent: QObject | None = None) -> None:
        super().__init__(parent)
        self.classifier = classifier or ScanClassifier()
        self.scan_gap_s = scan_gap_ms / 1000
        self.min_length = min_length
        self.stale_s = stale_s
        self.enabled = True
        self._buffer: list[str] = []
        self._times: list[float] = []
        self._passed: tuple[_EventId, QObject] | None = None

    def submit(self, text: str, *, manual: bool = True) -> Scan | None:
        """Route typed text (a manual entry field's Enter) exactly as a scan."""
        scan = self.classifier.classify(text, manual=manual)
        if scan is not None:
            self.scanned.emit(scan)
        return scan

    def reset(self) -> None:
        self._buffer.clear()
        self._times.clear()

    def _is_burst(self) -> bool:
        gaps = [b - a for a, b in zip(self._times, self._times[1:], strict=False)]
        return len(self._buffer) >= self.min_length and all(g <= self.scan_gap_s for g in gaps)

    def eventFilter(self, watched: QObject, event: QEvent) -> bool:  # noqa: N802 (Qt override)
        if event.type() == QEvent.Type.KeyRelease:
            self._passed = None  # the press before it has finished its trip up the parents
            return False
        if not self.enabled or event.type() != QEvent.Type.KeyPress or not isinstance(watched, QWidget):
            return False
        assert isinstance(event, QKeyEvent)
        # A key a widget ignored is offered to its parents, passing this filter again: skip those.
        ident = (Shiboken.getCppPointer(event)[0], event.key(), event.text(), event.timestamp())
        if self._passed is not None and self._passed[0] == ident and _is_ancestor(watched, self._passed[1]):
            return False
        in_text = isinstance(watched, _TEXT_INPUTS)  # where the key is going, focus or not
        now = time.monotonic()
        if self._times and now - self._times[-1] > self.stale_s:
            self.reset()
        key = event.key()
        if key in _ENTER_KEYS:
            return self._on_enter(watched, in_text, ident)
        text = event.text()
        if event.modifiers() & _MODIFIERS or len(text) != 1 or not text.isprintable() or text == " ":
            self._pass(ident, watched)
            return False
        self._buffer.append(text)
        self._times.append(now)
        if in_text:
            self._pass(ident, watched)
            return False
        return True  # collected for the scan; no widget sees it

    def _on_enter(self, watched: QObject, in_text: bool, ident: _EventId) -> bool:
        text = "".join(self._buffer)
        burst = self._is_burst()
        self.reset()
        if not text:
            self._pass(ident, watched)
            return False  # Enter on a button or in an empty field: the widget's own business
        if in_text:
            if not (burst and self.classifier.recognised(text)):
                self._pass(ident, watched)
                return False  # human typing in a field: the field handles its Enter
            focus = watched
            if isinstance(focus, QLineEdit) and focus.text().endswith(text):
                focus.setText(focus.text()[: -len(text)])  # the scan never stays in a text box
        self.submit(text, manual=not burst)
        return True

    def _pass(self, ident: _EventId, watched: QObject) -> None:
        self._passed = (ident, watched)


def _is_ancestor(obj: QObject, child: QObject) -> bool:
    parent = child.parent()
    while parent is not None:
        if parent is obj:
            return True
        parent = parent.parent()
    return False
