"""TLS and mTLS contexts and the key material they load.

Per-request peer checks are in `gateway.tls_peers`; what a certificate says and when it
expires, in `gateway.cert_expiry`.

Key material is read with `cryptography`, so that every mistake (missing file, wrong
password, key not matching the certificate) becomes a `ConfigError` naming the file
and the fix. `ssl` only loads files, so the checked material is handed to it through
a private temporary file (mode 0600, its key re-encrypted with a one-time password,
deleted right after loading).

Hot reload: `reload_server_context` loads the new certificate into the *same*
`SSLContext` the listening socket uses. New handshakes get the new certificate; open
connections keep the one they negotiated. A CA can be added to `client_ca` this way,
but OpenSSL cannot forget a CA: one removed from `client_ca` stays trusted until the
process restarts (a warning says so). Listeners never resume TLS sessions, so a
tightened client_ca / verify mode applies to every new connection, and each connection
records whether its handshake asked for a certificate (`tls_peers.require_peer` serves one made
before mTLS was switched on once more, then closes it).
"""

from __future__ import annotations

import logging
import os
import secrets
import ssl
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.types import PrivateKeyTypes
from cryptography.hazmat.primitives.serialization import pkcs12

from gateway.errors import ConfigError, Problem
from gateway.secrets import Secret
from gateway.settings import TlsClientSettings, TlsServerSettings

log = logging.getLogger("gateway.tls")

# Mozilla "intermediate" TLS 1.2 suites (forward secret AEAD only); TLS 1.3 suites are
# OpenSSL's defaults, which are all good.
CIPHERS = ":".join(
    (
        "ECDHE-ECDSA-AES128-GCM-SHA256",
        "ECDHE-RSA-AES128-GCM-SHA256",
        "ECDHE-ECDSA-AES256-GCM-SHA384",
        "ECDHE-RSA-AES256-GCM-SHA384",
        "ECDHE-ECDSA-CHACHA20-POLY1305",
        "ECDHE-RSA-CHACHA20-POLY1305",
        "DHE-RSA-AES128-GCM-SHA256",
        "DHE-RSA-AES256-GCM-SHA384",
        "DHE-RSA-CHACHA20-POLY1305",
    )
)
PKCS12_SUFFIXES = (".p12", ".pfx")
_DECRYPT_FIX = "set key_password (e.g. key_password: ${TLS_KEY_PASSWORD}) to the key's password"

# (path, role, password): a certificate file to watch; the password opens PKCS#12 bundles.
CertSource = tuple[Path, str, Secret | None]


# --- loading material ------------------------------------------------------------------


@dataclass(frozen=True)
class KeyMaterial:
    """A private key and its certificate chain (leaf first), checked to belong together."""

    key: PrivateKeyTypes
    chain: tuple[x509.Certificate, ...]


def _problem(path: Path, reason: str, fix: str = "") -> ConfigError:
    return ConfigError(Problem(file=str(path), where="", reason=reason, fix=fix))


def _read(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except OSError as exc:
        raise _problem(
            path,
            f"cannot read the file ({exc.strerror})",
            "check the path and that the gateway's user may read it",
        ) from None


def _is_pkcs12(path: Path, data: bytes) -> bool:
    return path.suffix.lower() in PKCS12_SUFFIXES or b"-----BEGIN" not in data


def _load_pkcs12(path: Path, password: Secret | None) -> pkcs12.PKCS12KeyAndCertificates:
    data = _read(path)
    try:
        return pkcs12.load_pkcs12(data, password.reveal().encode() if password else None)
    except ValueError:
        if password is None:
            reason = "cannot open the PKCS#12 bundle: it is encrypted or not PKCS#12"
        else:
            reason = "cannot open the PKCS#12 bundle: wrong key_password, or not PKCS#12"
        raise _problem(path, reason, _DECRYPT_FIX) from None


def load_certificates(path: Path, password: Secret | None = None) -> list[x509.Certificate]:
    """Every certificate of a PEM bundle, a DER file or a PKCS#12 bundle (leaf first)."""
    data = _read(path)
    try:
        if b"-----BEGIN" in data:
            return x509.load_pem_x509_certificates(data)
        if path.suffix.lower() not in PKCS12_SUFFIXES:
            return [x509.load_der_x509_certificate(data)]
    except ValueError:
        raise _problem(
            path, "no certificate found", "give a PEM certificate (BEGIN CERTIFICATE)"
        ) from None
    bundle = _load_pkcs12(path, password)
    certs = [bundle.cert.certificate] if bundle.cert else []
    certs += [c.certificate for c in bundle.additional_certs]
    if not certs:
        raise _problem(path, "the PKCS#12 bundle holds no certificate")
    return certs


def _load_key(path: Path, password: Secret | None) -> PrivateKeyTypes:
    data = _read(path)
    if _is_pkcs12(path, data):
        bundle = _load_pkcs12(path, password)
        if bundle.key is None:
            raise _problem(path, "the PKCS#12 bundle holds no private key")
        return bundle.key
    encrypted = b"ENCRYPTED" in data  # PKCS#8 "ENCRYPTED PRIVATE KEY" or "Proc-Type: 4,ENCRYPTED"
    if encrypted and password is None:
        raise _problem(
            path, "the private key is encrypted and no key_password is set", _DECRYPT_FIX
        )
    try:
        return serialization.load_pem_private_key(
            data, password.reveal().encode() if encrypted and password else None
        )
    except ValueError:
        if encrypted:
            raise _problem(
                path, "key_password does not decrypt the private key", _DECRYPT_FIX
            ) from None
        raise _problem(
            path, "no private key found", "give a PEM private key or a PKCS#12 bundle"
        ) from None


def load_material(cert_file: Path, key_file: Path, password: Secret | None) -> KeyMaterial:
    """Load a key (PEM, encrypted PEM or PKCS#12) and its chain; ConfigError says what is wrong."""
    key = _load_key(key_file, password)
    chain = load_certificates(cert_file, password)
    spki = serialization.PublicFormat.SubjectPublicKeyInfo
    der = serialization.Encoding.DER
    if chain[0].public_key().public_bytes(der, spki) != key.public_key().public_bytes(der, spki):
        raise _problem(
            key_file,
            f"the private key does not belong to the certificate in {cert_file}",
            "give the key that was generated with this certificate",
        )
    return KeyMaterial(key=key, chain=tuple(chain))


def _load_chain_into(ctx: ssl.SSLContext, material: KeyMaterial, source: Path) -> None:
    """Hand checked material to OpenSSL through a short-lived private file."""
    one_time = secrets.token_urlsafe(24)
    pem = b"".join(c.public_bytes(serialization.Encoding.PEM) for c in material.chain)
    pem += material.key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.BestAvailableEncryption(one_time.encode()),
    )
    fd, name = tempfile.mkstemp(prefix="byoc-tls-", suffix=".pem")  # created 0600
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(pem)
        ctx.load_cert_chain(name, password=one_time)
    except ssl.SSLError as exc:
        raise _problem(source, f"OpenSSL refuses the certificate or key ({exc.reason})") from None
    finally:
        os.unlink(name)


def _ca_pem(path: Path) -> str:
    return "".join(
        c.public_bytes(serialization.Encoding.PEM).decode() for c in load_certificates(path)
    )


# --- contexts --------------------------------------------------------------------------


class _ServerConnection(ssl.SSLObject):
    """A server-side TLS connection that remembers whether its handshake asks for a certificate.

    OpenSSL copies the verify mode into each connection when it is created, so a reload
    that switches mTLS on leaves the connections accepted before it as they were; this
    tells them apart (`client_certificate_state`). Unknown means asked: fail closed.
    """

    asks_for_certificate = True

    @classmethod
    def _create(cls, *args: Any, **kwargs: Any) -> Any:
        conn = super()._create(*args, **kwargs)  # type: ignore[misc]  # what wrap_bio calls
        conn.asks_for_certificate = conn.context.verify_mode != ssl.CERT_NONE
        return conn


def _base_server_context() -> ssl.SSLContext:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.set_ciphers(CIPHERS)
    ctx.options |= ssl.OP_NO_COMPRESSION | ssl.OP_NO_RENEGOTIATION
    ctx.options |= ssl.OP_CIPHER_SERVER_PREFERENCE
    # No session resumption: OpenSSL resumes a session made before a reload without
    # checking it against the new client_ca / verify mode, so a client that connected
    # before mTLS was switched on could go on without a certificate. Keep-alive makes
    # the extra full handshakes cheap.
    ctx.options |= ssl.OP_NO_TICKET
    ctx.num_tickets = 0
    ctx.sslobject_class = _ServerConnection
    return ctx


def _configure_server(ctx: ssl.SSLContext, tls: TlsServerSettings, material: KeyMaterial) -> None:
    client_ca = tls.client_ca
    ca = _ca_pem(client_ca) if client_ca is not None else None
    _load_chain_into(ctx, material, tls.key_file)
    if client_ca is None or ca is None:
        ctx.verify_mode = ssl.CERT_NONE
        return
    try:
        ctx.load_verify_locations(cadata=ca)
    except ssl.SSLError as exc:
        raise _problem(client_ca, f"OpenSSL refuses the CA ({exc.reason})") from None
    # Either way, a certificate that is presented must verify: expired or foreign client
    # certificates fail the handshake. "optional" also lets clients without one in, and
    # leaves the requirement to the integrations (`require_peer`).
    if tls.client_certificate == "optional":
        ctx.verify_mode = ssl.CERT_OPTIONAL
    else:
        ctx.verify_mode = ssl.CERT_REQUIRED


def server_context(tls: TlsServerSettings) -> ssl.SSLContext:
    """Build a listener's context: TLS 1.2+, strong ciphers, mTLS when `client_ca` is set."""
    ctx = _base_server_context()
    _configure_server(ctx, tls, load_material(tls.cert_file, tls.key_file, tls.key_password))
    return ctx


def reload_server_context(ctx: ssl.SSLContext, tls: TlsServerSettings) -> None:
    """Load new certificates into the live `ctx`; on any error raise and leave it untouched.

    Call it on the event loop thread. Everything is first loaded into a scratch
    context, so a bad file never reaches the live one.
    """
    material = load_material(tls.cert_file, tls.key_file, tls.key_password)
    _configure_server(_base_server_context(), tls, material)  # proves OpenSSL accepts it
    before = {bytes(c) for c in ctx.get_ca_certs(binary_form=True)}
    _configure_server(ctx, tls, material)
    if tls.client_ca is not None:
        wanted = {
            c.public_bytes(serialization.Encoding.DER) for c in load_certificates(tls.client_ca)
        }
        if before - wanted:
            log.warning(
                "%d CA certificate(s) no longer in %s stay trusted until the gateway restarts",
                len(before - wanted),
                tls.client_ca,
            )
    log.info("reloaded TLS certificate %s", tls.cert_file)


def _client_files(tls: TlsClientSettings) -> tuple[Path, Path] | None:
    cert_file = tls.cert_file or tls.key_file
    key_file = tls.key_file or tls.cert_file  # one file may hold both (PEM or PKCS#12)
    if cert_file is None or key_file is None:
        return None
    return cert_file, key_file


def client_context(tls: TlsClientSettings) -> ssl.SSLContext:
    """Build a context for outgoing calls; server verification is always on.

    With `ca_file`, only that CA is trusted (a private upstream); else the system's CAs.
    """
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)  # CERT_REQUIRED and hostname checks
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.options |= ssl.OP_NO_COMPRESSION
    if tls.ca_file is None:
        ctx.load_default_certs(ssl.Purpose.SERVER_AUTH)
    else:
        try:
            ctx.load_verify_locations(cadata=_ca_pem(tls.ca_file))
        except ssl.SSLError as exc:
            raise _problem(tls.ca_file, f"OpenSSL refuses the CA ({exc.reason})") from None
    files = _client_files(tls)
    if files is not None:
        _load_chain_into(ctx, load_material(files[0], files[1], tls.key_password), files[1])
    return ctx


def reload_client_context(ctx: ssl.SSLContext, tls: TlsClientSettings) -> None:
    """Load a renewed client certificate (and added CAs) into a live outgoing context.

    New connections present the new certificate; pooled ones keep theirs until they
    close. Everything is checked first: on any error raise and leave `ctx` untouched.
    """
    client_context(tls)  # proves every file loads
    files = _client_files(tls)
    if files is not None:
        _load_chain_into(ctx, load_material(files[0], files[1], tls.key_password), files[1])
    if tls.ca_file is not None:
        ctx.load_verify_locations(cadata=_ca_pem(tls.ca_file))
