"""The station's :class:`~station.ports.Signer`, backed by the CA key in a PKCS#11 token (:mod:`hsm`).

The work order's ``profile`` names a certificate profile (a built-in such as ``tls-client``,
``aws-iot``, ``matter-dac``, or a path to a TOML file). hsm errors become station errors in
:func:`to_station_error`, the one place this adapter translates them: a pre-issuance refusal is
:class:`~station.errors.CsrRejected` with the reason code as ``code``; a bad profile or HSM set-up is
:class:`~station.errors.ConfigError`; anything that goes wrong while signing is
:class:`~station.errors.SigningFailed`.

Build one with :meth:`HsmSigner.open`::

    signer = HsmSigner.open(
        module_path="/usr/lib/softhsm/libsofthsm2.so", token_label="station",
        pin_source=EnvPin("STATION_HSM_PIN"), key_label="issuing-ca",
        ca_chain_path=Path("/etc/station/ca/chain.pem"),
    )
"""

from __future__ import annotations

import hashlib
import logging
import threading
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives import serialization

from hsm.ca import Revoked, load_chain, signed_crl
from hsm.errors import HsmConfigError, HsmError, IssuanceRefused, KeyNotFound, ProfileError
from hsm.issuer import Identity, Issuer
from hsm.keys import CaKey, audit_key_label
from hsm.pin import PinSource
from hsm.profile import DEFAULT_PROFILE, Profile, load_profile
from hsm.token import TokenSession, TokenSpec, open_token
from station.domain import WorkOrder
from station.errors import ConfigError, CsrRejected, SigningFailed, StationError
from station.ports import DeviceInfo, KeyType, PreparedCertificate, SubjectRequest

log = logging.getLogger(__name__)

_KEY_TYPES: dict[str, KeyType] = {"p256": KeyType.P256, "p384": KeyType.P384, "ed25519": KeyType.ED25519}


def to_station_error(error: HsmError, *, step: str) -> StationError:
    """The one translation from :mod:`hsm.errors` to :mod:`station.errors`."""
    if isinstance(error, IssuanceRefused):
        return CsrRejected(error.message, code=error.reason, step=step)
    if isinstance(error, (ProfileError, HsmConfigError)):
        return ConfigError(error.message, step=step, hsm=error.code, **error.context)
    return SigningFailed(error.message, step=step, hsm=error.code)


class HsmSigner:
    """Implements :class:`station.ports.Signer`. Thread-safe: many slots call it at once."""

    def __init__(
        self,
        issuer: Issuer,
        *,
        token: TokenSession | None = None,
        profile_params: Mapping[str, Mapping[str, str]] | None = None,
        audit_key: CaKey | None = None,
    ) -> None:
        """``profile_params``: per-profile overrides, e.g. ``{"matter-dac": {"vid": "FFF1"}}``.
        ``audit_key``: the token's audit checkpoint key (:meth:`sign_checkpoint`), if it has one."""
        self._issuer = issuer
        self._token = token
        self._audit_key = audit_key
        self._params = {k: dict(v) for k, v in (profile_params or {}).items()}
        self._profiles: dict[str, Profile] = {}
        self._lock = threading.Lock()

    @classmethod
    def open(
        cls,
        *,
        module_path: str,
        pin_source: PinSource,
        ca_chain_path: Path,
        token_label: str | None = None,
        token_serial: str | None = None,
        key_label: str | None = None,
        key_id: bytes | None = None,
        allow_unsafe_key: bool = False,
        profile_params: Mapping[str, Mapping[str, str]] | None = None,
    ) -> HsmSigner:
        """Load the module, log in once, find and check the CA key, load the chain (issuing CA first)."""
        try:
            chain = load_chain(ca_chain_path)
            token = open_token(
                TokenSpec(module_path=module_path, token_label=token_label, token_serial=token_serial),
                pin_source,
            )
            try:
                key = CaKey(token, label=key_label, key_id=key_id, allow_unsafe_key=allow_unsafe_key,
                            public_key_hint=chain[0].public_key())  # type: ignore[arg-type]
                issuer = Issuer(key, chain)
                audit_key = _audit_key(token, key_label)
            except BaseException:
                token.close()
                raise
        except HsmError as exc:
            raise to_station_error(exc, step="connect") from exc
        return cls(issuer, token=token, profile_params=profile_params, audit_key=audit_key)

    @property
    def can_sign_checkpoints(self) -> bool:
        """True when the token holds the audit checkpoint key."""
        return self._audit_key is not None

    def sign_checkpoint(self, message: bytes) -> tuple[bytes, bytes]:
        """Sign an audit checkpoint in the token with the audit key (never the CA key).

        Returns the ECDSA signature (DER) over SHA-256 of ``message`` and the key's
        SubjectPublicKeyInfo (DER). Raises :class:`SigningFailed` when the token has no audit key.
        """
        key = self._audit_key
        if key is None:
            raise SigningFailed("the token has no audit checkpoint key (create it with "
                                "`station ca audit-key`)", code="no_checkpoint_key")
        try:
            signature = key.sign_digest(hashlib.sha256(message).digest(), "sha256")
        except HsmError as exc:
            raise to_station_error(exc, step="checkpoint") from exc
        return signature, key.public_key_der

    def close(self) -> None:
        """Release the shared token session (the last user logs out)."""
        if self._token is not None:
            self._token.close()
            self._token = None

    def profile(self, name: str) -> Profile:
        """The named profile, loaded once (built-in name or path)."""
        name = name or DEFAULT_PROFILE
        with self._lock:
            cached = self._profiles.get(name)
        if cached is not None:
            return cached
        try:
            loaded = load_profile(name)
        except HsmError as exc:
            raise to_station_error(exc, step="pre_issuance") from exc
        with self._lock:
            self._profiles[name] = loaded
        return loaded

    def key_types(self, work_order: WorkOrder) -> Sequence[KeyType]:
        """Key types the profile allows that a device can generate, most preferred first."""
        allowed = self.profile(work_order.profile).allowed_keys
        return [_KEY_TYPES[k] for k in allowed if k in _KEY_TYPES]

    @staticmethod
    def _identity(device: DeviceInfo, work_order: WorkOrder, unit_serial: str) -> Identity:
        return Identity(
            unit_serial=unit_serial, hardware_id=device.hardware_id, product=work_order.product,
            work_order=work_order.number, vendor=device.vendor, model=device.model,
        )

    def subject_for(self, *, device: DeviceInfo, work_order: WorkOrder, unit_serial: str) -> SubjectRequest:
        """CN = unit serial, serialNumber = hardware id, O from the profile (or as the profile says)."""
        profile = self.profile(work_order.profile)
        try:
            fields = self._issuer.subject_fields(profile, self._identity(device, work_order, unit_serial))
        except HsmError as exc:
            raise to_station_error(exc, step="get_csr") from exc
        return SubjectRequest(
            common_name=fields.common_name,
            serial_number=fields.serial_number,
            organization=fields.organization,
        )

    def prepare(
        self,
        *,
        csr_der: bytes,
        nonce: bytes,
        device: DeviceInfo,
        work_order: WorkOrder,
        unit_serial: str,
        is_key_known: Callable[[str], bool] | None = None,
    ) -> PreparedCertificate:
        """Pre-issuance checks and the TBS certificate; nothing is signed. Raises CsrRejected."""
        profile = self.profile(work_order.profile)
        try:
            prepared = self._issuer.prepare(
                csr_der,
                profile=profile,
                identity=self._identity(device, work_order, unit_serial),
                nonce=nonce,
                is_key_known=is_key_known,
                matter_params=self._params.get(profile.name),
            )
        except HsmError as exc:
            raise to_station_error(exc, step="pre_issuance") from exc
        return PreparedCertificate(
            serial=prepared.serial,
            tbs_der=prepared.tbs_der,
            tbs_sha256=prepared.tbs_sha256,
            public_key_sha256=prepared.public_key_sha256,
            profile=prepared.profile,
            subject=prepared.subject,
            not_after=prepared.not_after,
        )

    def sign(self, prepared: PreparedCertificate) -> bytes:
        """Sign exactly ``prepared.tbs_der`` in the HSM, verify in software, return the certificate DER."""
        if hashlib.sha256(prepared.tbs_der).hexdigest() != prepared.tbs_sha256:
            raise SigningFailed("the to-be-signed bytes do not match their recorded hash", step="sign")
        try:
            return self._issuer.sign(prepared.tbs_der)
        except HsmError as exc:
            raise to_station_error(exc, step="sign") from exc

    def sign_crl(self, revoked: list[Revoked], *, days: int = 7) -> bytes:
        """A CRL (DER) of ``revoked``, signed in the HSM by the issuing CA key."""
        try:
            crl = signed_crl(self._issuer.ca_key, self._issuer.chain[0], revoked, days=days)
        except HsmError as exc:
            raise to_station_error(exc, step="crl") from exc
        return crl.public_bytes(serialization.Encoding.DER)

    def chain(self) -> Sequence[bytes]:
        """The CA chain (DER), issuing CA first."""
        return [c.public_bytes(serialization.Encoding.DER) for c in self._issuer.chain]

    def __repr__(self) -> str:
        key: Any = self._issuer.ca_key
        return f"HsmSigner(key={key.describe()}, token={key.token.label!r})"


def _audit_key(token: TokenSession, ca_key_label: str | None) -> CaKey | None:
    """The audit checkpoint key next to the CA key, checked like it (sensitive, non-extractable)."""
    if ca_key_label is None:
        return None
    try:
        return CaKey(token, label=audit_key_label(ca_key_label))
    except KeyNotFound:
        log.warning("no audit checkpoint key %r in the token: checkpoints are off "
                    "(create it with `station ca audit-key`)", audit_key_label(ca_key_label))
        return None
