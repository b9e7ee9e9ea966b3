"""A world over real TLS: both simulators and the real gateway, every hop encrypted.

- the Watering Hole simulator delivers webhooks to the platform listener over TLS;
- the CXone simulator's agent calls the CXone listener over TLS with its client
  certificate (mTLS), and the CXone API side is served over TLS that requires the
  gateway's own client certificate (outgoing mTLS);
- the gateway is configured by a gateway.yaml written here and loaded by the real
  loader, with key passwords given as `${VAR}` references.

Certificates come from `gateway.certs` (EC keys: fast).
"""

from __future__ import annotations

import contextlib
import shutil
import ssl
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, TypeVar

import aiohttp
import yaml
from aiohttp import web
from cryptography.hazmat.primitives import serialization

from gateway.certs import (
    CertificateAuthority,
    IssuedFiles,
    create_ca,
    issue_client_cert,
    issue_server_cert,
)
from gateway.clock import system_clock
from gateway.runtime import Gateway
from gateway.sandbox.cxone import CxoneSim
from gateway.sandbox.watering_hole import WateringHoleSim
from gateway.sandbox.wiring import (
    BOARD_CHANNEL,
    CHAT_CHANNEL,
    REPO_MAPPINGS,
    SandboxSecrets,
    sandbox_env,
)
from gateway.secrets import Secret
from gateway.server import RunningGateway, start_gateway
from gateway.settings import Settings, TlsClientSettings, TlsServerSettings
from gateway.settings_loader import load_settings
from gateway.tls import client_context, server_context
from tests.harness import InThread, cxone_config, wh_config

T = TypeVar("T")
SECRETS = SandboxSecrets()
WEBHOOK_PATH = "/webhooks/watering-hole"
CLIENT_PASSWORD = "cxone-client-key-password"
SERVER_KEY_PASSWORD = "server-key-password-0123"
GATEWAY_CLIENT_PASSWORD = "gateway-client-key-password"
MEADOW_CLIENT_ID = "meadow-byoc"
MEADOW_SECRET = "meadow-client-secret-0123456789"
MEADOW_SIGNING_KEY = "meadow-signing-key-0123456789-abcdefghijklmnop"

__all__ = ["BOARD_CHANNEL", "CHAT_CHANNEL", "SECRETS", "Pki", "TlsWorld", "build_pki"]


@dataclass(frozen=True)
class Pki:
    """Every certificate the tests need, in one directory."""

    dir: Path
    ca: CertificateAuthority
    server: IssuedFiles  # localhost + 127.0.0.1, key encrypted with SERVER_KEY_PASSWORD
    cxone: IssuedFiles  # what CXone presents: CN=cxone, key encrypted, PKCS#12 too
    intruder: IssuedFiles  # same CA, CN=intruder (wrong name)
    expired: IssuedFiles  # same CA, CN=cxone, expired
    foreign: IssuedFiles  # another CA, CN=cxone
    gateway_client: IssuedFiles  # what the gateway presents to CXone


def encrypt_key(path: Path, password: str) -> None:
    """Rewrite an unencrypted PEM key as an encrypted PKCS#8 one."""
    key = serialization.load_pem_private_key(path.read_bytes(), None)
    path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.BestAvailableEncryption(password.encode()),
        )
    )


def build_pki(directory: Path, *, server_days: int = 90) -> Pki:
    """Create the CA and every certificate in `directory`."""
    ca = create_ca(directory, "byoc-gateway test CA", 365, key_type="ec")
    other = create_ca(directory / "other", "Someone else's CA", 365, key_type="ec")
    long_ago = datetime.now(UTC) - timedelta(days=60)
    server = issue_server_cert(ca, ["localhost", "127.0.0.1"], server_days, key_type="ec")
    encrypt_key(server.key, SERVER_KEY_PASSWORD)
    return Pki(
        dir=directory,
        ca=ca,
        server=server,
        cxone=issue_client_cert(
            ca, "cxone", 90, CLIENT_PASSWORD, p12=True, sans=["cxone.example.com"], key_type="ec"
        ),
        intruder=issue_client_cert(ca, "intruder", 90, name="intruder", key_type="ec"),
        expired=issue_client_cert(ca, "cxone", 30, name="expired", key_type="ec", now=long_ago),
        foreign=issue_client_cert(other, "cxone", 90, name="foreign", key_type="ec"),
        gateway_client=issue_client_cert(
            ca, "byoc-gateway", 90, GATEWAY_CLIENT_PASSWORD, name="gateway-client", key_type="ec"
        ),
    )


def client_ssl(
    pki: Pki, files: IssuedFiles | None = None, password: str | None = None
) -> ssl.SSLContext:
    """A client context trusting the test CA, presenting `files` when given."""
    if files is None:
        return client_context(TlsClientSettings(ca_file=pki.ca.cert_path))
    return client_context(
        TlsClientSettings(
            ca_file=pki.ca.cert_path,
            cert_file=files.cert,
            key_file=files.key,
            key_password=Secret(password) if password else None,
        )
    )


def gateway_yaml(
    directory: Path,
    pki: Pki,
    *,
    client_ca: bool = True,
    client_certificate: str | None = None,
    client_subjects: tuple[str, ...] = ("cxone",),
    mtls: bool = True,
    read_timeout: float = 2.0,
    max_body_bytes: int = 65_536,
    cert_warning_days: int = 30,
    cxone_allow: tuple[str, ...] = (),
    trusted_proxies: tuple[str, ...] = (),
    log_level: str = "INFO",
    mappings_dir: Path = REPO_MAPPINGS,
) -> str:
    """The text of a gateway.yaml with TLS on both listeners (paths relative to it)."""

    def rel(path: Path) -> str:
        return str(path.relative_to(directory))

    server_tls: dict[str, Any] = {
        "cert_file": rel(pki.server.cert),
        "key_file": rel(pki.server.key),
        "key_password": "${SERVER_KEY_PASSWORD}",
    }
    cxone_tls = dict(server_tls)
    if client_ca:
        cxone_tls["client_ca"] = rel(pki.ca.cert_path)
        cxone_tls["client_subjects"] = list(client_subjects)
        if client_certificate is not None:
            cxone_tls["client_certificate"] = client_certificate
    limits = {"read_timeout": read_timeout, "max_body_bytes": max_body_bytes}
    cxone_listener: dict[str, Any] = {"host": "127.0.0.1", "port": 0, "tls": cxone_tls, **limits}
    if cxone_allow:
        cxone_listener["allow"] = list(cxone_allow)
    if trusted_proxies:
        cxone_listener["trusted_proxies"] = list(trusted_proxies)
    doc: dict[str, Any] = {
        "mappings_dir": str(mappings_dir),
        "data_dir": "data",
        "admin_token": "${ADMIN_TOKEN}",
        "cert_warning_days": cert_warning_days,
        "listeners": {
            "platform": {"host": "127.0.0.1", "port": 0, "tls": server_tls, **limits},
            "cxone": cxone_listener,
        },
        "cxone": {
            "auth": {
                "issuer": "${CXONE_ISSUER}",
                "access_key_id": "${CXONE_ACCESS_KEY_ID}",
                "access_key_secret": "${CXONE_ACCESS_KEY_SECRET}",
                "client_id": "${CXONE_APP_CLIENT_ID}",
                "client_secret": "${CXONE_APP_CLIENT_SECRET}",
            },
            "timeouts": {"connect": 2, "read": 5, "total": 8},
            "retry": {"max_attempts": 3, "base_delay": 0.05, "max_delay": 0.5},
            "tls": {
                "ca_file": rel(pki.ca.cert_path),
                "cert_file": rel(pki.gateway_client.cert),
                "key_file": rel(pki.gateway_client.key),
                "key_password": "${GATEWAY_CLIENT_KEY_PASSWORD}",
            },
        },
        "integrations": [
            {
                "name": "jungle",
                "client_id": "${BYOC_CLIENT_ID}",
                "client_secrets": ["${BYOC_CLIENT_SECRET}"],
                "token_signing_key": "${BYOC_TOKEN_SIGNING_KEY}",
                "mtls": mtls and client_ca,
                "channels": [
                    {"id": CHAT_CHANNEL, "mapping": "watering-hole", "role": "chat"},
                    {"id": BOARD_CHANNEL, "mapping": "watering-hole", "role": "board"},
                ],
            },
            {  # a second integration that never asks for a certificate
                "name": "meadow",
                "client_id": MEADOW_CLIENT_ID,
                "client_secrets": ["${MEADOW_SECRET}"],
                "token_signing_key": "${MEADOW_SIGNING_KEY}",
                "channels": [],
            },
        ],
        "store": {"backend": "memory"},
        "delivery": {
            "workers": 4,
            "poll_interval": 0.05,
            "retry": {"max_attempts": 6, "base_delay": 0.05, "max_delay": 0.5},
        },
        "outbound": {"deadline": 5.0},
        "logging": {"level": log_level, "format": "json"},
    }
    return yaml.safe_dump(doc, sort_keys=False)


def world_env(wh_api: str, cxone_issuer: str) -> dict[str, str]:
    """Every variable the gateway.yaml above refers to."""
    env = sandbox_env(wh_api, cxone_issuer, SECRETS)
    env.update(
        {
            "SERVER_KEY_PASSWORD": SERVER_KEY_PASSWORD,
            "GATEWAY_CLIENT_KEY_PASSWORD": GATEWAY_CLIENT_PASSWORD,
            "MEADOW_SECRET": MEADOW_SECRET,
            "MEADOW_SIGNING_KEY": MEADOW_SIGNING_KEY,
        }
    )
    return env


def copy_pki(pki: Pki, directory: Path) -> Pki:
    """A copy of the PKI files inside `directory` (tests may then overwrite them)."""
    target = directory / "pki"
    shutil.copytree(pki.dir, target, dirs_exist_ok=True)

    def moved(files: IssuedFiles) -> IssuedFiles:
        def at(p: Path | None) -> Path | None:
            return None if p is None else target / p.relative_to(pki.dir)

        cert, key, ca = at(files.cert), at(files.key), at(files.ca)
        assert cert is not None and key is not None and ca is not None
        return IssuedFiles(cert, key, ca, at(files.p12))

    ca = CertificateAuthority(pki.ca.cert, pki.ca.key, target / "ca.pem", target / "ca.key")
    return Pki(
        target,
        ca,
        moved(pki.server),
        moved(pki.cxone),
        moved(pki.intruder),
        moved(pki.expired),
        moved(pki.foreign),
        moved(pki.gateway_client),
    )


async def _serve(app: web.Application, ctx: ssl.SSLContext | None) -> tuple[web.AppRunner, str]:
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0, ssl_context=ctx)
    await site.start()
    port = runner.addresses[0][1]
    return runner, f"{'https' if ctx else 'http'}://127.0.0.1:{port}"


@dataclass
class TlsWorld:
    """Simulators + the running gateway, over TLS."""

    wh: WateringHoleSim
    cxone: CxoneSim
    running: RunningGateway
    settings: Settings
    pki: Pki
    directory: Path
    config_path: Path
    env: dict[str, str]

    @property
    def gateway(self) -> Gateway:
        return self.running.apps.gateway

    @property
    def cxone_url(self) -> str:
        return self.running.urls["cxone"]

    @property
    def platform_url(self) -> str:
        return self.running.urls["platform"]

    @property
    def box_url(self) -> str:
        return self.cxone_url + "/integration/box"

    def tls_as(
        self, files: IssuedFiles | None = None, password: str | None = None
    ) -> ssl.SSLContext:
        """A client context trusting the gateway's CA, presenting `files` when given."""
        return client_ssl(self.pki, files, password)

    def as_cxone(self) -> ssl.SSLContext:
        """What CXone presents: the valid client certificate."""
        return client_ssl(self.pki, self.pki.cxone, CLIENT_PASSWORD)

    async def dm(self, user: str, text: str) -> tuple[str, str]:
        conv, msg = await self.wh.user_sends_dm(user, text)
        await self.wh.flush()
        return conv, msg

    async def delivered(self, channel: str, message_id: str, timeout: float = 10.0) -> Any:
        def find() -> Any:
            for m in self.cxone.messages:
                if m.channel_id == channel and m.message_id == message_id:
                    return m
            return None

        return await self.cxone.wait_for(find, timeout=timeout)

    def rewrite_config(self, **kw: Any) -> None:
        """Write a new gateway.yaml (for a reload)."""
        self.config_path.write_text(gateway_yaml(self.directory, self.pki, **kw))


PLATFORM_TLS = """\
  tls:
    ca_file: ../pki/ca.pem
    cert_file: ../pki/gateway-client.pem
    key_file: ../pki/gateway-client.key
    key_password: ${GATEWAY_CLIENT_KEY_PASSWORD}
"""


def mapping_with_platform_tls(directory: Path) -> Path:
    """The Watering Hole mapping, asking for a client certificate on its API calls."""
    target = directory / "mappings"
    target.mkdir(parents=True, exist_ok=True)
    text = (REPO_MAPPINGS / "watering-hole.yaml").read_text()
    head = "  idempotency_header: Idempotency-Key\n"
    assert head in text
    (target / "watering-hole.yaml").write_text(text.replace(head, head + PLATFORM_TLS, 1))
    return target


@contextlib.asynccontextmanager
async def start_tls_world(
    directory: Path, pki: Pki, *, platform_mtls: bool = False, **yaml_kw: Any
) -> AsyncIterator[TlsWorld]:
    """Start both simulators and the gateway over TLS; stop everything on exit.

    `platform_mtls`: the Watering Hole API requires a client certificate, and the
    mapping (a copy) names the one the gateway presents.
    """
    directory.mkdir(parents=True, exist_ok=True)
    pki = copy_pki(pki, directory)
    if platform_mtls:
        yaml_kw["mappings_dir"] = mapping_with_platform_tls(directory)
    trusting = client_ssl(pki)
    wh = WateringHoleSim(
        wh_config(
            rate_limit_per_second=10_000,
            clock=system_clock,
        )
    )
    # the platform's webhook client trusts the gateway's CA (no client certificate)
    wh.dispatcher.session = aiohttp.ClientSession(connector=aiohttp.TCPConnector(ssl=trusting))
    cxone = CxoneSim(
        cxone_config(
            gateway_ssl=client_ssl(pki, pki.cxone, CLIENT_PASSWORD),
        )
    )
    # the upstreams (CXone always, the platform when asked) require the gateway's certificate
    upstream_tls = server_context(
        TlsServerSettings(
            pki.server.cert,
            pki.server.key,
            Secret(SERVER_KEY_PASSWORD),
            client_ca=pki.ca.cert_path,
            client_subjects=("byoc-gateway",),
        )
    )
    wh_runner, wh_url = await _serve(wh.app, upstream_tls if platform_mtls else None)
    cx_runner, cx_url = await _serve(cxone.app, upstream_tls)
    running: RunningGateway | None = None
    try:
        config_path = directory / "gateway.yaml"
        config_path.write_text(gateway_yaml(directory, pki, **yaml_kw))
        env = world_env(f"{wh_url}/v1", cx_url)
        settings = load_settings(config_path, env=env)
        running = await start_gateway(settings, shutdown_timeout=2.0)
        wh.webhook_url = running.urls["platform"] + WEBHOOK_PATH
        cxone.gateway_box_url = running.urls["cxone"] + "/integration/box"
        yield TlsWorld(wh, cxone, running, settings, pki, directory, config_path, env)
    finally:
        if running is not None:
            await running.stop()
        await cx_runner.cleanup()
        await wh_runner.cleanup()


async def fetch(
    url: str,
    ctx: ssl.SSLContext,
    method: str = "GET",
    **kw: Any,
) -> tuple[int, Any, dict[str, str]]:
    """One request on a fresh connection; (status, JSON or text body, headers)."""
    connector = aiohttp.TCPConnector(ssl=ctx, force_close=True)
    timeout = aiohttp.ClientTimeout(total=10)
    async with (
        aiohttp.ClientSession(connector=connector, timeout=timeout) as session,
        session.request(method, url, **kw) as resp,
    ):
        raw = await resp.read()
        try:
            body: Any = await resp.json(content_type=None) if raw else None
        except ValueError:
            body = raw.decode(errors="replace")
        return resp.status, body, dict(resp.headers)


def token_request(client_id: str, secret: str) -> dict[str, Any]:
    return {
        "json": {
            "grant_type": "client_credentials",
            "client_id": client_id,
            "client_secret": secret,
        }
    }


def threaded_tls_world(directory: Path, pki: Pki, **yaml_kw: Any) -> InThread[TlsWorld]:
    """A TlsWorld on its own event loop in a thread (for hypothesis' synchronous tests)."""
    return InThread(lambda: start_tls_world(directory, pki, **yaml_kw))
