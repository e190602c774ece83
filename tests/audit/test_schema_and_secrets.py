"""Migrations (from empty, idempotent, equal to the models) and secrets never reaching the disk."""

from __future__ import annotations

from pathlib import Path

from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.config import Config
from alembic.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import inspect

from station.audit import SqlAuditStore, check_pin, hash_pin, open_audit_store, verify_chain
from station.audit.engine import MIGRATIONS_DIR, run_migrations
from station.audit.models import Base
from station.domain import Step, WorkOrder
from tests.audit.conftest import STATION, Issuer


def head_revision() -> str:
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS_DIR))
    head = ScriptDirectory.from_config(cfg).get_current_head()
    assert head is not None
    return head


def test_migrations_from_empty_and_idempotent(db_url: str) -> None:
    store = open_audit_store(db_url, station_id=STATION)
    try:
        tables = set(inspect(store.engine).get_table_names())
        assert {"work_orders", "operators", "units", "events", "chain_head", "alembic_version"} <= tables
        run_migrations(store.engine)  # again: nothing to do, nothing broken
        run_migrations(store.engine)
        with store.engine.connect() as conn:
            assert MigrationContext.configure(conn).get_current_revision() == head_revision()
            # the migrations build exactly what the models describe
            assert compare_metadata(MigrationContext.configure(conn), Base.metadata) == []
        assert store.chain_head() == (0, "0" * 64)
    finally:
        store.close()
    again = open_audit_store(db_url, station_id=STATION)
    assert again.healthy and again.chain_head()[0] == 0
    again.close()


def test_secrets_never_stored(tmp_path: Path, issuer: Issuer) -> None:
    secret_psk = "Tr0ub4dor-PSK-7731"
    pin = "930417"
    path = tmp_path / "audit.db"
    store = open_audit_store(path, station_id=STATION)
    wo = WorkOrder(number="WO-S", product="SENSOR", profile="matter-dac", quantity=5,
                   commissioning=(("wifi_ssid", "factory-net", False), ("wifi_psk", secret_psk, True)))
    store.add_operator(badge_id="B-1", name="Ada", role="admin", pin=pin)
    assert store.sign_in("B-1", pin) is not None
    unit = store.start_unit(work_order=wo, station=STATION, slot="A", operator="B-1", hardware_id="hw")
    # a careless caller passes the secret in step detail, under the work order's own key
    store.record_step(unit, Step.COMMISSION, ok=True, duration_ms=5.0,
                      detail={"wifi_ssid": "factory-net", "wifi_psk": secret_psk, "operator_pin": pin})
    events = list(store.events(unit_id=unit))
    assert events[-1].detail == {"wifi_ssid": "factory-net", "wifi_psk": "***", "operator_pin": "***"}
    store.close()
    raw = b"".join(p.read_bytes() for p in tmp_path.iterdir() if p.name.startswith("audit.db"))
    assert b"factory-net" in raw, "the grep does see what is stored"
    assert secret_psk.encode() not in raw
    assert pin.encode() not in raw


def test_pin_hashes() -> None:
    h = hash_pin("1234")
    assert h.startswith("scrypt$") and "1234" not in h
    assert check_pin("1234", h) and not check_pin("1235", h)
    assert hash_pin("1234") != h, "salted"
    assert not check_pin("1234", "garbage") and not check_pin("1234", "scrypt$1$2$3$zz$yy")


def test_sqlite_pragmas_are_in_force(sqlite_store: SqlAuditStore) -> None:
    with sqlite_store.engine.connect() as conn:
        assert conn.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"
        assert conn.exec_driver_sql("PRAGMA synchronous").scalar() == 2
        assert conn.exec_driver_sql("PRAGMA foreign_keys").scalar() == 1
        assert int(conn.exec_driver_sql("PRAGMA busy_timeout").scalar() or 0) >= 5000


def test_database_from_a_newer_station_is_refused(tmp_path: Path) -> None:
    import pytest
    from sqlalchemy import text

    from station.errors import AuditWriteFailed

    store = open_audit_store(tmp_path / "a.db", station_id=STATION)
    with store.engine.begin() as conn:
        conn.execute(text("UPDATE alembic_version SET version_num = '9999'"))
    store.close()
    with pytest.raises(AuditWriteFailed, match="cannot migrate"):
        open_audit_store(tmp_path / "a.db", station_id=STATION)


def test_quota_counter_migration_counts_existing_intents(db_url: str, issuer: Issuer) -> None:
    """Migrations 0003 and 0004, down and up again: each work order's quota counter starts at the
    number of its units with an intent, and its serial series where its serials stood."""
    store = open_audit_store(db_url, station_id=STATION)
    wo = WorkOrder(number="WO-Q", product="SENSOR", profile="matter-dac", quantity=5)
    for i in range(3):
        unit = store.start_unit(work_order=wo, station=STATION, slot="A", operator="t",
                                hardware_id=f"hw-{i}")
        store.next_unit_serial(unit)
        if i < 2:
            store.record_intent(unit, issuer.prepare()[0])
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS_DIR))
    with store.engine.begin() as conn:
        cfg.attributes["connection"] = conn
        command.downgrade(cfg, "0002")
    store.close()
    again = open_audit_store(db_url, station_id=STATION)  # upgrades to head again
    try:
        counts = again.work_order_counts("WO-Q")
        assert counts is not None and counts.consumed == 2 and counts.remaining == 3
        # 0004 on the way back and up again: the serial series goes on where it stood.
        unit = again.start_unit(work_order=wo, station=STATION, slot="A", operator="t",
                                hardware_id="hw-3")
        assert again.next_unit_serial(unit) == "SENSOR-000004"
        assert verify_chain(again).ok
    finally:
        again.close()
