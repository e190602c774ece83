"""The driver fast path stores and reads values exactly as SQLAlchemy does, on SQLite and PostgreSQL.

The audit store writes its hot statements through :class:`DriverStatement` and reads them back (the
audit view, exports, verify) through SQLAlchemy's ORM and Core, so the two must agree byte for byte
on every column type the units table uses, and driver errors must arrive as SQLAlchemy's.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime
from typing import cast

import pytest
from sqlalchemy import Engine, Table, bindparam, insert, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from station.audit import open_audit_store
from station.audit.driver import DriverStatement
from station.audit.models import UnitRow, WorkOrderRow

UNITS = cast(Table, UnitRow.__table__)
INSERT_UNIT = DriverStatement(insert(UNITS).returning(UNITS.c.id), varying_columns=True)
UPDATE_UNIT = DriverStatement(update(UNITS).where(UNITS.c.id == bindparam("unit_id")),
                              varying_columns=True)
SELECT_UNIT = DriverStatement(select(UNITS.c.id, UNITS.c.started_at, UNITS.c.cert_der,
                                     UNITS.c.status).where(UNITS.c.id == bindparam("unit_id")))


@pytest.fixture
def engine(db_url: str) -> Iterator[Engine]:
    store = open_audit_store(db_url, station_id="st-driver")
    with Session(store.engine) as s, s.begin():
        s.add(WorkOrderRow(number="WO-D", product="P", profile="tls-client", quantity=5,
                           serial_format="{product}-{seq:06d}", commissioning_json="[]", next_seq=1,
                           station="st-driver", created_at=datetime.now(UTC)))
    yield store.engine
    store.close()


def _wo_id(engine: Engine) -> int:
    with Session(engine) as s:
        return int(s.scalars(select(WorkOrderRow.id)).one())


def test_values_written_by_the_driver_read_back_through_the_orm(engine: Engine) -> None:
    started = datetime(2026, 11, 25, 21, 0, 1, 123456, tzinfo=UTC)
    der = bytes(range(256)) * 3
    wo_id = _wo_id(engine)
    with engine.begin() as conn:
        unit_id = INSERT_UNIT.one(conn, {
            "work_order_id": wo_id, "station": "st-driver", "slot": "1", "operator": "op",
            "hardware_id": "00aa", "status": "in_progress", "started_at": started,
        }).id
        UPDATE_UNIT.execute(conn, {"unit_id": unit_id, "cert_der": der, "status": "issued"})
    with Session(engine) as s:
        orm = s.get(UnitRow, unit_id)
        assert orm is not None
        assert orm.cert_der == der and orm.status == "issued"
        assert orm.started_at.replace(tzinfo=UTC) == started  # SQLite keeps no zone; PostgreSQL does
    with engine.connect() as conn:
        row = SELECT_UNIT.one(conn, {"unit_id": unit_id})
    assert (row.id, row.cert_der, row.status) == (unit_id, der, "issued")
    assert row.started_at == orm.started_at


def test_a_driver_error_arrives_as_sqlalchemys(engine: Engine) -> None:
    values = {"work_order_id": _wo_id(engine), "station": "st-driver", "slot": "1", "operator": "op",
              "hardware_id": "00bb", "status": "in_progress", "started_at": datetime.now(UTC),
              "serial_number": "P-000001"}
    with engine.begin() as conn:
        INSERT_UNIT.one(conn, values)
    with pytest.raises(IntegrityError, match=r"(?i)unique|duplicate"), engine.begin() as conn:
        INSERT_UNIT.one(conn, values | {"hardware_id": "00cc"})


def test_each_set_of_columns_compiles_its_own_statement(engine: Engine) -> None:
    wo_id = _wo_id(engine)
    with engine.begin() as conn:
        unit_id = INSERT_UNIT.one(conn, {
            "work_order_id": wo_id, "station": "st-driver", "slot": "1", "operator": "op",
            "hardware_id": "00dd", "status": "in_progress", "started_at": datetime.now(UTC)}).id
        UPDATE_UNIT.execute(conn, {"unit_id": unit_id, "slot": "2"})
        UPDATE_UNIT.execute(conn, {"unit_id": unit_id, "operator": "other"})
    with Session(engine) as s:
        orm = s.get(UnitRow, unit_id)
        assert orm is not None and (orm.slot, orm.operator) == ("2", "other")
