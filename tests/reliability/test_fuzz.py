"""Fuzzing in the normal run (hypothesis); ``bench/fuzz.py`` runs the same targets a million times."""

from __future__ import annotations

import random
from collections.abc import Iterator

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from fixtures.softhsm import TestCa
from hsm.issuer import Issuer
from hsm.keys import CaKey
from tests.reliability.fuzz_targets import (
    CsrIntake,
    csr_intake,
    decode_stream,
    frame_seeds,
    mutate,
    station_receive,
)

SEEDS = frame_seeds()


@settings(max_examples=400, deadline=None)
@given(st.binary(max_size=2048))
def test_decoder_and_parser_never_crash_on_bytes(data: bytes) -> None:
    decode_stream(data)
    station_receive(data)


@settings(max_examples=400, deadline=None)
@given(st.integers(min_value=0, max_value=2**32 - 1))
def test_decoder_and_parser_never_crash_on_mutated_frames(seed: int) -> None:
    data = mutate(random.Random(seed), SEEDS)
    decode_stream(data)
    station_receive(data)


@pytest.fixture(scope="module")
def intake(softhsm_ca: TestCa) -> Iterator[CsrIntake]:
    token = softhsm_ca.open()
    try:
        yield csr_intake(Issuer(CaKey(token, label=softhsm_ca.key_label), [softhsm_ca.ca_cert()]))
    finally:
        token.close()


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(seed=st.integers(min_value=0, max_value=2**32 - 1))
def test_csr_intake_refuses_mutated_csrs_cleanly(intake: CsrIntake, seed: int) -> None:
    intake.check(mutate(random.Random(seed), intake.seeds))


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.binary(max_size=1500))
def test_csr_intake_refuses_random_bytes_cleanly(intake: CsrIntake, data: bytes) -> None:
    intake.check(data)


def test_csr_with_an_unknown_version_is_refused_not_a_crash(intake: CsrIntake) -> None:
    """Fuzzer finding: a CSR whose version is not 0 made cryptography raise InvalidVersion (not a
    ValueError), which escaped the CSR intake as an internal error instead of csr_malformed."""
    from hsm.errors import IssuanceRefused

    good = intake.seeds[0]
    version_at = good.index(b"\x02\x01\x00")  # CertificationRequestInfo.version INTEGER 0
    bad = good[:version_at] + b"\x02\x01\x04" + good[version_at + 3:]
    with pytest.raises(IssuanceRefused) as err:
        intake.raw_check(bad)
    assert err.value.reason == "csr_malformed"
