"""``station audit seed``: a realistic audit database of N units, fast (1,000,000 in minutes).

Why it looks the way it does
----------------------------
* **The same rows the store writes.** Each unit gets the events the workflow and
  :class:`~station.audit.store.SqlAuditStore` append (``unit_started``, a ``step`` per step with its
  duration, ``serial_reserved``, ``intent``, ``issued``, ``completed`` or ``failed``), chained with
  :func:`station.audit.chain.event_hash`, so ``station audit verify`` passes on the result and the
  unit rows agree with their events.
* **Bulk, not per-unit transactions.** Rows go in with ``executemany`` in large transactions, with
  ``synchronous=OFF`` on this connection only (a seed is reproducible; durability is not needed
  while it runs). ``ANALYZE`` at the end gives the query planner the statistics a year of data has.
* **Certificates without a million signatures.** A throw-away software CA signs one template
  certificate per product once. A unit's certificate is the template with the unit's serial number,
  subject CN (the unit serial) and public key (a real P-256 key per unit) patched in at fixed
  offsets: every field a QE reads is the unit's own and its fingerprints are real, but the CA
  signature is the template's and does **not** verify over the patched bytes. Seed data, never
  evidence.

SQLite only (the bench and tests target it); PostgreSQL is refused with a clear message.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, Final

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from station.audit import open_audit_store
from station.audit.chain import canonical_detail, event_hash
from station.audit.engine import DURABLE_PRAGMAS

ProgressCallback = Callable[[int, int], None]

SEED_PRAGMAS: Final = {
    "journal_mode": "OFF",
    "synchronous": "OFF",
    "foreign_keys": "ON",
    "busy_timeout": "10000",
    "cache_size": "-2000000",
    "temp_store": "MEMORY",
}
"""Used while seeding only; the station itself always opens with :data:`DURABLE_PRAGMAS` (and the
seed reopens the file with them at the end, which puts it back in WAL mode). No journal: a seed that
dies half-way leaves a file to delete, not evidence. The 2 GB page cache holds the event-hash index
(random inserts) of a million units between commits."""

PRODUCTS: Final = (("sensor-v2", "SNS2", "tls-client"), ("gateway-x1", "GWX1", "tls-client"),
                   ("meter-m3", "MTR3", "matter-dac"))

STEP_MS: Final = (
    ("connect", 8.0, 2.0), ("identify", 25.0, 5.0), ("check", 4.0, 1.0), ("commission", 60.0, 15.0),
    ("generate_key", 1800.0, 400.0), ("get_csr", 140.0, 30.0), ("pre_issuance", 6.0, 1.5),
    ("sign", 12.0, 3.0), ("record_issuance", 9.0, 2.0), ("write_cert", 220.0, 40.0),
    ("prove_possession", 180.0, 30.0), ("lock", 90.0, 20.0), ("complete", 12.0, 3.0),
)
"""(step, mean ms, spread ms): a unit takes ~2.6 s of device time, dominated by key generation."""

FAILURES: Final = (
    ("connect", 18, ("device_timeout", "device_disconnected")),
    ("identify", 8, ("device_misbehaved", "identity_conflict")),
    ("check", 6, ("device_refused",)),
    ("commission", 5, ("device_refused", "bad_link")),
    ("generate_key", 16, ("device_timeout", "device_refused")),
    ("get_csr", 12, ("csr_rejected", "bad_link")),
    ("pre_issuance", 10, ("csr_rejected", "identity_conflict")),
    ("sign", 2, ("signing_failed",)),
    ("write_cert", 11, ("device_disconnected", "bad_link")),
    ("prove_possession", 7, ("device_misbehaved",)),
    ("lock", 5, ("device_refused",)),
)
"""Where units fail (relative weight) and with which error codes: a long-tailed Pareto, as on a line."""

_MESSAGES: Final = {
    "device_timeout": "the device did not answer in time",
    "device_disconnected": "the device was unplugged",
    "device_misbehaved": "the device broke the protocol",
    "identity_conflict": "hardware id or key already belongs to another unit",
    "device_refused": "the device answered ERROR",
    "bad_link": "too many CRC errors on the link",
    "csr_rejected": "the CSR failed a pre-issuance check",
    "signing_failed": "the HSM did not sign",
}

_UNIT_COLS: Final = (
    "id", "work_order_id", "station", "slot", "operator", "hardware_id", "serial_number",
    "public_key_sha256", "cert_serial", "tbs_sha256", "cert_der", "cert_sha256", "profile", "status",
    "started_at", "intent_at", "issued_at", "finished_at", "failed_step", "error_code", "error_message",
)
_EVENT_COLS: Final = ("seq", "station", "kind", "unit_id", "work_order", "operator", "step", "outcome",
                      "duration_ms", "detail_json", "error_code", "error_message", "occurred_at",
                      "prev_hash", "hash")


@dataclass(frozen=True, kw_only=True)
class SeedResult:
    units: int
    events: int
    work_orders: int
    failed: int
    seconds: float
    head_seq: int
    head_hash: str
    db_bytes: int

    @property
    def units_per_second(self) -> float:
        return self.units / self.seconds if self.seconds else 0.0


@dataclass
class _Template:
    """One product's certificate, with the byte offsets of the per-unit fields."""

    der: bytes
    serial_at: int
    cn_at: int
    cn_len: int
    point_at: int
    tbs_at: int
    tbs_len: int


def _make_templates(rng: random.Random, cn_len: int) -> dict[str, _Template]:
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, "Seed Data Co"),
                         x509.NameAttribute(NameOID.COMMON_NAME, "Seed Data Issuing CA (not trusted)")])
    out: dict[str, _Template] = {}
    now = datetime(2025, 1, 1, tzinfo=UTC)
    for product, _prefix, _profile in PRODUCTS:
        key = ec.generate_private_key(ec.SECP256R1())
        serial = int.from_bytes(bytes([0x5A]) + rng.randbytes(15), "big")
        cn = "Z" * cn_len
        cert = (
            x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, "Seed Data Co"),
                                     x509.NameAttribute(NameOID.ORGANIZATIONAL_UNIT_NAME, product),
                                     x509.NameAttribute(NameOID.COMMON_NAME, cn)]))
            .issuer_name(ca_name)
            .public_key(key.public_key())
            .serial_number(serial)
            .not_valid_before(now)
            .not_valid_after(now + timedelta(days=365 * 20))
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.KeyUsage(digital_signature=True, content_commitment=False,
                                         key_encipherment=False, data_encipherment=False,
                                         key_agreement=False, key_cert_sign=False, crl_sign=False,
                                         encipher_only=False, decipher_only=False), critical=True)
            .sign(ca_key, hashes.SHA256())
        )
        der = cert.public_bytes(serialization.Encoding.DER)
        tbs = cert.tbs_certificate_bytes
        point = key.public_key().public_bytes(serialization.Encoding.X962,
                                              serialization.PublicFormat.UncompressedPoint)
        offsets = (der.find(serial.to_bytes(16, "big")), der.find(cn.encode()), der.find(point),
                   der.find(tbs))
        if min(offsets) < 0:
            raise RuntimeError("seed template: a field was not found in the certificate")
        out[product] = _Template(der=der, serial_at=offsets[0], cn_at=offsets[1], cn_len=cn_len,
                                 point_at=offsets[2], tbs_at=offsets[3], tbs_len=len(tbs))
    return out


def _sql_time(value: datetime) -> str:
    """How SQLAlchemy stores a DateTime on SQLite (naive UTC text)."""
    return value.replace(tzinfo=None).isoformat(sep=" ", timespec="microseconds")


def seed_database(
    db: str | os.PathLike[str],
    units: int,
    *,
    seed: int = 1,
    work_orders: int | None = None,
    stations: int = 4,
    operators: int = 12,
    failure_rate: float = 0.03,
    start: datetime | None = None,
    spacing_s: float = 31.5,
    progress: ProgressCallback | None = None,
    batch_units: int = 2000,
    commit_units: int = 100_000,
) -> SeedResult:
    """Append ``units`` seeded units (and their work orders and events) to the SQLite database ``db``.

    ``spacing_s`` is the mean time between unit starts across the line: 31.5 s makes a million units
    one year of production. Deterministic for a given ``seed`` (except the per-unit keys and the CA).
    """
    if units < 0:
        raise ValueError("units must be >= 0")
    raw = os.fspath(db)
    if "://" in raw and not raw.startswith("sqlite"):
        raise ValueError("station audit seed writes SQLite files only")
    started = time.perf_counter()
    rng = random.Random(seed)
    n_wo = work_orders or max(3, min(60, units // 50_000 + 3))
    per_wo = -(-units // n_wo) if units else 0
    t0 = (start or datetime(2025, 1, 6, 6, 0, tzinfo=UTC)).astimezone(UTC)
    station_names = [f"st-{i + 1:02d}" for i in range(stations)]
    operator_names = [f"op-{i + 1:03d}" for i in range(operators)]
    cn_len = len("SNS2-000-0000000")
    templates = _make_templates(rng, cn_len)
    fail_steps = [f[0] for f in FAILURES]
    fail_weights = [f[1] for f in FAILURES]
    fail_codes = {f[0]: f[2] for f in FAILURES}

    store = open_audit_store(raw, station_id="seed", pragmas=SEED_PRAGMAS)
    engine = store.engine
    failed_total = 0
    events_total = 0
    pooled = engine.raw_connection()  # the driver's own connection: isolation_level None, our BEGINs
    try:
        conn: Any = pooled.driver_connection
        conn.execute("BEGIN IMMEDIATE")
        head_seq, head_hash = conn.execute("SELECT seq, hash FROM chain_head WHERE id = 1").fetchone()
        unit_id = int(conn.execute("SELECT coalesce(max(id), 0) FROM units").fetchone()[0])
        wo_id = int(conn.execute("SELECT coalesce(max(id), 0) FROM work_orders").fetchone()[0])
        conn.execute("COMMIT")
        seq, prev = int(head_seq), str(head_hash)
        unit_rows: list[tuple[Any, ...]] = []
        event_rows: list[tuple[Any, ...]] = []

        empty_detail = canonical_detail({})

        def add_event(station: str, kind: str, uid: int | None, wo: str, op: str | None, step: str | None,
                      outcome: str, duration: float | None, detail: dict[str, str], code: str | None,
                      message: str | None, at: datetime) -> None:
            nonlocal seq, prev
            seq += 1
            fields = {"station": station, "kind": kind, "unit_id": uid, "work_order": wo, "operator": op,
                      "step": step, "outcome": outcome, "duration_ms": duration,
                      "detail_json": canonical_detail(detail) if detail else empty_detail, "error_code": code,
                      "error_message": message, "occurred_at": at.isoformat(timespec="microseconds")}
            digest = event_hash(seq, prev, fields)
            event_rows.append((seq, station, kind, uid, wo, op, step, outcome, duration,
                               fields["detail_json"], code, message, fields["occurred_at"], prev, digest))
            prev = digest

        in_transaction = False

        def flush(*, commit: bool) -> None:
            nonlocal in_transaction
            if not in_transaction:
                conn.execute("BEGIN IMMEDIATE")
                in_transaction = True
            cur = conn.cursor()
            cur.executemany(f"INSERT INTO units ({', '.join(_UNIT_COLS)}) VALUES "
                            f"({', '.join('?' * len(_UNIT_COLS))})", unit_rows)
            cur.executemany(f"INSERT INTO events ({', '.join(_EVENT_COLS)}) VALUES "
                            f"({', '.join('?' * len(_EVENT_COLS))})", event_rows)
            cur.execute("UPDATE chain_head SET seq = ?, hash = ? WHERE id = 1", (seq, prev))
            cur.close()
            if commit:  # each commit writes every dirty page (hash-index pages are random): rarely
                conn.execute("COMMIT")
                in_transaction = False
            unit_rows.clear()
            event_rows.clear()

        current_wo: tuple[int, str, str, str, str, str] | None = None
        wo_seq = 0
        for i in range(units):
            if i % per_wo == 0:
                wo_id += 1
                product, prefix, profile = PRODUCTS[(wo_id - 1) % len(PRODUCTS)]
                number = f"WO-{t0.year}-{wo_id:04d}"
                serial_format = f"{prefix}-{wo_id % 1000:03d}-{{seq:07d}}"
                quantity = min(per_wo, units - i)
                commissioning = json.dumps([
                    {"key": "wifi.ssid", "secret": False, "value": f"line-{wo_id % 3 + 1}"},
                    {"key": "wifi.passphrase", "secret": True, "value": "***"},
                    {"key": "mqtt.endpoint", "secret": False, "value": "mqtts://broker.example.net:8883"},
                ], sort_keys=True)
                wo_station = station_names[(wo_id - 1) % len(station_names)]
                created = t0 + timedelta(seconds=i * spacing_s) - timedelta(minutes=5)
                if not in_transaction:
                    conn.execute("BEGIN IMMEDIATE")
                    in_transaction = True
                conn.execute(
                    "INSERT INTO work_orders (id, number, product, profile, quantity, serial_format, "
                    "commissioning_json, next_seq, station, created_at) VALUES (?,?,?,?,?,?,?,?,?,?)",
                    (wo_id, number, product, profile, quantity, serial_format, commissioning,
                     quantity + 1, wo_station, _sql_time(created)))
                add_event(wo_station, "work_order_created", None, number, operator_names[0], None, "ok", None,
                          {"product": product, "profile": profile, "quantity": str(quantity),
                           "serial_format": serial_format, "commissioning": commissioning},
                          None, None, created)
                current_wo = (wo_id, number, product, prefix, profile, serial_format)
                wo_seq = 0
            assert current_wo is not None
            w_id, number, product, prefix, profile, serial_format = current_wo
            unit_id += 1
            wo_seq += 1
            at = t0 + timedelta(seconds=i * spacing_s + rng.random() * spacing_s * 0.5)
            st = station_names[i % len(station_names)]
            hour = (at.hour - 6) % 24 // 8  # the shift decides who is at the station
            op = operator_names[(i % len(station_names) * 3 + hour) % len(operator_names)]
            slot = str(i // len(station_names) % 8 + 1)
            hw = rng.randbytes(8).hex()
            started_at = at
            fail_at = (rng.choices(fail_steps, fail_weights)[0] if rng.random() < failure_rate else None)
            serial: str | None = None
            pk_sha = cert_serial = tbs_sha = cert_sha = None
            der: bytes | None = None
            intent_at = issued_at = None
            status = "in_progress"
            add_event(st, "unit_started", unit_id, number, op, None, "ok", None,
                      {"hardware_id": hw, "slot": slot, "status": "in_progress", "unit_station": st},
                      None, None, at)
            code = message = None
            for step, mean, spread in STEP_MS:
                duration = round(max(0.5, rng.gauss(mean, spread)), 3)
                at = at + timedelta(milliseconds=duration)
                failing = step == fail_at
                if failing:
                    code = rng.choice(fail_codes[step])
                    message = _MESSAGES[code]
                detail: dict[str, str] = {}
                if step == "identify":
                    detail = {"firmware": "1.4.2", "hardware_id": hw, "lifecycle": "blank", "model": product}
                elif step == "commission":
                    detail = {"mqtt.endpoint": "mqtts://broker.example.net:8883", "wifi.passphrase": "***",
                              "wifi.ssid": f"line-{w_id % 3 + 1}"}
                elif step == "generate_key" and not failing:
                    point = ec.generate_private_key(ec.SECP256R1()).public_key().public_bytes(
                        serialization.Encoding.X962, serialization.PublicFormat.UncompressedPoint)
                    pk_sha = hashlib.sha256(point).hexdigest()
                    detail = {"key_type": "p256", "public_key_sha256": pk_sha}
                elif step == "get_csr":
                    detail = {"csr_bytes": "319", "unit_serial": serial or ""}
                elif step == "pre_issuance" and not failing:
                    tpl = templates[product]
                    serial_bytes = bytes([rng.randrange(0x10, 0x80)]) + rng.randbytes(15)
                    body = bytearray(tpl.der)
                    body[tpl.serial_at:tpl.serial_at + 16] = serial_bytes
                    body[tpl.cn_at:tpl.cn_at + tpl.cn_len] = (serial or "").encode().ljust(tpl.cn_len)
                    body[tpl.point_at:tpl.point_at + 65] = point
                    der = bytes(body)
                    cert_serial = serial_bytes.hex()
                    tbs_sha = hashlib.sha256(der[tpl.tbs_at:tpl.tbs_at + tpl.tbs_len]).hexdigest()
                    detail = {"cert_serial": cert_serial, "profile": profile, "tbs_sha256": tbs_sha}
                add_event(st, "step", unit_id, number, op, step, "failed" if failing else "ok", duration,
                          detail, code if failing else None, message if failing else None, at)
                if failing:
                    break
                if step == "generate_key":
                    serial = serial_format.format(seq=wo_seq)
                    at += timedelta(microseconds=300)
                    add_event(st, "serial_reserved", unit_id, number, op, None, "ok", None,
                              {"serial_number": serial, "seq": str(wo_seq)}, None, None, at)
                elif step == "pre_issuance":
                    status, intent_at = "intent", at
                    add_event(st, "intent", unit_id, number, op, None, "ok", None,
                              {"cert_serial": cert_serial or "", "hardware_id": hw, "profile": profile,
                               "public_key_sha256": pk_sha or "", "quota_remaining": "0",
                               "serial_number": serial or "", "status": "intent",
                               "tbs_sha256": tbs_sha or ""}, None, None, at)
                elif step == "sign":
                    assert der is not None
                    status, issued_at = "issued", at
                    cert_sha = hashlib.sha256(der).hexdigest()
                    add_event(st, "issued", unit_id, number, op, None, "ok", None,
                              {"cert_serial": cert_serial or "", "cert_sha256": cert_sha, "status": "issued"},
                              None, None, at)
                elif step == "lock":
                    status = "provisioned"
                    add_event(st, "completed", unit_id, number, op, None, "ok", None,
                              {"status": "provisioned"}, None, None, at)
            if fail_at is not None:
                status = "failed"
                failed_total += 1
                add_event(st, "failed", unit_id, number, op, fail_at, "failed", None, {"status": "failed"},
                          code, message, at)
            if fail_at is not None and fail_at in ("sign",):
                der = None  # the HSM never signed: no certificate, intent keeps the serial
            finished = at
            unit_rows.append((
                # identity columns as the store sets them: key, cert serial and TBS hash at intent
                unit_id, w_id, st, slot, op, hw, serial, *((pk_sha, cert_serial, tbs_sha) if intent_at
                                                            else (None, None, None)),
                der if issued_at else None, cert_sha if issued_at else None,
                profile if intent_at else None, status, _sql_time(started_at),
                _sql_time(intent_at) if intent_at else None, _sql_time(issued_at) if issued_at else None,
                _sql_time(finished), fail_at, code, message,
            ))
            if len(unit_rows) >= batch_units:
                events_total += len(event_rows)
                flush(commit=(i + 1) % commit_units < batch_units)
                if progress is not None:
                    progress(i + 1, units)
        events_total += len(event_rows)
        flush(commit=True)
        # Each work order's quota counter, as record_intent would have moved it (verify checks it).
        conn.execute("BEGIN IMMEDIATE")
        conn.execute("UPDATE work_orders SET consumed = (SELECT count(*) FROM units WHERE "
                     "units.work_order_id = work_orders.id AND units.intent_at IS NOT NULL)")
        # ... and each serial series where its work orders left it.
        conn.execute("INSERT INTO serial_series (product, serial_format, next_seq) "
                     "SELECT product, serial_format, max(next_seq) FROM work_orders WHERE true "
                     "GROUP BY product, serial_format "
                     "ON CONFLICT (product, serial_format) DO UPDATE "
                     "SET next_seq = max(serial_series.next_seq, excluded.next_seq)")
        conn.execute("COMMIT")
        # full statistics: sampled ones (analysis_limit) led SQLite to scan the table for a search
        conn.execute("ANALYZE")
        if progress is not None:
            progress(units, units)
    finally:
        pooled.close()
        store.close()
    # Leave the file as the station expects to find it: durable settings on the next open.
    check = open_audit_store(raw, station_id="seed", pragmas=DURABLE_PRAGMAS)
    check.close()
    path = Path(raw.removeprefix("sqlite:///")) if "://" in raw else Path(raw)
    return SeedResult(units=units, events=events_total, work_orders=n_wo if units else 0,
                      failed=failed_total, seconds=time.perf_counter() - started, head_seq=seq,
                      head_hash=prev, db_bytes=path.stat().st_size if path.exists() else 0)
