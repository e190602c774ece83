"""Fixtures for the protocol tests: virtual devices on real pseudo-terminals, fast link timeouts."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from fixtures.virtual_dut import VirtualDevice, virtual_device
from station.transport import LinkPolicy


@pytest.fixture
def fast_policy() -> LinkPolicy:
    """Spec timeouts scaled down to keep tests quick (the virtual device answers in milliseconds)."""
    return LinkPolicy(scale=0.25)


@pytest.fixture
def dut() -> Iterator[VirtualDevice]:
    """A well-behaved virtual device; the test opens ``dut.port``."""
    with virtual_device(key_delay=0.02) as device:
        yield device
