"""The export's own CSV quoting writes exactly what the csv module would (it is a fast path only)."""

from __future__ import annotations

import csv
import io

from hypothesis import given
from hypothesis import strategies as st

from station.reports.export import csv_line

TEXT = st.one_of(st.none(), st.integers(), st.text(alphabet=st.sampled_from('ab ,"\r\n\t;\'é'), max_size=12))


@given(st.lists(TEXT, min_size=2, max_size=6))
def test_csv_line_equals_csv_writer(row: list[object]) -> None:
    expected = io.StringIO()
    # csv quotes what contains a line-terminator character; ours quotes CR and LF (RFC 4180)
    csv.writer(expected, lineterminator="\r\n").writerow(row)
    assert csv_line(tuple(row), tuple(False for _ in row)) == expected.getvalue()[:-2] + "\n"
    parsed = next(csv.reader(io.StringIO(csv_line(tuple(row), tuple(False for _ in row)), newline="")))
    assert parsed == ["" if v is None else str(v) for v in row]
