"""One logged-in PKCS#11 session per token per process, with one lock around every call.

Why this shape (FIELD-NOTES.md): python-pkcs11 initialises the module without ``CKF_OS_LOCKING_OK``,
so SoftHSM (and possibly others) does no locking of its own; concurrent calls from several threads
crash the process. Login state is per application, not per session, and ``Session.close()`` logs the
whole application out. So:

* every PKCS#11 call in this process goes through :meth:`TokenSession.run`, which holds the
  module's one re-entrant lock (one lock per module path, shared by all tokens of that module);
* :func:`open_token` hands out one shared :class:`TokenSession` per (module, token): two signers on
  the same token share the session and its login instead of logging each other out;
* a lost session (closed, token removed, logged out) is re-opened and re-logged-in once, then the
  call fails with :class:`~hsm.errors.SessionLost`;
* a wrong PIN is tried exactly once; the error says what the token's flags report about tries left.

PKCS#11 exceptions become :mod:`hsm.errors` in :func:`translate_pkcs11_error` and nowhere else.
"""

from __future__ import annotations

import hmac
import logging
import os
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Final, TypeVar

import pkcs11
from pkcs11 import TokenFlag
from pkcs11 import exceptions as p11x

from hsm.errors import (
    HsmConfigError,
    HsmError,
    HsmOperationFailed,
    KeyNotFound,
    LoginFailed,
    ModuleLoadFailed,
    PinLocked,
    SessionLost,
    TokenNotFound,
)
from hsm.pin import Pin, PinSource

log = logging.getLogger(__name__)

T = TypeVar("T")

SOFTHSM_MODULE: Final = "/usr/lib/softhsm/libsofthsm2.so"
"""Debian's SoftHSM2 module path (development and tests)."""

_SESSION_GONE: Final[tuple[type[p11x.PKCS11Error], ...]] = (
    p11x.SessionHandleInvalid,
    p11x.SessionClosed,
    p11x.DeviceRemoved,
    p11x.TokenNotPresent,
    p11x.UserNotLoggedIn,
    p11x.DeviceError,
    p11x.OperationActive,
)
"""Errors after which the session is dropped and opened again (once)."""


@dataclass(frozen=True, kw_only=True)
class TokenSpec:
    """Which module and which token: by label, by serial, or both (both must match)."""

    module_path: str
    token_label: str | None = None
    token_serial: str | None = None

    def __post_init__(self) -> None:
        if self.token_label is None and self.token_serial is None:
            raise HsmConfigError("choose the token by label or by serial")

    def describe(self) -> str:
        parts = [f"label={self.token_label!r}"] if self.token_label is not None else []
        if self.token_serial is not None:
            parts.append(f"serial={self.token_serial!r}")
        return " ".join(parts)


def tries_left_from_flags(flags: int) -> str | None:
    """What a token's flags say about PIN tries left: "0", "1", "low" or None (not reported)."""
    if flags & TokenFlag.USER_PIN_LOCKED:
        return "0"
    if flags & TokenFlag.USER_PIN_FINAL_TRY:
        return "1"
    if flags & TokenFlag.USER_PIN_COUNT_LOW:
        return "low"
    return None


_TRIES_WORDS: Final[dict[str | None, str]] = {
    "0": "the token reports the user PIN is now locked",
    "1": "the token reports ONE try left before the PIN locks",
    "low": "the token reports that wrong PINs were entered and fewer tries remain (it does not say how many)",
    None: "the token does not report how many tries are left",
}


def translate_pkcs11_error(
    exc: BaseException, *, action: str, token: str | None = None, token_flags: int | None = None
) -> HsmError:
    """The one place PKCS#11 (and module loading) exceptions become :mod:`hsm.errors`.

    ``action`` says what we were doing ("login", "sign", ...); ``token_flags``, read after a failed
    login, gives the tries-left report. Messages never include a PIN: python-pkcs11's exceptions do
    not carry one, and nothing here formats caller data other than labels.
    """
    if isinstance(exc, HsmError):
        return exc
    name = type(exc).__name__
    ctx: dict[str, Any] = {"action": action, "token": token, "pkcs11": name}
    if isinstance(exc, p11x.PinLocked):
        return PinLocked("the token's user PIN is locked; an SO must unlock it", tries_left="0", **ctx)
    if isinstance(exc, (p11x.PinIncorrect, p11x.PinInvalid, p11x.PinLenRange)):
        tries = tries_left_from_flags(token_flags) if token_flags is not None else None
        if tries == "0":
            return PinLocked(f"wrong PIN; {_TRIES_WORDS[tries]}", tries_left=tries, **ctx)
        return LoginFailed(f"wrong PIN; {_TRIES_WORDS[tries]}", tries_left=tries, **ctx)
    if isinstance(exc, (p11x.NoSuchToken, p11x.MultipleTokensReturned, p11x.TokenNotRecognised)):
        return TokenNotFound("no single token matches", **ctx)
    if isinstance(exc, (p11x.NoSuchKey, p11x.MultipleObjectsReturned)):
        return KeyNotFound("no single key matches", **ctx)
    if isinstance(exc, _SESSION_GONE):
        return SessionLost("the PKCS#11 session or token was lost", **ctx)
    if isinstance(exc, p11x.MechanismInvalid):
        return HsmOperationFailed("the token does not offer this mechanism", code="mechanism_invalid", **ctx)
    if type(exc) is p11x.PKCS11Error and action == "load":
        # python-pkcs11 raises the bare base class for dlopen failures.
        return ModuleLoadFailed(f"cannot load the PKCS#11 module: {exc}", **ctx)
    if isinstance(exc, p11x.PKCS11Error):
        return HsmOperationFailed(f"PKCS#11 call failed ({name})", code=f"pkcs11_{name.lower()}", **ctx)
    return HsmOperationFailed(f"unexpected error during {action}: {name}", **ctx)


_REGISTRY_LOCK: Final = threading.Lock()
_MODULE_LOCKS: dict[str, threading.RLock] = {}
_SESSIONS: dict[tuple[str, str | None, str | None], TokenSession] = {}


def module_lock(module_path: str) -> threading.RLock:
    """The one lock for every PKCS#11 call into this module in this process."""
    key = os.path.realpath(module_path)
    with _REGISTRY_LOCK:
        lock = _MODULE_LOCKS.get(key)
        if lock is None:
            lock = _MODULE_LOCKS[key] = threading.RLock()
        return lock


def load_module(module_path: str) -> Any:
    """Load (or reuse: python-pkcs11 caches per process) the PKCS#11 module at ``module_path``."""
    if not os.path.isfile(module_path):
        raise ModuleLoadFailed("PKCS#11 module file does not exist", module=module_path)
    with module_lock(module_path):
        try:
            return pkcs11.lib(module_path)
        except Exception as exc:
            raise translate_pkcs11_error(exc, action="load") from exc


def reinitialize_module(module_path: str) -> None:
    """Finalize and initialize the module again, so it re-reads its configuration (SOFTHSM2_CONF).

    Every shared session on the module dies with it; they are forgotten here and re-open on next use.
    """
    lib = load_module(module_path)
    with module_lock(module_path):
        key = os.path.realpath(module_path)
        with _REGISTRY_LOCK:
            for sess_key, shared in list(_SESSIONS.items()):
                if sess_key[0] == key:
                    shared._session = None
        try:
            lib.reinitialize()
        except Exception as exc:
            raise translate_pkcs11_error(exc, action="reinitialize") from exc


def find_token(spec: TokenSpec) -> Any:
    """The single token matching ``spec`` (call with the module lock held)."""
    lib = load_module(spec.module_path)
    with module_lock(spec.module_path):
        try:
            found = list(
                lib.get_tokens(
                    token_label=spec.token_label,
                    token_serial=spec.token_serial.encode() if spec.token_serial is not None else None,
                )
            )
        except Exception as exc:
            raise translate_pkcs11_error(exc, action="find_token", token=spec.describe()) from exc
    if len(found) != 1:
        raise TokenNotFound(
            "no token matches" if not found else "more than one token matches",
            token=spec.describe(),
            module=spec.module_path,
        )
    return found[0]


@dataclass(eq=False)
class TokenSession:
    """A shared, logged-in, read-write session on one token. Use :func:`open_token` to get one."""

    spec: TokenSpec
    _pin: Pin = field(repr=False)
    _lock: threading.RLock = field(repr=False)
    _session: Any = field(default=None, repr=False)
    _users: int = 0
    generation: int = 0
    """Bumped every time a new session is opened: cached object handles from older ones are stale."""

    @property
    def label(self) -> str:
        return self.spec.token_label or str(self.spec.token_serial)

    def _open(self) -> Any:
        token = find_token(self.spec)
        try:
            session = token.open(rw=True, user_pin=self._pin.reveal())
        except p11x.UserAlreadyLoggedIn:
            # Login state is per application: someone in this process already logged in.
            session = token.open(rw=True)
        except Exception as exc:
            flags: int | None = None
            try:
                flags = int(token.slot.get_token().flags)
            except Exception:  # the flags are a courtesy; the login error is what matters
                flags = None
            raise translate_pkcs11_error(exc, action="login", token=self.label, token_flags=flags) from None
        self.generation += 1
        log.info("opened PKCS#11 session on token %s (generation %d)", self.label, self.generation)
        return session

    def _reopen(self, action: str) -> Any:
        """Open the session; a token that vanished after it had been open is a lost session, not a
        configuration error (the token was pulled or the module failed mid-run)."""
        try:
            return self._open()
        except TokenNotFound as exc:
            if self.generation == 0:
                raise
            raise SessionLost("the HSM token is gone (removed, or its module failed) and could not be "
                              "re-opened", action=action, token=self.label) from exc

    def _drop(self) -> None:
        old, self._session = self._session, None
        if old is None:
            return
        try:
            old.close()
        except Exception as exc:  # it is already gone; that is why we drop it
            log.debug("closing a lost session failed: %s", type(exc).__name__)

    def run(self, op: Callable[[Any], T], *, action: str) -> T:
        """Run ``op(session)`` under the module lock; re-open a lost session once; translate errors."""
        with self._lock:
            for attempt in (1, 2):
                if self._session is None:
                    self._session = self._reopen(action)
                try:
                    return op(self._session)
                except HsmError:
                    raise
                except Exception as exc:
                    err = translate_pkcs11_error(exc, action=action, token=self.label)
                    if isinstance(err, SessionLost):
                        self._drop()
                        if attempt == 1:
                            log.warning("PKCS#11 session lost during %s (%s); re-opening once",
                                        action, type(exc).__name__)
                            continue
                        raise SessionLost(
                            "the HSM session was lost and re-opening it once did not help",
                            action=action, token=self.label,
                        ) from exc
                    raise err from exc
            raise AssertionError("unreachable")  # pragma: no cover

    def close(self) -> None:
        """Release one user's hold; the last one closes the session (and logs out)."""
        key = _registry_key(self.spec)
        with self._lock, _REGISTRY_LOCK:
            self._users -= 1
            if self._users > 0:
                return
            _SESSIONS.pop(key, None)
            self._drop()

    def __repr__(self) -> str:
        return f"TokenSession({self.spec.describe()}, generation={self.generation})"


def _registry_key(spec: TokenSpec) -> tuple[str, str | None, str | None]:
    return (os.path.realpath(spec.module_path), spec.token_label, spec.token_serial)


def open_token(spec: TokenSpec, pin_source: PinSource) -> TokenSession:
    """The process's shared logged-in session for this token (created and logged in on first use).

    The PIN is read from ``pin_source`` once and kept (masked) for one re-login after a lost session.
    Login happens here, so a wrong PIN fails at start-up, not at the first unit.
    """
    key = _registry_key(spec)
    lock = module_lock(spec.module_path)
    with lock:
        with _REGISTRY_LOCK:
            shared = _SESSIONS.get(key)
        pin = pin_source.read()
        if shared is None:
            load_module(spec.module_path)
            shared = TokenSession(spec=spec, _pin=pin, _lock=lock)
            shared._session = shared._open()
            with _REGISTRY_LOCK:
                _SESSIONS[key] = shared
        elif not hmac.compare_digest(pin.reveal().encode(), shared._pin.reveal().encode()):
            # Already logged in: C_Login would not check this PIN, so we do, without asking the token.
            raise LoginFailed("wrong PIN (differs from the PIN this process logged in with)",
                              action="login", token=shared.label)
        shared._users += 1
        return shared


def token_info(shared: TokenSession) -> dict[str, str]:
    """Label, serial, model, manufacturer and flags of the token (for ``ca status``)."""

    def info(session: Any) -> dict[str, str]:
        tok = session.token.slot.get_token()
        return {
            "label": tok.label,
            "serial": tok.serial.decode(errors="replace"),
            "model": tok.model,
            "manufacturer": tok.manufacturer_id,
            "flags": str(TokenFlag(tok.flags)),
            "pin_tries": _TRIES_WORDS[tries_left_from_flags(int(tok.flags))],
        }

    return shared.run(info, action="token_info")
