"""Hypothesis settings and strategies shared by the protocol tests.

Example counts are modest so the suite stays fast; ``FWPROTO_EXAMPLES=2000 pytest tests/protocol``
raises them for a long run.
"""

from __future__ import annotations

import os

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st

from firmware_protocol import events as ev
from firmware_protocol.constants import ErrorCode, KeyType, Lifecycle

EXAMPLES = int(os.environ.get("FWPROTO_EXAMPLES", "60"))

FAST = settings(max_examples=EXAMPLES, deadline=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
"""Settings for pure (in-memory) property tests."""

text = st.text(st.characters(codec="utf-8", exclude_characters="\x00"), max_size=8)
"""At most 32 UTF-8 bytes: fits every string field."""
nonce = st.binary(min_size=16, max_size=64)

requests: st.SearchStrategy[ev.Request] = st.one_of(
    st.builds(ev.Hello, version_min=st.just(1), version_max=st.integers(1, 255)),
    st.builds(ev.GetStatus),
    st.builds(ev.SetConfig, key=st.from_regex(r"[a-z0-9._-]{1,32}", fullmatch=True),
              value=st.binary(max_size=256), secret=st.booleans()),
    st.builds(ev.GenerateKey, key_type=st.sampled_from(KeyType), key_slot=st.integers(0, 15)),
    st.builds(ev.GetCsr, nonce=nonce, common_name=text.filter(bool),
              serial_number=st.none() | text.filter(bool), organization=st.none() | text.filter(bool),
              key_slot=st.integers(0, 15)),
    st.integers(1, 4096).flatmap(lambda total: st.integers(0, total - 1).flatmap(
        lambda off: st.builds(ev.PutCert, total=st.just(total), offset=st.just(off),
                              data=st.binary(min_size=1, max_size=min(900, total - off)),
                              key_slot=st.integers(0, 15)))),
    st.builds(ev.Challenge, nonce=nonce, key_slot=st.integers(0, 15)),
    st.builds(ev.Lock, confirm=st.integers(0, 0xFFFFFFFF)),
    st.builds(ev.FactoryReset, authorisation=st.none() | st.binary(min_size=32, max_size=32)),
)

replies: st.SearchStrategy[ev.Reply] = st.one_of(
    st.builds(ev.HelloReply, version=st.integers(1, 255), vendor=text, model=text,
              hardware_revision=text, firmware_version=text, hardware_id=st.binary(min_size=4, max_size=32),
              serial_number=st.none() | text.filter(bool),
              key_types=st.lists(st.sampled_from(KeyType), min_size=1, max_size=3, unique=True).map(tuple),
              secure_element=st.booleans(), max_payload=st.integers(256, 1024),
              lifecycle=st.sampled_from(Lifecycle), key_slots=st.integers(1, 16)),
    st.builds(ev.StatusReply, lifecycle=st.sampled_from(Lifecycle)),
    st.builds(ev.ConfigAck),
    st.builds(ev.KeyGenerated, public_key=st.binary(min_size=1, max_size=1000)),
    st.builds(ev.CsrReply, csr=st.binary(min_size=1, max_size=1000)),
    st.builds(ev.CertAck, received=st.integers(0, 4096), complete=st.booleans()),
    st.builds(ev.ChallengeReply, signature=st.binary(min_size=1, max_size=160)),
    st.builds(ev.LockReply, lifecycle=st.sampled_from(Lifecycle)),
    st.builds(ev.ResetReply, lifecycle=st.sampled_from(Lifecycle)),
    st.builds(ev.ErrorReply, code=st.sampled_from(ErrorCode).map(int) | st.integers(0x8000, 0xFFFF),
              text=text),
)
