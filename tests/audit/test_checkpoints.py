"""Signed checkpoints: what the chain alone cannot show (RELIABILITY.md, database faults).

Real parts: the audit key is a P-256 key in the session's SoftHSM token next to the CA key, units are
provisioned by the real station from virtual devices on ptys, the database is a SQLite file. The
faults are made behind the station's back, as an attacker or a careless restore would.
"""

from __future__ import annotations

import shutil
import sqlite3
from collections.abc import Iterator
from pathlib import Path

import pytest

from fixtures.softhsm import TestCa
from fixtures.virtual_dut import virtual_devices
from hsm.keys import CaKey, audit_key_label
from hsm.token import open_token
from station.app import Station, open_station
from station.audit import verify_chain
from station.audit.checkpoint import Checkpoint, read_checkpoints
from station.cli import main as station_main
from station.config import SlotConfig
from station.domain import WorkOrder
from station.signing import HsmSigner

WO = WorkOrder(number="WO-CP", product="sensor", profile="tls-client", quantity=50)


def _signer(ca: TestCa) -> HsmSigner:
    return HsmSigner.open(module_path=ca.module_path, token_label=ca.token_label,
                          pin_source=ca.pin_source(), key_label=ca.key_label,
                          ca_chain_path=ca.ca_dir / "chain.pem")


@pytest.fixture
def station(tmp_path: Path, softhsm_ca: TestCa) -> Iterator[Station]:
    st = open_station(station_id="st-cp", signer=_signer(softhsm_ca), database=tmp_path / "audit.db",
                      work_order=WO, checkpoint_every=2)
    yield st
    st.close()


def _provision(station: Station, count: int) -> None:
    with virtual_devices(count) as devices:
        slots = [SlotConfig(name=str(i + 1), port=d.port) for i, d in enumerate(devices)]
        results = station.line.run(station.slot_runs(slots, operator="op", work_order=WO))
    assert all(r.ok for r in results), [r.message for r in results if not r.ok]


def test_the_audit_key_is_separate_sensitive_and_not_extractable(softhsm_ca: TestCa) -> None:
    token = open_token(softhsm_ca.token_spec, softhsm_ca.pin_source())
    try:
        key = CaKey(token, label=audit_key_label(softhsm_ca.key_label))  # refuses an unsafe key
        ca = CaKey(token, label=softhsm_ca.key_label)
        assert key.attributes.sensitive and not key.attributes.extractable
        assert key.public_key_der != ca.public_key_der
    finally:
        token.close()


def test_checkpoints_every_n_units_and_at_close_verify(tmp_path: Path, station: Station) -> None:
    _provision(station, 4)
    station.close()
    kept = read_checkpoints(tmp_path / "audit.db.checkpoints")
    assert len(kept) == 3  # after units 2 and 4, and at close
    assert all(c.signature_valid() for c in kept)
    assert [c.seq for c in kept] == sorted(c.seq for c in kept)
    result = verify_chain(tmp_path / "audit.db", checkpoints=kept)
    assert result.ok, result.problem


def test_an_older_copy_of_the_database_put_back_is_caught(tmp_path: Path, station: Station) -> None:
    db = tmp_path / "audit.db"
    _provision(station, 2)
    station.writer.flush()
    with sqlite3.connect(db) as conn:  # a consistent copy, as a backup tool would make it
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    shutil.copy(db, tmp_path / "older.db")
    _provision(station, 2)
    station.close()
    kept = read_checkpoints(tmp_path / "audit.db.checkpoints")
    assert verify_chain(tmp_path / "older.db").ok, "on its own, the older copy is a consistent chain"
    result = verify_chain(tmp_path / "older.db", checkpoints=kept)
    assert not result.ok and "older copy" in (result.problem or "")
    # the command a quality engineer runs says so, and fails
    assert station_main(["audit", "verify", "--db", str(tmp_path / "older.db"), "--quiet",
                         "--checkpoints", str(tmp_path / "audit.db.checkpoints")]) == 1


def test_a_cut_tail_with_a_rewritten_head_is_caught(tmp_path: Path, station: Station) -> None:
    db = tmp_path / "audit.db"
    _provision(station, 4)
    station.close()
    with sqlite3.connect(db) as conn:
        last = conn.execute("SELECT max(seq) FROM events").fetchone()[0]
        cut = last - 8
        conn.execute("DELETE FROM events WHERE seq > ?", (cut,))
        conn.execute("UPDATE chain_head SET seq = ?, hash = (SELECT hash FROM events WHERE seq = ?)",
                     (cut, cut))
    kept = read_checkpoints(tmp_path / "audit.db.checkpoints")
    result = verify_chain(db, checkpoints=kept)
    assert not result.ok and ("older copy" in (result.problem or "") or "cut" in (result.problem or ""))


def test_a_forged_or_edited_checkpoint_is_caught(tmp_path: Path, station: Station) -> None:
    db = tmp_path / "audit.db"
    _provision(station, 2)
    station.close()
    with sqlite3.connect(db) as conn:
        conn.execute("UPDATE checkpoints SET seq = seq - 1 WHERE id = 1")
    result = verify_chain(db)
    assert not result.ok and "does not verify" in (result.problem or "")


def test_a_deleted_checkpoint_row_is_caught(tmp_path: Path, station: Station) -> None:
    db = tmp_path / "audit.db"
    _provision(station, 2)
    station.close()
    with sqlite3.connect(db) as conn:
        conn.execute("DELETE FROM checkpoints WHERE id = 1")
    result = verify_chain(db)
    assert not result.ok and "gone" in (result.problem or "")


def test_a_checkpoint_file_line_that_does_not_parse_is_named(tmp_path: Path) -> None:
    path = tmp_path / "kept.checkpoints"
    path.write_text('{"station": "x"}\n')
    with pytest.raises(ValueError, match="line 1"):
        read_checkpoints(path)
    assert Checkpoint.message_for(station="s", seq=1, hash="ab", signed_at="t") == (
        b'{"hash":"ab","purpose":"station audit checkpoint v1","seq":1,"signed_at":"t","station":"s"}')
