"""Initial audit schema: work orders, operators, units, hash-chained events, chain head.

Revision ID: 0001
Revises:
Create Date: 2025-01-01
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0001"
down_revision: str | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_ACTIVE = sa.text("status IN ('intent', 'issued', 'provisioned')")
_SEQ = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    op.create_table(
        "work_orders",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("number", sa.String(64), nullable=False),
        sa.Column("product", sa.String(128), nullable=False),
        sa.Column("profile", sa.String(64), nullable=False),
        sa.Column("quantity", sa.Integer(), nullable=False),
        sa.Column("serial_format", sa.String(128), nullable=False),
        sa.Column("commissioning_json", sa.Text(), nullable=False),
        sa.Column("next_seq", sa.Integer(), nullable=False),
        sa.Column("station", sa.String(64), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.CheckConstraint("quantity >= 0", name="ck_work_orders_quantity_nonneg"),
        sa.PrimaryKeyConstraint("id", name="pk_work_orders"),
        sa.UniqueConstraint("number", name="uq_work_orders_number"),
    )
    op.create_table(
        "operators",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("badge_id", sa.String(64), nullable=False),
        sa.Column("name", sa.String(128), nullable=False),
        sa.Column("role", sa.String(16), nullable=False),
        sa.Column("pin_hash", sa.String(256), nullable=False),
        sa.Column("active", sa.Boolean(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.CheckConstraint("role IN ('technician', 'quality', 'admin')", name="ck_operators_role_known"),
        sa.PrimaryKeyConstraint("id", name="pk_operators"),
        sa.UniqueConstraint("badge_id", name="uq_operators_badge_id"),
    )
    op.create_table(
        "units",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("work_order_id", sa.Integer(), nullable=False),
        sa.Column("station", sa.String(64), nullable=False),
        sa.Column("slot", sa.String(32), nullable=False),
        sa.Column("operator", sa.String(64), nullable=False),
        sa.Column("hardware_id", sa.String(128), nullable=False),
        sa.Column("serial_number", sa.String(128), nullable=True),
        sa.Column("public_key_sha256", sa.String(64), nullable=True),
        sa.Column("cert_serial", sa.String(40), nullable=True),
        sa.Column("tbs_sha256", sa.String(64), nullable=True),
        sa.Column("cert_der", sa.LargeBinary(), nullable=True),
        sa.Column("cert_sha256", sa.String(64), nullable=True),
        sa.Column("profile", sa.String(64), nullable=True),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("started_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("intent_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("issued_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("finished_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("failed_step", sa.String(32), nullable=True),
        sa.Column("error_code", sa.String(64), nullable=True),
        sa.Column("error_message", sa.Text(), nullable=True),
        sa.CheckConstraint(
            "status IN ('in_progress', 'intent', 'issued', 'provisioned', 'failed', 'revoked')",
            name="ck_units_status_known",
        ),
        sa.ForeignKeyConstraint(
            ["work_order_id"], ["work_orders.id"], name="fk_units_work_order_id_work_orders"
        ),
        sa.PrimaryKeyConstraint("id", name="pk_units"),
        sa.UniqueConstraint("serial_number", name="uq_units_serial_number"),
        sa.UniqueConstraint("public_key_sha256", name="uq_units_public_key_sha256"),
        sa.UniqueConstraint("cert_serial", name="uq_units_cert_serial"),
    )
    op.create_index("ix_units_work_order_id", "units", ["work_order_id"])
    op.create_index("ix_units_hardware_id", "units", ["hardware_id"])
    op.create_index("ix_units_status", "units", ["status"])
    op.create_index("ix_units_started_at", "units", ["started_at"])
    op.create_index(
        "uq_units_active_hardware_id",
        "units",
        ["hardware_id"],
        unique=True,
        sqlite_where=_ACTIVE,
        postgresql_where=_ACTIVE,
    )
    op.create_table(
        "events",
        sa.Column("seq", _SEQ, autoincrement=False, nullable=False),
        sa.Column("station", sa.String(64), nullable=False),
        sa.Column("kind", sa.String(32), nullable=False),
        sa.Column("unit_id", sa.Integer(), nullable=True),
        sa.Column("work_order", sa.String(64), nullable=True),
        sa.Column("operator", sa.String(64), nullable=True),
        sa.Column("step", sa.String(32), nullable=True),
        sa.Column("outcome", sa.String(16), nullable=True),
        sa.Column("duration_ms", sa.Float(), nullable=True),
        sa.Column("detail_json", sa.Text(), nullable=False),
        sa.Column("error_code", sa.String(64), nullable=True),
        sa.Column("error_message", sa.Text(), nullable=True),
        sa.Column("occurred_at", sa.String(40), nullable=False),
        sa.Column("prev_hash", sa.String(64), nullable=False),
        sa.Column("hash", sa.String(64), nullable=False),
        sa.ForeignKeyConstraint(["unit_id"], ["units.id"], name="fk_events_unit_id_units"),
        sa.PrimaryKeyConstraint("seq", name="pk_events"),
        sa.UniqueConstraint("hash", name="uq_events_hash"),
    )
    op.create_index("ix_events_unit_id", "events", ["unit_id"])
    chain_head = op.create_table(
        "chain_head",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("seq", _SEQ, nullable=False),
        sa.Column("hash", sa.String(64), nullable=False),
        sa.CheckConstraint("id = 1", name="ck_chain_head_single_row"),
        sa.PrimaryKeyConstraint("id", name="pk_chain_head"),
    )
    op.bulk_insert(chain_head, [{"id": 1, "seq": 0, "hash": "0" * 64}])


def downgrade() -> None:
    op.drop_table("chain_head")
    op.drop_index("ix_events_unit_id", table_name="events")
    op.drop_table("events")
    op.drop_index("uq_units_active_hardware_id", table_name="units")
    op.drop_index("ix_units_started_at", table_name="units")
    op.drop_index("ix_units_status", table_name="units")
    op.drop_index("ix_units_hardware_id", table_name="units")
    op.drop_index("ix_units_work_order_id", table_name="units")
    op.drop_table("units")
    op.drop_table("operators")
    op.drop_table("work_orders")
