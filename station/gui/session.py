"""Who is at the station: badge and PIN sign-in, idle sign-out, role checks, refusals in the log.

Every sign-in (the store logs each attempt), sign-out and refusal is an audit event. The session is
the one place a role is checked: widgets and the controller ask :meth:`Session.require` and show
its refusal; they never compare role names themselves.
"""

from __future__ import annotations

import logging

from PySide6.QtCore import QEvent, QObject, QTimer, Signal

from station.audit import OperatorInfo, SqlAuditStore
from station.errors import StationError
from station.roles import Action, allowed

log = logging.getLogger(__name__)

_ACTION_WORDS = {
    Action.PROVISION: "start provisioning",
    Action.VIEW_AUDIT: "open the audit view",
    Action.CONFIGURE: "open configuration",
    Action.LEAVE_KIOSK: "leave the kiosk",
    Action.REVOKE: "revoke a certificate",
    Action.MANAGE_CA: "manage the CA",
    Action.MANAGE_OPERATORS: "manage operators",
}


class Session(QObject):
    """The signed-in operator (or nobody), with an idle timer that signs them out."""

    changed = Signal()
    """Someone signed in or out."""
    refused = Signal(str)
    """A sentence for the screen: what was refused and why."""
    pin_needed = Signal(str)
    """A badge was scanned; ask for its PIN."""

    def __init__(self, store: SqlAuditStore, *, idle_timeout_s: float = 300.0,
                 parent: QObject | None = None) -> None:
        super().__init__(parent)
        self._store = store
        self.operator: OperatorInfo | None = None
        self.pending_badge: str | None = None
        self.last_sign_out_reason = ""
        self._idle = QTimer(self)
        self._idle.setSingleShot(True)
        self._idle.timeout.connect(self._on_idle)
        self.set_idle_timeout(idle_timeout_s)

    # -- sign-in -----------------------------------------------------------------------------

    @property
    def role(self) -> str | None:
        return self.operator.role if self.operator else None

    def set_idle_timeout(self, seconds: float) -> None:
        self._idle.setInterval(max(int(seconds * 1000), 1))

    def badge_scanned(self, badge: str) -> None:
        """A badge scan starts a sign-in (or switches operator): the PIN comes next."""
        self.pending_badge = badge
        self.pin_needed.emit(badge)

    def sign_in(self, badge: str, pin: str) -> bool:
        """Check badge and PIN against the operators table; the store logs the attempt either way."""
        try:
            info = self._store.sign_in(badge, pin)
        except StationError as exc:
            self.refused.emit(f"Sign-in failed: {exc.message}")
            return False
        if info is None:
            self.refused.emit("Badge or PIN not accepted. Scan your badge and try again.")
            return False
        if self.operator is not None:
            self.sign_out("switch")
        self.operator = info
        self.pending_badge = None
        self._idle.start()
        self.changed.emit()
        return True

    def sign_out(self, reason: str = "user") -> None:
        if self.operator is None:
            return
        try:
            self._store.sign_out(self.operator.badge_id)
            if reason != "user":
                self._store.record_event("sign_out_reason", operator=self.operator.badge_id,
                                         detail={"reason": reason})
        except StationError:
            log.exception("could not record the sign-out of %s", self.operator.badge_id)
        self.operator = None
        self.pending_badge = None
        self.last_sign_out_reason = reason
        self._idle.stop()
        self.changed.emit()

    def poke(self) -> None:
        """Input happened: restart the idle countdown."""
        if self.operator is not None:
            self._idle.start()

    def _on_idle(self) -> None:
        self.sign_out("idle")

    def note(self, kind: str, **detail: str) -> None:
        """Record a station event by the signed-in operator (e.g. leaving the kiosk)."""
        try:
            self._store.record_event(kind, operator=self.operator.badge_id if self.operator else None,
                                     detail=detail)
        except StationError:
            log.exception("could not record %s", kind)

    # -- roles -------------------------------------------------------------------------------

    def may(self, action: Action) -> bool:
        return allowed(self.role, action)

    def require(self, action: Action, *, where: str = "") -> bool:
        """True if the operator may; otherwise the refusal is logged and shown."""
        if self.may(action):
            return True
        self.refuse(action, where=where)
        return False

    def refuse(self, action: Action, *, where: str = "") -> None:
        who = self.operator.name if self.operator else "nobody signed in"
        sentence = (f"Refused: {who} ({self.role or 'no role'}) may not {_ACTION_WORDS[action]}."
                    if self.operator else f"Refused: sign in first to {_ACTION_WORDS[action]}.")
        try:
            self._store.record_event(
                "refusal", operator=self.operator.badge_id if self.operator else None, ok=False,
                detail={"action": str(action), "role": self.role or "none", "where": where or "gui"},
                error_code="not_permitted", error_message=sentence,
            )
        except StationError:
            log.exception("could not record a refusal")
        self.refused.emit(sentence)


class ActivityFilter(QObject):
    """Application-level filter: any key or mouse input restarts the idle countdown."""

    _INPUT = frozenset({QEvent.Type.KeyPress, QEvent.Type.MouseButtonPress, QEvent.Type.Wheel,
                        QEvent.Type.TouchBegin})

    def __init__(self, session: Session, parent: QObject | None = None) -> None:
        super().__init__(parent)
        self._session = session

    def eventFilter(self, watched: QObject, event: QEvent) -> bool:  # noqa: N802 (Qt override)
        if event.type() in self._INPUT:
            self._session.poke()
        return False
