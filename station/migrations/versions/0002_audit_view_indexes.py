"""Indexes for the quality engineer's audit view: filters by station, operator, failing step and
error code, and search by certificate fingerprint, answered from indexes on a year of production.

Revision ID: 0002
Revises: 0001
Create Date: 2025-02-01
"""

from __future__ import annotations

from collections.abc import Sequence

from alembic import op

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_INDEXES = (
    ("ix_units_station", "station"),
    ("ix_units_operator", "operator"),
    ("ix_units_failed_step", "failed_step"),
    ("ix_units_error_code", "error_code"),
    ("ix_units_cert_sha256", "cert_sha256"),
)


def upgrade() -> None:
    for name, column in _INDEXES:
        op.create_index(name, "units", [column])


def downgrade() -> None:
    for name, _column in reversed(_INDEXES):
        op.drop_index(name, table_name="units")
