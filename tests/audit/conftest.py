"""Fixtures for the audit store: real SQLite files, and PostgreSQL when a server is configured.

PostgreSQL is requested by ``STATION_TEST_PG_URL`` (a SQLAlchemy URL to a database whose user may
CREATE DATABASE) or by the libpq variables ``PGHOST``/``PGDATABASE`` (as ``pg_virtualenv`` exports;
see ``tests/audit/run_pg.sh``). Each PostgreSQL test gets its own fresh database. When PostgreSQL is
requested but unreachable, the tests fail under ``CI`` (never a silent skip there) and skip with the
reason otherwise. Not requested at all: the PostgreSQL variants skip with a visible reason.
"""

from __future__ import annotations

import hashlib
import os
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from sqlalchemy import create_engine, text
from sqlalchemy.engine import URL, make_url

from station.audit import SqlAuditStore, open_audit_store
from station.domain import WorkOrder
from station.ports import PreparedCertificate

STATION = "st-test"


def pg_base_url() -> URL | None:
    """The configured PostgreSQL server, or None if PostgreSQL tests were not requested."""
    explicit = os.environ.get("STATION_TEST_PG_URL")
    if explicit:
        return make_url(explicit).set(drivername="postgresql+psycopg")
    if not (os.environ.get("PGHOST") or os.environ.get("PGDATABASE")):
        return None
    port = os.environ.get("PGPORT")
    return URL.create(
        "postgresql+psycopg",
        username=os.environ.get("PGUSER"),
        password=os.environ.get("PGPASSWORD"),
        host=os.environ.get("PGHOST"),
        port=int(port) if port else None,
        database=os.environ.get("PGDATABASE") or "postgres",
    )


@pytest.fixture(scope="session")
def pg_server() -> URL:
    """A reachable PostgreSQL server with durable settings (fsync on), or fail/skip as documented."""
    base = pg_base_url()
    if base is None:
        if os.environ.get("STATION_TEST_PG") == "1":
            pytest.fail("STATION_TEST_PG=1 but neither STATION_TEST_PG_URL nor PG* variables are set")
        pytest.skip("PostgreSQL not configured (set STATION_TEST_PG_URL or run tests/audit/run_pg.sh)")
    engine = create_engine(base, isolation_level="AUTOCOMMIT")
    try:
        with engine.connect() as conn:
            # pg_virtualenv starts its cluster with fsync=off; the store rightly refuses that, so a
            # throw-away cluster is switched back to durable settings (superuser only).
            if conn.execute(text("SHOW fsync")).scalar() != "on":
                conn.execute(text("ALTER SYSTEM SET fsync = on"))
                conn.execute(text("SELECT pg_reload_conf()"))
                for _ in range(50):
                    with engine.connect() as fresh:
                        if fresh.execute(text("SHOW fsync")).scalar() == "on":
                            break
                    time.sleep(0.1)
    except Exception as exc:
        message = f"PostgreSQL requested but not reachable at {base.render_as_string()}: {exc}"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    finally:
        engine.dispose()
    return base


@pytest.fixture
def pg_url(pg_server: URL) -> Iterator[str]:
    """A fresh, empty database on the PostgreSQL server, dropped afterwards."""
    name = f"audit_{uuid.uuid4().hex[:12]}"
    admin = create_engine(pg_server, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    try:
        yield pg_server.set(database=name).render_as_string(hide_password=False)
    finally:
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """The same store tests, on a SQLite file and on PostgreSQL."""
    if request.param == "sqlite":
        return str(tmp_path / "audit.db")
    return str(request.getfixturevalue("pg_url"))


@pytest.fixture
def store(db_url: str) -> Iterator[SqlAuditStore]:
    s = open_audit_store(db_url, station_id=STATION)
    yield s
    s.close()


@pytest.fixture
def sqlite_store(tmp_path: Path) -> Iterator[SqlAuditStore]:
    s = open_audit_store(tmp_path / "audit.db", station_id=STATION)
    yield s
    s.close()


def work_order(number: str = "WO-1", quantity: int = 5, **kw: object) -> WorkOrder:
    return WorkOrder(number=number, product="SENSOR", profile="matter-dac", quantity=quantity,
                     **kw)  # type: ignore[arg-type]


@dataclass
class Issuer:
    """A software CA that makes real certificates, so record_issued's intent check is exercised."""

    key: ec.EllipticCurvePrivateKey
    name: x509.Name

    def prepare(self, serial: int | None = None,
                device_key: ec.EllipticCurvePrivateKey | None = None) -> tuple[PreparedCertificate, bytes]:
        device_key = device_key or ec.generate_private_key(ec.SECP256R1())
        serial = serial or x509.random_serial_number()
        now = datetime.now(UTC)
        cert = (
            x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, f"unit-{serial:x}")]))
            .issuer_name(self.name)
            .public_key(device_key.public_key())
            .serial_number(serial)
            .not_valid_before(now)
            .not_valid_after(now + timedelta(days=365))
            .sign(self.key, hashes.SHA256())
        )
        spki = device_key.public_key().public_bytes(
            serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
        )
        tbs = cert.tbs_certificate_bytes
        prepared = PreparedCertificate(
            serial=serial, tbs_der=tbs, tbs_sha256=hashlib.sha256(tbs).hexdigest(),
            public_key_sha256=hashlib.sha256(spki).hexdigest(), profile="matter-dac",
            subject=cert.subject.rfc4514_string(), not_after=cert.not_valid_after_utc.isoformat(),
        )
        return prepared, cert.public_bytes(serialization.Encoding.DER)


@pytest.fixture(scope="session")
def issuer() -> Issuer:
    return Issuer(ec.generate_private_key(ec.SECP256R1()),
                  x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "Test Line CA")]))
