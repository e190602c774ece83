"""``station ca ...``: argparse glue over :mod:`hsm.ca`.

``station/cli.py`` calls :func:`register` with its subparsers object; every subcommand sets
``func=`` to a function taking the parsed args and returning an exit code. PINs come from
``--pin env:NAME | file:/path | prompt`` and are never printed.

    station ca init          create the issuing key; --self-signed root (development) or a CSR
    station ca csr           a CSR for an existing issuing key (for an offline root)
    station ca import-chain  check a chain against the key, store it in the CA directory (and token)
    station ca status        token, key attributes, certificate validity, days to expiry
"""

from __future__ import annotations

import argparse
import secrets
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import serialization

from hsm.ca import CA_CERT_FILE, ca_csr, ca_status, import_chain, load_chain, self_signed_ca
from hsm.errors import HsmError
from hsm.keys import CURVES, CaKey, audit_key_label, generate_ca_key
from hsm.pin import pin_source_from_spec
from hsm.token import SOFTHSM_MODULE, TokenSession, TokenSpec, open_token


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--module", default=SOFTHSM_MODULE, help="PKCS#11 module path")
    p.add_argument("--token-label", help="token label")
    p.add_argument("--token-serial", help="token serial (instead of or with the label)")
    p.add_argument("--pin", default="prompt", help="PIN source: env:NAME, file:/path (mode 600) or prompt")
    p.add_argument("--key-label", default="issuing-ca", help="CA key label")
    p.add_argument("--ca-dir", type=Path, required=True, help="CA directory (ca.pem, chain.pem)")


def register(subparsers: Any) -> None:
    """Add the ``ca`` command with ``init``, ``csr``, ``import-chain`` and ``status``."""
    ca = subparsers.add_parser("ca", help="manage the issuing CA in the HSM")
    sub = ca.add_subparsers(dest="ca_command", required=True)

    init = sub.add_parser("init", help="create the issuing CA key, then a dev root or a CSR")
    _common(init)
    init.add_argument("--algorithm", default="P-256", help=f"{', '.join(CURVES)} or RSA-<bits>")
    init.add_argument("--subject", required=True, help='RFC 4514 name, e.g. "CN=Line 3 CA,O=Example"')
    mode = init.add_mutually_exclusive_group(required=True)
    mode.add_argument("--self-signed", action="store_true", help="development root (signed in the HSM)")
    mode.add_argument("--csr-out", type=Path, help="write a CSR for an offline root here")
    init.add_argument("--days", type=int, default=3650)
    init.set_defaults(func=_cmd_init)

    csr = sub.add_parser("csr", help="CSR for the existing issuing key")
    _common(csr)
    csr.add_argument("--subject", required=True)
    csr.add_argument("--out", type=Path, required=True)
    csr.set_defaults(func=_cmd_csr)

    imp = sub.add_parser("import-chain", help="import the CA certificate chain (issuing CA first)")
    _common(imp)
    imp.add_argument("chain", type=Path, help="PEM file, issuing CA first")
    imp.add_argument("--to-token", action="store_true", help="also store the CA certificate in the token")
    imp.set_defaults(func=_cmd_import)

    audit = sub.add_parser("audit-key", help="create the audit checkpoint key next to the CA key")
    _common(audit)
    audit.set_defaults(func=_cmd_audit_key)

    status = sub.add_parser("status", help="token, key and certificate status")
    _common(status)
    status.add_argument("--allow-unsafe-key", action="store_true", help=argparse.SUPPRESS)
    status.set_defaults(func=_cmd_status)


def _run(args: argparse.Namespace, body: Callable[[TokenSession], int]) -> int:
    """Open the token, run ``body``, print hsm errors as one line (never a PIN), return an exit code."""
    try:
        token = open_token(
            TokenSpec(module_path=args.module, token_label=args.token_label, token_serial=args.token_serial),
            pin_source_from_spec(args.pin),
        )
    except HsmError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    try:
        return body(token)
    except HsmError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    finally:
        token.close()


def _name(text: str) -> x509.Name:
    try:
        return x509.Name.from_rfc4514_string(text)
    except ValueError as exc:
        raise HsmError(f"bad --subject: {exc}", code="bad_subject") from None


def _cmd_init(args: argparse.Namespace) -> int:
    def body(token: TokenSession) -> int:
        subject = _name(args.subject)
        generate_ca_key(token, label=args.key_label, key_id=secrets.token_bytes(8), algorithm=args.algorithm)
        generate_ca_key(token, label=audit_key_label(args.key_label), key_id=secrets.token_bytes(8))
        key = CaKey(token, label=args.key_label)
        if args.self_signed:
            cert = self_signed_ca(key, subject, days=args.days)
            import_chain(key, [cert], args.ca_dir, to_token=True)
            print(f"created key {args.key_label!r} and self-signed CA in {args.ca_dir / CA_CERT_FILE}")
        else:
            request = ca_csr(key, subject)
            args.csr_out.write_bytes(request.public_bytes(serialization.Encoding.PEM))
            print(f"created key {args.key_label!r}; CSR for the offline root in {args.csr_out}")
        return 0

    return _run(args, body)


def _cmd_audit_key(args: argparse.Namespace) -> int:
    """For tokens made before audit checkpoints: add the P-256 key that signs them."""
    def body(token: TokenSession) -> int:
        label = audit_key_label(args.key_label)
        generate_ca_key(token, label=label, key_id=secrets.token_bytes(8))
        key = CaKey(token, label=label)
        print(f"created audit checkpoint key {label!r} ({key.key_type}, sensitive, non-extractable)")
        return 0

    return _run(args, body)


def _cmd_csr(args: argparse.Namespace) -> int:
    def body(token: TokenSession) -> int:
        key = CaKey(token, label=args.key_label)
        args.out.write_bytes(ca_csr(key, _name(args.subject)).public_bytes(serialization.Encoding.PEM))
        print(f"CSR written to {args.out}")
        return 0

    return _run(args, body)


def _cmd_import(args: argparse.Namespace) -> int:
    def body(token: TokenSession) -> int:
        chain = load_chain(args.chain)
        key = CaKey(token, label=args.key_label, public_key_hint=chain[0].public_key())  # type: ignore[arg-type]
        path = import_chain(key, chain, args.ca_dir, to_token=args.to_token)
        print(f"imported {len(chain)} certificate(s) into {path}")
        return 0

    return _run(args, body)


def _audit_key_state(token: TokenSession, ca_label: str) -> str:
    """Whether the token signs audit checkpoints (and that the key is a safe one)."""
    try:
        key = CaKey(token, label=audit_key_label(ca_label))
    except HsmError as exc:
        return f"missing or unusable ({exc.code}): checkpoints are off; add it with `ca audit-key`"
    return f"present ({key.key_type}, sensitive, non-extractable)"


def _cmd_status(args: argparse.Namespace) -> int:
    def body(token: TokenSession) -> int:
        cert_path = args.ca_dir / CA_CERT_FILE
        cert = load_chain(cert_path)[0] if cert_path.exists() else None
        hint = cert.public_key() if cert is not None else None
        key = CaKey(token, label=args.key_label, allow_unsafe_key=args.allow_unsafe_key,
                    public_key_hint=hint)  # type: ignore[arg-type]
        st = ca_status(key, cert)
        for section, values in (("token", st.token), ("key", st.key), ("certificate", st.certificate or {})):
            print(f"[{section}]")
            for k, v in values.items():
                print(f"  {k}: {v}")
            if section == "key":
                print(f"  audit_checkpoint_key: {_audit_key_state(token, args.key_label)}")
        if st.certificate is None:
            print("  (no CA certificate in the CA directory)")
            return 1
        print(f"  days_to_expiry: {st.days_to_expiry}")
        print(f"  matches_key: {st.matches_key}")
        return 0 if st.matches_key and (st.days_to_expiry or 0) > 0 else 1

    return _run(args, body)
