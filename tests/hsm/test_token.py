"""Login, PIN hygiene, CA key attribute policy, concurrency and lost-session recovery on real SoftHSM."""

from __future__ import annotations

import logging
import os
import threading
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec
from pkcs11 import exceptions as p11x

from fixtures.softhsm import TestCa, add_ca_key, add_token
from hsm.errors import (
    KeyPolicyViolation,
    LoginFailed,
    ModuleLoadFailed,
    PinSourceError,
    SessionLost,
    TokenNotFound,
)
from hsm.issuer import Issuer
from hsm.keys import CaKey
from hsm.pin import EnvPin, FilePin, FixedPin, Pin
from hsm.profile import load_profile
from hsm.token import TokenSession, TokenSpec, open_token
from station.signing import HsmSigner
from tests.hsm.conftest import identity, make_csr


def test_wrong_pin_says_tries_left_and_never_shows_pin(
    softhsm_ca: TestCa, caplog: pytest.LogCaptureFixture, nonce: bytes
) -> None:
    caplog.set_level(logging.DEBUG)
    other = add_token(softhsm_ca, "pin-test")
    wrong = "wrong-" + other.pin
    with pytest.raises(LoginFailed) as info:
        open_token(other.token_spec, FixedPin(Pin(wrong)))
    err = info.value
    assert err.tries_left == "low"  # SoftHSM sets CKF_USER_PIN_COUNT_LOW after a failed login
    assert "wrong PIN" in str(err) and "tries" in str(err)
    # A correct PIN still works (one attempt was made, not a loop), and the flags say so.
    token = open_token(other.token_spec, other.pin_source())
    token.close()
    for text in (str(err), repr(err), repr(info.value.__cause__), str(err.context)):
        assert other.pin not in text and wrong not in text
    # logs of a whole issuing run at DEBUG carry no PIN either
    signer = HsmSigner.open(
        module_path=softhsm_ca.module_path,
        token_label=softhsm_ca.token_label,
        pin_source=softhsm_ca.pin_source(),
        key_label=softhsm_ca.key_label,
        ca_chain_path=softhsm_ca.ca_dir / "chain.pem",
    )
    assert softhsm_ca.pin not in repr(signer) and softhsm_ca.pin not in repr(softhsm_ca)
    signer.close()
    everything = caplog.text + " ".join(str(r.args) for r in caplog.records)
    assert caplog.records  # something was logged
    for pin in (other.pin, wrong, softhsm_ca.pin):
        assert pin not in everything


def test_shared_session_still_checks_pin(softhsm_ca: TestCa, token: TokenSession) -> None:
    with pytest.raises(LoginFailed) as info:
        open_token(softhsm_ca.token_spec, FixedPin(Pin("0000")))
    assert "0000" not in str(info.value)


def test_pin_object_is_masked() -> None:
    pin = Pin("s3cret-pin")
    assert "s3cret" not in repr(pin) and "s3cret" not in str(pin) and "s3cret" not in f"{pin}"
    assert "s3cret" not in repr(FixedPin(pin))


def test_pin_sources(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TEST_HSM_PIN", "from-env")
    assert EnvPin("TEST_HSM_PIN").read().reveal() == "from-env"
    with pytest.raises(PinSourceError):
        EnvPin("TEST_HSM_PIN_UNSET").read()
    f = tmp_path / "pin"
    f.write_text("from-file\n")
    os.chmod(f, 0o600)
    assert FilePin(f).read().reveal() == "from-file"
    for mode in (0o640, 0o604, 0o644):
        os.chmod(f, mode)
        with pytest.raises(PinSourceError) as info:
            FilePin(f).read()
        assert "from-file" not in str(info.value)
    with pytest.raises(PinSourceError):
        FilePin(tmp_path / "missing").read()


def test_token_and_module_errors(softhsm_ca: TestCa) -> None:
    with pytest.raises(TokenNotFound):
        open_token(
            TokenSpec(module_path=softhsm_ca.module_path, token_label="no-such-token"),
            softhsm_ca.pin_source(),
        )
    with pytest.raises(ModuleLoadFailed):
        open_token(
            TokenSpec(module_path="/nonexistent/libpkcs11.so", token_label="x"), softhsm_ca.pin_source()
        )


@pytest.mark.parametrize(
    ("extractable", "sensitive", "code"),
    [(True, True, "key_extractable"), (False, False, "key_not_sensitive")],
)
def test_unsafe_ca_key_refused(
    softhsm_ca: TestCa, token: TokenSession, extractable: bool, sensitive: bool, code: str
) -> None:
    ca = add_ca_key(softhsm_ca, f"unsafe-{code}", extractable=extractable, sensitive=sensitive)
    with pytest.raises(KeyPolicyViolation) as info:
        CaKey(token, label=ca.key_label)
    assert info.value.code == code
    key = CaKey(token, label=ca.key_label, allow_unsafe_key=True)  # the explicit development switch
    assert key.attributes.extractable is extractable


def test_safe_ca_key_attributes(ca_key: CaKey) -> None:
    a = ca_key.attributes
    assert (a.private, a.sensitive, a.extractable, a.sign) == (True, True, False, True)


def test_ca_certificate_not_matching_key_is_caught(
    softhsm_ca: TestCa, token: TokenSession, fresh_ca_key: TestCa, nonce: bytes
) -> None:
    """A swapped key (the chain says one CA, the HSM signs with another): verify-after refuses."""
    swapped = Issuer(CaKey(token, label=fresh_ca_key.key_label), [softhsm_ca.ca_cert()])
    from hsm.errors import CertificateCheckFailed

    profile = load_profile("tls-client")
    csr = make_csr(
        ec.generate_private_key(ec.SECP256R1()), swapped.subject_fields(profile, identity()), nonce
    )
    prepared = swapped.prepare(csr, profile=profile, identity=identity(), nonce=nonce)
    with pytest.raises(CertificateCheckFailed):
        swapped.sign(prepared.tbs_der)


def test_concurrent_signing_8_threads(issuer: Issuer, softhsm_ca: TestCa) -> None:
    profile = load_profile("tls-client")
    per_thread = 25
    results: list[bytes] = []
    errors: list[BaseException] = []
    lock = threading.Lock()
    barrier = threading.Barrier(8)

    def worker(t: int) -> None:
        try:
            barrier.wait()
            for i in range(per_thread):
                n = t * 1000 + i
                ident = identity(n)
                nonce = os.urandom(16)
                csr = make_csr(
                    ec.generate_private_key(ec.SECP256R1()), issuer.subject_fields(profile, ident), nonce
                )
                prepared = issuer.prepare(csr, profile=profile, identity=ident, nonce=nonce)
                der = issuer.sign(prepared.tbs_der)
                with lock:
                    results.append(der)
        except BaseException as exc:  # collected and asserted below
            errors.append(exc)

    threads = [threading.Thread(target=worker, args=(t,)) for t in range(8)]
    for th in threads:
        th.start()
    for th in threads:
        th.join(60)
    assert not errors, errors
    assert len(results) == 8 * per_thread
    certs = [x509.load_der_x509_certificate(d) for d in results]
    ca = softhsm_ca.ca_cert()
    for c in certs:
        c.verify_directly_issued_by(ca)
    assert len({c.serial_number for c in certs}) == len(certs)
    assert len({c.public_key().public_bytes(*_spki()) for c in certs}) == len(certs)


def _spki() -> Any:
    from cryptography.hazmat.primitives import serialization

    return serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo


def test_lost_session_reopens_once(
    issuer: Issuer, token: TokenSession, softhsm_ca: TestCa, nonce: bytes, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    profile = load_profile("tls-client")
    before = token.generation
    token._session.close()  # behind the signer's back: closes the session and logs the application out
    csr = make_csr(ec.generate_private_key(ec.SECP256R1()), issuer.subject_fields(profile, identity()), nonce)
    prepared = issuer.prepare(csr, profile=profile, identity=identity(), nonce=nonce)
    cert = x509.load_der_x509_certificate(issuer.sign(prepared.tbs_der))
    cert.verify_directly_issued_by(softhsm_ca.ca_cert())
    assert token.generation == before + 1
    assert "re-opening once" in caplog.text
    assert softhsm_ca.pin not in caplog.text


def test_session_lost_twice_is_a_clear_error(token: TokenSession) -> None:
    calls: list[int] = []

    def always_lost(session: Any) -> None:
        calls.append(1)
        raise p11x.SessionHandleInvalid()

    with pytest.raises(SessionLost) as info:
        token.run(always_lost, action="sign")
    assert len(calls) == 2
    assert "re-opening it once did not help" in str(info.value)
    token.run(lambda s: s.get_objects(), action="probe")  # and the next call works again
