"""The audit schema as typed SQLAlchemy models.

The database, not the code, enforces identity: one certificate serial, one unit serial, one public key
(among units that reserved one at intent), one *active* unit per hardware id (a partial unique index,
which SQLite and PostgreSQL both support). The schema itself is created by the Alembic migrations in
:mod:`station.migrations`, never by ``create_all``; a test checks the two agree.
"""

from __future__ import annotations

from datetime import datetime
from typing import Final

from sqlalchemy import (
    BigInteger,
    Boolean,
    CheckConstraint,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Text,
    UniqueConstraint,
    text,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

NAMING: Final = {
    "ix": "ix_%(table_name)s_%(column_0_N_name)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}
"""Stable constraint names, so migrations and error translation can refer to them."""

ACTIVE_STATUSES: Final = ("intent", "issued", "provisioned")
"""Unit statuses that hold their hardware id: at most one such unit per hardware id."""

ACTIVE_WHERE: Final = text("status IN ('intent', 'issued', 'provisioned')")

ROLES: Final = ("technician", "quality", "admin")


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING)


class WorkOrderRow(Base):
    """A work order as first seen by the store.

    ``next_seq`` is where its series stood when the work order was recorded; the serials themselves
    come from its :class:`SerialSeriesRow`, which work orders of one product and format share."""

    __tablename__ = "work_orders"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    number: Mapped[str] = mapped_column(String(64), unique=True)
    product: Mapped[str] = mapped_column(String(128))
    profile: Mapped[str] = mapped_column(String(64))
    quantity: Mapped[int] = mapped_column(Integer)
    serial_format: Mapped[str] = mapped_column(String(128))
    commissioning_json: Mapped[str] = mapped_column(Text, default="[]")
    """Commissioning values; secret ones are stored as ``***``, never the value."""
    next_seq: Mapped[int] = mapped_column(Integer, default=1)
    consumed: Mapped[int] = mapped_column(Integer, server_default="0")
    """Units that reached intent (quota used); moved with each intent, under this row's lock."""
    station: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))

    __table_args__ = (CheckConstraint("quantity >= 0", name="quantity_nonneg"),)


class SerialSeriesRow(Base):
    """One numbering space for unit serials: a product and a serial format, shared by every work
    order that uses them, so two of them running at once never hand out the same serial."""

    __tablename__ = "serial_series"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    product: Mapped[str] = mapped_column(String(128))
    serial_format: Mapped[str] = mapped_column(String(128))
    next_seq: Mapped[int] = mapped_column(Integer)

    __table_args__ = (UniqueConstraint("product", "serial_format"),)


class OperatorRow(Base):
    """Who may sign in at the GUI; only a salted scrypt hash of the PIN is kept."""

    __tablename__ = "operators"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    badge_id: Mapped[str] = mapped_column(String(64), unique=True)
    name: Mapped[str] = mapped_column(String(128))
    role: Mapped[str] = mapped_column(String(16))
    pin_hash: Mapped[str] = mapped_column(String(256))
    active: Mapped[bool] = mapped_column(Boolean, default=True)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))

    __table_args__ = (
        CheckConstraint("role IN ('technician', 'quality', 'admin')", name="role_known"),
    )


class UnitRow(Base):
    """One provisioning attempt of one device. Identity columns are unique in the database."""

    __tablename__ = "units"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    work_order_id: Mapped[int] = mapped_column(ForeignKey("work_orders.id"), index=True)
    station: Mapped[str] = mapped_column(String(64))
    slot: Mapped[str] = mapped_column(String(32))
    operator: Mapped[str] = mapped_column(String(64))
    hardware_id: Mapped[str] = mapped_column(String(128), index=True)
    serial_number: Mapped[str | None] = mapped_column(String(128), unique=True)
    public_key_sha256: Mapped[str | None] = mapped_column(String(64), unique=True)
    cert_serial: Mapped[str | None] = mapped_column(String(40), unique=True)
    """Certificate serial, lower-case hex without leading zeros (at most 20 octets)."""
    tbs_sha256: Mapped[str | None] = mapped_column(String(64))
    cert_der: Mapped[bytes | None] = mapped_column(LargeBinary)
    cert_sha256: Mapped[str | None] = mapped_column(String(64))
    profile: Mapped[str | None] = mapped_column(String(64))
    status: Mapped[str] = mapped_column(String(16), index=True)
    started_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), index=True)
    intent_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    """Set once at intent and never cleared: a unit with an intent consumes quota (HSM may have signed)."""
    issued_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    finished_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    failed_step: Mapped[str | None] = mapped_column(String(32))
    error_code: Mapped[str | None] = mapped_column(String(64))
    error_message: Mapped[str | None] = mapped_column(Text)

    __table_args__ = (
        CheckConstraint(
            "status IN ('in_progress', 'intent', 'issued', 'provisioned', 'failed', 'revoked')",
            name="status_known",
        ),
        Index(
            "uq_units_active_hardware_id",
            "hardware_id",
            unique=True,
            sqlite_where=ACTIVE_WHERE,
            postgresql_where=ACTIVE_WHERE,
        ),
        # The quality engineer's filters and searches (migration 0002): each one answered from an
        # index, so the audit view stays fast on a year of production.
        Index("ix_units_station", "station"),
        Index("ix_units_operator", "operator"),
        Index("ix_units_failed_step", "failed_step"),
        Index("ix_units_error_code", "error_code"),
        Index("ix_units_cert_sha256", "cert_sha256"),
    )


class EventRow(Base):
    """The append-only, hash-chained log. ``seq`` is assigned by the store (head + 1), never the clock."""

    __tablename__ = "events"

    seq: Mapped[int] = mapped_column(BigInteger().with_variant(Integer, "sqlite"), primary_key=True,
                                     autoincrement=False)
    station: Mapped[str] = mapped_column(String(64))
    kind: Mapped[str] = mapped_column(String(32))
    unit_id: Mapped[int | None] = mapped_column(ForeignKey("units.id"), index=True)
    work_order: Mapped[str | None] = mapped_column(String(64))
    operator: Mapped[str | None] = mapped_column(String(64))
    step: Mapped[str | None] = mapped_column(String(32))
    outcome: Mapped[str | None] = mapped_column(String(16))
    duration_ms: Mapped[float | None] = mapped_column(Float)
    detail_json: Mapped[str] = mapped_column(Text, default="{}")
    error_code: Mapped[str | None] = mapped_column(String(64))
    error_message: Mapped[str | None] = mapped_column(Text)
    occurred_at: Mapped[str] = mapped_column(String(40))
    """UTC ISO-8601 text: hashed as stored, so no driver's datetime round trip can change it."""
    prev_hash: Mapped[str] = mapped_column(String(64))
    hash: Mapped[str] = mapped_column(String(64), unique=True)


class ChainHeadRow(Base):
    """One row: the last sequence number and hash. Appends lock it (serialises writers on PostgreSQL)."""

    __tablename__ = "chain_head"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    seq: Mapped[int] = mapped_column(BigInteger().with_variant(Integer, "sqlite"))
    hash: Mapped[str] = mapped_column(String(64))

    __table_args__ = (CheckConstraint("id = 1", name="single_row"),)


class CheckpointRow(Base):
    """A signed statement of the chain head: ``seq`` events, the last one hashing to ``hash``.

    Signed in the HSM with the audit key (``<CA key label>-audit``), recorded here and in the chain
    (a ``checkpoint`` event), and copied off the station. A copy kept elsewhere is what shows an
    older database put back, or a cut tail with a rewritten head: the chain alone cannot."""

    __tablename__ = "checkpoints"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    station: Mapped[str] = mapped_column(String(64))
    seq: Mapped[int] = mapped_column(BigInteger().with_variant(Integer(), "sqlite"))
    hash: Mapped[str] = mapped_column(String(64))
    signed_at: Mapped[str] = mapped_column(String(40))
    """ISO 8601 UTC, exactly as signed."""
    key_sha256: Mapped[str] = mapped_column(String(64), index=True)
    public_key: Mapped[bytes] = mapped_column(LargeBinary)
    signature: Mapped[bytes] = mapped_column(LargeBinary)
