"""Unit serial series shared by work orders of one product and serial format.

Each work order used to number its units from its own counter, started where the previous work
order of the same product stood when it was created: two such work orders running at the same time
(two stations, or a second order opened before the first was finished) handed out the same serials,
and the database refused the second unit. The counter is now one row per (product, serial format),
locked when a serial is reserved. It starts where the highest work-order counter of the series
stands.

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-25
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "serial_series",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("product", sa.String(128), nullable=False),
        sa.Column("serial_format", sa.String(128), nullable=False),
        sa.Column("next_seq", sa.Integer(), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_serial_series"),
        sa.UniqueConstraint("product", "serial_format", name="uq_serial_series_product_serial_format"),
    )
    op.execute(
        "INSERT INTO serial_series (product, serial_format, next_seq) "
        "SELECT product, serial_format, max(next_seq) FROM work_orders GROUP BY product, serial_format"
    )


def downgrade() -> None:
    # Each work order's own counter takes over where its series stands, so no serial is reused.
    op.execute(
        "UPDATE work_orders SET next_seq = (SELECT s.next_seq FROM serial_series s "
        "WHERE s.product = work_orders.product AND s.serial_format = work_orders.serial_format)"
    )
    op.drop_table("serial_series")
