"""Make and inspect the certificates mTLS with CXone needs: `byoc-gateway certs ...`.

    certs ca      a private CA (ca.pem, ca.key) that signs the client certificate
    certs server  a server certificate for a listener (DNS names and IP addresses)
    certs client  the client certificate CXone presents: cert PEM, key PEM (encrypted
                  with a password), optional PKCS#12 bundle, and the CA PEM
    certs show    subject, SANs, issuer, validity, days left, SHA-256 fingerprint

Files go to `certs/` unless told otherwise. Private keys are created with mode 0600,
nothing is overwritten without `--force`, and a private key is printed only with
`--print-key`. RSA-2048 is the default key type: the one every TLS stack accepts.
"""

from __future__ import annotations

import argparse
import ipaddress
import math
import os
import re
import secrets
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Literal

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.hazmat.primitives.serialization import pkcs12
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from gateway.cert_expiry import CertInfo, expiry_warnings, inspect_certificate
from gateway.errors import ConfigError, Problem
from gateway.secrets import Secret
from gateway.tls import load_material

KeyType = Literal["rsa", "ec"]
PrivateKey = rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey
DEFAULT_DIR = Path("certs")
_HOSTNAME = re.compile(
    r"^(\*\.)?([a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?\.)*[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$"
)
_BACKDATE = timedelta(minutes=5)  # tolerate clocks a little behind ours


@dataclass(frozen=True)
class CertificateAuthority:
    """A CA able to sign: its certificate, key, and where they live."""

    cert: x509.Certificate
    key: PrivateKey
    cert_path: Path
    key_path: Path


@dataclass(frozen=True)
class IssuedFiles:
    """What an issue_* call wrote."""

    cert: Path
    key: Path
    ca: Path
    p12: Path | None = None


# --- files -----------------------------------------------------------------------------


def _refuse_existing(paths: Sequence[Path], force: bool) -> None:
    existing = [p for p in paths if p.exists() or p.is_symlink()]
    if existing and not force:
        raise ConfigError(
            [
                Problem(str(p), "", "the file exists", "pass --force to overwrite it")
                for p in existing
            ]
        )


def _write(path: Path, data: bytes, *, private: bool) -> None:
    """Create `path` afresh; private files get mode 0600 from the start."""
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    if path.exists() or path.is_symlink():
        path.unlink()  # so O_EXCL creates it with our mode (an existing file keeps its own)
    mode = 0o600 if private else 0o644
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0), mode)
    with os.fdopen(fd, "wb") as fh:
        if private:
            os.fchmod(fh.fileno(), 0o600)  # whatever the umask says
        fh.write(data)


def _pem(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.PEM)


def _key_pem(key: PrivateKey, password: str | None) -> bytes:
    encryption: serialization.KeySerializationEncryption = (
        serialization.BestAvailableEncryption(password.encode())
        if password
        else serialization.NoEncryption()
    )
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, encryption
    )


# --- building certificates -------------------------------------------------------------


def _new_key(key_type: KeyType) -> PrivateKey:
    if key_type == "ec":
        return ec.generate_private_key(ec.SECP256R1())
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


def _builder(
    subject: x509.Name, issuer: x509.Name, key: PrivateKey, days: int, now: datetime | None
) -> x509.CertificateBuilder:
    if days < 1:
        raise ConfigError(Problem("", "--days", "a certificate must be valid for at least 1 day"))
    start = (now or datetime.now(UTC)) - _BACKDATE
    return (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(start)
        .not_valid_after(start + _BACKDATE + timedelta(days=days))
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
    )


def _name(common_name: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


def _leaf(
    ca: CertificateAuthority,
    key: PrivateKey,
    common_name: str,
    usage: x509.ObjectIdentifier,
    sans: list[x509.GeneralName],
    days: int,
    now: datetime | None,
) -> x509.Certificate:
    ski = ca.cert.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
    builder = (
        _builder(_name(common_name), ca.cert.subject, key, days, now)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                key_encipherment=isinstance(key, rsa.RSAPrivateKey),
                content_commitment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=False,
                crl_sign=False,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ski), critical=False
        )
    )
    if sans:
        builder = builder.add_extension(x509.SubjectAlternativeName(sans), critical=False)
    return builder.sign(ca.key, hashes.SHA256())


# --- the four operations ---------------------------------------------------------------


def create_ca(
    out_dir: Path = DEFAULT_DIR,
    name: str = "byoc-gateway CA",
    days: int = 3650,
    *,
    key_type: KeyType = "rsa",
    password: str | None = None,
    stem: str = "ca",
    force: bool = False,
    now: datetime | None = None,
) -> CertificateAuthority:
    """Create a private CA: `<stem>.pem` and `<stem>.key` (0600, encrypted when `password`)."""
    cert_path, key_path = out_dir / f"{stem}.pem", out_dir / f"{stem}.key"
    _refuse_existing([cert_path, key_path], force)
    key = _new_key(key_type)
    cert = (
        _builder(_name(name), _name(name), key, days, now)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=False,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .sign(key, hashes.SHA256())
    )
    _write(key_path, _key_pem(key, password), private=True)
    _write(cert_path, _pem(cert), private=False)
    return CertificateAuthority(cert, key, cert_path, key_path)


def load_ca(cert_path: Path, key_path: Path, password: str | None = None) -> CertificateAuthority:
    """Load a CA made by create_ca (or any CA with an RSA or EC key)."""
    material = load_material(cert_path, key_path, Secret(password) if password else None)
    key, cert = material.key, material.chain[0]
    if not isinstance(key, rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey):
        raise ConfigError(Problem(str(key_path), "", "the CA key must be RSA or EC"))
    try:
        is_ca = cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    except x509.ExtensionNotFound:
        is_ca = False
    if not is_ca:
        raise ConfigError(Problem(str(cert_path), "", "this certificate is not a CA"))
    return CertificateAuthority(cert, key, cert_path, key_path)


def _general_names(names: Sequence[str]) -> list[x509.GeneralName]:
    """DNS names, IP addresses and URIs (anything with "://") as SAN entries."""
    sans: list[x509.GeneralName] = []
    for name in names:
        if "://" in name:
            sans.append(x509.UniformResourceIdentifier(name))
            continue
        try:
            sans.append(x509.IPAddress(ipaddress.ip_address(name)))
            continue
        except ValueError:
            pass
        if not _HOSTNAME.match(name.lower()):
            raise ConfigError(
                Problem("", name, "not a DNS name, IP address or URI", "e.g. gw.example.com")
            )
        sans.append(x509.DNSName(name.lower()))
    return sans


def issue_server_cert(
    ca: CertificateAuthority,
    sans: Sequence[str],
    days: int = 397,
    *,
    out_dir: Path | None = None,
    name: str = "server",
    key_type: KeyType = "rsa",
    force: bool = False,
    now: datetime | None = None,
) -> IssuedFiles:
    """Issue a server certificate for DNS names and IP addresses: `<name>.pem`, `<name>.key`."""
    directory = out_dir or ca.cert_path.parent
    cert_path, key_path = directory / f"{name}.pem", directory / f"{name}.key"
    _refuse_existing([cert_path, key_path], force)
    general = _general_names(sans)
    if not general:
        raise ConfigError(Problem("", "", "a server certificate needs a DNS name or IP address"))
    key = _new_key(key_type)
    cert = _leaf(ca, key, sans[0], ExtendedKeyUsageOID.SERVER_AUTH, general, days, now)
    _write(key_path, _key_pem(key, None), private=True)
    _write(cert_path, _pem(cert), private=False)
    return IssuedFiles(cert=cert_path, key=key_path, ca=ca.cert_path)


def issue_client_cert(
    ca: CertificateAuthority,
    common_name: str,
    days: int = 365,
    password: str | None = None,
    p12: bool = False,
    *,
    sans: Sequence[str] = (),
    out_dir: Path | None = None,
    name: str = "client",
    key_type: KeyType = "rsa",
    force: bool = False,
    now: datetime | None = None,
) -> IssuedFiles:
    """Issue the client certificate CXone presents; the key is encrypted when `password`.

    `sans` adds DNS/IP/URI names (`client_subjects` matches the CN or any of them).
    """
    if p12 and not password:
        raise ConfigError(Problem("", "--p12", "a PKCS#12 bundle needs a password"))
    directory = out_dir or ca.cert_path.parent
    cert_path, key_path = directory / f"{name}.pem", directory / f"{name}.key"
    p12_path = directory / f"{name}.p12" if p12 else None
    _refuse_existing([cert_path, key_path, *([p12_path] if p12_path else [])], force)
    key = _new_key(key_type)
    general = _general_names(sans)
    cert = _leaf(ca, key, common_name, ExtendedKeyUsageOID.CLIENT_AUTH, general, days, now)
    _write(key_path, _key_pem(key, password), private=True)
    _write(cert_path, _pem(cert), private=False)
    if p12_path is not None and password:
        bundle = pkcs12.serialize_key_and_certificates(
            common_name.encode(),
            key,
            cert,
            [ca.cert],
            serialization.BestAvailableEncryption(password.encode()),
        )
        _write(p12_path, bundle, private=True)
    return IssuedFiles(cert=cert_path, key=key_path, ca=ca.cert_path, p12=p12_path)


def show(path: Path, password: str | None = None, now: float | None = None) -> list[CertInfo]:
    """Describe every certificate in a PEM, DER or PKCS#12 file."""
    return inspect_certificate(path, "file", now, Secret(password) if password else None)


def format_info(info: CertInfo, index: int = 1, total: int = 1) -> str:
    """Render one certificate for a terminal."""
    left = f"{math.floor(info.days_left)} days left" if info.days_left >= 0 else "EXPIRED"
    rows = [
        ("subject", info.subject),
        ("SANs", ", ".join(info.sans) or "-"),
        ("issuer", info.issuer),
        ("valid from", info.not_before.strftime("%Y-%m-%d %H:%M UTC")),
        ("valid until", f"{info.not_after:%Y-%m-%d %H:%M UTC} ({left})"),
        ("sha256", info.fingerprint_sha256),
    ]
    head = f"{info.path}" + (f" [{index}/{total}]" if total > 1 else "")
    return "\n".join([head, *(f"  {k:<12} {v}" for k, v in rows)])


# --- command line ----------------------------------------------------------------------


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
            _refuse_existing([password_file], args.force)
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
            _write(password_file, password.encode() + b"\n", private=True)
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
