"""Certificates in use: expiry checks, and TLS material reloaded with the configuration.

Every certificate the gateway uses (listener certificates and client CAs, the client
certificate and CA for CXone, the client certificates and CAs mappings ask for on
platform calls) is checked at startup, after every reload and every
`CHECK_INTERVAL` seconds: days to expiry go to the `byoc_certificate_days_left`
gauge, certificates inside `cert_warning_days` (or expired) are logged as warnings,
and the latest result is listed on /status.json (`CertificateMonitor.describe`).

Reload, in the two phases of `Gateway.reload`: `prepare_tls` (off the event loop)
loads and checks every file and builds the outgoing contexts mappings need, so a bad
file fails the reload before anything changes; `apply_tls` (on the loop) loads the
material into the live `SSLContext`s. New handshakes get the new certificates; open
connections keep what they negotiated, so nothing is dropped. `reread_settings` takes
every listener setting from the file again except what needs a new socket (address,
TLS on or off), so allow-lists, limits, client_ca and client_subjects reload too.
"""

from __future__ import annotations

import asyncio
import logging
import ssl
from collections.abc import AsyncIterator, Iterable, Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from aiohttp import web

from gateway.cert_expiry import (
    CertificateWatcher,
    CertInfo,
    certificate_sources,
    client_tls_sources,
    collect_certificates,
    expiry_warnings,
    register_cert_metrics,
)
from gateway.errors import ConfigError, GatewayError, Problem
from gateway.settings import ListenerSettings, Settings, TlsClientSettings, TlsServerSettings
from gateway.tls import (
    CertSource,
    client_context,
    reload_client_context,
    reload_server_context,
    server_context,
)

if TYPE_CHECKING:
    from gateway.mapping import CompiledMapping
    from gateway.runtime import Gateway

log = logging.getLogger("gateway.tls")

CHECK_INTERVAL = 3600.0  # seconds between periodic checks


def _has_tls(tls: TlsClientSettings) -> bool:
    return any(v is not None for v in (tls.ca_file, tls.cert_file, tls.key_file))


def mapping_sources(mappings: Iterable[CompiledMapping]) -> list[CertSource]:
    """The certificate files mappings use on platform calls (role `platform:<name>`)."""
    out: list[CertSource] = []
    for m in mappings:
        out += client_tls_sources(m.platform.tls, f"platform:{m.name}")
    return out


# --- expiry -----------------------------------------------------------------------------


def _state(info: CertInfo, warn_days: float) -> str:
    if info.days_left < 0:
        return "expired"
    return "expiring" if info.days_left <= warn_days else "ok"


def describe_certificate(info: CertInfo, warn_days: float) -> dict[str, Any]:
    """One certificate as the status page shows it (public data only)."""
    return {
        "path": info.path,
        "role": info.role,
        "subject": info.subject,
        "sans": list(info.sans),
        "issuer": info.issuer,
        "not_before": info.not_before.isoformat(),
        "not_after": info.not_after.isoformat(),
        "days_left": round(info.days_left, 2),
        "state": _state(info, warn_days),
        "fingerprint_sha256": info.fingerprint_sha256,
    }


class CertificateMonitor:
    """The gateway's CertificateWatcher, its gauge, and the latest result."""

    def __init__(self, gw: Gateway, interval: float | None = None) -> None:
        self._gw = gw
        self._checked = asyncio.Event()
        self.checks = 0  # completed checks, startup included
        self.watcher = CertificateWatcher(
            self.sources,
            warn_days=lambda: float(gw.settings.cert_warning_days),
            interval=CHECK_INTERVAL if interval is None else interval,
            metrics=register_cert_metrics(gw.metrics.registry),
            clock=gw.clock,
            on_check=self._on_check,
        )

    def _on_check(self, infos: list[CertInfo], warnings: list[str]) -> None:
        self.checks += 1
        done, self._checked = self._checked, asyncio.Event()
        done.set()

    async def next_check(self) -> None:
        """Wait until the next check has completed."""
        await self._checked.wait()

    def sources(self) -> list[CertSource]:
        """Every certificate file in use by the running configuration."""
        gw = self._gw
        try:
            mappings = list(gw.routing.mappings.values())
        except GatewayError:  # not loaded yet
            mappings = []
        return certificate_sources(gw.settings, mapping_sources(mappings))

    async def start(self) -> None:
        """Start the periodic checks and wait for the first one (the startup check)."""
        first = self._checked
        self.watcher.start()
        await first.wait()

    async def stop(self) -> None:
        await self.watcher.stop()

    async def check(self) -> list[str]:
        """Check now (after a reload); return the warnings."""
        return await self.watcher.check_async()

    def describe(self) -> dict[str, Any]:
        """The latest result, for /status.json."""
        warn_days = float(self._gw.settings.cert_warning_days)
        return {
            "warning_days": warn_days,
            "certificates": [describe_certificate(i, warn_days) for i in self.watcher.latest],
            "problems": [str(p) for p in self.watcher.latest_problems],
        }


async def certificates_ctx(app: web.Application) -> AsyncIterator[None]:
    """Cleanup context: check certificates at startup, then every CHECK_INTERVAL seconds."""
    from gateway.keys import GATEWAY  # keys imports the runtime, which imports this module

    gw = app[GATEWAY]
    monitor = gw.certificates or CertificateMonitor(gw)  # one gauge per registry
    gw.certificates = monitor
    await monitor.start()
    try:
        yield
    finally:
        await monitor.stop()


@dataclass(frozen=True)
class CertificateReport:
    """What `byoc-gateway check --config` says about the certificates of a gateway.yaml."""

    infos: list[CertInfo]
    warnings: list[str]
    problems: list[Problem]
    warn_days: float = 30.0

    def lines(self) -> list[str]:
        """One line per certificate in use, then one per warning (for the terminal)."""
        out = []
        for info in self.infos:
            left = f"{info.days_left:.0f} days left" if info.days_left >= 0 else "EXPIRED"
            out.append(f"certificate {info.path} ({info.role}): {info.subject}, {left}")
        return out + [f"warning: {line}" for line in self.warnings]

    def as_dict(self) -> dict[str, Any]:
        """For `check --format json`."""
        return {
            "certificates": [describe_certificate(i, self.warn_days) for i in self.infos],
            "warnings": self.warnings,
        }


def check_certificates(
    settings: Settings, mappings: Iterable[CompiledMapping] = (), *, now: float | None = None
) -> CertificateReport:
    """Load every TLS setup as the gateway would and inspect every certificate (blocking).

    Problems: files that do not load (missing, wrong password, key not matching) and
    expired certificates. Warnings: certificates inside `cert_warning_days`.
    """
    mappings = list(mappings)
    problems: list[Problem] = []
    try:
        prepare_tls(settings, mappings)
    except ConfigError as exc:
        problems += exc.problems
    infos: list[CertInfo] = []
    try:
        infos = collect_certificates(settings, mapping_sources(mappings), now=now)
    except ConfigError as exc:
        problems += [p for p in exc.problems if p not in problems]
    warnings: list[str] = []
    for info in infos:
        for line in expiry_warnings([info], settings.cert_warning_days):
            if info.days_left >= 0:
                warnings.append(line)
                continue
            reason = f"the {info.role} certificate ({info.subject}) has expired"
            fix = "issue a new one (byoc-gateway certs) and reload"
            problems.append(Problem(info.path, "", reason, fix))
    return CertificateReport(infos, warnings, problems, float(settings.cert_warning_days))


def check_certificates_file(path: Path) -> CertificateReport:
    """`check_certificates` for a gateway.yaml and the mappings in its mappings_dir (blocking)."""
    from gateway.mapping import load_mapping_dir
    from gateway.settings_loader import load_settings

    settings = load_settings(path)
    try:
        mappings = list(load_mapping_dir(settings.mappings_dir, env=settings.env).values())
    except ConfigError:
        mappings = []  # the mapping check reports those problems
    return check_certificates(settings, mappings)


# --- reload -----------------------------------------------------------------------------


@dataclass(frozen=True)
class TlsPlan:
    """TLS material of a configuration, checked and ready to go live."""

    listeners: Mapping[str, TlsServerSettings]  # "cxone" / "platform" -> settings
    cxone_client: TlsClientSettings
    platform: Mapping[str, ssl.SSLContext]  # mapping name -> outgoing context


def prepare_tls(settings: Settings, mappings: Iterable[CompiledMapping]) -> TlsPlan:
    """Load and check every TLS file of `settings` and `mappings` (blocking).

    ConfigError names every file that does not load; nothing live is touched.
    """
    problems: list[Problem] = []
    listeners: dict[str, TlsServerSettings] = {}
    for name, listener in (
        ("platform", settings.platform_listener),
        ("cxone", settings.cxone_listener),
    ):
        if listener.tls is None:
            continue
        try:
            server_context(listener.tls)
        except ConfigError as exc:
            problems += exc.problems
        listeners[name] = listener.tls
    try:
        client_context(settings.cxone.tls)
    except ConfigError as exc:
        problems += exc.problems
    platform: dict[str, ssl.SSLContext] = {}
    for m in mappings:
        if _has_tls(m.platform.tls):
            try:
                platform[m.name] = client_context(m.platform.tls)
            except ConfigError as exc:
                problems += [replace(p, where=p.where or f"mapping {m.name}") for p in exc.problems]
    if problems:
        raise ConfigError(problems)
    return TlsPlan(listeners, settings.cxone.tls, platform)


def apply_tls(gw: Gateway, plan: TlsPlan) -> None:
    """Load a prepared plan into the live contexts (on the event loop)."""
    for name, ctx in gw.listener_tls.items():
        tls = plan.listeners.get(name)
        if tls is not None:
            reload_server_context(ctx, tls)
    if gw.cxone_tls is not None and _has_tls(plan.cxone_client):
        reload_client_context(gw.cxone_tls, plan.cxone_client)
    gw.platform_tls = plan.platform


def _merge_listener(
    name: str, running: ListenerSettings, fresh: ListenerSettings
) -> ListenerSettings:
    """Keep what needs a new socket (address, TLS on/off); take everything else from `fresh`."""
    for field in ("host", "port"):
        if getattr(running, field) != getattr(fresh, field):
            log.warning(
                "listeners.%s.%s changed: it takes effect when the gateway restarts", name, field
            )
    tls = fresh.tls
    if (running.tls is None) != (fresh.tls is None):
        log.warning(
            "listeners.%s.tls was %s: that takes effect when the gateway restarts",
            name,
            "added" if running.tls is None else "removed",
        )
        tls = running.tls
    return replace(fresh, host=running.host, port=running.port, tls=tls)


def merge_reloaded(running: Settings, fresh: Settings) -> Settings:
    """Settings for a reload: listeners' sockets and the store stay as started."""
    return replace(
        fresh,
        platform_listener=_merge_listener(
            "platform", running.platform_listener, fresh.platform_listener
        ),
        cxone_listener=_merge_listener("cxone", running.cxone_listener, fresh.cxone_listener),
        store=running.store,
    )


def reread_settings(running: Settings) -> Settings:
    """Read gateway.yaml again for a reload (blocking); the running one without a file."""
    from gateway.settings_loader import load_settings

    if running.source is None:
        return running
    return merge_reloaded(running, load_settings(Path(running.source), env=running.env))
