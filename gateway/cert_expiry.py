"""What a certificate in use says, and when it expires: inspection, warnings, the gauge.

`CertificateWatcher` re-inspects every certificate file the configuration names on a
timer; `gateway.certwatch` runs it and reloads TLS material with the configuration.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes

from gateway.clock import Clock, system_clock
from gateway.errors import ConfigError, Problem
from gateway.secrets import Secret
from gateway.settings import Settings, TlsClientSettings
from gateway.tls import CertSource, load_certificates

log = logging.getLogger("gateway.tls")


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
