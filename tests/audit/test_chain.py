"""Tamper evidence: verify_chain names the first bad row after edits made behind the store's back."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from sqlalchemy import text

from station.audit import SqlAuditStore, verify_chain
from station.audit.chain import GENESIS_HASH, HASHED_FIELDS, event_hash
from station.domain import Step
from tests.audit.conftest import STATION, Issuer, work_order


@pytest.fixture
def filled(store: SqlAuditStore, issuer: Issuer) -> SqlAuditStore:
    """Three provisioned units and a failed one: about 25 chained events."""
    for i in range(3):
        unit = store.start_unit(work_order=work_order(), station=STATION, slot=str(i), operator="t",
                                hardware_id=f"hw-{i}")
        store.record_step(unit, Step.CONNECT, ok=True, duration_ms=3.25)
        store.next_unit_serial(unit)
        prepared, der = issuer.prepare()
        store.record_intent(unit, prepared)
        store.record_issued(unit, der)
        store.complete_unit(unit)
    bad = store.start_unit(work_order=work_order(), station=STATION, slot="9", operator="t",
                           hardware_id="hw-9")
    store.fail_unit(bad, Step.GET_CSR, "device_timeout", "no answer")
    assert verify_chain(store).ok
    return store


def sql(store: SqlAuditStore, statement: str, **params: Any) -> None:
    with store.engine.begin() as conn:
        conn.execute(text(statement), params)


def test_intact_chain_reports_progress(filled: SqlAuditStore) -> None:
    seen: list[tuple[int, int]] = []
    result = verify_chain(filled, progress_callback=lambda done, total: seen.append((done, total)))
    assert result.ok and result.events_checked == result.head_seq
    assert seen[-1][0] == seen[-1][1] > 0


def test_edited_event(filled: SqlAuditStore) -> None:
    sql(filled, "UPDATE events SET duration_ms = 1.0 WHERE seq = 7")
    result = verify_chain(filled)
    assert not result.ok and result.seq == 7 and "edited" in (result.problem or "")
    assert "seq 7" in result.summary()


def test_deleted_event(filled: SqlAuditStore) -> None:
    sql(filled, "DELETE FROM events WHERE seq = 5")
    result = verify_chain(filled)
    assert not result.ok and result.seq == 6 and "missing" in (result.problem or "")


def test_deleted_event_with_renumbering(filled: SqlAuditStore) -> None:
    sql(filled, "DELETE FROM events WHERE seq = 5")
    for seq in range(6, filled.chain_head()[0] + 1):
        sql(filled, "UPDATE events SET seq = :new WHERE seq = :old", new=seq - 1, old=seq)
    result = verify_chain(filled)
    assert not result.ok and result.seq == 5 and "prev_hash" in (result.problem or "")


def test_inserted_event_at_the_end(filled: SqlAuditStore) -> None:
    head_seq, head_hash = filled.chain_head()
    sql(filled, "INSERT INTO events (seq, station, kind, detail_json, occurred_at, prev_hash, hash) "
        "VALUES (:seq, 'x', 'note', '{}', '2020-01-01T00:00:00+00:00', :prev, :h)",
        seq=head_seq + 1, prev=head_hash, h="f" * 64)
    result = verify_chain(filled)
    assert not result.ok and result.seq == head_seq + 1


def test_inserted_event_in_the_middle(filled: SqlAuditStore) -> None:
    head_seq, _ = filled.chain_head()
    for seq in range(head_seq, 9, -1):  # make room at 10, from the top down
        sql(filled, "UPDATE events SET seq = :new WHERE seq = :old", new=seq + 1, old=seq)
    # a row with a correct-looking hash over its own claimed predecessor
    fields = {name: None for name in HASHED_FIELDS} | {
        "station": STATION, "kind": "note", "detail_json": "{}", "occurred_at": "2020-01-01T00:00:00+00:00"}
    forged = event_hash(10, "a" * 64, fields)
    sql(filled, "INSERT INTO events (seq, station, kind, detail_json, occurred_at, prev_hash, hash) "
        "VALUES (10, :st, 'note', '{}', '2020-01-01T00:00:00+00:00', :prev, :h)",
        st=STATION, prev="a" * 64, h=forged)
    result = verify_chain(filled)
    assert not result.ok and result.seq == 10 and "prev_hash" in (result.problem or "")


def test_reordered_events(filled: SqlAuditStore) -> None:
    sql(filled, "UPDATE events SET seq = -1 WHERE seq = 8")
    sql(filled, "UPDATE events SET seq = 8 WHERE seq = 9")
    sql(filled, "UPDATE events SET seq = 9 WHERE seq = -1")
    result = verify_chain(filled)
    assert not result.ok and result.seq == 8


def test_cut_tail(filled: SqlAuditStore) -> None:
    head_seq, _ = filled.chain_head()
    sql(filled, "DELETE FROM events WHERE seq = :s", s=head_seq)
    result = verify_chain(filled)
    assert not result.ok and "chain head" in (result.problem or "")


@pytest.mark.parametrize(
    ("column", "value"),
    [("cert_serial", "'abcdef'"), ("public_key_sha256", "'00'"), ("status", "'provisioned'"),
     ("cert_der", "NULL"), ("tbs_sha256", "'11'"), ("serial_number", "'SENSOR-999999'")],
)
def test_edited_unit_row(filled: SqlAuditStore, column: str, value: str) -> None:
    target = 4 if column == "status" else 2  # unit 4 failed; "promote" it
    sql(filled, f"UPDATE units SET {column} = {value} WHERE id = :u", u=target)
    result = verify_chain(filled)
    assert not result.ok and result.unit_id == target, result
    assert column in (result.problem or "") or "certificate" in (result.problem or "")


def test_edited_certificate_der(filled: SqlAuditStore) -> None:
    with filled.engine.begin() as conn:
        der = conn.execute(text("SELECT cert_der FROM units WHERE id = 1")).scalar_one()
        conn.execute(text("UPDATE units SET cert_der = :d WHERE id = 1"), {"d": der[:-1] + b"\x00"})
    result = verify_chain(filled)
    assert not result.ok and result.unit_id == 1 and "DER" in (result.problem or "")


def test_verify_by_url(filled: SqlAuditStore, db_url: str) -> None:
    assert verify_chain(db_url).ok


@settings(max_examples=200, deadline=None)
@given(
    field=st.sampled_from(HASHED_FIELDS),
    original=st.one_of(st.none(), st.text(max_size=20), st.integers(), st.floats(allow_nan=False)),
    changed=st.one_of(st.none(), st.text(max_size=20), st.integers(), st.floats(allow_nan=False)),
)
def test_any_field_change_changes_the_hash(field: str, original: Any, changed: Any) -> None:
    if original == changed and type(original) is type(changed):
        return
    base: dict[str, Any] = {name: "x" for name in HASHED_FIELDS}
    before = event_hash(1, GENESIS_HASH, base | {field: original})
    after = event_hash(1, GENESIS_HASH, base | {field: changed})
    if repr(original) != repr(changed):
        assert before != after


def test_edited_quota_counter(filled: SqlAuditStore) -> None:
    """A site that winds its work order's quota counter back to sign more units is caught."""
    sql(filled, "UPDATE work_orders SET consumed = 0")
    result = verify_chain(filled)
    assert not result.ok and "quota counter edited" in (result.problem or "")
    assert "3 units have an intent" in (result.problem or "")
