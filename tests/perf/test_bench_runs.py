"""The performance benchmarks run and print their table (functional only: no timing assertions)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.slow
def test_quick_bench_prints_the_table_and_a_summary_last() -> None:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    result = subprocess.run([sys.executable, "-m", "bench.perf", "--quick", "--only", "1,3,5"],
                            cwd=ROOT, env=env, capture_output=True, text=True, timeout=240, check=False)
    assert result.returncode == 0, result.stderr[-2000:]
    lines = result.stdout.strip().splitlines()
    assert lines[0].startswith("| # | figure")
    assert lines[-1].startswith("SUMMARY: ")
    for bench in ("| 1 ", "| 3 ", "| 4 ", "| 5 "):
        assert any(line.startswith(bench) for line in lines), bench


def test_table_renders_ratios_and_misses() -> None:
    sys.path.insert(0, str(ROOT))
    from bench.perf.__main__ import summary
    from bench.perf.common import Row, render

    rows = [Row(bench="1", figure="a", value=2.0, unit="ms", reference="r", ref_value=1.0, met=False),
            Row(bench="2", figure="b", value=1.0, unit="", met=True)]
    table = render(rows)
    assert "2x" in table and "NO" in table
    assert summary(rows, 1.0, True).startswith("SUMMARY: 1/2 targets met | missed 1:a")
