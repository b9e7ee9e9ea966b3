"""Issue 5: certificates in use through the real gateway: expiry in sight, and rotation.

- a certificate inside `cert_warning_days` gives a warning in the log, a value of the
  `byoc_certificate_days_left` gauge, a line on /status.json and in `byoc-gateway check`,
  at startup, on reload and periodically;
- new certificate files are picked up on reload while a steady stream of requests runs,
  with no failed request and no dropped connection;
- mTLS is switched on by a reload, following docs/security.md, without an outage.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import shutil
import socket
import ssl
import subprocess
import sys
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp
import pytest
from cryptography import x509
from prometheus_client.parser import text_string_to_metric_families
from yarl import URL

from gateway import certwatch
from gateway.certs import issue_server_cert
from gateway.certwatch import check_certificates
from gateway.settings_loader import load_settings
from tests.security_world import (
    CHAT_CHANNEL,
    SECRETS,
    SERVER_KEY_PASSWORD,
    Pki,
    TlsWorld,
    build_pki,
    encrypt_key,
    fetch,
    start_tls_world,
)

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    return build_pki(tmp_path_factory.mktemp("pki"))


@pytest.fixture(scope="module")
def short_pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    """The listeners' certificate expires in 10 days."""
    return build_pki(tmp_path_factory.mktemp("short-pki"), server_days=10)


def _gauge(text: str) -> dict[tuple[str, str], float]:
    out = {}
    for family in text_string_to_metric_families(text):
        if family.name == "byoc_certificate_days_left":
            for sample in family.samples:
                out[(sample.labels["role"], Path(sample.labels["path"]).name)] = sample.value
    return out


def _expiry_lines(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [
        r.getMessage()
        for r in caplog.records
        if r.levelno == logging.WARNING and "expires in" in r.getMessage()
    ]


async def test_a_certificate_in_the_warning_window_is_reported_everywhere(
    tmp_path: Path,
    short_pki: Pki,
    caplog: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(certwatch, "CHECK_INTERVAL", 0.2)  # "periodically", made quick
    caplog.set_level(logging.INFO, logger="gateway.tls")
    async with start_tls_world(tmp_path, short_pki) as world:
        # at startup: one warning per listener using the certificate
        lines = _expiry_lines(caplog)
        for role in ("cxone-listener", "platform-listener"):
            assert any(f"({role}, CN=localhost) expires in 9 days" in m for m in lines), lines
        assert all("server.pem" in m for m in lines)  # only the short-lived one

        # the gauge, for every certificate in use, on the real /metrics
        status, text, _ = await fetch(world.cxone_url + "/metrics", world.as_cxone())
        assert status == 200
        gauge = _gauge(text)
        assert 9 < gauge[("cxone-listener", "server.pem")] < 10
        assert 9 < gauge[("platform-listener", "server.pem")] < 10
        assert gauge[("cxone-listener-client-ca", "ca.pem")] > 300
        assert 89 < gauge[("cxone-client", "gateway-client.pem")] < 90
        assert gauge[("cxone-client-ca", "ca.pem")] > 300

        # the status page lists them, with their state
        admin = {"Authorization": f"Bearer {SECRETS.admin_token}"}
        status, body, _ = await fetch(
            world.cxone_url + "/status.json", world.as_cxone(), headers=admin
        )
        assert status == 200, body
        listed = {
            (c["role"], Path(c["path"]).name): c for c in body["certificates"]["certificates"]
        }
        assert listed[("cxone-listener", "server.pem")]["state"] == "expiring"
        assert listed[("cxone-client", "gateway-client.pem")]["state"] == "ok"
        assert listed[("cxone-listener", "server.pem")]["subject"] == "CN=localhost"
        assert body["certificates"]["problems"] == []

        # periodically: the watcher checks again on its own
        monitor = world.gateway.certificates
        assert monitor is not None
        caplog.clear()
        await asyncio.wait_for(monitor.next_check(), 10)
        assert len(_expiry_lines(caplog)) == 2

        # and on reload
        checks = monitor.checks
        caplog.clear()
        assert (await world.gateway.reload()).ok
        assert monitor.checks > checks
        assert len(_expiry_lines(caplog)) >= 2

        # byoc-gateway check --config reports them; a warning alone does not fail it
        done, as_json = await asyncio.gather(
            asyncio.to_thread(_check_cli, world, "--format", "text"),
            asyncio.to_thread(_check_cli, world, "--format", "json"),
        )
        assert done.returncode == 0, done.stdout + done.stderr
        assert "warning: certificate" in done.stdout and "expires in 9 days" in done.stdout
        assert "(cxone-client-ca): CN=byoc-gateway test CA" in done.stdout
        entry = json.loads(as_json.stdout)["files"][-1]
        assert entry["ok"] and any("expires in 9 days" in w for w in entry["warnings"])
        states = {(c["role"], c["state"]) for c in entry["certificates"]}
        assert ("platform-listener", "expiring") in states


def _check_cli(world: TlsWorld, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, **world.env}
    return subprocess.run(
        [sys.executable, "-m", "gateway.cli", "check", "--config", str(world.config_path), *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_check_fails_on_expired_or_unreadable_certificates(tmp_path: Path, pki: Pki) -> None:
    from tests.security_world import copy_pki, gateway_yaml, world_env

    local = copy_pki(pki, tmp_path)
    path = tmp_path / "gateway.yaml"
    path.write_text(gateway_yaml(tmp_path, local))
    env = world_env("http://127.0.0.1:9/v1", "https://127.0.0.1:9")
    report = check_certificates(load_settings(path, env=env))
    assert report.problems == [] and report.warnings == []

    shutil.copy(local.expired.cert, local.gateway_client.cert)  # wrong key and expired
    shutil.copy(local.expired.key, local.gateway_client.key)
    env["GATEWAY_CLIENT_KEY_PASSWORD"] = "unused"
    report = check_certificates(load_settings(path, env=env))
    reasons = " / ".join(str(p) for p in report.problems)
    assert "cxone-client certificate (CN=cxone) has expired" in reasons
    local.server.key.unlink()
    report = check_certificates(load_settings(path, env=env))
    assert any("server.key" in str(p) and "cannot read" in str(p) for p in report.problems)


# --- rotation under load --------------------------------------------------------------


def _serial_of(path: Path) -> int:
    return x509.load_pem_x509_certificate(path.read_bytes()).serial_number


@dataclass
class Stream:
    """Requests in loops until stopped; every outcome is kept."""

    ok: dict[str, int] = field(default_factory=dict)  # successes per kind of request
    failures: list[str] = field(default_factory=list)
    serials: set[int] = field(default_factory=set)  # server certificates seen
    progress: asyncio.Event = field(default_factory=asyncio.Event)
    stop: asyncio.Event = field(default_factory=asyncio.Event)

    async def run(self, name: str, call: Callable[[], Awaitable[int | None]]) -> None:
        self.ok[name] = 0
        while not self.stop.is_set():
            try:
                serial = await call()
            except Exception as exc:
                self.failures.append(f"{name}: {type(exc).__name__}: {exc}")
                self.progress.set()
            else:
                self.ok[name] += 1
                if serial is not None:
                    self.serials.add(serial)
                self.progress.set()

    async def advance(self, n: int) -> None:
        """Wait until every kind of request has succeeded `n` more times."""
        target = {name: count + n for name, count in self.ok.items()}
        while any(self.ok[name] < want for name, want in target.items()):
            assert not self.failures, self.failures
            self.progress.clear()
            await asyncio.wait_for(self.progress.wait(), 10)


async def _fresh_get(url: str, ctx: ssl.SSLContext) -> int:
    """GET on a new TLS connection; return the serial of the server certificate it got."""
    parsed = URL(url)
    assert parsed.host is not None and parsed.port is not None
    reader, writer = await asyncio.wait_for(
        asyncio.open_connection(parsed.host, parsed.port, ssl=ctx), 10
    )
    try:
        der = writer.get_extra_info("ssl_object").getpeercert(True)
        head = f"GET {parsed.raw_path} HTTP/1.1\r\nHost: {parsed.host}\r\nConnection: close\r\n\r\n"
        writer.write(head.encode())
        await writer.drain()
        answer = await asyncio.wait_for(reader.read(), 10)
    finally:
        writer.close()
        with contextlib.suppress(OSError, ssl.SSLError):
            await writer.wait_closed()
    assert answer.startswith(b"HTTP/1.1 200 "), answer[:200]
    return x509.load_der_x509_certificate(der).serial_number


@contextlib.asynccontextmanager
async def _steady_stream(world: TlsWorld) -> AsyncIterator[Stream]:
    """CXone's agent (pooled connections), fresh handshakes on both listeners, webhooks."""
    conv, msg = await world.dm("usr_zebra", "before the rotation")
    await world.delivered(CHAT_CHANNEL, msg)
    stream = Stream()
    cxone = world.as_cxone()
    texts = iter(range(1_000_000))

    async def typing() -> None:
        status = (await world.cxone.agent_typing(CHAT_CHANNEL, conv, True)).status
        assert status == 204, status

    async def webhook() -> None:
        _, m = await world.dm("usr_zebra", f"during the rotation {next(texts)}")
        await world.delivered(CHAT_CHANNEL, m)

    calls: dict[str, Callable[[], Awaitable[int | None]]] = {
        "typing": typing,
        "webhook": webhook,
        "cxone-fresh": lambda: _fresh_get(world.cxone_url + "/healthz", cxone),
        "platform-fresh": lambda: _fresh_get(world.platform_url + "/healthz", world.tls_as()),
    }
    tasks = [asyncio.create_task(stream.run(name, call)) for name, call in calls.items()]
    await asyncio.sleep(0)  # let every loop register itself
    try:
        yield stream
    finally:
        stream.stop.set()
        await asyncio.gather(*tasks)


def _replace_atomically(src: Path, dst: Path) -> None:
    tmp = dst.with_suffix(dst.suffix + ".new")
    shutil.copy(src, tmp)
    os.replace(tmp, dst)


async def test_rotation_and_reload_under_a_steady_stream(
    tmp_path: Path, pki: Pki, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="gateway.tls")
    async with start_tls_world(tmp_path, pki) as world:
        live = world.pki.server
        old_serial = _serial_of(live.cert)
        new = issue_server_cert(
            world.pki.ca,
            ["localhost", "127.0.0.1"],
            90,
            out_dir=tmp_path,
            name="new",
            key_type="ec",
        )
        encrypt_key(new.key, SERVER_KEY_PASSWORD)
        async with _steady_stream(world) as stream:
            await stream.advance(5)
            assert stream.serials == {old_serial}

            # a broken rotation (the key of another certificate) is refused, nothing changes
            _replace_atomically(new.cert, live.cert)
            result = await world.gateway.reload()
            assert not result.ok and any("does not belong" in e for e in result.errors)
            await stream.advance(5)
            assert stream.serials == {old_serial}

            # the real rotation: new key in place too, then reload
            _replace_atomically(new.key, live.key)
            result = await world.gateway.reload()
            assert result.ok, result.errors
            await stream.advance(10)
        assert stream.failures == []
        assert _serial_of(new.cert) in stream.serials  # new handshakes got the new one
        assert await _fresh_get(world.cxone_url + "/healthz", world.as_cxone()) == _serial_of(
            new.cert
        )
        messages = [r.getMessage() for r in caplog.records]
        assert sum(m.startswith("reloaded TLS certificate") for m in messages) >= 2


def _tls_session(url: str, ctx: ssl.SSLContext, session: ssl.SSLSession | None) -> ssl.SSLSocket:
    parsed = URL(url)
    assert parsed.host is not None and parsed.port is not None
    raw = socket.create_connection((parsed.host, parsed.port), timeout=10)
    return ctx.wrap_socket(raw, server_hostname=parsed.host, session=session)


def _session_without_certificate(url: str, ctx: ssl.SSLContext) -> ssl.SSLSession | None:
    with _tls_session(url, ctx, None) as conn:
        conn.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        conn.recv(65536)
        return conn.session


def _resume(url: str, ctx: ssl.SSLContext, session: ssl.SSLSession | None) -> tuple[bool, bytes]:
    """(resumed?, the answer) of a request on a connection resuming `session`."""
    try:
        with _tls_session(url, ctx, session) as conn:
            conn.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            return bool(conn.session_reused), conn.recv(65536)
    except (ssl.SSLError, OSError):
        return False, b""  # refused during or right after the handshake


async def _keep_alive_get(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> bytes:
    writer.write(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
    await writer.drain()
    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)
    length = int(head.lower().split(b"content-length:")[1].split(b"\r\n")[0])
    await asyncio.wait_for(reader.readexactly(length), 10)
    return head


async def test_switching_mtls_on_by_reload_causes_no_outage(tmp_path: Path, pki: Pki) -> None:
    """docs/security.md, section 4: CXone presents its certificate first, then the gateway asks."""
    async with start_tls_world(tmp_path, pki, client_ca=False) as world:
        health = world.cxone_url + "/healthz"
        # before: anyone with TLS gets in
        assert (await fetch(health, world.tls_as()))[0] == 200
        no_cert = world.tls_as()
        session = await asyncio.to_thread(_session_without_certificate, health, no_cert)
        host, port = URL(health).host, URL(health).port
        old = await asyncio.open_connection(host, port, ssl=world.tls_as())
        assert b" 200 " in await _keep_alive_get(*old)
        async with _steady_stream(world) as stream:
            await stream.advance(5)
            world.rewrite_config()  # step 5: client_ca + client_subjects, integration mtls
            result = await world.gateway.reload()
            assert result.ok, result.errors
            await stream.advance(10)
        assert stream.failures == []

        # a keep-alive connection from before is served once more, told to close, closed
        head = await _keep_alive_get(*old)
        assert b" 200 " in head and b"connection: close" in head.lower()
        assert await asyncio.wait_for(old[0].read(), 10) == b""
        old[1].close()
        # a TLS session from before cannot be resumed to skip the certificate
        resumed, answer = await asyncio.to_thread(_resume, health, no_cert, session)
        assert not resumed and b" 200 " not in answer
        # after: the handshake wants a certificate from the CA, and the right name
        with pytest.raises(aiohttp.ClientError):
            await fetch(world.cxone_url + "/healthz", world.tls_as())
        status, body, _ = await fetch(
            world.cxone_url + "/healthz", world.tls_as(world.pki.intruder)
        )
        assert (status, body["error"]) == (403, "client_certificate_rejected")
        assert world.gateway.settings.integrations[0].mtls
        # rollback: remove client_ca again and reload
        world.rewrite_config(client_ca=False)
        assert (await world.gateway.reload()).ok
        assert (await fetch(world.cxone_url + "/healthz", world.tls_as()))[0] == 200
