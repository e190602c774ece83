"""The frozen CSR vectors (hsm/vectors/csr): each one is refused with its reason, the good one passes.

The files are what another implementation of the checks (a firmware team's, another CA front end)
can use too; here they hold the station's issuer to the same outcomes as the tests that build bad
CSRs in code (test_refusals.py).
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from hsm.errors import IssuanceRefused
from hsm.issuer import REASONS, Identity, Issuer
from hsm.profile import load_profile

VECTORS = Path(__file__).resolve().parents[2] / "hsm" / "vectors" / "csr"
MANIFEST = json.loads((VECTORS / "manifest.json").read_text())


@pytest.mark.parametrize("vector", MANIFEST["vectors"], ids=lambda v: v["file"])
def test_csr_vector(issuer: Issuer, vector: dict[str, str]) -> None:
    der = (VECTORS / vector["file"]).read_bytes()
    profile = load_profile(vector["profile"])
    nonce = bytes.fromhex(MANIFEST["nonce_hex"])
    identity = Identity(**MANIFEST["identity"])
    if vector["expect"] == "ok":
        issuer.prepare(der, profile=profile, identity=identity, nonce=nonce)
        return
    assert vector["expect"] in REASONS
    with pytest.raises(IssuanceRefused) as refused:
        issuer.prepare(der, profile=profile, identity=identity, nonce=nonce)
    assert refused.value.reason == vector["expect"], str(refused.value)


def test_every_file_is_in_the_manifest() -> None:
    files = {p.name for p in VECTORS.glob("*.der")}
    assert files == {v["file"] for v in MANIFEST["vectors"]}
    assert len({v["expect"] for v in MANIFEST["vectors"]}) >= 12  # the refusals, one or more each
