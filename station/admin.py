"""Admin actions from the command line: who is acting, and whether their role allows it.

A kiosk gives a technician no shell, but a station PC may still be reached by one; so the CLI's
admin commands (the CA, operators) name the acting operator (``--as BADGE``) and the station's audit
database (``--db``), check the badge and PIN against the operators table, and record every approval
and refusal in the audit log, exactly as the GUI does. The very first admin of a new database is
the one exception: someone has to be first, and that is recorded too.
"""

from __future__ import annotations

import getpass
import os

from station.audit import SqlAuditStore
from station.errors import StationError
from station.roles import Action, allowed

__all__ = ["AdminRefused", "authorise", "read_operator_pin"]

PIN_ENV = "STATION_OPERATOR_PIN"


class AdminRefused(StationError):
    """The acting operator may not do this (or could not be identified)."""

    code = "role_refused"


def read_operator_pin(badge: str) -> str:
    """The acting operator's PIN: from STATION_OPERATOR_PIN (scripts), else a prompt."""
    pin = os.environ.get(PIN_ENV)
    if pin:
        return pin
    return getpass.getpass(f"PIN for {badge}: ")


def authorise(store: SqlAuditStore, *, badge: str | None, action: Action, command: str,
              bootstrap: bool = False) -> str:
    """Return the acting badge if its role allows ``action``; else record the refusal and raise.

    ``bootstrap`` allows the action without a badge while the database has no admin yet (the first
    admin of a new station).
    """
    if badge is None:
        if bootstrap and not any(op.role == "admin" for op in store.operators()):
            store.record_event("admin_action", operator=None, ok=True,
                               detail={"action": str(action), "command": command, "via": "cli",
                                       "bootstrap": "first admin"})
            return "bootstrap"
        store.record_event("refusal", operator=None, ok=False, error_code=AdminRefused.code,
                           detail={"action": str(action), "command": command, "via": "cli",
                                   "reason": "no operator named"})
        raise AdminRefused(f"{command} needs an admin: name yourself with --as BADGE")
    operator = store.sign_in(badge, read_operator_pin(badge))  # the attempt is logged either way
    if operator is None:
        raise AdminRefused(f"{command}: badge {badge} or its PIN is not valid")
    if not allowed(operator.role, action):
        store.record_event("refusal", operator=badge, ok=False, error_code=AdminRefused.code,
                           detail={"action": str(action), "command": command, "via": "cli",
                                   "role": operator.role})
        raise AdminRefused(f"{command} needs an admin; {badge} is signed in as {operator.role}")
    store.record_event("admin_action", operator=badge, ok=True,
                       detail={"action": str(action), "command": command, "via": "cli"})
    return badge
