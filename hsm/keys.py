"""The CA key in the token, checked before use, and cryptography key objects that sign through it.

:class:`CaKey` finds the issuing key by label or id, reads its attributes and refuses a key that could
have left the token (extractable, not sensitive) or cannot sign, unless ``allow_unsafe_key`` (a
development switch) says otherwise. Signing always hashes on the host and hands the token a digest:
``CKM_ECDSA`` (SoftHSM has no ``CKM_ECDSA_SHA256``), ``CKM_RSA_PKCS`` over a DigestInfo, or
``CKM_RSA_PKCS_PSS``, which every module we target offers.

:class:`HsmEcPrivateKey` / :class:`HsmRsaPrivateKey` are cryptography private keys whose ``sign()``
runs in the token, so ``CertificateBuilder``, ``CertificateSigningRequestBuilder`` and
``CertificateRevocationListBuilder`` do all X.509 work. :func:`capture_key` returns a look-alike that
signs nothing, for building to-be-signed bytes before the real signature (the two-phase path).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any, Final, NoReturn, Self

from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa, utils
from pkcs11 import MGF, Attribute, KeyType, Mechanism, ObjectClass
from pkcs11.util.ec import encode_ec_public_key, encode_named_curve_parameters

from hsm.der import encode_rs, raw_to_der
from hsm.errors import HsmConfigError, HsmOperationFailed, KeyNotFound, KeyPolicyViolation
from hsm.token import TokenSession

log = logging.getLogger(__name__)

AUDIT_KEY_SUFFIX: Final = "-audit"
"""The audit checkpoint key sits next to the CA key in the token, labelled ``<CA key label>-audit``.

A separate key: the CA key only ever signs certificates (a checkpoint signed by it would be a
signature of the CA over bytes that are not a certificate), and the audit key can be rotated or
kept on another token without touching the CA."""


def audit_key_label(ca_key_label: str) -> str:
    """The label of the audit checkpoint key that belongs to this CA key."""
    return f"{ca_key_label}{AUDIT_KEY_SUFFIX}"

CURVES: Final[dict[str, tuple[str, ec.EllipticCurve]]] = {
    "P-256": ("secp256r1", ec.SECP256R1()),
    "P-384": ("secp384r1", ec.SECP384R1()),
}
"""Curves the CA key may use: name -> (asn1crypto curve name, cryptography curve)."""

_DIGEST_INFO_PREFIX: Final[dict[str, bytes]] = {
    "sha256": bytes.fromhex("3031300d060960864801650304020105000420"),
    "sha384": bytes.fromhex("3041300d060960864801650304020205000430"),
    "sha512": bytes.fromhex("3051300d060960864801650304020305000440"),
}
"""DER DigestInfo headers (RFC 8017 section 9.2, note 1) for PKCS#1 v1.5 over a host-made digest."""

_PSS_PARAMS: Final[dict[str, tuple[Mechanism, MGF]]] = {
    "sha256": (Mechanism.SHA256, MGF.SHA256),
    "sha384": (Mechanism.SHA384, MGF.SHA384),
    "sha512": (Mechanism.SHA512, MGF.SHA512),
}

PublicKey = ec.EllipticCurvePublicKey | rsa.RSAPublicKey
SignHash = hashes.SHA256 | hashes.SHA384 | hashes.SHA512
"""The hashes certificates are signed with (what CertificateBuilder.sign accepts, minus SHA-224/SHA-3)."""


def default_hash(public_key: PublicKey) -> SignHash:
    """The hash that matches the key's strength: SHA-384 for P-384, SHA-256 otherwise."""
    if isinstance(public_key, ec.EllipticCurvePublicKey) and public_key.key_size >= 384:
        return hashes.SHA384()
    return hashes.SHA256()


@dataclass(frozen=True, kw_only=True)
class KeyAttributes:
    """The safety-relevant attributes of the CA private key, as the token reports them."""

    private: bool
    sensitive: bool
    extractable: bool
    sign: bool
    always_sensitive: bool | None
    never_extractable: bool | None

    def violations(self) -> list[tuple[str, str]]:
        """(code, sentence) for each rule the key breaks; empty when it is fit to be a CA key."""
        out: list[tuple[str, str]] = []
        if self.extractable:
            out.append(("key_extractable", "the CA key is extractable (CKA_EXTRACTABLE=true)"))
        if not self.sensitive:
            out.append(("key_not_sensitive", "the CA key is not sensitive (CKA_SENSITIVE=false)"))
        if not self.private:
            out.append(("key_not_private", "the CA key is not private (CKA_PRIVATE=false)"))
        return out


def _read_bool(obj: Any, attr: Attribute) -> bool | None:
    try:
        return bool(obj[attr])
    except Exception:  # some modules do not report ALWAYS_SENSITIVE etc.; None means unknown
        return None


class CaKey:
    """The issuing CA's private key in the token, located by label or id and checked once.

    ``public_key`` comes from the token's public-key object with the same label/id or, when a module
    keeps only the private key, from ``public_key_hint`` (the CA certificate's key).
    """

    def __init__(
        self,
        token: TokenSession,
        *,
        label: str | None = None,
        key_id: bytes | None = None,
        allow_unsafe_key: bool = False,
        public_key_hint: PublicKey | None = None,
    ) -> None:
        if label is None and key_id is None:
            raise HsmConfigError("choose the CA key by label or by id")
        self.token = token
        self.label = label
        self.key_id = key_id
        self._cache: tuple[int, Any] | None = None
        self.key_type, self.attributes, self.public_key = token.run(
            lambda s: self._inspect(s, public_key_hint), action="find_key"
        )
        self._check_policy(allow_unsafe_key)

    def describe(self) -> str:
        return f"label={self.label!r}" if self.label is not None else f"id={self.key_id!r}"

    def _search(self, object_class: ObjectClass) -> dict[Attribute, Any]:
        attrs: dict[Attribute, Any] = {Attribute.CLASS: object_class}
        if self.label is not None:
            attrs[Attribute.LABEL] = self.label
        if self.key_id is not None:
            attrs[Attribute.ID] = self.key_id
        return attrs

    def _private(self, session: Any) -> Any:
        """The private key object for this session (re-found after a session is re-opened)."""
        if self._cache is not None and self._cache[0] == self.token.generation:
            return self._cache[1]
        found = list(session.get_objects(self._search(ObjectClass.PRIVATE_KEY)))
        if len(found) != 1:
            raise KeyNotFound(
                "no CA private key matches" if not found else "more than one CA private key matches",
                key=self.describe(),
                token=self.token.label,
            )
        self._cache = (self.token.generation, found[0])
        return found[0]

    def _inspect(self, session: Any, hint: PublicKey | None) -> tuple[str, KeyAttributes, PublicKey]:
        priv = self._private(session)
        key_type = priv[Attribute.KEY_TYPE]
        attributes = KeyAttributes(
            private=bool(priv[Attribute.PRIVATE]),
            sensitive=bool(priv[Attribute.SENSITIVE]),
            extractable=bool(priv[Attribute.EXTRACTABLE]),
            sign=bool(priv[Attribute.SIGN]),
            always_sensitive=_read_bool(priv, Attribute.ALWAYS_SENSITIVE),
            never_extractable=_read_bool(priv, Attribute.NEVER_EXTRACTABLE),
        )
        public: PublicKey | None = hint
        if key_type == KeyType.EC:
            pubs = list(session.get_objects(self._search(ObjectClass.PUBLIC_KEY)))
            if len(pubs) == 1:
                loaded = serialization.load_der_public_key(encode_ec_public_key(pubs[0]))
                assert isinstance(loaded, ec.EllipticCurvePublicKey)
                public = loaded
            return "ec", attributes, self._need(public, ec.EllipticCurvePublicKey)
        if key_type == KeyType.RSA:
            n = int.from_bytes(priv[Attribute.MODULUS], "big")
            e = int.from_bytes(priv[Attribute.PUBLIC_EXPONENT], "big")
            return "rsa", attributes, rsa.RSAPublicNumbers(e, n).public_key()
        raise KeyPolicyViolation("the CA key is neither EC nor RSA", code="key_type", key=self.describe())

    def _need(self, public: PublicKey | None, kind: type[Any]) -> Any:
        if not isinstance(public, kind):
            raise KeyNotFound(
                "no public key object next to the CA key and no CA certificate to take it from",
                key=self.describe(),
            )
        return public

    def _check_policy(self, allow_unsafe_key: bool) -> None:
        if not self.attributes.sign:
            raise KeyPolicyViolation(
                "the CA key may not sign (CKA_SIGN=false)", code="key_cannot_sign", key=self.describe()
            )
        problems = self.attributes.violations()
        if problems and not allow_unsafe_key:
            raise KeyPolicyViolation(
                "; ".join(p[1] for p in problems) + ": refused (development switch allow_unsafe_key is off)",
                code=problems[0][0],
                key=self.describe(),
                token=self.token.label,
            )
        for code, sentence in problems:
            log.warning("DEVELOPMENT ONLY: using an unsafe CA key (%s): %s", code, sentence)
        if self.attributes.always_sensitive is False or self.attributes.never_extractable is False:
            log.warning("CA key %s was once sensitive=false or extractable=true", self.describe())

    @property
    def public_key_der(self) -> bytes:
        """SubjectPublicKeyInfo DER of the CA key."""
        return self.public_key.public_bytes(
            serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
        )

    def sign_digest(self, digest: bytes, hash_name: str, *, pss: bool = False) -> bytes:
        """Sign a host-made digest in the token; ECDSA returns DER, RSA the raw signature."""
        if self.key_type == "ec":
            raw: bytes = self.token.run(
                lambda s: self._private(s).sign(digest, mechanism=Mechanism.ECDSA), action="sign"
            )
            return raw_to_der(raw)
        if pss:
            hash_mech, mgf = _PSS_PARAMS[hash_name]
            param = (hash_mech, mgf, len(digest))
            out: bytes = self.token.run(
                lambda s: self._private(s).sign(
                    digest, mechanism=Mechanism.RSA_PKCS_PSS, mechanism_param=param
                ),
                action="sign",
            )
            return out
        data = _DIGEST_INFO_PREFIX[hash_name] + digest
        out = self.token.run(
            lambda s: self._private(s).sign(data, mechanism=Mechanism.RSA_PKCS), action="sign"
        )
        return out

    def crypto_key(self) -> HsmEcPrivateKey | HsmRsaPrivateKey:
        """A cryptography private key that signs through this CA key."""
        return HsmEcPrivateKey(self) if self.key_type == "ec" else HsmRsaPrivateKey(self)


def _digest(data: bytes, algorithm: hashes.HashAlgorithm | utils.Prehashed) -> tuple[bytes, str]:
    if isinstance(algorithm, utils.Prehashed):
        return data, algorithm._algorithm.name
    if algorithm.name not in _DIGEST_INFO_PREFIX:
        raise HsmOperationFailed(
            "unsupported hash for HSM signing", code="hash_unsupported", hash=algorithm.name
        )
    h = hashes.Hash(algorithm)
    h.update(data)
    return h.finalize(), algorithm.name


def _no_private_material(*_: object, **__: object) -> NoReturn:
    raise TypeError("the CA private key lives in the HSM and cannot be exported or used for this")


class _PublicOnlyEcKey(ec.EllipticCurvePrivateKey):
    """What every key object here shares: a public half, and no private material to hand out.

    Subclasses say how to ``sign``; ``copy`` returns the same object because builders copy keys.
    """

    def __init__(self, public: ec.EllipticCurvePublicKey) -> None:
        self._public = public

    def public_key(self) -> ec.EllipticCurvePublicKey:
        return self._public

    @property
    def curve(self) -> ec.EllipticCurve:
        return self._public.curve

    @property
    def key_size(self) -> int:
        return self._public.key_size

    exchange = _no_private_material
    private_numbers = _no_private_material
    private_bytes = _no_private_material

    def __copy__(self) -> Self:
        return self

    def __deepcopy__(self, memo: dict[int, object]) -> Self:
        return self


class _PublicOnlyRsaKey(rsa.RSAPrivateKey):
    """RSA counterpart of :class:`_PublicOnlyEcKey`."""

    def __init__(self, public: rsa.RSAPublicKey) -> None:
        self._public = public

    def public_key(self) -> rsa.RSAPublicKey:
        return self._public

    @property
    def key_size(self) -> int:
        return self._public.key_size

    decrypt = _no_private_material
    private_numbers = _no_private_material
    private_bytes = _no_private_material

    def __copy__(self) -> Self:
        return self

    def __deepcopy__(self, memo: dict[int, object]) -> Self:
        return self


class HsmEcPrivateKey(_PublicOnlyEcKey):
    """An EC private key whose sign() hashes on the host and signs the digest in the token."""

    def __init__(self, ca_key: CaKey) -> None:
        assert isinstance(ca_key.public_key, ec.EllipticCurvePublicKey)
        super().__init__(ca_key.public_key)
        self._ca = ca_key

    def sign(
        self, data: bytes | bytearray | memoryview, signature_algorithm: ec.EllipticCurveSignatureAlgorithm
    ) -> bytes:
        if not isinstance(signature_algorithm, ec.ECDSA):
            raise TypeError("only ECDSA")
        digest, name = _digest(bytes(data), signature_algorithm.algorithm)
        return self._ca.sign_digest(digest, name)

    def __repr__(self) -> str:
        return f"HsmEcPrivateKey({self._ca.describe()}, token={self._ca.token.label!r})"


class HsmRsaPrivateKey(_PublicOnlyRsaKey):
    """An RSA private key whose sign() hashes on the host and signs in the token (v1.5 or PSS)."""

    def __init__(self, ca_key: CaKey) -> None:
        assert isinstance(ca_key.public_key, rsa.RSAPublicKey)
        super().__init__(ca_key.public_key)
        self._ca = ca_key

    def sign(
        self,
        data: bytes,
        padding: padding.AsymmetricPadding,
        algorithm: hashes.HashAlgorithm | utils.Prehashed | utils.NoDigestInfo,
    ) -> bytes:
        if isinstance(algorithm, utils.NoDigestInfo):
            raise TypeError("NoDigestInfo signatures are not offered by the HSM key")
        digest, name = _digest(bytes(data), algorithm)
        if padding.name == "EMSA-PSS":
            return self._ca.sign_digest(digest, name, pss=True)
        if padding.name == "EMSA-PKCS1-v1_5":
            return self._ca.sign_digest(digest, name)
        raise TypeError(f"unsupported padding {padding.name}")

    def __repr__(self) -> str:
        return f"HsmRsaPrivateKey({self._ca.describe()}, token={self._ca.token.label!r})"


class _CaptureEcKey(_PublicOnlyEcKey):
    """Signs nothing: returns the longest possible DER signature, so a built certificate's size
    is an upper bound and its ``tbs_certificate_bytes`` are what the HSM will sign later."""

    def __init__(self, public: ec.EllipticCurvePublicKey) -> None:
        super().__init__(public)
        big = (1 << public.key_size) - 1  # top bit set in both: the longest DER encoding
        self._dummy = encode_rs(big, big)

    def sign(
        self, data: bytes | bytearray | memoryview, signature_algorithm: ec.EllipticCurveSignatureAlgorithm
    ) -> bytes:
        return self._dummy


class _CaptureRsaKey(_PublicOnlyRsaKey):
    """RSA look-alike of :class:`_CaptureEcKey`: a zero signature of the key's length."""

    def sign(
        self,
        data: bytes,
        padding: padding.AsymmetricPadding,
        algorithm: hashes.HashAlgorithm | utils.Prehashed | utils.NoDigestInfo,
    ) -> bytes:
        return b"\x00" * ((self._public.key_size + 7) // 8)


def capture_key(public: PublicKey) -> ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey:
    """A key that lets a builder produce TBS bytes for ``public``'s algorithm without signing."""
    if isinstance(public, ec.EllipticCurvePublicKey):
        return _CaptureEcKey(public)
    return _CaptureRsaKey(public)


def generate_ca_key(
    token: TokenSession,
    *,
    label: str,
    key_id: bytes,
    algorithm: str = "P-256",
    extractable: bool = False,
    sensitive: bool = True,
) -> None:
    """Create the CA key pair in the token: private, sensitive, non-extractable, sign-only.

    ``extractable`` / ``sensitive`` exist so tests can make an unsafe key and see it refused.
    ``algorithm`` is ``P-256``, ``P-384`` or ``RSA-<bits>``.
    """
    private_template = {
        Attribute.TOKEN: True,
        Attribute.PRIVATE: True,
        Attribute.SENSITIVE: sensitive,
        Attribute.EXTRACTABLE: extractable,
        Attribute.SIGN: True,
        Attribute.DECRYPT: False,
        Attribute.UNWRAP: False,
        Attribute.DERIVE: False,
    }
    public_template = {Attribute.TOKEN: True, Attribute.VERIFY: True, Attribute.ENCRYPT: False,
                       Attribute.WRAP: False}

    def gen(session: Any) -> None:
        existing = list(session.get_objects({Attribute.LABEL: label}))
        if existing:
            raise HsmConfigError("a key with this label already exists in the token", key=label)
        if algorithm in CURVES:
            params = session.create_domain_parameters(
                KeyType.EC, {Attribute.EC_PARAMS: encode_named_curve_parameters(CURVES[algorithm][0])},
                local=True,
            )
            params.generate_keypair(
                store=True, label=label, id=key_id,
                private_template=private_template, public_template=public_template,
            )
        elif algorithm.startswith("RSA-") and algorithm[4:].isdigit() and int(algorithm[4:]) >= 2048:
            session.generate_keypair(
                KeyType.RSA, int(algorithm[4:]), store=True, label=label, id=key_id,
                private_template=private_template, public_template=public_template,
            )
        else:
            raise HsmConfigError("CA key algorithm must be P-256, P-384 or RSA-<bits >= 2048>",
                                 algorithm=algorithm)
        log.info("generated CA key %r (%s) in token %s", label, algorithm, token.label)

    token.run(gen, action="generate_key")
