"""The station's look, after ISA-101 "report by exception" (HMI.md).

Neutral grey everywhere; saturated colour only where a person must act: red FAIL, amber attention,
blue operator action, a short green PASS that settles to neutral. Every state also has a word and an
icon, so nothing depends on telling colours apart.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

from station.gui.slots import SlotState, SlotView

BACKGROUND: Final = "#d4d4d4"
PANEL: Final = "#e6e6e6"
TILE: Final = "#f2f2f2"
TEXT: Final = "#1a1a1a"
MUTED: Final = "#4d4d4d"
GREEN: Final = "#1b7a2e"
RED: Final = "#b3121b"
AMBER: Final = "#f0b000"
BLUE: Final = "#0b57a4"
WHITE: Final = "#ffffff"

PASS_SETTLE_S: Final = 6.0
"""How long a PASS stays green before it settles to a neutral "done"."""


@dataclass(frozen=True, kw_only=True)
class Look:
    word: str
    icon: str
    background: str
    foreground: str
    border: str


_LOOKS: Final[dict[SlotState, Look]] = {
    SlotState.WAITING: Look(word="WAIT", icon="\u29d7", background=AMBER, foreground=TEXT, border=TEXT),
    SlotState.IDLE: Look(word="IDLE", icon="\u25cb", background=TILE, foreground=TEXT, border=MUTED),
    SlotState.RUNNING: Look(word="BUSY", icon="\u25b6", background=TILE, foreground=TEXT, border=TEXT),
    SlotState.PASS: Look(word="PASS", icon="\u2714", background=GREEN, foreground=WHITE, border=TEXT),
    SlotState.FAIL: Look(word="FAIL", icon="\u2718", background=RED, foreground=WHITE, border=TEXT),
    SlotState.BLOCKED: Look(word="SCAN", icon="\u25a0", background=BLUE, foreground=WHITE, border=TEXT),
}

_SETTLED_PASS: Final = Look(word="PASS", icon="\u2714", background=TILE, foreground=GREEN, border=GREEN)


CRITICAL_FLASH_HZ: Final = 3.0
"""A critical FAIL flashes slowly (HMI.md: 3-5 Hz) until it is acknowledged."""

CRITICAL_DIM: Final = Look(word="FAIL", icon="\u2718", background=TILE, foreground=RED, border=RED)
"""The other phase of a flashing FAIL: still the word and icon, red on neutral."""


def look_for(view: SlotView) -> Look:
    """The word, icon and colours of a slot's tile."""
    if view.state is SlotState.PASS and view.settled:
        return _SETTLED_PASS
    return _LOOKS[view.state]


STYLE_SHEET: Final = f"""
QWidget {{ background: {BACKGROUND}; color: {TEXT}; font-size: 16px; }}
QPushButton {{ background: {PANEL}; border: 2px solid {MUTED}; border-radius: 4px;
               padding: 8px 16px; font-size: 18px; font-weight: bold; min-height: 32px; }}
QPushButton:focus {{ border: 3px solid {BLUE}; }}
QPushButton:disabled {{ color: #8a8a8a; border-color: #a8a8a8; }}
QLineEdit {{ background: {WHITE}; border: 2px solid {MUTED}; padding: 6px; font-size: 20px; }}
QLineEdit:focus {{ border: 3px solid {BLUE}; }}
QTableView, QListView {{ background: {WHITE}; alternate-background-color: {PANEL};
                         selection-background-color: {BLUE}; selection-color: {WHITE}; font-size: 16px; }}
QHeaderView::section {{ background: {PANEL}; font-weight: bold; padding: 4px; border: 1px solid #b0b0b0; }}
QCheckBox {{ font-size: 18px; }}
QCheckBox::indicator {{ width: 24px; height: 24px; }}
QLabel#banner {{ font-size: 20px; }}
QFrame#bannerFrame {{ background: {PANEL}; border-bottom: 2px solid {MUTED}; }}
QLabel#notice {{ font-size: 18px; font-weight: bold; padding: 6px; }}
"""
