"""pytest-qt fixtures for the audit view: offscreen Qt and a seeded audit database."""

from __future__ import annotations

import os

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")

import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from station.audit.cli import _open_reader
from station.audit.store import SqlAuditStore
from station.reports.seed import seed_database

UNITS = 2500


@pytest.fixture(scope="session")
def seeded_db(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("gui-seeded") / "audit.db"
    seed_database(path, UNITS, seed=11)
    return path


@pytest.fixture
def store(seeded_db: Path) -> Iterator[SqlAuditStore]:
    s = _open_reader(str(seeded_db))
    yield s
    s.close()


@pytest.fixture
def tampered_store(seeded_db: Path, tmp_path: Path) -> Iterator[SqlAuditStore]:
    target = tmp_path / "audit.db"
    shutil.copyfile(seeded_db, target)
    s = _open_reader(str(target))
    yield s
    s.close()
