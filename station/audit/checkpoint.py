"""Signed checkpoints of the audit chain: what the chain alone cannot show.

A hash chain shows an edited, inserted, deleted or reordered event. It cannot show that its tail was
cut and the head row rewritten to match, or that an older copy of the whole database was put back:
both leave a consistent chain. A checkpoint is the station's signed statement "the log had ``seq``
events and the last one hashed to ``hash``", made in the HSM with the audit key. It is written to the
database (and into the chain as a ``checkpoint`` event) and appended to a checkpoint file kept off the
station. ``station audit verify --checkpoints FILE`` then refuses a log that ends before a checkpoint
or whose event at a checkpoint's sequence number hashes differently.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Final

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec

__all__ = ["Checkpoint", "append_checkpoint", "read_checkpoints"]

_PURPOSE: Final = "station audit checkpoint v1"
"""Inside every signed message, so an audit-key signature can never be taken for anything else."""


@dataclass(frozen=True, kw_only=True)
class Checkpoint:
    station: str
    seq: int
    hash: str
    signed_at: str
    """ISO 8601, UTC, as signed."""
    public_key: bytes
    """SubjectPublicKeyInfo (DER) of the audit key."""
    signature: bytes
    """ECDSA (DER) over SHA-256 of :meth:`message`."""

    @staticmethod
    def message_for(*, station: str, seq: int, hash: str, signed_at: str) -> bytes:
        """The exact bytes the audit key signs: canonical JSON with a purpose string."""
        return json.dumps({"purpose": _PURPOSE, "station": station, "seq": seq, "hash": hash,
                           "signed_at": signed_at}, sort_keys=True, separators=(",", ":")).encode()

    def message(self) -> bytes:
        return self.message_for(station=self.station, seq=self.seq, hash=self.hash,
                                signed_at=self.signed_at)

    @property
    def key_sha256(self) -> str:
        return hashlib.sha256(self.public_key).hexdigest()

    def signature_valid(self) -> bool:
        """True if :attr:`signature` is the audit key's signature over :meth:`message`."""
        try:
            key = serialization.load_der_public_key(self.public_key)
            if not isinstance(key, ec.EllipticCurvePublicKey):
                return False
            key.verify(self.signature, self.message(), ec.ECDSA(hashes.SHA256()))
        except (InvalidSignature, ValueError):
            return False
        return True

    def to_json(self) -> str:
        """One line of a checkpoint file."""
        return json.dumps({
            "station": self.station, "seq": self.seq, "hash": self.hash, "signed_at": self.signed_at,
            "public_key": base64.b64encode(self.public_key).decode(),
            "signature": base64.b64encode(self.signature).decode(),
        }, sort_keys=True)

    @classmethod
    def from_json(cls, line: str) -> Checkpoint:
        data = json.loads(line)
        return cls(station=str(data["station"]), seq=int(data["seq"]), hash=str(data["hash"]),
                   signed_at=str(data["signed_at"]), public_key=base64.b64decode(data["public_key"]),
                   signature=base64.b64decode(data["signature"]))


def append_checkpoint(path: str | os.PathLike[str], checkpoint: Checkpoint) -> None:
    """Append a checkpoint to a checkpoint file, durably (the file is the copy kept elsewhere)."""
    with open(path, "a", encoding="utf-8") as out:
        out.write(checkpoint.to_json() + "\n")
        out.flush()
        os.fsync(out.fileno())


def read_checkpoints(path: str | os.PathLike[str]) -> list[Checkpoint]:
    """Every checkpoint in a checkpoint file; raises ValueError naming a line that does not parse."""
    out = []
    for number, line in enumerate(Path(path).read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip():
            continue
        try:
            out.append(Checkpoint.from_json(line))
        except (ValueError, KeyError, TypeError) as exc:
            raise ValueError(f"{path}, line {number}: not a checkpoint ({exc})") from None
    return out
