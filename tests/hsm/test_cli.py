"""``station ca ...`` through argparse, against the session's SoftHSM token."""

from __future__ import annotations

import argparse
from pathlib import Path

import pytest
from cryptography import x509

from fixtures.softhsm import TestCa
from hsm import cli


def run(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="station")
    sub = parser.add_subparsers(dest="command", required=True)
    cli.register(sub)
    args = parser.parse_args(argv)
    code: int = args.func(args)
    return code


def test_ca_init_status_csr_import(
    softhsm_ca: TestCa, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("CLI_TEST_PIN", softhsm_ca.pin)
    common = ["--token-label", softhsm_ca.token_label, "--pin", "env:CLI_TEST_PIN"]
    ca_dir = tmp_path / "ca"
    assert (
        run(
            [
                "ca",
                "init",
                *common,
                "--key-label",
                "cli-root",
                "--ca-dir",
                str(ca_dir),
                "--subject",
                "CN=CLI Test CA,O=Example",
                "--self-signed",
            ]
        )
        == 0
    )
    assert run(["ca", "status", *common, "--key-label", "cli-root", "--ca-dir", str(ca_dir)]) == 0
    out = capsys.readouterr().out
    assert "extractable: False" in out and "days_to_expiry" in out and "matches_key: True" in out
    assert "audit_checkpoint_key: present" in out
    assert softhsm_ca.pin not in out

    csr_path = tmp_path / "sub.csr"
    assert (
        run(
            [
                "ca",
                "init",
                *common,
                "--key-label",
                "cli-sub",
                "--ca-dir",
                str(tmp_path / "sub"),
                "--subject",
                "CN=CLI Sub CA",
                "--csr-out",
                str(csr_path),
            ]
        )
        == 0
    )
    csr = x509.load_pem_x509_csr(csr_path.read_bytes())
    assert csr.is_signature_valid
    assert (
        run(
            [
                "ca",
                "csr",
                *common,
                "--key-label",
                "cli-sub",
                "--ca-dir",
                str(tmp_path / "sub"),
                "--subject",
                "CN=CLI Sub CA",
                "--out",
                str(tmp_path / "again.csr"),
            ]
        )
        == 0
    )

    # importing the wrong chain for a key is refused; the right one is stored (and in the token)
    assert (
        run(
            [
                "ca",
                "import-chain",
                *common,
                "--key-label",
                "cli-sub",
                "--ca-dir",
                str(tmp_path / "sub"),
                str(ca_dir / "chain.pem"),
            ]
        )
        == 1
    )
    assert (
        run(
            [
                "ca",
                "import-chain",
                *common,
                "--key-label",
                "cli-root",
                "--ca-dir",
                str(tmp_path / "copy"),
                "--to-token",
                str(ca_dir / "chain.pem"),
            ]
        )
        == 0
    )
    assert (tmp_path / "copy" / "chain.pem").exists()
    err = capsys.readouterr().err
    assert softhsm_ca.pin not in err


def test_bad_pin_source_spec_does_not_echo(
    softhsm_ca: TestCa, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code = run(
        [
            "ca",
            "status",
            "--token-label",
            softhsm_ca.token_label,
            "--pin",
            softhsm_ca.pin,
            "--ca-dir",
            str(tmp_path),
        ]
    )
    assert code == 2
    captured = capsys.readouterr()
    assert softhsm_ca.pin not in captured.err + captured.out


def test_ca_init_makes_the_audit_key_and_audit_key_adds_it_to_an_older_token(
    softhsm_ca: TestCa, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    import secrets

    from hsm.keys import CaKey, audit_key_label, generate_ca_key
    from hsm.token import open_token

    monkeypatch.setenv("CLI_TEST_PIN", softhsm_ca.pin)
    common = ["--token-label", softhsm_ca.token_label, "--pin", "env:CLI_TEST_PIN"]
    assert run(["ca", "init", *common, "--key-label", "cli-audit", "--ca-dir", str(tmp_path / "a"),
                "--subject", "CN=Audit Test CA", "--self-signed"]) == 0
    token = open_token(softhsm_ca.token_spec, softhsm_ca.pin_source())
    try:
        assert CaKey(token, label=audit_key_label("cli-audit")).attributes.sensitive
        generate_ca_key(token, label="cli-old", key_id=secrets.token_bytes(8))  # no audit key yet
    finally:
        token.close()
    old = ["--key-label", "cli-old", "--ca-dir", str(tmp_path / "old")]
    run(["ca", "status", *common, *old])  # no CA certificate yet: says so and fails, but reports
    assert "audit_checkpoint_key: missing" in capsys.readouterr().out
    assert run(["ca", "audit-key", *common, *old]) == 0
    assert run(["ca", "audit-key", *common, *old]) == 1  # never a second one
    token = open_token(softhsm_ca.token_spec, softhsm_ca.pin_source())
    try:
        key = CaKey(token, label=audit_key_label("cli-old"))
        assert key.attributes.sensitive and not key.attributes.extractable
    finally:
        token.close()
