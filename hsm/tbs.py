"""A to-be-signed certificate template, built once by cryptography and filled in per unit.

Why: ``CertificateBuilder`` costs about 0.15 ms per certificate (objects for every name, extension and
key, then an encode), most of it spent re-encoding parts that never change for a given profile and
CA. So the fixed parts come from a certificate that cryptography's builder made once (the trusted
encoder), and per unit only the variable fields are written here, by a small DER writer::

    TBSCertificate ::= SEQUENCE {                       RFC 5280 4.1
        [0] EXPLICIT version v3                         template
        serialNumber        INTEGER                     per unit
        signature           AlgorithmIdentifier         template
        issuer              Name                        template
        validity            SEQUENCE { Time, Time }     per unit
        subject             Name                        template: OIDs, order, string tags;
                                                        per unit: the values
        subjectPublicKeyInfo                            per unit (as cryptography encodes it)
        [3] EXPLICIT extensions SEQUENCE OF Extension   template, except SKI and SAN: per unit
    }

:meth:`TbsTemplate.split` refuses any template it does not fully understand (``ValueError``), and the
issuer re-fills each new template with the template's own values and checks the result is
byte-identical before using it. ``tests/hsm/test_tbs.py`` checks, with hypothesis, that a filled
template equals what ``CertificateBuilder`` produces for the same inputs, for every built-in profile.

Times follow RFC 5280 4.1.2.5 as cryptography does: UTCTime through 2049, GeneralizedTime from 2050.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from functools import cached_property, lru_cache
from typing import Final, Literal

SEQUENCE: Final = 0x30
"""DER tag of a SEQUENCE (constructed)."""
SET: Final = 0x31
"""DER tag of a SET (constructed)."""
INTEGER: Final = 0x02
"""DER tag of an INTEGER."""
OCTET_STRING: Final = 0x04
"""DER tag of an OCTET STRING."""
BIT_STRING: Final = 0x03
"""DER tag of a BIT STRING."""
OID: Final = 0x06
"""DER tag of an OBJECT IDENTIFIER."""
UTF8_STRING: Final = 0x0C
"""DER tag of a UTF8String (cryptography's default for most name attributes)."""
PRINTABLE_STRING: Final = 0x13
"""DER tag of a PrintableString (cryptography's default for serialNumber, C, dnQualifier)."""
UTC_TIME: Final = 0x17
"""DER tag of a UTCTime (years 1950-2049)."""
GENERALIZED_TIME: Final = 0x18
"""DER tag of a GeneralizedTime (years from 2050)."""
SAN_URI: Final = 0x86
"""GeneralName uniformResourceIdentifier: [6] IMPLICIT IA5String."""
SAN_DNS: Final = 0x82
"""GeneralName dNSName: [2] IMPLICIT IA5String."""
SAN_EMAIL: Final = 0x81
"""GeneralName rfc822Name: [1] IMPLICIT IA5String."""

_SKI_OID: Final = bytes.fromhex("0603551d0e")
"""OID TLV of id-ce-subjectKeyIdentifier (2.5.29.14)."""
_SAN_OID: Final = bytes.fromhex("0603551d11")
"""OID TLV of id-ce-subjectAltName (2.5.29.17)."""
_SKI_HEADER_20: Final = bytes.fromhex("301d0603551d0e041604 14".replace(" ", ""))
"""Extension SEQUENCE, OID, OCTET STRING wrapping an OCTET STRING of 20 bytes (a SHA-1 key id)."""
_VERSION_V3: Final = bytes.fromhex("a003020102")
"""``[0] EXPLICIT INTEGER 2``: the only version this template writes."""
_STRING_TAGS: Final = frozenset({UTF8_STRING, PRINTABLE_STRING})
"""Name value tags whose content is the value's UTF-8 bytes in cryptography's encoding (checked by
the tests for the attributes the profiles use); any other tag in a template is refused."""
_ZERO: Final = timedelta(0)

_PRINTABLE: Final = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789 '()+,-./:=?")
"""X.680's PrintableString alphabet (cryptography cannot read back a certificate with anything else)."""

Slot = Literal["ski", "san"]
"""A per-unit extension in the template's extension list."""


class NotEncodable(ValueError):
    """A per-unit value that its ASN.1 string type cannot carry (the unit's data, not the template)."""


def header(tag: int, length: int) -> bytes:
    """Tag and definite length (short form below 128, else the minimal long form)."""
    if length < 0x80:
        return bytes((tag, length))
    size = length.to_bytes((length.bit_length() + 7) // 8, "big")
    return bytes((tag, 0x80 | len(size))) + size


def tlv(tag: int, content: bytes) -> bytes:
    """One DER element."""
    n = len(content)
    if n < 0x80:
        return bytes((tag, n)) + content
    return header(tag, n) + content


def encoded_size(content_length: int) -> int:
    """Length of a DER element (tag, length, content) whose content has ``content_length`` bytes."""
    if content_length < 0x80:
        return 2 + content_length
    return 2 + (content_length.bit_length() + 7) // 8 + content_length


def integer(value: int) -> bytes:
    """A non-negative DER INTEGER: minimal, with a leading 00 when the top bit would be set."""
    if value < 0:
        raise ValueError("only non-negative integers are written here")
    return tlv(INTEGER, value.to_bytes(value.bit_length() // 8 + 1, "big"))


def time(moment: datetime) -> bytes:
    """RFC 5280 Time for a UTC moment with whole seconds: UTCTime before 2050, else GeneralizedTime."""
    if moment.utcoffset() != _ZERO or moment.microsecond:
        raise ValueError("certificate times are UTC with whole seconds")
    return _time_utc(moment)


@lru_cache(maxsize=16)
def _time_utc(moment: datetime) -> bytes:
    """:func:`time` once checked; cached, as a line issues many units within the same second."""
    year = moment.year
    rest = f"{moment.month:02d}{moment.day:02d}{moment.hour:02d}{moment.minute:02d}{moment.second:02d}Z"
    if year >= 2050:
        return tlv(GENERALIZED_TIME, f"{year:04d}{rest}".encode("ascii"))
    if year < 1950:
        raise ValueError("RFC 5280 has no encoding chosen for years before 1950")
    return tlv(UTC_TIME, f"{year % 100:02d}{rest}".encode("ascii"))


def read(data: bytes, offset: int, limit: int | None = None) -> tuple[int, int, int]:
    """(tag, content start, end) of the DER element at ``offset``; definite lengths, low tags only.

    ``limit`` is where the enclosing element ends. Raises ``ValueError`` on anything malformed.
    """
    limit = len(data) if limit is None else limit
    if offset + 2 > limit:
        raise ValueError("DER element truncated")
    tag, first = data[offset], data[offset + 1]
    if tag & 0x1F == 0x1F:
        raise ValueError("high-tag-number form is not used in certificates")
    start = offset + 2
    if first < 0x80:
        length = first
    else:
        count = first & 0x7F
        if not 1 <= count <= 4 or start + count > limit:
            raise ValueError("bad DER length")
        length = int.from_bytes(data[start:start + count], "big")
        if length < 0x80 or data[start] == 0:
            raise ValueError("DER length not minimal")
        start += count
    end = start + length
    if end > limit:
        raise ValueError("DER element truncated")
    return tag, start, end


def children(data: bytes, start: int, end: int) -> list[tuple[int, int, int, int]]:
    """(tag, element start, content start, end) of each element in ``data[start:end]``."""
    out = []
    offset = start
    while offset < end:
        tag, content, after = read(data, offset, end)
        out.append((tag, offset, content, after))
        offset = after
    return out


def key_identifier(spki_der: bytes) -> bytes:
    """RFC 5280 4.2.1.2 method 1: SHA-1 of the subjectPublicKey BIT STRING's bits (what cryptography's
    ``SubjectKeyIdentifier.from_public_key`` computes), read from a SubjectPublicKeyInfo."""
    tag, start, end = read(spki_der, 0)
    if tag != SEQUENCE or end != len(spki_der):
        raise ValueError("not a SubjectPublicKeyInfo")
    tag, _, algorithm_end = read(spki_der, start, end)
    bits_tag, content, bits_end = read(spki_der, algorithm_end, end)
    if tag != SEQUENCE or bits_tag != BIT_STRING or bits_end != end:
        raise ValueError("not a SubjectPublicKeyInfo")
    if content >= bits_end or spki_der[content] != 0:
        raise ValueError("subjectPublicKey has unused bits")
    return hashlib.sha1(spki_der[content + 1:bits_end], usedforsecurity=False).digest()


def ski_extension(key_id: bytes) -> bytes:
    """The non-critical subjectKeyIdentifier Extension for ``key_id``."""
    if len(key_id) == 20:  # SHA-1: a fixed header
        return _SKI_HEADER_20 + key_id
    return tlv(SEQUENCE, _SKI_OID + tlv(OCTET_STRING, tlv(OCTET_STRING, key_id)))


def san_extension(names: Sequence[tuple[int, bytes]]) -> bytes:
    """The non-critical subjectAltName Extension for (GeneralName tag, IA5 bytes) pairs."""
    general_names = b"".join([tlv(tag, value) for tag, value in names])
    return tlv(SEQUENCE, _SAN_OID + tlv(OCTET_STRING, tlv(SEQUENCE, general_names)))


@dataclass(frozen=True, kw_only=True)
class NameSlot:
    """One subject attribute of the template: its OID (as a DER TLV) and the string tag for its value."""

    oid_der: bytes
    tag: int

    def encode(self, value: str) -> bytes:
        """The RDN ``SET { SEQUENCE { oid, value } }`` for one value; NotEncodable if the type cannot
        carry it (a PrintableString outside its alphabet, a lone surrogate)."""
        if self.tag == PRINTABLE_STRING and not _PRINTABLE.issuperset(value):
            raise NotEncodable("value has characters a PrintableString cannot carry")
        try:
            data = value.encode("utf-8")
        except UnicodeEncodeError:
            raise NotEncodable("value is not valid Unicode") from None
        n = len(data)
        inner = len(self.oid_der) + 2 + n
        if inner < 0x7E:  # all three lengths in short form: the common case, written in one go
            return bytes((SET, inner + 2, SEQUENCE, inner)) + self.oid_der + bytes((self.tag, n)) + data
        return tlv(SET, tlv(SEQUENCE, self.oid_der + tlv(self.tag, data)))


@dataclass(frozen=True, kw_only=True)
class TbsTemplate:
    """The fixed parts of one profile's TBS certificate for one CA, and where the per-unit parts go."""

    signature_algorithm: bytes
    """The AlgorithmIdentifier DER; the certificate repeats it after the TBS."""
    issuer: bytes
    """The issuer Name DER, as cryptography encoded the CA certificate's subject."""
    subject: tuple[NameSlot, ...]
    """The subject attributes in certificate order, one per RDN."""
    extensions: tuple[bytes | Slot, ...]
    """Each Extension's DER in order; ``"ski"`` and ``"san"`` mark the per-unit ones."""

    @classmethod
    def split(cls, tbs_der: bytes) -> TbsTemplate:
        """Cut a TBS certificate made by cryptography's builder into fixed parts and slots."""
        tag, start, end = read(tbs_der, 0)
        if tag != SEQUENCE or end != len(tbs_der):
            raise ValueError("template TBS is not one SEQUENCE")
        fields = children(tbs_der, start, end)
        tags = [f[0] for f in fields]
        if tags != [0xA0, INTEGER, SEQUENCE, SEQUENCE, SEQUENCE, SEQUENCE, SEQUENCE, 0xA3]:
            raise ValueError(f"template TBS has an unexpected layout {tags}")
        if tbs_der[fields[0][1]:fields[0][3]] != _VERSION_V3:
            raise ValueError("template TBS is not version 3")

        def whole(i: int) -> bytes:
            return tbs_der[fields[i][1]:fields[i][3]]

        return cls(
            signature_algorithm=whole(2),
            issuer=whole(3),
            subject=cls._split_name(tbs_der, fields[5][2], fields[5][3]),
            extensions=cls._split_extensions(tbs_der, fields[7][2], fields[7][3]),
        )

    @staticmethod
    def _split_name(der: bytes, start: int, end: int) -> tuple[NameSlot, ...]:
        slots = []
        for tag, _, content, after in children(der, start, end):
            rdn = children(der, content, after)
            if tag != SET or len(rdn) != 1 or rdn[0][0] != SEQUENCE:
                raise ValueError("template subject has a multi-valued or malformed RDN")
            pair = children(der, rdn[0][2], rdn[0][3])
            if len(pair) != 2 or pair[0][0] != OID or pair[1][0] not in _STRING_TAGS:
                raise ValueError("template subject attribute is not OID + UTF8String/PrintableString")
            slots.append(NameSlot(oid_der=der[pair[0][1]:pair[0][3]], tag=pair[1][0]))
        return tuple(slots)

    @staticmethod
    def _split_extensions(der: bytes, start: int, end: int) -> tuple[bytes | Slot, ...]:
        outer = children(der, start, end)
        if len(outer) != 1 or outer[0][0] != SEQUENCE:
            raise ValueError("template extensions are not one SEQUENCE")
        out: list[bytes | Slot] = []
        for tag, begin, content, after in children(der, outer[0][2], outer[0][3]):
            parts = children(der, content, after)
            if tag != SEQUENCE or not parts or parts[0][0] != OID:
                raise ValueError("template extension is malformed")
            oid = der[parts[0][1]:parts[0][3]]
            if oid in (_SKI_OID, _SAN_OID):
                if len(parts) != 2:  # a critical flag would make it three
                    raise ValueError("per-unit extensions must be non-critical")
                slot: Slot = "ski" if oid == _SKI_OID else "san"
                if slot in out:
                    raise ValueError("template extension appears twice")
                out.append(slot)
            else:
                out.append(der[begin:after])
        return tuple(out)

    def rdns(self, values: Sequence[str]) -> list[bytes]:
        """The encoded RDN for each subject value, one per :attr:`subject` slot, in order."""
        if len(values) != len(self.subject):
            raise ValueError("subject values do not match the template's attributes")
        return [slot.encode(value) for slot, value in zip(self.subject, values, strict=True)]

    def build(
        self,
        *,
        serial: int,
        not_before: datetime,
        not_after: datetime,
        subject: Sequence[str],
        spki_der: bytes,
        sans: Sequence[tuple[int, bytes]] = (),
    ) -> bytes:
        """The TBS DER for one unit. ``subject`` holds one value per :attr:`subject` slot, in order."""
        return self.assemble(serial=serial, not_before=not_before, not_after=not_after,
                             rdns=self.rdns(subject), spki_der=spki_der, sans=sans)

    def assemble(
        self,
        *,
        serial: int,
        not_before: datetime,
        not_after: datetime,
        rdns: Sequence[bytes],
        spki_der: bytes,
        sans: Sequence[tuple[int, bytes]] = (),
    ) -> bytes:
        """:meth:`build` with the subject already encoded by :meth:`rdns` (the issuer compares those
        same bytes with the CSR's subject first)."""
        if len(rdns) != len(self.subject):
            raise ValueError("subject values do not match the template's attributes")
        if not 0 < serial < (1 << 159):
            raise ValueError("serial must be positive and at most 20 octets")
        if not_after < not_before:
            raise ValueError("notAfter is before notBefore")
        if bool(sans) != ("san" in self.extensions):
            raise ValueError("subjectAltName names given for a template without one, or none for one with")
        exts = []
        for part in self.extensions:
            if part.__class__ is bytes:
                exts.append(part)
            elif part == "ski":
                exts.append(ski_extension(key_identifier(spki_der)))
            else:
                exts.append(san_extension(sans))
        serial_bytes = serial.to_bytes(serial.bit_length() // 8 + 1, "big")  # < 2**159: at most 20
        validity = time(not_before) + time(not_after)  # at most 34 bytes
        name = b"".join(rdns)
        extensions = b"".join(exts)
        body = b"".join((
            _VERSION_V3, bytes((INTEGER, len(serial_bytes))), serial_bytes, self._issuer_part,
            bytes((SEQUENCE, len(validity))), validity, header(SEQUENCE, len(name)), name, spki_der,
            header(0xA3, encoded_size(len(extensions))), header(SEQUENCE, len(extensions)), extensions,
        ))
        return header(SEQUENCE, len(body)) + body

    @cached_property
    def _issuer_part(self) -> bytes:
        """The signature algorithm and issuer, which always follow the serial."""
        return self.signature_algorithm + self.issuer
