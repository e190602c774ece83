"""Where the token PIN comes from, and the one object that holds it.

A PIN is read from an environment variable, from a file only its owner can read, or from an
interactive prompt (getpass). It is wrapped in :class:`Pin` at once, so a stray ``repr``, f-string or
log call prints ``Pin(***)`` instead of the secret. Sources are described (``describe()``) without
the secret, so configuration and errors can say where a PIN was meant to come from.
"""

from __future__ import annotations

import getpass
import os
import stat
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final, Protocol

from hsm.errors import PinSourceError

MASK: Final = "***"
"""What a PIN looks like in every repr, str and log line."""


class Pin:
    """A PIN that never prints itself. ``reveal()`` is the one way out, used only for C_Login."""

    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
        if not value:
            raise PinSourceError("the PIN is empty")
        self._value = value

    def reveal(self) -> str:
        """The PIN itself; call it only at the PKCS#11 login."""
        return self._value

    def __repr__(self) -> str:
        return f"Pin({MASK})"

    __str__ = __repr__

    def __format__(self, spec: str) -> str:
        return repr(self)

    def __reduce__(self) -> str | tuple[Any, ...]:
        raise TypeError("a Pin cannot be pickled")


class PinSource(Protocol):
    """Something that can produce the PIN when the token asks for it."""

    def read(self) -> Pin: ...

    def describe(self) -> str: ...


@dataclass(frozen=True)
class EnvPin:
    """PIN from an environment variable (the name is logged, never the value)."""

    variable: str

    def read(self) -> Pin:
        value = os.environ.get(self.variable)
        if not value:
            raise PinSourceError("PIN environment variable is not set or empty", variable=self.variable)
        return Pin(value)

    def describe(self) -> str:
        return f"env:{self.variable}"


@dataclass(frozen=True)
class FilePin:
    """PIN from a file that only its owner can read; a group- or world-readable file is refused."""

    path: Path

    def read(self) -> Pin:
        try:
            fd = os.open(self.path, os.O_RDONLY | os.O_NOFOLLOW)
        except OSError as exc:
            raise PinSourceError(f"cannot open PIN file: {exc.strerror}", path=str(self.path)) from None
        try:
            st = os.fstat(fd)
            if not stat.S_ISREG(st.st_mode):
                raise PinSourceError("PIN file is not a regular file", path=str(self.path))
            if st.st_mode & (stat.S_IRWXG | stat.S_IRWXO):
                raise PinSourceError(
                    "PIN file is readable or writable by group or others; chmod 600 it",
                    path=str(self.path),
                    mode=oct(stat.S_IMODE(st.st_mode)),
                )
            if st.st_uid != os.geteuid():
                raise PinSourceError("PIN file is not owned by this user", path=str(self.path))
            raw = os.read(fd, 4096)
        finally:
            os.close(fd)
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError:
            raise PinSourceError("PIN file is not UTF-8 text", path=str(self.path)) from None
        return Pin(text.rstrip("\r\n"))

    def describe(self) -> str:
        return f"file:{self.path}"


@dataclass(frozen=True)
class PromptPin:
    """PIN typed by an operator (getpass: no echo)."""

    prompt: str = "Token user PIN: "

    def read(self) -> Pin:
        return Pin(getpass.getpass(self.prompt))

    def describe(self) -> str:
        return "prompt"


@dataclass(frozen=True)
class FixedPin:
    """PIN already in memory (tests, the demo's throw-away token). Its repr is masked."""

    pin: Pin

    def read(self) -> Pin:
        return self.pin

    def describe(self) -> str:
        return "fixed"


def pin_source_from_spec(spec: str) -> PinSource:
    """Parse ``env:NAME``, ``file:/path`` or ``prompt`` (the CLI's and configuration's form)."""
    kind, _, rest = spec.partition(":")
    if kind == "env" and rest:
        return EnvPin(rest)
    if kind == "file" and rest:
        return FilePin(Path(rest))
    if kind == "prompt" and not rest:
        return PromptPin()
    raise PinSourceError("PIN source must be env:NAME, file:/path or prompt")
