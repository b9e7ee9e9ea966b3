"""The gateway's settings: frozen dataclasses, one per section of gateway.yaml.

`gateway.settings_loader.load_settings` builds them from the file and the environment.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from gateway.secrets import Secret


@dataclass(frozen=True)
class Timeouts:
    """Per-phase timeouts in seconds; never library defaults."""

    connect: float = 5.0
    read: float = 15.0
    total: float = 20.0


@dataclass(frozen=True)
class RetrySettings:
    """When and how often to retry a call to an upstream."""

    max_attempts: int = 8
    base_delay: float = 0.5
    max_delay: float = 60.0
    max_retry_after: float = 300.0
    retry_statuses: tuple[int, ...] = (429, 502, 503, 504)
    deadline: float = 10.0  # for synchronous paths (outbound replies)


ClientCertificate = Literal["required", "optional"]


@dataclass(frozen=True)
class TlsServerSettings:
    """TLS for a listener; `client_ca` switches on mTLS."""

    cert_file: Path
    key_file: Path
    key_password: Secret | None = None
    client_ca: Path | None = None  # set -> mTLS (client certificates from this CA)
    client_subjects: tuple[str, ...] = ()  # accepted CN / SAN values (empty: any from the CA)
    # with client_ca: "required" refuses every handshake without a certificate; "optional"
    # asks for one, refuses bad ones, and leaves the requirement to integrations (`mtls`)
    client_certificate: ClientCertificate = "required"


@dataclass(frozen=True)
class TlsClientSettings:
    """TLS for outgoing calls: optional client certificate and custom CA."""

    ca_file: Path | None = None
    cert_file: Path | None = None
    key_file: Path | None = None
    key_password: Secret | None = None


@dataclass(frozen=True)
class ListenerSettings:
    """One listening socket."""

    host: str = "127.0.0.1"
    port: int = 8080
    public_url: str | None = None
    tls: TlsServerSettings | None = None
    allow: tuple[str, ...] = ()  # CIDRs; empty: everyone
    trusted_proxies: tuple[str, ...] = ()
    max_body_bytes: int = 1_048_576
    read_timeout: float = 10.0


@dataclass(frozen=True)
class CxoneAuthSettings:
    """How the gateway authenticates to CXone (access key)."""

    access_key_id: Secret
    access_key_secret: Secret
    client_id: Secret | None = None  # the registered app's client id (Basic auth)
    client_secret: Secret | None = None
    token_endpoint: str | None = None  # explicit, or discovered from `issuer`
    issuer: str | None = None  # e.g. https://cxone.niceincontact.com
    refresh_margin: float = 60.0


@dataclass(frozen=True)
class CxoneSettings:
    """The CXone connection."""

    auth: CxoneAuthSettings
    api_base: str | None = None  # e.g. https://api-na1.niceincontact.com/dfo/3.0; else discovered
    timeouts: Timeouts = field(default_factory=Timeouts)
    retry: RetrySettings = field(default_factory=RetrySettings)
    tls: TlsClientSettings = field(default_factory=TlsClientSettings)


@dataclass(frozen=True)
class ChannelBinding:
    """A CXone channel served by one channel role of one mapping."""

    id: str  # the CXone channel id
    mapping: str  # mapping name
    role: str  # key under the mapping's `channels:`
    name: str | None = None  # display name override
    id_on_external_platform: str | None = None


@dataclass(frozen=True)
class IntegrationSettings:
    """One BYOC integration: the OAuth client the gateway issues to CXone, and its channels."""

    name: str
    client_id: str
    client_secrets: tuple[Secret, ...]  # two during a rotation
    token_signing_key: Secret
    channels: tuple[ChannelBinding, ...]
    integration_id: str | None = None  # CXone's channelIntegrationId
    token_ttl: int = 3600
    mtls: bool = False  # CXone must present a client certificate (listener client_ca)


StoreBackend = Literal["memory", "sqlite", "redis"]


@dataclass(frozen=True)
class StoreSettings:
    """Where queue, dedupe keys, thread state and caches live."""

    backend: StoreBackend = "sqlite"
    path: Path = Path("data/gateway.sqlite3")
    url: Secret | None = None  # redis://...
    prefix: str = "byoc"
    dedupe_ttl: float = 172_800.0  # 48 h: longer than the platform's retry schedule


@dataclass(frozen=True)
class DeliverySettings:
    """Queue workers."""

    workers: int = 64
    lease_seconds: float = 30.0
    poll_interval: float = 0.5
    # a webhook waits at most this long for the workers to drain a queue before its
    # events are written (0: never waits; gateway.delivery.worker.Workers.paced)
    intake_hold: float = 1.0
    retry: RetrySettings = field(default_factory=lambda: RetrySettings(max_attempts=12))


@dataclass(frozen=True)
class OutboundSettings:
    """Synchronous replies to CXone."""

    deadline: float = 10.0
    idempotency_window: float = 600.0  # the same reply within this window posts once


@dataclass(frozen=True)
class LoggingSettings:
    level: str = "INFO"
    format: Literal["json", "text"] = "json"
    log_message_text: bool = False


@dataclass(frozen=True)
class Settings:
    """Everything the gateway needs to run, frozen."""

    source: Path | None
    mappings_dir: Path
    platform_listener: ListenerSettings
    cxone_listener: ListenerSettings
    cxone: CxoneSettings
    integrations: tuple[IntegrationSettings, ...]
    store: StoreSettings = field(default_factory=StoreSettings)
    delivery: DeliverySettings = field(default_factory=DeliverySettings)
    outbound: OutboundSettings = field(default_factory=OutboundSettings)
    logging: LoggingSettings = field(default_factory=LoggingSettings)
    admin_token: Secret | None = None  # guards /status and admin pages
    cert_warning_days: int = 30
    # environment used to resolve mapping secrets; holds secret values, so never shown
    env: Mapping[str, str] | None = field(default=None, repr=False)

    def binding(self, channel_id: str) -> tuple[IntegrationSettings, ChannelBinding] | None:
        for integ in self.integrations:
            for ch in integ.channels:
                if ch.id == channel_id:
                    return integ, ch
        return None

    def channel_id(self, mapping: str, role: str) -> str | None:
        for integ in self.integrations:
            for ch in integ.channels:
                if ch.mapping == mapping and ch.role == role:
                    return ch.id
        return None
