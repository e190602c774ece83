"""State tables for both ends of the link. PROTOCOL.md's tables are rendered from these.

Theory of operation
-------------------
The station is the only initiator: it sends one request and waits for one answer (a reply or ERROR)
with the same sequence number. There is never more than one request outstanding, so the protocol
needs no windowing, and a lost or corrupted frame is recovered by sending the identical request again
(same seq, same bytes). The device keeps the last answer it sent together with that request's seq and
CRC; an identical request is answered from this cache and not executed twice, so a retried
GENERATE_KEY never makes a second key.

Two machines run on each side:

* the **connection** machine (``STATION_TABLE``, ``DEVICE_TABLE``) tracks the session and the
  outstanding request. A session begins with HELLO; the device refuses any other request with
  SESSION_REQUIRED until it has answered HELLO (after a reboot, for example). ERROR ends a request
  without breaking the session. A reply the station cannot accept puts the station in ERROR: the
  application must close the link and start again from HELLO.
* the **lifecycle** machine (``LIFECYCLE_TABLE``) is the device's persistent state:
  BLANK -> KEYED -> PROVISIONED -> LOCKED, and FACTORY_RESET back to BLANK (authorised when locked).
  Each (lifecycle, request) cell says whether the request is executed and where it leads, or which
  ERROR code refuses it.

A missing (state, input) pair in a connection table is a protocol violation: a ``LocalProtocolError``
if the input is something we send, a ``RemoteProtocolError`` if it is something we received.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import Final

from firmware_protocol.constants import ErrorCode, Lifecycle, MessageType
from firmware_protocol.errors import LocalProtocolError, RemoteProtocolError, UnexpectedMessage


class StationState(enum.Enum):
    """Station connection states."""

    START = "START"
    """No session: only HELLO may be sent."""
    AWAIT_HELLO = "AWAIT_HELLO"
    """HELLO sent, waiting for its reply."""
    IDLE = "IDLE"
    """Session open, nothing outstanding."""
    AWAIT_REPLY = "AWAIT_REPLY"
    """A request other than HELLO is outstanding."""
    CLOSED = "CLOSED"
    """End of stream seen."""
    ERROR = "ERROR"
    """The device broke the protocol; only closing is left."""


class StationInput(enum.Enum):
    """What can happen to a station connection."""

    SEND_HELLO = "send HELLO"
    SEND_REQUEST = "send request"
    RETRY = "retry"
    RECV_REPLY = "recv reply"
    RECV_ERROR = "recv ERROR"
    RECV_VIOLATION = "recv violation"
    EOF = "eof"


S, SI = StationState, StationInput

STATION_TABLE: Final[dict[tuple[StationState, StationInput], StationState]] = {
    (S.START, SI.SEND_HELLO): S.AWAIT_HELLO,
    (S.IDLE, SI.SEND_HELLO): S.AWAIT_HELLO,
    (S.IDLE, SI.SEND_REQUEST): S.AWAIT_REPLY,
    (S.AWAIT_HELLO, SI.RETRY): S.AWAIT_HELLO,
    (S.AWAIT_HELLO, SI.RECV_REPLY): S.IDLE,
    (S.AWAIT_HELLO, SI.RECV_ERROR): S.START,
    (S.AWAIT_HELLO, SI.RECV_VIOLATION): S.ERROR,
    (S.AWAIT_REPLY, SI.RETRY): S.AWAIT_REPLY,
    (S.AWAIT_REPLY, SI.RECV_REPLY): S.IDLE,
    (S.AWAIT_REPLY, SI.RECV_ERROR): S.IDLE,
    (S.AWAIT_REPLY, SI.RECV_VIOLATION): S.ERROR,
    (S.START, SI.EOF): S.CLOSED,
    (S.AWAIT_HELLO, SI.EOF): S.CLOSED,
    (S.IDLE, SI.EOF): S.CLOSED,
    (S.AWAIT_REPLY, SI.EOF): S.CLOSED,
    (S.ERROR, SI.EOF): S.CLOSED,
    (S.CLOSED, SI.EOF): S.CLOSED,
}
"""Station connection transitions; absent pairs are protocol violations."""

_STATION_SENDS: Final = frozenset({SI.SEND_HELLO, SI.SEND_REQUEST, SI.RETRY})


def station_transition(state: StationState, event: StationInput) -> StationState:
    """Next station state, or raise Local/RemoteProtocolError for a pair the table forbids."""
    try:
        return STATION_TABLE[(state, event)]
    except KeyError:
        if event in _STATION_SENDS:
            raise LocalProtocolError(f"cannot {event.value} in station state {state.value}") from None
        raise UnexpectedMessage(f"{event.value} is not expected in station state {state.value}") from None


class DeviceState(enum.Enum):
    """Device connection states."""

    NO_SESSION = "NO_SESSION"
    """Power-on, reboot: waiting for HELLO."""
    ANSWER_HELLO = "ANSWER_HELLO"
    """A HELLO was received; the application must answer it."""
    REFUSE = "REFUSE"
    """A request arrived outside a session (or failed to parse there): only ERROR may answer it."""
    READY = "READY"
    """Session open, nothing outstanding."""
    ANSWER = "ANSWER"
    """A request was received in session; the application must answer it (reply or ERROR)."""
    CLOSED = "CLOSED"
    """End of stream."""


class DeviceInput(enum.Enum):
    """What can happen to a device connection."""

    RECV_HELLO = "recv HELLO"
    RECV_REQUEST = "recv request"
    RECV_INVALID = "recv invalid"
    SEND_REPLY = "send reply"
    SEND_ERROR = "send ERROR"
    REBOOT = "reboot"
    EOF = "eof"


D, DI = DeviceState, DeviceInput

DEVICE_TABLE: Final[dict[tuple[DeviceState, DeviceInput], DeviceState]] = {
    (D.NO_SESSION, DI.RECV_HELLO): D.ANSWER_HELLO,
    (D.NO_SESSION, DI.RECV_REQUEST): D.REFUSE,
    (D.NO_SESSION, DI.RECV_INVALID): D.REFUSE,
    (D.READY, DI.RECV_HELLO): D.ANSWER_HELLO,
    (D.READY, DI.RECV_REQUEST): D.ANSWER,
    (D.READY, DI.RECV_INVALID): D.ANSWER,
    (D.ANSWER_HELLO, DI.SEND_REPLY): D.READY,
    (D.ANSWER_HELLO, DI.SEND_ERROR): D.NO_SESSION,
    (D.REFUSE, DI.SEND_ERROR): D.NO_SESSION,
    (D.ANSWER, DI.SEND_REPLY): D.READY,
    (D.ANSWER, DI.SEND_ERROR): D.READY,
    **{(state, DI.REBOOT): D.NO_SESSION for state in DeviceState if state is not D.CLOSED},
    **{(state, DI.EOF): D.CLOSED for state in DeviceState},
}
"""Device connection transitions; absent pairs are protocol violations."""

_DEVICE_SENDS: Final = frozenset({DI.SEND_REPLY, DI.SEND_ERROR, DI.REBOOT})


def device_transition(state: DeviceState, event: DeviceInput) -> DeviceState:
    """Next device state, or raise Local/RemoteProtocolError for a pair the table forbids."""
    try:
        return DEVICE_TABLE[(state, event)]
    except KeyError:
        if event in _DEVICE_SENDS:
            raise LocalProtocolError(f"cannot {event.value} in device state {state.value}") from None
        raise RemoteProtocolError(f"{event.value} is not expected in device state {state.value}") from None


@dataclass(frozen=True, kw_only=True)
class Rule:
    """One lifecycle cell: refuse with ``refuse``, or execute and move to ``target`` (None: stay)."""

    target: Lifecycle | None = None
    refuse: ErrorCode | None = None
    needs_auth: bool = False
    """FACTORY_RESET of a locked unit: execute only with a valid token, else UNAUTHORISED."""

    def __str__(self) -> str:
        if self.refuse is not None:
            return f"ERROR {self.refuse.name}"
        target = "=" if self.target is None else f"-> {self.target.name}"
        return f"{target} (auth)" if self.needs_auth else target


L, M = Lifecycle, MessageType
_STAY: Final = Rule()
_LOCKED: Final = Rule(refuse=ErrorCode.LOCKED)
_NO_KEY: Final = Rule(refuse=ErrorCode.NO_KEY)
_WRONG: Final = Rule(refuse=ErrorCode.WRONG_STATE)

LIFECYCLE_TABLE: Final[dict[tuple[Lifecycle, MessageType], Rule]] = {
    (L.BLANK, M.HELLO): _STAY, (L.KEYED, M.HELLO): _STAY,
    (L.PROVISIONED, M.HELLO): _STAY, (L.LOCKED, M.HELLO): _STAY,
    (L.BLANK, M.STATUS): _STAY, (L.KEYED, M.STATUS): _STAY,
    (L.PROVISIONED, M.STATUS): _STAY, (L.LOCKED, M.STATUS): _STAY,
    (L.BLANK, M.SET_CONFIG): _STAY, (L.KEYED, M.SET_CONFIG): _STAY,
    (L.PROVISIONED, M.SET_CONFIG): _STAY, (L.LOCKED, M.SET_CONFIG): _LOCKED,
    (L.BLANK, M.GENERATE_KEY): Rule(target=L.KEYED), (L.KEYED, M.GENERATE_KEY): Rule(target=L.KEYED),
    (L.PROVISIONED, M.GENERATE_KEY): _WRONG, (L.LOCKED, M.GENERATE_KEY): _LOCKED,
    (L.BLANK, M.GET_CSR): _NO_KEY, (L.KEYED, M.GET_CSR): _STAY,
    (L.PROVISIONED, M.GET_CSR): _WRONG, (L.LOCKED, M.GET_CSR): _LOCKED,
    (L.BLANK, M.PUT_CERT): _NO_KEY, (L.KEYED, M.PUT_CERT): Rule(target=L.PROVISIONED),
    (L.PROVISIONED, M.PUT_CERT): Rule(target=L.PROVISIONED), (L.LOCKED, M.PUT_CERT): _LOCKED,
    (L.BLANK, M.CHALLENGE): _NO_KEY, (L.KEYED, M.CHALLENGE): _STAY,
    (L.PROVISIONED, M.CHALLENGE): _STAY, (L.LOCKED, M.CHALLENGE): _STAY,
    (L.BLANK, M.LOCK): _WRONG, (L.KEYED, M.LOCK): _WRONG,
    (L.PROVISIONED, M.LOCK): Rule(target=L.LOCKED), (L.LOCKED, M.LOCK): _STAY,
    (L.BLANK, M.FACTORY_RESET): Rule(target=L.BLANK), (L.KEYED, M.FACTORY_RESET): Rule(target=L.BLANK),
    (L.PROVISIONED, M.FACTORY_RESET): Rule(target=L.BLANK),
    (L.LOCKED, M.FACTORY_RESET): Rule(target=L.BLANK, needs_auth=True),
}
"""What each request does in each lifecycle state (device side). PUT_CERT moves to PROVISIONED only
when the last chunk has been checked and stored; earlier chunks leave the lifecycle unchanged."""

REQUESTS: Final = tuple(m for m in MessageType if m.is_request)
"""All request types, in code order."""


def lifecycle_rule(lifecycle: Lifecycle, request: MessageType) -> Rule:
    """The cell for this state and request (every pair is defined)."""
    return LIFECYCLE_TABLE[(lifecycle, request)]


def render_markdown() -> str:
    """The three tables as Markdown, exactly as PROTOCOL.md carries them (a test compares)."""
    lines = ["| station state | " + " | ".join(i.value for i in StationInput) + " |",
             "|---" * (len(StationInput) + 1) + "|"]
    for s in StationState:
        cells = [STATION_TABLE[(s, i)].value if (s, i) in STATION_TABLE else "-" for i in StationInput]
        lines.append(f"| {s.value} | " + " | ".join(cells) + " |")
    lines += ["", "| device state | " + " | ".join(i.value for i in DeviceInput) + " |",
              "|---" * (len(DeviceInput) + 1) + "|"]
    for d in DeviceState:
        cells = [DEVICE_TABLE[(d, i)].value if (d, i) in DEVICE_TABLE else "-" for i in DeviceInput]
        lines.append(f"| {d.value} | " + " | ".join(cells) + " |")
    lines += ["", "| request | " + " | ".join(lc.name for lc in Lifecycle) + " |",
              "|---" * (len(Lifecycle) + 1) + "|"]
    for r in REQUESTS:
        lines.append(f"| {r.name} | " + " | ".join(str(LIFECYCLE_TABLE[(lc, r)]) for lc in Lifecycle) + " |")
    return "\n".join(lines) + "\n"
