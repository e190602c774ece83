"""The template path writes the TBS byte for byte as cryptography's CertificateBuilder would.

The builder (``Issuer.reference_tbs``) is the specification; ``Issuer.build_tbs`` and ``prepare``
fill a per-profile template with the unit's fields (hsm/tbs.py). Every built-in profile, every key
type it allows, P-256 / P-384 / RSA (v1.5 and PSS) CA keys, random subjects, serials and validity.
"""

from __future__ import annotations

import string
from collections.abc import Iterator
from dataclasses import replace
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest
from asn1crypto import core as a1core
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from cryptography.x509.oid import NameOID
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from fixtures.softhsm import TestCa, add_ca_key
from hsm.errors import IssuanceRefused, ProfileError
from hsm.issuer import Identity, Issuer, rfc4514_escape
from hsm.keys import CaKey
from hsm.profile import builtin_profiles, load_profile
from hsm.tbs import TbsTemplate, encoded_size, header, integer, key_identifier, time, tlv
from hsm.token import TokenSession
from tests.hsm.conftest import identity, make_csr

PROFILES = builtin_profiles()
KEYS: dict[str, list[Any]] = {
    "p256": [ec.generate_private_key(ec.SECP256R1()).public_key() for _ in range(3)],
    "p384": [ec.generate_private_key(ec.SECP384R1()).public_key() for _ in range(2)],
    "ed25519": [ed25519.Ed25519PrivateKey.generate().public_key() for _ in range(2)],
    "rsa": [rsa.generate_private_key(65537, 2048).public_key(),
            rsa.generate_private_key(3, 3072).public_key()],
}
# What the subject and SAN templates may be filled with: printable text of any script, no control
# characters, 1..64 characters (the issuer's own rule); lengths cross the 127/128-byte DER boundary.
VALUE = st.text(
    alphabet=st.characters(blacklist_categories=("Cs", "Cc")), min_size=1, max_size=64
)
ASCII_VALUE = st.text(alphabet=string.ascii_letters + string.digits + "-_.:/ #+,;<>\"\\=", min_size=1,
                      max_size=64)
SERIAL = st.integers(min_value=1, max_value=(1 << 159) - 1)
MOMENT = st.datetimes(
    min_value=datetime(1950, 1, 1), max_value=datetime(9999, 12, 31, 23, 59, 59)
).map(lambda d: d.replace(microsecond=0, tzinfo=UTC))
HEX4 = st.text(alphabet="0123456789ABCDEF", min_size=4, max_size=4)
JAN_2030 = datetime(2030, 1, 1, tzinfo=UTC)
JAN_2031 = datetime(2031, 1, 1, tzinfo=UTC)
SETTINGS = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@st.composite
def identities(draw: st.DrawFn) -> Identity:
    return Identity(
        unit_serial=draw(VALUE), hardware_id=draw(st.one_of(ASCII_VALUE, VALUE)),
        product=draw(st.sampled_from(["demo-lamp", "other", ""])), work_order=draw(VALUE),
        vendor=draw(VALUE), model=draw(VALUE),
    )


def both(issuer: Issuer, profile_name: str, ident: Identity, key: Any, serial: int, a: datetime, b: datetime,
         matter: dict[str, str] | None) -> tuple[bytes | Exception, bytes | Exception]:
    """(fast, reference) TBS, or the exception each raised."""
    profile = load_profile(profile_name)
    out: list[bytes | Exception] = []
    for build in (issuer.build_tbs, issuer.reference_tbs):
        try:
            out.append(build(profile, ident, key, serial=serial, not_before=a, not_after=b,
                             matter_params=matter))
        except (ValueError, IssuanceRefused, ProfileError) as exc:
            out.append(exc)
    return out[0], out[1]


def check_equivalent(issuer: Issuer, profile_name: str, ident: Identity, key_choice: int, key_index: int,
                     serial: int, a: datetime, b: datetime, matter: dict[str, str] | None) -> None:
    kinds = load_profile(profile_name).allowed_keys  # every key type the profile allows, no other
    keys = KEYS[kinds[key_choice % len(kinds)]]
    key = keys[key_index % len(keys)]
    fast, reference = both(issuer, profile_name, ident, key, serial, a, b, matter)
    if isinstance(reference, Exception):
        # The builder refuses what the template path refuses: a non-ASCII subjectAltName value
        # (subject_invalid), notAfter before notBefore (lint_failed), or a subject the station's own
        # rules reject (both paths share subject_fields, which raises the same error in both).
        assert isinstance(fast, Exception), (reference, fast)
        if isinstance(fast, IssuanceRefused) and not isinstance(reference, IssuanceRefused):
            assert fast.reason in ("lint_failed", "subject_invalid"), (fast, reference)
            if b >= a:
                assert fast.reason == "subject_invalid", (fast, reference)
        return
    assert not isinstance(fast, Exception), fast
    assert fast == reference


@pytest.mark.parametrize("profile_name", PROFILES)
@SETTINGS
@given(ident=identities(), key_choice=st.integers(0, 3), key_index=st.integers(0, 5),
       serial=SERIAL, a=MOMENT, b=MOMENT,
       matter=st.one_of(st.none(), st.fixed_dictionaries({"vid": HEX4, "pid": HEX4})))
def test_template_equals_builder(issuer: Issuer, profile_name: str, ident: Identity, key_choice: int,
                                 key_index: int, serial: int, a: datetime, b: datetime,
                                 matter: dict[str, str] | None) -> None:
    check_equivalent(issuer, profile_name, ident, key_choice, key_index, serial, a, b, matter)


@pytest.fixture(scope="module")
def other_issuers(softhsm_ca: TestCa) -> Iterator[list[Issuer]]:
    """Issuers on a P-384 CA key and an RSA CA key (PKCS#1 v1.5 and PSS) in the same token."""
    tokens: list[TokenSession] = []
    out = []
    for algorithm in ("P-384", "RSA-2048"):
        ca = add_ca_key(softhsm_ca, f"tbs-{algorithm.lower()}", algorithm=algorithm)
        token = ca.open()
        tokens.append(token)
        out.append(Issuer(CaKey(token, label=ca.key_label), [ca.ca_cert()]))
        if algorithm.startswith("RSA"):
            out.append(Issuer(CaKey(token, label=ca.key_label), [ca.ca_cert()], rsa_pss=True))
    yield out
    for token in tokens:
        token.close()


@pytest.mark.parametrize("profile_name", ["tls-client", "aws-iot"])
@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow,
                                                                 HealthCheck.function_scoped_fixture])
@given(ident=identities(), key_choice=st.integers(0, 3), which=st.integers(0, 2), serial=SERIAL,
       a=MOMENT, b=MOMENT)
def test_template_equals_builder_other_ca_keys(other_issuers: list[Issuer], profile_name: str,
                                               ident: Identity, key_choice: int, which: int, serial: int,
                                               a: datetime, b: datetime) -> None:
    check_equivalent(other_issuers[which], profile_name, ident, key_choice, 0, serial, a, b, None)


@pytest.mark.parametrize("profile_name", PROFILES)
def test_prepared_tbs_equals_builder_end_to_end(issuer: Issuer, profile_name: str, nonce: bytes) -> None:
    """Through prepare (CSR checks, clock, random serial) and sign, for each allowed device key."""
    from cryptography.hazmat.primitives.asymmetric import ed25519 as ed

    profile = load_profile(profile_name)
    makers = {"p256": lambda: ec.generate_private_key(ec.SECP256R1()),
              "p384": lambda: ec.generate_private_key(ec.SECP384R1()),
              "ed25519": ed.Ed25519PrivateKey.generate,
              "rsa": lambda: rsa.generate_private_key(65537, 2048)}
    for n, kind in enumerate(profile.allowed_keys):
        key = makers[kind]()
        ident = identity(n + 40)
        csr = make_csr(key, issuer.subject_fields(profile, ident), nonce)
        prepared = issuer.prepare(csr, profile=profile, identity=ident, nonce=nonce)
        cert = x509.load_der_x509_certificate(issuer.sign(prepared.tbs_der))
        reference = issuer.reference_tbs(
            profile, ident, key.public_key(), serial=cert.serial_number,
            not_before=cert.not_valid_before_utc, not_after=cert.not_valid_after_utc,
        )
        assert prepared.tbs_der == reference
        assert prepared.subject == cert.subject.rfc4514_string()
        assert prepared.not_after == cert.not_valid_after_utc.strftime("%Y-%m-%dT%H:%M:%SZ")
        assert len(cert.public_bytes(serialization.Encoding.DER)) <= prepared.max_der_size


# -- the DER writer ------------------------------------------------------------------------------

@pytest.mark.parametrize("n", [0, 1, 127, 128, 255, 256, 65535, 65536, 1 << 24])
def test_lengths_match_asn1crypto(n: int) -> None:
    content = b"\x00" * n
    assert tlv(0x04, content) == a1core.OctetString(content).dump()
    assert header(0x04, n) + content == tlv(0x04, content)
    assert encoded_size(n) == len(tlv(0x04, content))


@given(st.integers(min_value=0, max_value=1 << 1300))
def test_integer_matches_asn1crypto(value: int) -> None:
    assert integer(value) == a1core.Integer(value).dump()


def test_integer_refuses_negative() -> None:
    with pytest.raises(ValueError):
        integer(-1)


@pytest.mark.parametrize(("moment", "der"), [
    (datetime(2049, 12, 31, 23, 59, 59, tzinfo=UTC), b"\x17\x0d491231235959Z"),
    (datetime(2050, 1, 1, tzinfo=UTC), b"\x18\x0f20500101000000Z"),
    (datetime(1950, 1, 1, tzinfo=UTC), b"\x17\x0d500101000000Z"),
    (datetime(9999, 12, 31, 23, 59, 59, tzinfo=UTC), b"\x18\x0f99991231235959Z"),
])
def test_time_boundaries(moment: datetime, der: bytes) -> None:
    assert time(moment) == der


@pytest.mark.parametrize("moment", [
    datetime(2030, 1, 1, tzinfo=UTC).replace(microsecond=5),  # fractions are never written
    datetime(2030, 1, 1),  # naive
    datetime(2030, 1, 1, tzinfo=UTC).astimezone(timezone(timedelta(hours=2))),
    datetime(1949, 12, 31, tzinfo=UTC),
])
def test_time_refuses(moment: datetime) -> None:
    with pytest.raises(ValueError):
        time(moment)


@pytest.mark.parametrize("kind", sorted(KEYS))
def test_key_identifier_matches_cryptography(kind: str) -> None:
    for key in KEYS[kind]:
        spki = key.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
        assert key_identifier(spki) == x509.SubjectKeyIdentifier.from_public_key(key).digest


@given(st.text(alphabet=st.characters(blacklist_categories=("Cs",)), min_size=0, max_size=30)
       | st.text(alphabet=" #\\\",+;<>=\x00ab", max_size=8))
def test_rfc4514_escape_matches_cryptography(value: str) -> None:
    assume(value)
    expected = x509.NameAttribute(NameOID.ORGANIZATION_NAME, value).rfc4514_string()
    assert "O=" + rfc4514_escape(value) == expected


# -- what the template refuses ------------------------------------------------------------------

def _template_tbs(*, name: x509.Name | None = None, sans_critical: bool = False) -> bytes:
    key = ec.generate_private_key(ec.SECP256R1())
    now = datetime(2030, 1, 1, tzinfo=UTC)
    subject = name or x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "x")])
    cert = (x509.CertificateBuilder().subject_name(subject).issuer_name(subject)
            .public_key(key.public_key()).serial_number(7).not_valid_before(now)
            .not_valid_after(now + timedelta(days=1))
            .add_extension(x509.SubjectAlternativeName([x509.DNSName("a.example")]), critical=sans_critical)
            .sign(key, hashes.SHA256()))
    return cert.tbs_certificate_bytes


def test_split_accepts_a_plain_template_and_refills_it() -> None:
    tbs = _template_tbs()
    template = TbsTemplate.split(tbs)
    assert template.extensions == ("san",)
    cert_fields = x509.load_der_x509_certificate(tlv(0x30, tbs + template.signature_algorithm
                                                     + tlv(0x03, b"\x00\x30\x00")))
    key = cert_fields.public_key()
    spki = key.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    again = template.build(serial=7, not_before=cert_fields.not_valid_before_utc,
                           not_after=cert_fields.not_valid_after_utc, subject=["x"], spki_der=spki,
                           sans=[(0x82, b"a.example")])
    assert again == tbs


def test_split_refuses_what_it_does_not_understand() -> None:
    with pytest.raises(ValueError, match="non-critical"):
        TbsTemplate.split(_template_tbs(sans_critical=True))
    multi = x509.Name([x509.RelativeDistinguishedName([
        x509.NameAttribute(NameOID.COMMON_NAME, "x"), x509.NameAttribute(NameOID.ORGANIZATION_NAME, "y")])])
    with pytest.raises(ValueError, match="multi-valued"):
        TbsTemplate.split(_template_tbs(name=multi))
    bmp = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "x", _type=x509.name._ASN1Type.BMPString)])
    with pytest.raises(ValueError, match="UTF8String"):
        TbsTemplate.split(_template_tbs(name=bmp))
    tbs = _template_tbs()
    for bad in (tbs[:-1], tbs + b"\x00", b"\x31" + tbs[1:]):
        with pytest.raises(ValueError):
            TbsTemplate.split(bad)


def test_build_refuses_mismatched_inputs() -> None:
    template = TbsTemplate.split(_template_tbs())
    spki = ec.generate_private_key(ec.SECP256R1()).public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    now = datetime(2030, 1, 1, tzinfo=UTC)
    ok: dict[str, Any] = {"serial": 1, "not_before": now, "not_after": now, "subject": ["x"],
                          "spki_der": spki, "sans": [(0x82, b"a")]}
    template.build(**ok)
    for change in ({"serial": 0}, {"serial": 1 << 159}, {"subject": []}, {"sans": []},
                   {"not_before": now + timedelta(seconds=1)}):
        with pytest.raises(ValueError):
            template.build(**{**ok, **change})


def test_a_template_that_does_not_refill_identically_is_refused(
    softhsm_ca: TestCa, ca_key: CaKey, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The issuer proves each new template on its own values before any unit uses it."""
    fresh = Issuer(ca_key, [softhsm_ca.ca_cert()])
    real = TbsTemplate.build

    def off_by_one(self: TbsTemplate, **kw: Any) -> bytes:
        return real(self, **{**kw, "serial": kw["serial"] + 1})

    monkeypatch.setattr(TbsTemplate, "build", off_by_one)
    with pytest.raises(ProfileError, match="template"):
        fresh.build_tbs(load_profile("tls-client"), identity(), KEYS["p256"][0], serial=5,
                        not_before=JAN_2030, not_after=JAN_2031)


def test_csr_subject_in_another_order_or_string_type_still_matches(
    issuer: Issuer, device_key: ec.EllipticCurvePrivateKey, nonce: bytes
) -> None:
    """The byte comparison is only a shortcut: attribute order and string types stay free."""
    profile = load_profile("tls-client")
    fields = issuer.subject_fields(profile, identity())
    reordered = list(reversed(fields.attributes()))
    issuer.prepare(make_csr(device_key, reordered, nonce), profile=profile, identity=identity(), nonce=nonce)
    csr = _utf8_csr(device_key, fields.attributes(), nonce)
    issuer.prepare(csr, profile=profile, identity=identity(), nonce=nonce)
    wrong = replace(fields, organization="Other Ltd")
    with pytest.raises(IssuanceRefused) as info:
        issuer.prepare(make_csr(device_key, wrong, nonce), profile=profile, identity=identity(), nonce=nonce)
    assert info.value.reason == "subject_mismatch"


def _utf8_csr(key: ec.EllipticCurvePrivateKey, pairs: list[tuple[str, str]], nonce: bytes) -> bytes:
    name = x509.Name([x509.NameAttribute(x509.ObjectIdentifier(o), v, _type=x509.name._ASN1Type.UTF8String)
                      for o, v in pairs])
    csr = (x509.CertificateSigningRequestBuilder().subject_name(name)
           .add_attribute(x509.oid.AttributeOID.CHALLENGE_PASSWORD, nonce.hex().encode())
           .sign(key, hashes.SHA256()))
    return csr.public_bytes(serialization.Encoding.DER)


@pytest.mark.parametrize(("profile_name", "hardware_id"), [
    ("tls-client", "00A1B2C3D4\u00c9"),  # serialNumber and the SAN
    ("aws-iot", "00A1_B2"),  # '_' is not in PrintableString's alphabet
])
def test_values_their_string_type_cannot_carry_are_refused(
    issuer: Issuer, nonce: bytes, profile_name: str, hardware_id: str
) -> None:
    """cryptography's builder fails on these with a bare ValueError; the station refuses the unit."""
    profile = load_profile(profile_name)
    ident = replace(identity(), hardware_id=hardware_id)
    key = ec.generate_private_key(ec.SECP256R1())
    csr = _utf8_csr(key, issuer.subject_fields(profile, ident).attributes(), nonce)
    with pytest.raises(IssuanceRefused) as info:
        issuer.prepare(csr, profile=profile, identity=ident, nonce=nonce)
    assert info.value.reason == "subject_invalid"
    with pytest.raises(ValueError):
        issuer.reference_tbs(profile, ident, key.public_key(), serial=1,
                             not_before=JAN_2030, not_after=JAN_2031)


def test_not_after_before_not_before_is_a_lint_failure(issuer: Issuer) -> None:
    with pytest.raises(IssuanceRefused) as info:
        issuer.build_tbs(load_profile("tls-client"), identity(), KEYS["p256"][0], serial=1,
                         not_before=JAN_2030 + timedelta(days=1), not_after=JAN_2030)
    assert info.value.reason == "lint_failed"
