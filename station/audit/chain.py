"""Hash chain over the event log: the canonical encoding and the digest.

Each event's ``hash`` is SHA-256 over a canonical JSON encoding of ``(seq, prev_hash, fields)``, with
sorted keys, no insignificant whitespace and UTF-8. Because the sequence number and the previous hash
are inside the digest, editing, inserting, deleting or reordering rows breaks the chain at the first
touched row. A chain cannot show a cut tail or an older copy put back; signed checkpoints of
(seq, head hash) exported off the station can (see RELIABILITY.md).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from typing import Final

GENESIS_HASH: Final = "0" * 64
"""``prev_hash`` of the first event, and the chain head of an empty log."""

HASHED_FIELDS: Final = (
    "station",
    "kind",
    "unit_id",
    "work_order",
    "operator",
    "step",
    "outcome",
    "duration_ms",
    "detail_json",
    "error_code",
    "error_message",
    "occurred_at",
)
"""Every stored column of an event except ``seq``, ``prev_hash`` and ``hash``, which frame it."""

FieldValue = str | int | float | None


def canonical_detail(detail: Mapping[str, str]) -> str:
    """The stored (and hashed) text of an event's detail: sorted keys, compact, stable."""
    return json.dumps(dict(detail), sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def event_hash(seq: int, prev_hash: str, fields: Mapping[str, FieldValue]) -> str:
    """SHA-256 (hex) of the canonical encoding of one event."""
    missing = [name for name in HASHED_FIELDS if name not in fields]
    if missing:
        raise ValueError(f"event fields missing from hash input: {missing}")
    body = {name: fields[name] for name in HASHED_FIELDS}
    # json encodes floats with float.__repr__, which round-trips exactly (and a driver returns the
    # same double it stored), so the encoding is stable across SQLite and PostgreSQL.
    encoded = json.dumps(
        {"seq": seq, "prev": prev_hash, "fields": body},
        sort_keys=True,
        separators=(",", ":"),
        ensure_ascii=False,
    ).encode("utf-8")
    return hashlib.sha256(encoded).hexdigest()
