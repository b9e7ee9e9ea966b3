"""Make and inspect the certificates mTLS with CXone needs (`byoc-gateway certs ...`).

The operations; their command line is `gateway.certscmd`.

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

import ipaddress
import math
import os
import re
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

from gateway.cert_expiry import CertInfo, inspect_certificate
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


def refuse_existing(paths: Sequence[Path], force: bool) -> None:
    existing = [p for p in paths if p.exists() or p.is_symlink()]
    if existing and not force:
        raise ConfigError(
            [
                Problem(str(p), "", "the file exists", "pass --force to overwrite it")
                for p in existing
            ]
        )


def write_file(path: Path, data: bytes, *, private: bool) -> None:
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
    refuse_existing([cert_path, key_path], force)
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
    write_file(key_path, _key_pem(key, password), private=True)
    write_file(cert_path, _pem(cert), private=False)
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
    refuse_existing([cert_path, key_path], force)
    general = _general_names(sans)
    if not general:
        raise ConfigError(Problem("", "", "a server certificate needs a DNS name or IP address"))
    key = _new_key(key_type)
    cert = _leaf(ca, key, sans[0], ExtendedKeyUsageOID.SERVER_AUTH, general, days, now)
    write_file(key_path, _key_pem(key, None), private=True)
    write_file(cert_path, _pem(cert), private=False)
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
    refuse_existing([cert_path, key_path, *([p12_path] if p12_path else [])], force)
    key = _new_key(key_type)
    general = _general_names(sans)
    cert = _leaf(ca, key, common_name, ExtendedKeyUsageOID.CLIENT_AUTH, general, days, now)
    write_file(key_path, _key_pem(key, password), private=True)
    write_file(cert_path, _pem(cert), private=False)
    if p12_path is not None and password:
        bundle = pkcs12.serialize_key_and_certificates(
            common_name.encode(),
            key,
            cert,
            [ca.cert],
            serialization.BestAvailableEncryption(password.encode()),
        )
        write_file(p12_path, bundle, private=True)
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
