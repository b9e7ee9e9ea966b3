"""`byoc-gateway certs ca|server|client|show`: the command line of `gateway.certs`.

A password comes from an environment variable or a file named on the command line
(never from an argument, which other users could read in the process list), or is
generated and written to a 0600 file; a private key is printed only with `--print-key`.
"""

from __future__ import annotations

import argparse
import os
import secrets
import sys
from pathlib import Path

from gateway.cert_expiry import expiry_warnings
from gateway.certs import (
    DEFAULT_DIR,
    CertificateAuthority,
    IssuedFiles,
    create_ca,
    format_info,
    issue_client_cert,
    issue_server_cert,
    load_ca,
    refuse_existing,
    show,
    write_file,
)
from gateway.errors import ConfigError, Problem


def add_commands(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add `certs ca|server|client|show` to the top-level command parser."""
    certs = subparsers.add_parser("certs", help="make and inspect TLS/mTLS certificates")
    certs.set_defaults(run=run_certs_command)
    sub = certs.add_subparsers(dest="certs_command", required=True, metavar="ACTION")

    def common(p: argparse.ArgumentParser, default_days: int) -> None:
        p.add_argument("--dir", type=Path, default=DEFAULT_DIR, help="output directory (certs/)")
        p.add_argument("--days", type=int, default=default_days, help="validity in days")
        p.add_argument("--key-type", choices=["rsa", "ec"], default="rsa")
        p.add_argument("--force", action="store_true", help="overwrite existing files")
        p.add_argument(
            "--ca-password-env",
            metavar="VAR",
            help="environment variable holding the CA key's password",
        )

    def signed(p: argparse.ArgumentParser) -> None:
        p.add_argument("--ca-cert", type=Path, help="CA certificate (default: DIR/ca.pem)")
        p.add_argument("--ca-key", type=Path, help="CA private key (default: DIR/ca.key)")

    ca = sub.add_parser("ca", help="create a private CA (ca.pem, ca.key)")
    common(ca, 3650)
    ca.add_argument("--cn", default="byoc-gateway CA", help="the CA's common name")
    ca.add_argument("--name", default="ca", help="file name stem (ca -> ca.pem, ca.key)")

    server = sub.add_parser("server", help="issue a server certificate for a listener")
    server.add_argument("names", nargs="+", help="DNS names and IP addresses (first is the CN)")
    common(server, 397)
    signed(server)
    server.add_argument("--name", default="server", help="file name stem")

    client = sub.add_parser("client", help="issue the client certificate CXone presents")
    common(client, 365)
    signed(client)
    client.add_argument("--cn", default="cxone", help="common name (what client_subjects lists)")
    client.add_argument("--name", default="client", help="file name stem")
    client.add_argument(
        "--san", action="append", default=[], help="extra DNS name, IP or URI (repeatable)"
    )
    pw = client.add_mutually_exclusive_group()
    pw.add_argument("--password-env", metavar="VAR", help="encrypt the key with $VAR")
    pw.add_argument("--password-file", type=Path, help="encrypt the key with this file's text")
    pw.add_argument(
        "--generate-password",
        action="store_true",
        help="encrypt the key with a new random password, saved to DIR/NAME.password (0600)",
    )
    client.add_argument("--p12", action="store_true", help="also write a PKCS#12 bundle")
    client.add_argument("--print-key", action="store_true", help="print the private key PEM")

    show_p = sub.add_parser("show", help="describe certificates (PEM, DER or PKCS#12)")
    show_p.add_argument("paths", nargs="+", type=Path)
    show_p.add_argument("--password-env", metavar="VAR", help="password of a PKCS#12 bundle")
    show_p.add_argument(
        "--warn-days", type=int, default=None, help="exit 1 when one expires within N days"
    )


def _env_secret(var: str | None) -> str | None:
    if var is None:
        return None
    value = os.environ.get(var)
    if not value:
        raise ConfigError(Problem("", var, f"environment variable {var} is not set"))
    return value


def _client_password(args: argparse.Namespace) -> str | None:
    if args.password_env:
        return _env_secret(args.password_env)
    if args.password_file:
        try:
            return str(args.password_file.read_text(encoding="utf-8")).rstrip("\n") or None
        except OSError as exc:
            reason = f"cannot read the password file ({exc.strerror})"
            raise ConfigError(Problem(str(args.password_file), "", reason)) from None
    if args.generate_password:
        return secrets.token_urlsafe(18)
    return None


def _load_signing_ca(args: argparse.Namespace) -> CertificateAuthority:
    cert = args.ca_cert or args.dir / "ca.pem"
    key = args.ca_key or args.dir / "ca.key"
    return load_ca(cert, key, _env_secret(args.ca_password_env))


def run_certs_command(args: argparse.Namespace) -> int:
    """Run one `certs` action; 0 on success, 1 when `show --warn-days` finds expiry."""
    action = args.certs_command
    out = sys.stdout
    if action == "ca":
        ca = create_ca(
            args.dir,
            args.cn,
            args.days,
            key_type=args.key_type,
            password=_env_secret(args.ca_password_env),
            stem=args.name,
            force=args.force,
        )
        print(f"wrote {ca.cert_path} (CA certificate) and {ca.key_path} (CA key, 0600)", file=out)
        print("keep the CA key offline or at least off the gateway host", file=out)
        return 0
    if action == "server":
        files = issue_server_cert(
            _load_signing_ca(args),
            args.names,
            args.days,
            out_dir=args.dir,
            name=args.name,
            key_type=args.key_type,
            force=args.force,
        )
        print(f"wrote {files.cert} and {files.key} (0600); in gateway.yaml:", file=out)
        print(f"  tls: {{cert_file: {files.cert}, key_file: {files.key}}}", file=out)
        return 0
    if action == "client":
        password = _client_password(args)
        password_file = args.dir / f"{args.name}.password" if args.generate_password else None
        if password_file is not None:
            refuse_existing([password_file], args.force)
        files = issue_client_cert(
            _load_signing_ca(args),
            args.cn,
            args.days,
            password,
            args.p12,
            sans=args.san,
            out_dir=args.dir,
            name=args.name,
            key_type=args.key_type,
            force=args.force,
        )
        if password_file is not None and password:
            write_file(password_file, password.encode() + b"\n", private=True)
        _report_client(args, files, password, password_file)
        return 0
    if action == "show":
        password = _env_secret(args.password_env)
        blocks, infos = [], []
        for path in args.paths:
            found = show(path, password)
            blocks += [format_info(info, n + 1, len(found)) for n, info in enumerate(found)]
            infos += found
        print("\n\n".join(blocks), file=out)
        if args.warn_days is not None:
            warnings = expiry_warnings(infos, args.warn_days)
            for line in warnings:
                print(f"warning: {line}", file=sys.stderr)
            return 1 if warnings else 0
        return 0
    raise ConfigError(Problem("", "certs", f"unknown action {action!r}"))


def _report_client(
    args: argparse.Namespace, files: IssuedFiles, password: str | None, password_file: Path | None
) -> None:
    out = sys.stdout
    if password_file is not None:
        where = f"encrypted; the password is in {password_file}"
    elif password:
        where = "encrypted with your password"
    else:
        where = "NOT encrypted: consider --password-env or --generate-password"
    print("Paste into the CXone integration's mTLS settings:", file=out)
    print(f"  client certificate   {files.cert}", file=out)
    print(f"  private key          {files.key} ({where})", file=out)
    if files.p12 is not None:
        print(f"  or PKCS#12 bundle    {files.p12}", file=out)
    print(f"  CA certificate       {files.ca}", file=out)
    print("Then on the gateway's CXone listener (gateway.yaml):", file=out)
    print(f"  tls: {{client_ca: {files.ca}, client_subjects: [{args.cn}]}}", file=out)
    if args.print_key:
        print(files.key.read_text(encoding="ascii"), file=out, end="")
