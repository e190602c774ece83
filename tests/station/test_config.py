"""The configuration file: a bad value names its key and line, and the station does not start."""

from __future__ import annotations

from pathlib import Path

import pytest

from station.config import load_config, parse_config
from station.errors import ConfigError

GOOD = """\
[station]
id = "line1-st01"
operator = "alice"

[hsm]
module = "/usr/lib/softhsm/libsofthsm2.so"
token_label = "station-ca"
key_label = "issuing-ca"
pin_source = "env:STATION_HSM_PIN"
ca_chain = "ca/chain.pem"

[database]
url = "audit.db"

[work_order]
number = "WO-1001"
product = "sensor-v2"
profile = "tls-client"
quantity = 500

[[commissioning]]
key = "wifi.ssid"
value = "factory"

[[commissioning]]
key = "wifi.passphrase"
value_env = "TEST_WIFI_PSK"
secret = true

[[slots]]
name = "1"
port = "/dev/ttyUSB0"

[[slots]]
name = "2"
port = "/dev/ttyUSB1"
baud = 921600
"""


def test_good_configuration(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TEST_WIFI_PSK", "s3cret")
    path = tmp_path / "station.toml"
    path.write_text(GOOD)
    config = load_config(path)
    assert config.station_id == "line1-st01"
    assert config.hsm.ca_chain == str(tmp_path / "ca" / "chain.pem")  # relative to the file
    assert config.database_url == str(tmp_path / "audit.db")
    assert config.work_order.quantity == 500
    assert config.work_order.commissioning == (("wifi.ssid", "factory", False),
                                               ("wifi.passphrase", "s3cret", True))
    assert [(s.name, s.baud) for s in config.slots] == [("1", 115200), ("2", 921600)]


@pytest.mark.parametrize(
    ("old", "new", "expected"),
    [
        ('quantity = 500', 'quantity = "many"',
         "work_order.quantity: must be int, not str (station.toml, line 19)"),
        ('quantity = 500', 'quantity = -1',
         "work_order.quantity: must not be negative (station.toml, line 19)"),
        ('quantity = 500', 'quantity = true', "work_order.quantity: must be int, not bool"),
        ('operator = "alice"', 'operatr = "alice"', "station.operatr: unknown key"),
        ('pin_source = "env:STATION_HSM_PIN"', 'pin_source = "1234"',
         "hsm.pin_source: must be env:VARIABLE, file:/path or prompt (station.toml, line 9)"),
        ('baud = 921600', 'baud = 0', "slots.baud: must be positive"),
        ('name = "2"', 'name = "1"', "slots.name: slot names must be unique"),
        ('[database]\nurl = "audit.db"\n', '', "database: missing section"),
        ('value_env = "TEST_WIFI_PSK"', 'value_env = "NOT_SET_ANYWHERE"',
         "environment variable NOT_SET_ANYWHERE for 'wifi.passphrase' is not set"),
        ('key_label = "issuing-ca"\n', '', "hsm: missing required key 'key_label' (station.toml, line 5)"),
        ('number = "WO-1001"', 'number = ""', "work order number must not be empty"),
    ],
)
def test_bad_values_name_the_key_and_line(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                          old: str, new: str, expected: str) -> None:
    monkeypatch.setenv("TEST_WIFI_PSK", "s3cret")
    assert old in GOOD
    with pytest.raises(ConfigError) as info:
        parse_config(GOOD.replace(old, new), source="station.toml", base_dir=tmp_path)
    assert expected in str(info.value)
    assert info.value.code == "config_invalid"


def test_syntax_error_and_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="not valid TOML"):
        parse_config("[station\nid = 1", source="x.toml")
    with pytest.raises(ConfigError, match="cannot read configuration file"):
        load_config(tmp_path / "nope.toml")


def test_secret_values_never_appear_in_errors(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TEST_WIFI_PSK", "s3cret")
    text = GOOD.replace('baud = 921600', 'baud = "fast"')
    with pytest.raises(ConfigError) as info:
        parse_config(text, source="station.toml", base_dir=tmp_path)
    assert "s3cret" not in str(info.value)


def test_slots_placed_as_the_fixture_is_built(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TEST_WIFI_PSK", "s3cret")
    placed = GOOD.replace('port = "/dev/ttyUSB0"\n', 'port = "/dev/ttyUSB0"\nrow = 1\ncolumn = 2\n') \
                 .replace('baud = 921600\n', 'baud = 921600\nrow = 1\ncolumn = 1\n')
    config = parse_config(placed, source="station.toml", base_dir=tmp_path)
    assert [(s.name, s.row, s.column) for s in config.slots] == [("1", 1, 2), ("2", 1, 1)]
    one_only = GOOD.replace('port = "/dev/ttyUSB0"\n', 'port = "/dev/ttyUSB0"\nrow = 1\ncolumn = 2\n')
    with pytest.raises(ConfigError, match="both a row and a column, or none"):
        parse_config(one_only, source="station.toml", base_dir=tmp_path)
    same = placed.replace("row = 1\ncolumn = 1\n", "row = 1\ncolumn = 2\n")
    with pytest.raises(ConfigError, match="same row and column"):
        parse_config(same, source="station.toml", base_dir=tmp_path)
    with pytest.raises(ConfigError, match=r"slots.row: must be 1 or more .*line \d+"):
        parse_config(placed.replace("row = 1\ncolumn = 2", "row = 0\ncolumn = 2"), source="station.toml",
                     base_dir=tmp_path)


def test_scanner_patterns_and_prefix(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TEST_WIFI_PSK", "s3cret")
    site = GOOD + '\n[scanner]\nprefix = "]C1"\nunit_label = "SN[0-9]{8}"\n'
    config = parse_config(site, source="station.toml", base_dir=tmp_path)
    assert config.scanner.prefix == "]C1" and config.scanner.unit_label == "SN[0-9]{8}"
    assert config.scanner.badge == r"B-[0-9]{3,12}"  # the default where the site says nothing
    with pytest.raises(ConfigError, match=r"scanner.badge: not a regular expression.*line \d+"):
        parse_config(GOOD + '\n[scanner]\nbadge = "B-[0-9"\n', source="station.toml", base_dir=tmp_path)
    with pytest.raises(ConfigError, match=r"scanner\.unit_label: matches an empty scan"):
        parse_config(GOOD + '\n[scanner]\nunit_label = ".*"\n', source="station.toml", base_dir=tmp_path)
    with pytest.raises(ConfigError, match=r"scanner\.suffix: unknown key"):
        parse_config(GOOD + '\n[scanner]\nsuffix = "x"\n', source="station.toml", base_dir=tmp_path)
