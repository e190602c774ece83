"""The audit store through its public API, on SQLite and PostgreSQL (see conftest)."""

from __future__ import annotations

import threading
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import text
from sqlalchemy.exc import IntegrityError

from station.audit import SqlAuditStore, open_audit_store, verify_chain
from station.domain import Step, UnitStatus, WorkOrder
from station.errors import AuditWriteFailed, IdentityConflict, QuotaExhausted, SigningFailed
from tests.audit.conftest import STATION, Issuer, work_order


def start(store: SqlAuditStore, hw: str, wo_number: str = "WO-1", quantity: int = 5, slot: str = "A") -> int:
    return store.start_unit(work_order=work_order(wo_number, quantity), station=STATION, slot=slot,
                            operator="tech-1", hardware_id=hw)


def provision(store: SqlAuditStore, issuer: Issuer, hw: str, **kw: object) -> int:
    unit = start(store, hw, **kw)  # type: ignore[arg-type]
    store.next_unit_serial(unit)
    prepared, der = issuer.prepare()
    store.record_intent(unit, prepared)
    store.record_issued(unit, der)
    store.complete_unit(unit)
    return unit


def test_full_lifecycle(store: SqlAuditStore, issuer: Issuer) -> None:
    unit = start(store, "hw-0001")
    for step in (Step.CONNECT, Step.IDENTIFY, Step.GENERATE_KEY, Step.GET_CSR):
        store.record_step(unit, step, ok=True, duration_ms=12.5, detail={"note": step.value})
    serial = store.next_unit_serial(unit)
    assert serial == "SENSOR-000001"
    assert store.next_unit_serial(unit) == serial, "reserving again returns the same serial"
    prepared, der = issuer.prepare()
    assert not store.is_key_known(prepared.public_key_sha256)
    store.record_intent(unit, prepared)
    assert store.is_key_known(prepared.public_key_sha256)
    assert store.get_unit(unit).status == UnitStatus.INTENT  # type: ignore[union-attr]
    store.record_issued(unit, der)
    assert store.issued_certificate_for("hw-0001") is not None
    store.record_step(unit, Step.WRITE_CERT, ok=True, duration_ms=40.0)
    store.complete_unit(unit)
    assert store.issued_certificate_for("hw-0001") is None

    rec = store.get_unit_by_serial(serial)
    assert rec is not None and rec.status == UnitStatus.PROVISIONED and rec.cert_der == der
    assert rec.cert_serial == format(prepared.serial, "x")
    assert rec.finished_at is not None and rec.finished_at.tzinfo is not None
    by_cert = store.get_unit_by_serial(format(prepared.serial, "X"))
    assert by_cert is not None and by_cert.unit_id == unit
    kinds = [e.kind for e in store.events(unit_id=unit)]
    assert kinds[0] == "unit_started" and kinds[-1] == "completed"
    assert "intent" in kinds and "issued" in kinds
    counts = store.work_order_counts("WO-1")
    assert counts is not None and (counts.provisioned, counts.consumed, counts.remaining) == (1, 1, 4)
    result = verify_chain(store)
    assert result.ok, result.summary()
    assert result.units_checked == 1


def test_serials_never_reused_after_failure(store: SqlAuditStore) -> None:
    first = start(store, "hw-a")
    s1 = store.next_unit_serial(first)
    store.fail_unit(first, Step.GET_CSR, "device_timeout", "no answer")
    second = start(store, "hw-a")
    assert store.next_unit_serial(second) != s1


def test_quota_counts_from_intent_on(store: SqlAuditStore, issuer: Issuer) -> None:
    early = start(store, "hw-1", quantity=2)
    store.fail_unit(early, Step.GET_CSR, "device_timeout", "no answer")  # before intent: free
    late = start(store, "hw-2", quantity=2)
    store.record_intent(late, issuer.prepare()[0])
    store.fail_unit(late, Step.SIGN, "signing_failed", "hsm")  # after intent: the HSM may have signed
    provision(store, issuer, "hw-3", quantity=2)
    counts = store.work_order_counts("WO-1")
    assert counts is not None and counts.consumed == 2 and counts.remaining == 0 and counts.failed == 2
    with pytest.raises(QuotaExhausted):
        start(store, "hw-4", quantity=2)
    assert any(e.kind == "refusal" and e.error_code == "quota_exhausted" for e in store.events())


def test_duplicate_certificate_serial_refused(store: SqlAuditStore, issuer: Issuer) -> None:
    a, b = start(store, "hw-a"), start(store, "hw-b")
    prepared, _ = issuer.prepare(serial=0x1234_5678_9ABC_DEF0_1122)
    store.record_intent(a, prepared)
    other, _ = issuer.prepare(serial=prepared.serial)
    with pytest.raises(IdentityConflict, match="certificate serial"):
        store.record_intent(b, other)
    assert store.get_unit(b).status == UnitStatus.IN_PROGRESS  # type: ignore[union-attr]
    assert store.healthy, "a refused duplicate is not an audit failure"


def test_duplicate_public_key_refused_even_after_failure(store: SqlAuditStore, issuer: Issuer) -> None:
    from cryptography.hazmat.primitives.asymmetric import ec

    key = ec.generate_private_key(ec.SECP256R1())
    a = start(store, "hw-a")
    store.record_intent(a, issuer.prepare(device_key=key)[0])
    store.fail_unit(a, Step.SIGN, "signing_failed", "hsm")
    b = start(store, "hw-b")
    with pytest.raises(IdentityConflict, match="public key"):
        store.record_intent(b, issuer.prepare(device_key=key)[0])


def test_duplicate_active_hardware_id_refused_by_database(store: SqlAuditStore, issuer: Issuer) -> None:
    a, b = start(store, "hw-same", slot="A"), start(store, "hw-same", slot="B")  # both only in progress
    store.record_intent(a, issuer.prepare()[0])
    with pytest.raises(IdentityConflict, match="hardware id"):
        store.record_intent(b, issuer.prepare()[0])  # no query guards this: the partial index does
    with pytest.raises(IdentityConflict):
        start(store, "hw-same")
    store.fail_unit(a, Step.SIGN, "signing_failed", "hsm")
    store.record_intent(b, issuer.prepare()[0])  # a failed unit no longer holds the hardware id


def test_unique_indexes_hold_against_raw_sql(store: SqlAuditStore, issuer: Issuer) -> None:
    a, b = provision(store, issuer, "hw-a"), provision(store, issuer, "hw-b")
    for column in ("cert_serial", "public_key_sha256", "hardware_id", "serial_number"):
        with pytest.raises(IntegrityError), store.engine.begin() as conn:
            conn.execute(text(f"UPDATE units SET {column} = (SELECT {column} FROM units WHERE id = :a) "
                              "WHERE id = :b"), {"a": a, "b": b})


def test_quota_exact_under_16_racing_slots(store: SqlAuditStore, issuer: Issuer) -> None:
    units = [start(store, f"hw-{i:02d}", quantity=10, slot=str(i)) for i in range(16)]
    prepared = [issuer.prepare()[0] for _ in units]
    barrier = threading.Barrier(len(units))
    results: list[str] = [""] * len(units)

    def slot(i: int) -> None:
        barrier.wait()
        try:
            store.record_intent(units[i], prepared[i])
            results[i] = "ok"
        except QuotaExhausted:
            results[i] = "quota"
        except Exception as exc:  # anything else is a bug the assertion below shows
            results[i] = repr(exc)

    threads = [threading.Thread(target=slot, args=(i,)) for i in range(len(units))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert sorted(results) == ["ok"] * 10 + ["quota"] * 6, results
    counts = store.work_order_counts("WO-1")
    assert counts is not None and counts.consumed == 10 and counts.remaining == 0
    assert verify_chain(store).ok


def test_record_issued_refuses_a_certificate_that_is_not_the_intent(store: SqlAuditStore,
                                                                    issuer: Issuer) -> None:
    unit = start(store, "hw-a")
    prepared, _ = issuer.prepare()
    store.record_intent(unit, prepared)
    _, other = issuer.prepare()
    with pytest.raises(SigningFailed):
        store.record_issued(unit, other)
    with pytest.raises(SigningFailed):
        store.record_issued(unit, b"not a certificate")
    assert store.get_unit(unit).status == UnitStatus.INTENT  # type: ignore[union-attr]


def test_interrupted_units_and_resumption(db_url: str, issuer: Issuer) -> None:
    s1 = open_audit_store(db_url, station_id=STATION)
    in_progress = start(s1, "hw-p")
    intent = start(s1, "hw-i")
    s1.record_intent(intent, issuer.prepare()[0])
    issued = start(s1, "hw-s")
    prepared, der = issuer.prepare()
    s1.record_intent(issued, prepared)
    s1.record_issued(issued, der)
    s1.close()  # "crash"

    s2 = open_audit_store(db_url, station_id=STATION)
    assert {u.unit_id for u in s2.interrupted_units()} == {intent, issued}
    marked = {u.unit_id: u.status for u in s2.mark_interrupted()}
    assert marked == {in_progress: UnitStatus.FAILED, intent: UnitStatus.FAILED, issued: UnitStatus.ISSUED}
    assert s2.get_unit(intent).error_code == "interrupted"  # type: ignore[union-attr]
    again = s2.issued_certificate_for("hw-s")
    assert again is not None and again.unit_id == issued and again.cert_der == der
    assert s2.issued_certificate_for("hw-i") is None, "an intent without certificate is never resent"
    # the write fails once, is retried later from another slot, with the same certificate
    s2.fail_unit(issued, Step.WRITE_CERT, "device_disconnected", "unplugged")
    resumed = s2.issued_certificate_for("hw-s")
    assert resumed is not None
    s2.resume_unit(resumed.unit_id, slot="C", operator="tech-2")
    s2.complete_unit(issued)
    assert s2.get_unit(issued).status == UnitStatus.PROVISIONED  # type: ignore[union-attr]
    counts = s2.work_order_counts("WO-1")
    assert counts is not None and counts.consumed == 2  # the interrupted intent still counts
    assert verify_chain(s2).ok
    s2.close()


def test_listing_streams_with_filters(store: SqlAuditStore, issuer: Issuer) -> None:
    for i in range(7):
        provision(store, issuer, f"hw-{i}", quantity=20)
    failed = start(store, "hw-x", quantity=20)
    store.fail_unit(failed, Step.GET_CSR, "device_timeout", "no answer")
    start(store, "hw-other", wo_number="WO-2")
    assert len(list(store.list_units(batch=2))) == 9
    assert len(list(store.list_units(work_order="WO-1", outcome="ok", batch=3))) == 7
    assert [u.unit_id for u in store.list_units(outcome="failed")] == [failed]
    assert len(list(store.list_units(status=UnitStatus.IN_PROGRESS))) == 1
    future = datetime.now(UTC) + timedelta(hours=1)
    assert list(store.list_units(since=future)) == []
    assert len(list(store.list_units(until=future))) == 9


def test_operators_and_non_unit_events(store: SqlAuditStore) -> None:
    store.add_operator(badge_id="B-7", name="Ada", role="technician", pin="482913")
    assert store.sign_in("B-7", "000000") is None
    who = store.sign_in("B-7", "482913")
    assert who is not None and who.role == "technician"
    store.sign_out("B-7")
    store.record_event("role_refused", operator="B-7", ok=False, detail={"wanted": "config"},
                       error_code="forbidden")
    kinds = [(e.kind, e.outcome) for e in store.events()]
    assert ("sign_in", "failed") in kinds and ("sign_in", "ok") in kinds
    assert ("sign_out", "ok") in kinds and ("role_refused", "failed") in kinds
    with pytest.raises(IdentityConflict, match="badge"):
        store.add_operator(badge_id="B-7", name="Bob", role="admin", pin="1111")
    assert verify_chain(store).ok


def test_issuing_stopped_after_write_failure_until_reopened(db_url: str, issuer: Issuer) -> None:
    s = open_audit_store(db_url, station_id=STATION)
    unit = start(s, "hw-a")
    with s.engine.begin() as conn:  # a fault the store cannot recover from: its table is gone
        conn.execute(text("ALTER TABLE chain_head RENAME TO chain_head_gone"))
    with pytest.raises(AuditWriteFailed):
        s.record_step(unit, Step.CONNECT, ok=True, duration_ms=1.0)
    assert not s.healthy and s.issuing_stopped
    with pytest.raises(AuditWriteFailed, match="issuing stopped"):
        s.record_intent(unit, issuer.prepare()[0])
    with s.engine.begin() as conn:
        conn.execute(text("ALTER TABLE chain_head_gone RENAME TO chain_head"))
    assert not s.healthy, "only reopening clears it"
    s.close()
    s2 = open_audit_store(db_url, station_id=STATION)
    assert s2.healthy
    s2.record_intent(unit, issuer.prepare()[0])
    s2.close()


def test_a_new_work_order_continues_the_serial_series(tmp_path: Path) -> None:
    """Two work orders of one product and serial format never hand out the same unit serial."""
    store = open_audit_store(tmp_path / "a.db", station_id="s")
    serials = []
    for number in ("WO-A", "WO-B"):
        wo = WorkOrder(number=number, product="lamp", profile="tls-client", quantity=5,
                       serial_format="LAMP-{seq:04d}")
        for hw in range(2):
            unit = store.start_unit(work_order=wo, station="s", slot="1", operator="o",
                                    hardware_id=f"{number}-{hw}")
            serials.append(store.next_unit_serial(unit))
    store.close()
    assert serials == ["LAMP-0001", "LAMP-0002", "LAMP-0003", "LAMP-0004"]


def test_work_orders_of_one_product_running_at_once_share_the_serial_series(store: SqlAuditStore) -> None:
    """Two work orders of the same product and serial format, units interleaved (two lines or two
    stations on one database): every serial once, in order of reservation."""
    orders = [WorkOrder(number=n, product="lamp", profile="tls-client", quantity=10,
                        serial_format="LAMP-{seq:04d}") for n in ("WO-A", "WO-B")]
    serials = []
    for i in range(6):
        wo = orders[i % 2]
        unit = store.start_unit(work_order=wo, station="s", slot=str(i % 2), operator="o",
                                hardware_id=f"hw-{i}")
        serials.append(store.next_unit_serial(unit))
    assert serials == [f"LAMP-{n:04d}" for n in range(1, 7)]
    assert verify_chain(store).ok


def test_a_clock_set_back_behind_the_log_stops_issuing(store: SqlAuditStore, issuer: Issuer,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    """RELIABILITY.md: the clock jumping backwards. Nothing is signed behind the log's last entry
    (beyond a few minutes of skew between stations); the log itself stays ordered by sequence."""
    import station.audit.store as store_module

    first = start(store, "hw-1")
    real_now = store_module._now
    monkeypatch.setattr(store_module, "_now", lambda: real_now() - timedelta(minutes=2))
    store.record_intent(first, issuer.prepare()[0])  # within the tolerance: NTP skew
    second = start(store, "hw-2")
    monkeypatch.setattr(store_module, "_now", lambda: real_now() - timedelta(hours=3))
    with pytest.raises(AuditWriteFailed, match="clock") as caught:
        store.record_intent(second, issuer.prepare()[0])
    assert caught.value.code == "clock_behind_log"
    assert not store.healthy and "set the clock" in (store.issuing_stopped or "")
    assert store.get_unit(second).status is UnitStatus.IN_PROGRESS  # type: ignore[union-attr]
    assert verify_chain(store).ok
