"""The station's one configuration file (TOML), checked strictly.

Every error names the offending key and, where the file has it, the line: a station with a bad
configuration does not start. Secrets are never in this file; the HSM PIN is named by its source
(``env:VAR``, ``file:/path`` readable only by its owner, or ``prompt``).

Example::

    [station]
    id = "line1-station01"

    [hsm]
    module = "/usr/lib/softhsm/libsofthsm2.so"
    token_label = "station-ca"
    key_label = "issuing-ca"
    pin_source = "env:STATION_HSM_PIN"
    ca_chain = "/etc/station/ca-chain.pem"

    [database]
    url = "/var/lib/station/audit.db"

    [work_order]
    number = "WO-1001"
    product = "sensor-v2"
    profile = "tls-client"
    quantity = 500

    [[commissioning]]
    key = "wifi.ssid"
    value = "factory-net"

    [[commissioning]]
    key = "wifi.passphrase"
    value_env = "STATION_WIFI_PASSPHRASE"
    secret = true

    [[slots]]
    name = "1"
    port = "/dev/serial/by-path/pci-0000:00:14.0-usb-0:1.1:1.0-port0"
    baud = 115200
"""

from __future__ import annotations

import os
import re
import tomllib
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from station.domain import WorkOrder
from station.errors import ConfigError

__all__ = ["HsmConfig", "SlotConfig", "StationConfig", "load_config", "parse_config"]

T = TypeVar("T")


@dataclass(frozen=True, kw_only=True)
class HsmConfig:
    module: str
    token_label: str
    key_label: str
    pin_source: str
    ca_chain: str


@dataclass(frozen=True, kw_only=True)
class SlotConfig:
    name: str
    port: str
    baud: int = 115200
    row: int | None = None
    """Where the slot sits in the fixture (1-based, as built): the tile grid mirrors it (HMI.md)."""
    column: int | None = None


@dataclass(frozen=True, kw_only=True)
class ScannerConfig:
    """How this site's barcode labels look: regular expressions a whole scan must match, and the
    prefix a configured scanner sends first. Defaults as :class:`station.gui.scanner.ScanPatterns`."""

    work_order: str = r"WO-[A-Za-z0-9][A-Za-z0-9._-]{0,63}"
    badge: str = r"B-[0-9]{3,12}"
    unit_label: str = r"U-[A-Za-z0-9][A-Za-z0-9._-]{2,63}"
    prefix: str = ""


@dataclass(frozen=True, kw_only=True)
class StationConfig:
    station_id: str
    operator: str
    hsm: HsmConfig
    database_url: str
    work_order: WorkOrder
    slots: tuple[SlotConfig, ...]
    lock_devices: bool = True
    scanner: ScannerConfig = ScannerConfig()
    checkpoint_file: str | None = None
    """Where signed audit checkpoints are appended: a path kept off the station (a mounted share).
    Default: ``<database file>.checkpoints`` for a SQLite file, none for PostgreSQL."""


_ALLOWED: dict[str, set[str]] = {
    "": {"station", "hsm", "database", "work_order", "commissioning", "slots", "scanner"},
    "scanner": {"work_order", "badge", "unit_label", "prefix"},
    "station": {"id", "operator", "lock_devices"},
    "hsm": {"module", "token_label", "key_label", "pin_source", "ca_chain"},
    "database": {"url", "checkpoint_file"},
    "work_order": {"number", "product", "profile", "quantity", "serial_format"},
    "commissioning": {"key", "value", "value_env", "secret"},
    "slots": {"name", "port", "baud", "row", "column"},
}
_PIN_SOURCE = re.compile(r"^(env:[A-Za-z_][A-Za-z0-9_]*|file:.+|prompt)$")


class _Reader:
    """Typed access to the parsed TOML that reports errors with the key's dotted name and line."""

    def __init__(self, text: str, source: str) -> None:
        self._lines = text.splitlines()
        self._source = source

    def line_of(self, section: str, key: str | None) -> int | None:
        """Best-effort line number of ``key`` inside ``[section]`` (or of the section header)."""
        current = ""
        header = re.compile(r"^\s*\[\[?\s*([A-Za-z0-9_.\-]+)\s*\]\]?\s*$")
        for number, line in enumerate(self._lines, start=1):
            match = header.match(line)
            if match:
                current = match.group(1)
                if key is None and current == section:
                    return number
                continue
            if key is not None and current == section and re.match(rf"^\s*{re.escape(key)}\s*=", line):
                return number
        return None

    def error(self, section: str, key: str | None, problem: str) -> ConfigError:
        dotted = ".".join(p for p in (section, key) if p)
        line = self.line_of(section, key)
        where = f"{self._source}, line {line}" if line else self._source
        return ConfigError(f"{dotted}: {problem} ({where})", code="config_invalid", key=dotted)

    def table(self, data: Mapping[str, Any], section: str) -> Mapping[str, Any]:
        allowed = _ALLOWED[section]
        for key in data:
            if key not in allowed:
                raise self.error(section, key, f"unknown key (allowed: {', '.join(sorted(allowed))})")
        return data

    def get(self, data: Mapping[str, Any], section: str, key: str, kind: type[T],
            default: T | None = None) -> T:
        if key not in data:
            if default is None:
                raise self.error(section, None, f"missing required key '{key}'")
            return default
        value = data[key]
        if (kind is int and isinstance(value, bool)) or not isinstance(value, kind):
            raise self.error(section, key, f"must be {kind.__name__}, not {type(value).__name__}")
        return value


def parse_config(text: str, *, source: str = "<config>", base_dir: Path | None = None) -> StationConfig:
    """Parse and validate a configuration text."""
    try:
        raw = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"not valid TOML: {exc} ({source})", code="config_syntax") from exc
    r = _Reader(text, source)
    r.table(raw, "")
    base = base_dir or Path.cwd()

    def section(name: str) -> Mapping[str, Any]:
        value = raw.get(name)
        if not isinstance(value, dict):
            raise r.error("", name, "missing section" if value is None else "must be a table")
        return r.table(value, name)

    st = section("station")
    hsm = section("hsm")
    db = section("database")
    wo = section("work_order")

    pin_source = r.get(hsm, "hsm", "pin_source", str)
    if not _PIN_SOURCE.match(pin_source):
        raise r.error("hsm", "pin_source", "must be env:VARIABLE, file:/path or prompt")

    def resolve(path: str) -> str:
        return path if "://" in path or os.path.isabs(path) else str((base / path).resolve())

    quantity = r.get(wo, "work_order", "quantity", int)
    if quantity < 0:
        raise r.error("work_order", "quantity", "must not be negative")

    commissioning: list[tuple[str, str, bool]] = []
    items = raw.get("commissioning", [])
    if not isinstance(items, list):
        raise r.error("", "commissioning", "must be an array of tables ([[commissioning]])")
    for item in items:
        r.table(item, "commissioning")
        key = r.get(item, "commissioning", "key", str)
        secret = r.get(item, "commissioning", "secret", bool, False)
        if "value" in item and "value_env" in item:
            raise r.error("commissioning", "value_env", f"'{key}' has both value and value_env")
        if "value_env" in item:
            env_name = r.get(item, "commissioning", "value_env", str)
            if env_name not in os.environ:
                raise r.error("commissioning", "value_env",
                              f"environment variable {env_name} for '{key}' is not set")
            value = os.environ[env_name]
        else:
            value = r.get(item, "commissioning", "value", str)
        commissioning.append((key, value, secret))

    slots_raw = raw.get("slots", [])
    if not isinstance(slots_raw, list) or not slots_raw:
        raise r.error("", "slots", "at least one [[slots]] entry is required")
    slots: list[SlotConfig] = []
    for item in slots_raw:
        r.table(item, "slots")
        baud = r.get(item, "slots", "baud", int, 115200)
        if baud <= 0:
            raise r.error("slots", "baud", "must be positive")
        place: list[int] = [r.get(item, "slots", axis, int, 0) for axis in ("row", "column")]
        for axis, number in zip(("row", "column"), place, strict=True):
            if axis in item and number < 1:
                raise r.error("slots", axis, "must be 1 or more (as printed on the fixture)")
        slots.append(SlotConfig(name=r.get(item, "slots", "name", str),
                                port=r.get(item, "slots", "port", str), baud=baud,
                                row=place[0] or None, column=place[1] or None))
    names = [s.name for s in slots]
    if len(set(names)) != len(names):
        raise r.error("slots", "name", "slot names must be unique")
    placed = [(s.row, s.column) for s in slots if s.row is not None or s.column is not None]
    if placed and (len(placed) != len(slots) or any(None in p for p in placed)):
        raise r.error("slots", "row", "give every slot both a row and a column, or none of them")
    if len(set(placed)) != len(placed):
        raise r.error("slots", "row", "two slots in the same row and column")

    try:
        work_order = WorkOrder(
            number=r.get(wo, "work_order", "number", str),
            product=r.get(wo, "work_order", "product", str),
            profile=r.get(wo, "work_order", "profile", str),
            quantity=quantity,
            serial_format=r.get(wo, "work_order", "serial_format", str, "{product}-{seq:06d}"),
            commissioning=tuple(commissioning),
        )
    except ValueError as exc:
        raise r.error("work_order", None, str(exc)) from exc

    return StationConfig(
        station_id=r.get(st, "station", "id", str),
        operator=r.get(st, "station", "operator", str, "unknown"),
        lock_devices=r.get(st, "station", "lock_devices", bool, True),
        hsm=HsmConfig(
            module=r.get(hsm, "hsm", "module", str),
            token_label=r.get(hsm, "hsm", "token_label", str),
            key_label=r.get(hsm, "hsm", "key_label", str),
            pin_source=pin_source,
            ca_chain=resolve(r.get(hsm, "hsm", "ca_chain", str)),
        ),
        database_url=resolve(r.get(db, "database", "url", str)),
        work_order=work_order,
        slots=tuple(slots),
        checkpoint_file=_optional_path(r.get(db, "database", "checkpoint_file", str, ""), resolve),
        scanner=_scanner(r, raw.get("scanner", {})),
    )


def _scanner(r: _Reader, section: Any) -> ScannerConfig:
    """The [scanner] section: each pattern must compile and must not match an empty scan."""
    r.table(section, "scanner")
    default = ScannerConfig()
    values: dict[str, str] = {}
    for key in ("work_order", "badge", "unit_label"):
        pattern = r.get(section, "scanner", key, str, getattr(default, key))
        try:
            compiled = re.compile(pattern)
        except re.error as exc:
            raise r.error("scanner", key, f"not a regular expression: {exc}") from None
        if compiled.fullmatch(""):
            raise r.error("scanner", key, "matches an empty scan")
        values[key] = pattern
    return ScannerConfig(prefix=r.get(section, "scanner", "prefix", str, ""), **values)


def _optional_path(value: str, resolve: Callable[[str], str]) -> str | None:
    return resolve(value) if value else None


def load_config(path: str | Path) -> StationConfig:
    """Read and validate the configuration file at ``path``."""
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"cannot read configuration file {p}: {exc.strerror}",
                          code="config_unreadable") from exc
    return parse_config(text, source=str(p), base_dir=p.parent)
