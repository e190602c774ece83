"""A seeded audit database shared by the report tests (seeded once: a few thousand units)."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from station.audit.cli import _open_reader
from station.audit.store import SqlAuditStore
from station.reports.seed import seed_database

UNITS = 3000


@pytest.fixture(scope="session")
def seeded_db(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("seeded") / "audit.db"
    seed_database(path, UNITS, seed=6)
    return path


@pytest.fixture
def db_copy(seeded_db: Path, tmp_path: Path) -> Path:
    """A private copy for tests that write (tamper) or must see a pristine file."""
    target = tmp_path / "audit.db"
    shutil.copyfile(seeded_db, target)
    return target


@pytest.fixture
def reader(seeded_db: Path) -> Iterator[SqlAuditStore]:
    store = _open_reader(str(seeded_db))
    yield store
    store.close()
