"""The issuing CA in a PKCS#11 token: sessions, key checks, profiles, two-phase issuance, CA management.

Modules: :mod:`hsm.token` (one locked, logged-in session per token), :mod:`hsm.pin` (PIN sources),
:mod:`hsm.keys` (CA key checks, cryptography keys that sign in the token), :mod:`hsm.profile`
(TOML certificate profiles), :mod:`hsm.issuer` (pre-issuance checks, prepare/sign/verify),
:mod:`hsm.ca` (CA management), :mod:`hsm.cli` (``station ca ...``), :mod:`hsm.errors` (the error tree).
"""

from hsm.errors import (
    CaError,
    CertificateCheckFailed,
    HsmConfigError,
    HsmError,
    HsmOperationFailed,
    IssuanceRefused,
    KeyNotFound,
    KeyPolicyViolation,
    LoginFailed,
    ModuleLoadFailed,
    PinLocked,
    PinSourceError,
    ProfileError,
    SessionLost,
    TokenNotFound,
)
from hsm.issuer import REASONS, Identity, Issuer, Prepared
from hsm.keys import CaKey
from hsm.pin import EnvPin, FilePin, FixedPin, Pin, PromptPin, pin_source_from_spec
from hsm.profile import Profile, builtin_profiles, load_profile
from hsm.token import TokenSession, TokenSpec, open_token

__all__ = [
    "REASONS",
    "CaError",
    "CaKey",
    "CertificateCheckFailed",
    "EnvPin",
    "FilePin",
    "FixedPin",
    "HsmConfigError",
    "HsmError",
    "HsmOperationFailed",
    "Identity",
    "IssuanceRefused",
    "Issuer",
    "KeyNotFound",
    "KeyPolicyViolation",
    "LoginFailed",
    "ModuleLoadFailed",
    "Pin",
    "PinLocked",
    "PinSourceError",
    "Prepared",
    "Profile",
    "ProfileError",
    "PromptPin",
    "SessionLost",
    "TokenNotFound",
    "TokenSession",
    "TokenSpec",
    "builtin_profiles",
    "load_profile",
    "open_token",
    "pin_source_from_spec",
]
