"""Certificate profiles as data: TOML files, built-ins in ``hsm/profiles/``, or any path.

A profile decides everything about a certificate except the device's public key: subject templates
(filled from the device's identity and the work order, never copied from the CSR), validity, key
usage, extended key usage, basic constraints, SKI/AKI, SAN entries, the key algorithms a device may
use, and size limits. Unknown keys and wrong types are errors that name the key, so a typo in a
profile stops the station instead of silently issuing something else.
"""

from __future__ import annotations

import re
import tomllib
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Final

from hsm.errors import ProfileError

BUILTIN_DIR: Final = Path(__file__).parent / "profiles"
DEFAULT_PROFILE: Final = "tls-client"
KEY_NAMES: Final = frozenset({"p256", "p384", "ed25519", "rsa"})
KEY_USAGES: Final = frozenset({
    "digital_signature", "content_commitment", "key_encipherment", "data_encipherment",
    "key_agreement", "key_cert_sign", "crl_sign",
})
EKUS: Final = frozenset({"client_auth", "server_auth", "code_signing", "email_protection"})
NO_EXPIRY: Final = "99991231235959Z"
_HEX4: Final = re.compile(r"[0-9A-F]{4}")

_SCHEMA: Final[dict[str, dict[str, type | tuple[type, ...]]]] = {
    "": {"name": str, "description": str, "subject": dict, "validity": dict, "keys": dict,
         "signature": dict, "extensions": dict, "matter": dict, "limits": dict},
    "subject": {"common_name": str, "serial_number": str, "organization": str},
    "validity": {"backdate_minutes": int, "days": int, "not_after": str, "beyond_ca": str},
    "keys": {"allowed": list, "rsa_min_bits": int},
    "signature": {"hash": str, "require_ca_curve": str},
    "extensions": {"key_usage": list, "key_usage_critical": bool, "extended_key_usage": list,
                   "basic_constraints_critical": bool, "subject_key_identifier": bool,
                   "authority_key_identifier": bool, "subject_alt_names": list},
    "matter": {"vid": str, "pid": str, "products": dict},
    "limits": {"max_certificate_der": int, "max_csr_der": int},
}


@dataclass(frozen=True, kw_only=True)
class Profile:
    """One certificate profile, validated."""

    name: str
    description: str = ""
    common_name: str = "{unit_serial}"
    serial_number: str = "{hardware_id}"
    organization: str = ""
    backdate_minutes: int = 5
    days: int | None = 3650
    not_after: datetime | None = None
    beyond_ca: str = "clamp"
    allowed_keys: tuple[str, ...] = ("p256", "p384")
    rsa_min_bits: int = 2048
    hash: str = "auto"
    require_ca_curve: str | None = None
    key_usage: tuple[str, ...] = ("digital_signature",)
    key_usage_critical: bool = True
    extended_key_usage: tuple[str, ...] = ("client_auth",)
    basic_constraints_critical: bool = True
    subject_key_identifier: bool = True
    authority_key_identifier: bool = True
    subject_alt_names: tuple[str, ...] = ()
    matter: bool = False
    matter_vid: str | None = None
    matter_pid: str | None = None
    matter_products: dict[str, dict[str, str]] = field(default_factory=dict)
    max_certificate_der: int = 4096
    max_csr_der: int = 4096

    def matter_ids(self, product: str, overrides: dict[str, str] | None = None) -> tuple[str, str]:
        """(VID, PID) for a product: profile defaults, then the product's entry, then ``overrides``."""
        merged = {"vid": self.matter_vid, "pid": self.matter_pid}
        merged.update(self.matter_products.get(product, {}))
        merged.update(overrides or {})
        vid, pid = merged.get("vid"), merged.get("pid")
        for what, value in (("vid", vid), ("pid", pid)):
            if value is None or not _HEX4.fullmatch(value):
                raise ProfileError(f"Matter {what} must be 4 uppercase hex digits", profile=self.name,
                                   product=product, value=value)
        assert vid is not None and pid is not None
        return vid, pid


def _check_schema(data: dict[str, Any], where: str) -> None:
    for section, keys in _SCHEMA.items():
        table = data if section == "" else data.get(section, {})
        if not isinstance(table, dict):
            raise ProfileError("must be a table", key=section, profile=where)
        for key, value in table.items():
            if key not in keys:
                raise ProfileError("unknown profile key", key=f"{section}.{key}".lstrip("."), profile=where)
            if not isinstance(value, keys[key]) or (keys[key] is int and isinstance(value, bool)):
                raise ProfileError("wrong type in profile", key=f"{section}.{key}".lstrip("."), profile=where)


def _parse_not_after(text: str, where: str) -> datetime:
    try:
        return datetime.strptime(text, "%Y%m%d%H%M%SZ").replace(tzinfo=UTC)
    except ValueError:
        raise ProfileError("validity.not_after must look like 99991231235959Z", profile=where) from None


def profile_from_dict(data: dict[str, Any], *, where: str = "<dict>") -> Profile:
    """Validate a parsed TOML document and build a :class:`Profile`."""
    _check_schema(data, where)
    subj, val, keys = data.get("subject", {}), data.get("validity", {}), data.get("keys", {})
    sig, ext, mat, lim = data.get("signature", {}), data.get("extensions", {}), data.get("matter", {}), \
        data.get("limits", {})
    if "name" not in data:
        raise ProfileError("missing key", key="name", profile=where)
    if ("days" in val) == ("not_after" in val):
        raise ProfileError("set exactly one of validity.days and validity.not_after", profile=where)
    allowed = tuple(str(k) for k in keys.get("allowed", ["p256", "p384"]))
    if not allowed or set(allowed) - KEY_NAMES:
        raise ProfileError(f"keys.allowed must be a non-empty subset of {sorted(KEY_NAMES)}", profile=where)
    ku = tuple(str(k) for k in ext.get("key_usage", ["digital_signature"]))
    eku = tuple(str(k) for k in ext.get("extended_key_usage", []))
    if set(ku) - KEY_USAGES or set(eku) - EKUS:
        raise ProfileError("unknown key usage or extended key usage", profile=where)
    if val.get("beyond_ca", "clamp") not in ("clamp", "refuse"):
        raise ProfileError("validity.beyond_ca must be clamp or refuse", profile=where)
    if sig.get("hash", "auto") not in ("auto", "sha256", "sha384", "sha512"):
        raise ProfileError("signature.hash must be auto, sha256, sha384 or sha512", profile=where)
    sans = tuple(str(s) for s in ext.get("subject_alt_names", []))
    for san in sans:
        if san.partition(":")[0] not in ("uri", "dns", "email"):
            raise ProfileError("subject_alt_names entries start with uri:, dns: or email:", profile=where)
    products = mat.get("products", {})
    profile = Profile(
        name=data["name"],
        description=data.get("description", ""),
        common_name=subj.get("common_name", "{unit_serial}"),
        serial_number=subj.get("serial_number", "{hardware_id}"),
        organization=subj.get("organization", ""),
        backdate_minutes=val.get("backdate_minutes", 5),
        days=val.get("days"),
        not_after=_parse_not_after(val["not_after"], where) if "not_after" in val else None,
        beyond_ca=val.get("beyond_ca", "clamp"),
        allowed_keys=allowed,
        rsa_min_bits=max(2048, keys.get("rsa_min_bits", 2048)),
        hash=sig.get("hash", "auto"),
        require_ca_curve=sig.get("require_ca_curve"),
        key_usage=ku,
        key_usage_critical=ext.get("key_usage_critical", True),
        extended_key_usage=eku,
        basic_constraints_critical=ext.get("basic_constraints_critical", True),
        subject_key_identifier=ext.get("subject_key_identifier", True),
        authority_key_identifier=ext.get("authority_key_identifier", True),
        subject_alt_names=sans,
        matter="matter" in data,
        matter_vid=mat.get("vid"),
        matter_pid=mat.get("pid"),
        matter_products={str(k): dict(v) for k, v in products.items()},
        max_certificate_der=lim.get("max_certificate_der", 4096),
        max_csr_der=lim.get("max_csr_der", 4096),
    )
    if profile.matter:
        profile.matter_ids("")  # defaults must be valid
        if set(profile.allowed_keys) != {"p256"}:
            raise ProfileError("a Matter DAC profile allows P-256 keys only", profile=where)
    if profile.backdate_minutes < 0 or (profile.days is not None and profile.days <= 0):
        raise ProfileError("validity must be positive", profile=where)
    return profile


def load_profile(name_or_path: str | Path) -> Profile:
    """Load a built-in profile by name (``tls-client``) or a profile TOML file by path."""
    text = str(name_or_path)
    if "/" in text or text.endswith(".toml"):
        path = Path(text)
    else:
        if not re.fullmatch(r"[a-z0-9][a-z0-9-]*", text):
            raise ProfileError("profile names are lowercase letters, digits and dashes", profile=text)
        path = BUILTIN_DIR / f"{text}.toml"
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ProfileError("unknown profile", profile=text) from None
    except (OSError, tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise ProfileError(f"cannot read profile: {exc}", profile=text) from None
    return profile_from_dict(data, where=text)


def builtin_profiles() -> list[str]:
    """Names of the profiles shipped in ``hsm/profiles/``."""
    return sorted(p.stem for p in BUILTIN_DIR.glob("*.toml"))
