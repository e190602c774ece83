"""A work order's consumed quota as a counter, so the quota check does not grow with the work order.

Counting the work order's units with an intent on every start and every intent read every unit of
the work order each time (an index range scan plus a row read per unit): fine at a hundred units,
tens of milliseconds per unit at a hundred thousand. The counter moves in the same transaction as
the intent, under the work order's row lock; ``station audit verify`` checks it against the count.

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-25
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column("work_orders", sa.Column("consumed", sa.Integer(), nullable=False, server_default="0"))
    op.execute(
        "UPDATE work_orders SET consumed = (SELECT count(*) FROM units "
        "WHERE units.work_order_id = work_orders.id AND units.intent_at IS NOT NULL)"
    )


def downgrade() -> None:
    op.drop_column("work_orders", "consumed")  # SQLite >= 3.35 drops a column in place
