"""The hsm package's one error tree.

::

    HsmError                          every failure of hsm/ (``code`` is stable, ``context`` is safe to log)
    ├── HsmConfigError                the set-up is wrong; retrying will not help
    │   ├── ModuleLoadFailed          the PKCS#11 module path cannot be loaded
    │   ├── TokenNotFound             no token (or more than one) matches the label / serial
    │   └── PinSourceError            env var missing, PIN file unsafe (group/world-readable) or absent
    ├── LoginFailed                   the token refused the PIN (``tries_left`` says what the token reports)
    │   └── PinLocked                 the user PIN is locked; an SO must reset it
    ├── KeyNotFound                   no CA key (or more than one) with that label / id
    ├── KeyPolicyViolation            the CA key is extractable, not sensitive, not private or cannot sign
    ├── SessionLost                   session or token lost and one re-open + re-login did not help
    ├── HsmOperationFailed            any other PKCS#11 failure (mechanism, device error, ...)
    ├── CertificateCheckFailed        what the HSM produced does not verify with the CA public key
    ├── ProfileError                  a certificate profile is unknown or invalid
    ├── IssuanceRefused               a pre-issuance check refused the request (``reason`` code)
    └── CaError                       CA management: chain does not match the key, bad certificate, ...

PKCS#11 exceptions become this tree in exactly one place, :func:`hsm.token.translate_pkcs11_error`.
No message, context value or repr of these errors ever contains a PIN: PINs only live inside
:class:`hsm.pin.Pin`, whose ``repr`` and ``str`` are masked.
"""

from __future__ import annotations

from typing import Any


class HsmError(Exception):
    """Base of hsm/ errors; ``code`` is stable, ``context`` carries safe, loggable details."""

    code: str = "hsm_error"

    def __init__(self, message: str, *, code: str | None = None, **context: Any) -> None:
        super().__init__(message)
        self.message = message
        if code is not None:
            self.code = code
        self.context: dict[str, Any] = {k: v for k, v in context.items() if v is not None}

    def __str__(self) -> str:
        if not self.context:
            return self.message
        ctx = ", ".join(f"{k}={v}" for k, v in sorted(self.context.items()))
        return f"{self.message} ({ctx})"

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.message!r}, code={self.code!r})"


class HsmConfigError(HsmError):
    code = "hsm_config"


class ModuleLoadFailed(HsmConfigError):
    code = "module_load_failed"


class TokenNotFound(HsmConfigError):
    code = "token_not_found"


class PinSourceError(HsmConfigError):
    code = "pin_source"


class LoginFailed(HsmError):
    """Wrong PIN. ``tries_left`` is the token's own report (flags), or None if it reports nothing."""

    code = "login_failed"

    def __init__(self, message: str, *, tries_left: str | None = None, **context: Any) -> None:
        super().__init__(message, tries_left=tries_left, **context)
        self.tries_left = tries_left


class PinLocked(LoginFailed):
    code = "pin_locked"


class KeyNotFound(HsmError):
    code = "key_not_found"


class KeyPolicyViolation(HsmError):
    code = "key_policy"


class SessionLost(HsmError):
    code = "session_lost"


class HsmOperationFailed(HsmError):
    code = "hsm_operation_failed"


class CertificateCheckFailed(HsmError):
    code = "certificate_check_failed"


class ProfileError(HsmError):
    code = "profile_error"


class IssuanceRefused(HsmError):
    """A pre-issuance check said no. ``reason`` is one of :data:`hsm.issuer.REASONS`."""

    code = "issuance_refused"

    def __init__(self, reason: str, message: str, **context: Any) -> None:
        super().__init__(message, code=reason, **context)
        self.reason = reason


class CaError(HsmError):
    code = "ca_error"
