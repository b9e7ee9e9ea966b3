"""TLS and mTLS contexts, certificate loading, peer checks and expiry watching.

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
records whether its handshake asked for a certificate (`require_peer` serves one made
before mTLS was switched on once more, then closes it).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import os
import secrets
import ssl
import tempfile
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any, Literal

from aiohttp import web
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric.types import PrivateKeyTypes
from cryptography.hazmat.primitives.serialization import pkcs12

from gateway.clock import Clock, system_clock
from gateway.errors import ConfigError, Forbidden, Problem
from gateway.secrets import Secret
from gateway.settings import Settings, TlsClientSettings, TlsServerSettings

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


# --- peer check ------------------------------------------------------------------------


def _name_matches(value: str, pattern: str) -> bool:
    value, pattern = value.lower().rstrip("."), pattern.lower().rstrip(".")
    if pattern.startswith("*."):
        head, _, rest = value.partition(".")
        return bool(head) and rest == pattern[2:]
    return value == pattern


def peer_names(request: web.BaseRequest) -> list[str]:
    """The verified client certificate's CN and DNS/URI SANs ([] when none was verified)."""
    transport = request.transport
    ssl_object = transport.get_extra_info("ssl_object") if transport is not None else None
    # The dict form is empty unless OpenSSL verified the certificate: fail closed.
    cert: Any = ssl_object.getpeercert() if ssl_object is not None else None
    if not cert:
        return []
    names = [value for rdn in cert.get("subject", ()) for key, value in rdn if key == "commonName"]
    names += [value for kind, value in cert.get("subjectAltName", ()) if kind in ("DNS", "URI")]
    return names


def check_peer(request: web.BaseRequest, allowed: Sequence[str]) -> None:
    """Raise Forbidden unless the client certificate's CN or a DNS/URI SAN is allowed."""
    if not allowed:
        return
    names = peer_names(request)
    if not any(_name_matches(name, pattern) for name in names for pattern in allowed):
        raise Forbidden("client certificate not accepted", code="client_certificate_rejected")


PeerState = Literal["verified", "missing", "not_asked"]
_CLOSE_AFTER = web.RequestKey("tls_close_after", bool)


def client_certificate_state(request: web.BaseRequest) -> PeerState:
    """Whether the connection has a verified client certificate.

    "not_asked": the connection was accepted before the listener asked for certificates
    (mTLS switched on by a reload since); "missing": asked, or no TLS, and none verified.
    """
    transport = request.transport
    ssl_object = transport.get_extra_info("ssl_object") if transport is not None else None
    if ssl_object is None:
        return "missing"
    if ssl_object.getpeercert():  # empty unless OpenSSL verified it
        return "verified"
    return "missing" if getattr(ssl_object, "asks_for_certificate", True) else "not_asked"


def require_peer(request: web.BaseRequest, allowed: Sequence[str]) -> None:
    """Raise Forbidden unless a verified, unexpired client certificate with an allowed name.

    A connection accepted before the listener asked for certificates (mTLS switched on
    by a reload) is let through this once and closed after its response, so clients
    reconnect under the new rules without a failed request.
    """
    state = client_certificate_state(request)
    if state == "not_asked":
        close_after_response(request)
        return
    if state == "missing":
        raise Forbidden("a client certificate is required", code="client_certificate_required")
    check_peer(request, allowed)
    transport = request.transport
    cert: Any = transport.get_extra_info("peercert") if transport is not None else None
    if cert and ssl.cert_time_to_seconds(cert["notAfter"]) < system_clock():
        # expired since the handshake of this (long) keep-alive connection
        close_after_response(request)
        raise Forbidden("the client certificate has expired", code="client_certificate_expired")


def close_after_response(request: web.BaseRequest) -> None:
    """Close the connection once the current response is sent."""
    request[_CLOSE_AFTER] = True
    request.protocol.close()


def wants_close(request: web.BaseRequest) -> bool:
    """Whether `close_after_response` was called for this request."""
    return bool(request.get(_CLOSE_AFTER, False))


# --- inspection and expiry -------------------------------------------------------------


@dataclass(frozen=True)
class CertInfo:
    """What an operator needs to know about one certificate in use."""

    path: str
    role: str
    subject: str
    sans: tuple[str, ...]
    issuer: str
    not_before: datetime
    not_after: datetime
    days_left: float
    fingerprint_sha256: str


def _sans(cert: x509.Certificate) -> tuple[str, ...]:
    try:
        ext = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return ()
    out = [f"DNS:{v}" for v in ext.get_values_for_type(x509.DNSName)]
    out += [f"IP:{v}" for v in ext.get_values_for_type(x509.IPAddress)]
    out += [f"URI:{v}" for v in ext.get_values_for_type(x509.UniformResourceIdentifier)]
    out += [f"email:{v}" for v in ext.get_values_for_type(x509.RFC822Name)]
    return tuple(out)


def describe(cert: x509.Certificate, path: Path | str, role: str, now: float) -> CertInfo:
    """Summarise one parsed certificate."""
    not_after = cert.not_valid_after_utc
    return CertInfo(
        path=str(path),
        role=role,
        subject=cert.subject.rfc4514_string(),
        sans=_sans(cert),
        issuer=cert.issuer.rfc4514_string(),
        not_before=cert.not_valid_before_utc,
        not_after=not_after,
        days_left=(not_after.timestamp() - now) / 86400,
        fingerprint_sha256=cert.fingerprint(hashes.SHA256()).hex(":").upper(),
    )


def inspect_certificate(
    path: Path, role: str, now: float | None = None, password: Secret | None = None
) -> list[CertInfo]:
    """Describe every certificate in a file (a bundle may hold several)."""
    at = system_clock() if now is None else now
    return [describe(c, path, role, at) for c in load_certificates(path, password)]


def client_tls_sources(tls: TlsClientSettings, role: str) -> list[CertSource]:
    """The certificate files of an outgoing TLS setup: `role` (client cert), `role-ca`."""
    out: list[CertSource] = []
    cert_file = tls.cert_file or tls.key_file
    if cert_file is not None:
        out.append((cert_file, role, tls.key_password))
    if tls.ca_file is not None:
        out.append((tls.ca_file, f"{role}-ca", None))
    return out


def certificate_sources(
    settings: Settings, extra: Iterable[tuple[Path, str] | CertSource] = ()
) -> list[CertSource]:
    """Every certificate file in use; `extra` adds (path, role[, password]) such as mappings'."""
    out: list[CertSource] = []
    for name, listener in (
        ("platform-listener", settings.platform_listener),
        ("cxone-listener", settings.cxone_listener),
    ):
        if listener.tls is not None:
            out.append((listener.tls.cert_file, name, listener.tls.key_password))
            if listener.tls.client_ca is not None:
                out.append((listener.tls.client_ca, f"{name}-client-ca", None))
    out += client_tls_sources(settings.cxone.tls, "cxone-client")
    for item in extra:
        out.append(item if len(item) == 3 else (item[0], item[1], None))
    return out


def _collect(sources: Iterable[CertSource], now: float) -> tuple[list[CertInfo], list[Problem]]:
    infos: list[CertInfo] = []
    problems: list[Problem] = []
    for path, role, password in sources:
        try:
            infos += inspect_certificate(path, role, now, password)
        except ConfigError as exc:
            problems += exc.problems
    return infos, problems


def collect_certificates(
    settings: Settings,
    extra: Iterable[tuple[Path, str] | CertSource] = (),
    *,
    now: float | None = None,
) -> list[CertInfo]:
    """Describe every certificate in use; raise ConfigError naming every unreadable file."""
    at = system_clock() if now is None else now
    infos, problems = _collect(certificate_sources(settings, extra), at)
    if problems:
        raise ConfigError(problems)
    return infos


def expiry_warnings(infos: Iterable[CertInfo], warn_days: float) -> list[str]:
    """One line per certificate expired or expiring within `warn_days`."""
    out = []
    for info in infos:
        if info.days_left > warn_days:
            continue
        when = info.not_after.strftime("%Y-%m-%d %H:%M UTC")
        if info.days_left < 0:
            state = f"EXPIRED on {when} ({math.ceil(-info.days_left)} days ago)"
        else:
            state = f"expires in {math.floor(info.days_left)} days, on {when}"
        out.append(f"certificate {info.path} ({info.role}, {info.subject}) {state}: renew it")
    return out


class CertMetrics:
    """The `byoc_certificate_days_left{path,role}` gauge."""

    def __init__(self, registry: Any) -> None:
        from prometheus_client import Gauge  # registries are the caller's; none at import

        self.days_left = Gauge(
            "byoc_certificate_days_left",
            "Days until a certificate in use expires (negative: expired).",
            ["path", "role"],
            registry=registry,
        )
        self._labels: set[tuple[str, str]] = set()

    def update(self, infos: Iterable[CertInfo]) -> None:
        """Set one value per (path, role): the soonest expiry in that file."""
        soonest: dict[tuple[str, str], float] = {}
        for info in infos:
            key = (info.path, info.role)
            soonest[key] = min(info.days_left, soonest.get(key, math.inf))
        for key in self._labels - soonest.keys():
            self.days_left.remove(*key)
        for key, days in soonest.items():
            self.days_left.labels(*key).set(days)
        self._labels = set(soonest)


def register_cert_metrics(registry: Any) -> CertMetrics:
    """Register the certificate gauge in `registry`."""
    return CertMetrics(registry)


class CertificateWatcher:
    """Re-inspect certificates every `interval` seconds: log warnings, update the gauge.

    `sources` is called on every check, so a reload that changes files is picked up.
    The caller starts and stops it (one cleanup context).
    """

    def __init__(
        self,
        sources: Callable[[], Iterable[CertSource]],
        *,
        warn_days: float | Callable[[], float],
        interval: float = 3600.0,
        metrics: CertMetrics | None = None,
        clock: Clock = system_clock,
        on_check: Callable[[list[CertInfo], list[str]], None] | None = None,
    ) -> None:
        self._sources = sources
        self._warn_days = warn_days
        self._interval = interval
        self._metrics = metrics
        self._clock = clock
        self._on_check = on_check
        self._task: asyncio.Task[None] | None = None
        self._stop = asyncio.Event()
        self.latest: tuple[CertInfo, ...] = ()
        self.latest_problems: tuple[Problem, ...] = ()

    def _inspect(self) -> tuple[list[CertInfo], list[Problem]]:
        return _collect(list(self._sources()), self._clock())

    def _publish(self, infos: list[CertInfo], problems: list[Problem]) -> list[str]:
        for problem in problems:
            log.error("cannot inspect certificate: %s", problem)
        warn_days = self._warn_days() if callable(self._warn_days) else self._warn_days
        warnings = expiry_warnings(infos, warn_days)
        for line in warnings:
            log.warning("%s", line)
        if self._metrics is not None:
            self._metrics.update(infos)
        self.latest = tuple(infos)
        self.latest_problems = tuple(problems)
        if self._on_check is not None:
            self._on_check(infos, warnings)
        return warnings

    def check(self) -> list[str]:
        """Inspect now (blocking file reads) and return the warnings."""
        return self._publish(*self._inspect())

    async def check_async(self) -> list[str]:
        """Inspect now, reading the files off the event loop; return the warnings."""
        return self._publish(*await asyncio.to_thread(self._inspect))

    def start(self) -> None:
        """Start checking in the background, beginning now."""
        if self._task is None:
            self._stop.clear()
            self._task = asyncio.create_task(self._run(), name="certificate-watcher")

    async def stop(self) -> None:
        """Stop the background task and wait for it."""
        if self._task is None:
            return
        self._stop.set()
        task, self._task = self._task, None
        await task

    async def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self._publish(*await asyncio.to_thread(self._inspect))
            except Exception:  # the watcher must outlive a bad check
                log.exception("certificate check failed")
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self._interval):
                    await self._stop.wait()
