"""Every (state, input) pair of the tables: a legal next state or a protocol error, nothing else."""

from __future__ import annotations

from pathlib import Path

from hypothesis import given
from hypothesis import strategies as st

from firmware_protocol.constants import Lifecycle, MessageType
from firmware_protocol.errors import LocalProtocolError, RemoteProtocolError
from firmware_protocol.state import (
    DEVICE_TABLE,
    LIFECYCLE_TABLE,
    REQUESTS,
    STATION_TABLE,
    DeviceInput,
    DeviceState,
    StationInput,
    StationState,
    device_transition,
    render_markdown,
    station_transition,
)
from tests.protocol.strategies import FAST

SENDS = {StationInput.SEND_HELLO, StationInput.SEND_REQUEST, StationInput.RETRY}
DEVICE_SENDS = {DeviceInput.SEND_REPLY, DeviceInput.SEND_ERROR, DeviceInput.REBOOT}


@FAST
@given(st.sampled_from(StationState), st.sampled_from(StationInput))
def test_station_pairs(state: StationState, event: StationInput) -> None:
    try:
        assert station_transition(state, event) is STATION_TABLE[(state, event)]
    except LocalProtocolError:
        assert (state, event) not in STATION_TABLE and event in SENDS
    except RemoteProtocolError:
        assert (state, event) not in STATION_TABLE and event not in SENDS


@FAST
@given(st.sampled_from(DeviceState), st.sampled_from(DeviceInput))
def test_device_pairs(state: DeviceState, event: DeviceInput) -> None:
    try:
        assert device_transition(state, event) is DEVICE_TABLE[(state, event)]
    except LocalProtocolError:
        assert (state, event) not in DEVICE_TABLE and event in DEVICE_SENDS
    except RemoteProtocolError:
        assert (state, event) not in DEVICE_TABLE and event not in DEVICE_SENDS


def test_every_pair_is_classified() -> None:
    """Exhaustive too (hypothesis samples; this makes sure no pair is ever skipped)."""
    for s in StationState:
        for i in StationInput:
            test_station_pairs.hypothesis.inner_test(s, i)  # type: ignore[attr-defined]
    for d in DeviceState:
        for j in DeviceInput:
            test_device_pairs.hypothesis.inner_test(d, j)  # type: ignore[attr-defined]


@FAST
@given(st.lists(st.sampled_from(REQUESTS), max_size=30), st.sampled_from(Lifecycle))
def test_lifecycle_walk_only_moves_by_the_table(walk: list[MessageType], start: Lifecycle) -> None:
    lifecycle = start
    for request in walk:
        rule = LIFECYCLE_TABLE[(lifecycle, request)]
        if rule.refuse is None and rule.target is not None:
            assert rule.target >= lifecycle or request is MessageType.FACTORY_RESET
            lifecycle = rule.target
    assert lifecycle in Lifecycle


def test_lifecycle_table_is_total_and_locked_is_final() -> None:
    assert set(LIFECYCLE_TABLE) == {(lc, r) for lc in Lifecycle for r in REQUESTS}
    for r in REQUESTS:
        rule = LIFECYCLE_TABLE[(Lifecycle.LOCKED, r)]
        if r is MessageType.FACTORY_RESET:
            assert rule.needs_auth
        else:
            assert rule.target in (None, Lifecycle.LOCKED)


def test_spec_carries_the_rendered_tables() -> None:
    spec = (Path(__file__).parents[2] / "firmware_protocol" / "PROTOCOL.md").read_text()
    for table in render_markdown().split("\n\n"):
        assert table.strip() in spec, "regenerate the tables in PROTOCOL.md from state.render_markdown()"
