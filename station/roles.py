"""Who may do what at the station: one table, checked before any guarded action.

The GUI's session and the CLI's admin commands both ask :func:`allowed`; roles come from the
operators table of the audit store (technician, quality, admin). Pure: no Qt, no database.
"""

from __future__ import annotations

import enum
from typing import Final


class Action(enum.StrEnum):
    PROVISION = "provision"
    VIEW_AUDIT = "view_audit"
    CONFIGURE = "configure"
    """The admin page: configuration, CA and HSM status, work orders, database location."""
    LEAVE_KIOSK = "leave_kiosk"
    MANAGE_CA = "manage_ca"
    """Create the issuing CA key, produce its CSR, import its chain."""
    MANAGE_OPERATORS = "manage_operators"
    REVOKE = "revoke"
    """Revoke a unit's certificate and publish the CRL (two steps: a serial and a reason)."""


PERMISSIONS: Final[dict[Action, frozenset[str]]] = {
    Action.PROVISION: frozenset({"technician", "admin"}),
    Action.VIEW_AUDIT: frozenset({"quality", "admin"}),
    Action.CONFIGURE: frozenset({"admin"}),
    Action.LEAVE_KIOSK: frozenset({"admin"}),
    Action.MANAGE_CA: frozenset({"admin"}),
    Action.MANAGE_OPERATORS: frozenset({"admin"}),
    Action.REVOKE: frozenset({"quality", "admin"}),
}


def allowed(role: str | None, action: Action) -> bool:
    """False for nobody signed in and for any role the table does not name."""
    return role is not None and role in PERMISSIONS[action]
