"""SIGKILL the real station (child process: SoftHSM, SQLite, virtual devices on ptys) at random moments.

Quick mode here (a handful of kills); ``bench/reliability --kills 200`` runs the full campaign. The
invariants checked after every kill are listed in :mod:`fixtures.crash_station`.
"""

from __future__ import annotations

import os
import random
from pathlib import Path

import pytest

from fixtures.crash_station import run_campaign

KILLS = int(os.environ.get("RELIABILITY_KILLS", "6"))


@pytest.mark.timeout(240)
def test_random_sigkills_lose_nothing(tmp_path: Path) -> None:
    seed = int(os.environ.get("RELIABILITY_SEED", random.randrange(1 << 32)))
    report = run_campaign(kills=KILLS, slots=3, seed=seed, work_dir=tmp_path)
    assert report.kills == KILLS
    assert report.certificates_missing == 0, (seed, report.problems[:10])
    assert not report.problems, (seed, report.problems[:10])
    assert report.certificates_checked > 0 and report.devices_provisioned >= 3
