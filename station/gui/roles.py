"""Who may do what at the station: one table, checked by the session before any guarded action.

Roles come from the operators table of the audit store (technician, quality, admin).
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


PERMISSIONS: Final[dict[Action, frozenset[str]]] = {
    Action.PROVISION: frozenset({"technician", "admin"}),
    Action.VIEW_AUDIT: frozenset({"quality", "admin"}),
    Action.CONFIGURE: frozenset({"admin"}),
    Action.LEAVE_KIOSK: frozenset({"admin"}),
}


def allowed(role: str | None, action: Action) -> bool:
    """False for nobody signed in and for any role the table does not name."""
    return role is not None and role in PERMISSIONS[action]
