"""TLS and mTLS over real localhost sockets: contexts, peer checks, rotation, expiry."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
import ssl
import tempfile
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import aiohttp
import pytest
from aiohttp import web
from cryptography import x509
from prometheus_client import CollectorRegistry

from gateway.cert_expiry import (
    CertificateWatcher,
    collect_certificates,
    expiry_warnings,
    inspect_certificate,
    register_cert_metrics,
)
from gateway.certs import (
    CertificateAuthority,
    IssuedFiles,
    create_ca,
    issue_client_cert,
    issue_server_cert,
)
from gateway.clock import FakeClock
from gateway.edge import server_kwargs
from gateway.errors import ConfigError, Forbidden
from gateway.secrets import Secret
from gateway.settings import (
    CxoneAuthSettings,
    CxoneSettings,
    ListenerSettings,
    Settings,
    TlsClientSettings,
    TlsServerSettings,
)
from gateway.tls import client_context, reload_server_context, server_context
from gateway.tls_peers import check_peer
from tests.edge_app import edge_middleware

PASSWORD = "correct horse battery"


@dataclass
class Pki:
    dir: Path
    ca: CertificateAuthority
    server: IssuedFiles  # localhost + 127.0.0.1
    client: IssuedFiles  # CN=cxone, SANs, encrypted key, PKCS#12
    intruder: IssuedFiles  # same CA, CN=intruder
    expired: IssuedFiles  # same CA, CN=cxone, expired
    foreign: IssuedFiles  # another CA, CN=cxone


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    d = tmp_path_factory.mktemp("pki")
    ca = create_ca(d, "Test CA", 30, key_type="ec")
    other = create_ca(d / "other", "Foreign CA", 30, key_type="ec")
    long_ago = datetime.now(UTC) - timedelta(days=60)
    return Pki(
        dir=d,
        ca=ca,
        server=issue_server_cert(ca, ["localhost", "127.0.0.1"], 10, key_type="ec"),
        client=issue_client_cert(
            ca,
            "cxone",
            10,
            PASSWORD,
            p12=True,
            sans=["cxone.clients.example.com", "spiffe://nice.example/cxone"],
            key_type="ec",
        ),
        intruder=issue_client_cert(ca, "intruder", 10, name="intruder", key_type="ec"),
        expired=issue_client_cert(ca, "cxone", 30, name="expired", key_type="ec", now=long_ago),
        foreign=issue_client_cert(other, "cxone", 10, name="foreign", key_type="ec"),
    )


def server_tls(pki: Pki, **kw: object) -> TlsServerSettings:
    return TlsServerSettings(cert_file=pki.server.cert, key_file=pki.server.key, **kw)  # type: ignore[arg-type]


def client_tls(
    pki: Pki, files: IssuedFiles | None, password: str | None = None
) -> TlsClientSettings:
    if files is None:
        return TlsClientSettings(ca_file=pki.ca.cert_path)
    return TlsClientSettings(
        ca_file=pki.ca.cert_path,
        cert_file=files.cert,
        key_file=files.key,
        key_password=Secret(password) if password else None,
    )


@contextlib.asynccontextmanager
async def serve(
    app: web.Application,
    ssl_ctx: ssl.SSLContext | None = None,
    listener: ListenerSettings | None = None,
) -> AsyncIterator[int]:
    """Run `app` the way the gateway does (AppRunner + server_kwargs); yield the port."""
    runner = web.AppRunner(app, **server_kwargs(listener or ListenerSettings()))
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0, ssl_context=ssl_ctx)
    await site.start()
    try:
        yield runner.addresses[0][1]
    finally:
        await runner.cleanup()


def counting_app(middlewares: list[object] | None = None) -> tuple[web.Application, list[str]]:
    hits: list[str] = []

    async def hello(request: web.Request) -> web.Response:
        hits.append(request.path)
        return web.json_response({"ok": True})

    app = web.Application(middlewares=middlewares or [])  # type: ignore[arg-type]
    app.router.add_get("/", hello)
    return app, hits


async def get(url: str, ctx: ssl.SSLContext | None) -> tuple[int, dict[str, object]]:
    connector = aiohttp.TCPConnector(ssl=ctx if ctx is not None else False)
    async with (
        aiohttp.ClientSession(connector=connector) as session,
        session.get(url, timeout=aiohttp.ClientTimeout(total=10)) as resp,
    ):
        return resp.status, await resp.json()


# --- mTLS -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "max_version", [ssl.TLSVersion.TLSv1_2, ssl.TLSVersion.TLSv1_3], ids=["tls1.2", "tls1.3"]
)
async def test_mtls_matrix(pki: Pki, max_version: ssl.TLSVersion) -> None:
    tls = server_tls(pki, client_ca=pki.ca.cert_path, client_subjects=("cxone",))
    mtls_app, mtls_hits = counting_app([edge_middleware(ListenerSettings(tls=tls))])
    plain_app, plain_hits = counting_app()
    ctx = server_context(tls)
    assert ctx.verify_mode == ssl.CERT_REQUIRED
    assert ctx.minimum_version == ssl.TLSVersion.TLSv1_2

    def client(files: IssuedFiles | None, password: str | None = None) -> ssl.SSLContext:
        c = client_context(client_tls(pki, files, password))
        c.maximum_version = max_version
        return c

    async with serve(mtls_app, ctx) as port, serve(plain_app) as plain_port:
        url = f"https://127.0.0.1:{port}/"
        for refused in (None, pki.foreign, pki.expired):
            with pytest.raises(aiohttp.ClientError):  # no HTTP answer at all
                await get(url, client(refused))
        assert mtls_hits == []

        status, body = await get(url, client(pki.intruder))  # right CA, wrong name
        assert (status, body["error"]) == (403, "client_certificate_rejected")
        assert mtls_hits == []

        assert await get(url, client(pki.client, PASSWORD)) == (200, {"ok": True})
        assert mtls_hits == ["/"]

        # the platform listener next to it is unaffected
        assert await get(f"http://127.0.0.1:{plain_port}/", None) == (200, {"ok": True})
        assert plain_hits == ["/"]


async def test_check_peer_matches_cn_and_sans(pki: Pki) -> None:
    async def handler(request: web.Request) -> web.Response:
        try:
            check_peer(request, request.query.getall("allow", []))
        except Forbidden as exc:
            return web.json_response({"error": exc.code}, status=403)
        return web.json_response({"ok": True})

    app = web.Application()
    app.router.add_get("/", handler)
    ctx = server_context(server_tls(pki, client_ca=pki.ca.cert_path))
    cases = {
        "": 200,  # no list: any certificate of the CA
        "cxone": 200,  # CN
        "CXONE.clients.example.com": 200,  # DNS SAN, case-insensitive
        "*.clients.example.com": 200,  # wildcard: one label
        "*.example.com": 403,  # ... not two
        "spiffe://nice.example/cxone": 200,  # URI SAN
        "spiffe://nice.example/other": 403,
        "intruder": 403,
    }
    client = client_context(client_tls(pki, pki.client, PASSWORD))
    async with serve(app, ctx) as port:
        for allow, expected in cases.items():
            query = f"?allow={allow}" if allow else ""
            status, _ = await get(f"https://127.0.0.1:{port}/{query}", client)
            assert status == expected, allow

    plain = web.Application()
    plain.router.add_get("/", handler)
    async with serve(plain) as port:  # no TLS, no certificate: refused, never crashes
        assert (await get(f"http://127.0.0.1:{port}/?allow=cxone", None))[0] == 403


# --- loading key material -------------------------------------------------------------


def test_encrypted_key_needs_its_password(pki: Pki) -> None:
    files = pki.client
    ok = TlsServerSettings(files.cert, files.key, key_password=Secret(PASSWORD))
    assert server_context(ok).verify_mode == ssl.CERT_NONE

    with pytest.raises(ConfigError) as missing:
        server_context(TlsServerSettings(files.cert, files.key))
    message = str(missing.value)
    assert str(files.key) in message and "encrypted" in message and "set key_password" in message

    with pytest.raises(ConfigError, match="does not decrypt"):
        server_context(TlsServerSettings(files.cert, files.key, key_password=Secret("nope")))


def test_pkcs12_bundle_loads(pki: Pki) -> None:
    p12 = pki.client.p12
    assert p12 is not None
    server_context(TlsServerSettings(p12, p12, key_password=Secret(PASSWORD)))
    client_context(TlsClientSettings(cert_file=p12, key_password=Secret(PASSWORD)))
    with pytest.raises(ConfigError, match="PKCS#12") as wrong:
        server_context(TlsServerSettings(p12, p12, key_password=Secret("nope")))
    assert str(p12) in str(wrong.value)


def test_clear_errors_for_wrong_files(pki: Pki, tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="does not belong to the certificate"):
        server_context(TlsServerSettings(pki.server.cert, pki.intruder.key))
    with pytest.raises(ConfigError, match="cannot read the file") as exc:
        server_context(TlsServerSettings(tmp_path / "nope.pem", pki.server.key))
    assert "nope.pem" in str(exc.value)
    junk = tmp_path / "junk.pem"
    junk.write_text("-----BEGIN NOTHING-----\n")
    with pytest.raises(ConfigError, match="no certificate found"):
        server_context(server_tls(pki, client_ca=junk))


def test_no_key_is_left_in_temporary_files(
    pki: Pki, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    server_context(TlsServerSettings(pki.client.cert, pki.client.key, Secret(PASSWORD)))
    with pytest.raises(ConfigError):  # OpenSSL-level failure path cleans up too
        server_context(TlsServerSettings(pki.server.cert, pki.intruder.key))
    assert list(tmp_path.iterdir()) == []


async def test_client_context_always_verifies(pki: Pki) -> None:
    default = client_context(TlsClientSettings())
    assert default.verify_mode == ssl.CERT_REQUIRED and default.check_hostname
    private = client_context(TlsClientSettings(ca_file=pki.ca.cert_path))
    assert len(private.get_ca_certs()) == 1  # a custom CA replaces the system's
    app, _ = counting_app()
    async with serve(app, server_context(server_tls(pki))) as port:
        url = f"https://127.0.0.1:{port}/"
        with pytest.raises(aiohttp.ClientConnectorCertificateError):  # private CA not trusted
            await get(url, default)
        assert await get(url, private) == (200, {"ok": True})


# --- rotation ------------------------------------------------------------------------------


async def _open(
    port: int, ctx: ssl.SSLContext
) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    return await asyncio.wait_for(asyncio.open_connection("127.0.0.1", port, ssl=ctx), 10)


async def _request(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> int:
    """One keep-alive HTTP/1.1 GET on an open connection; return the status."""
    writer.write(b"GET / HTTP/1.1\r\nHost: localhost\r\n\r\n")
    await writer.drain()
    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)
    match = re.search(rb"(?i)content-length: *(\d+)", head)
    assert match is not None
    await asyncio.wait_for(reader.readexactly(int(match[1])), 10)
    return int(head.split()[1])


def _serial(writer: asyncio.StreamWriter) -> int:
    der = writer.get_extra_info("ssl_object").getpeercert(binary_form=True)
    return x509.load_der_x509_certificate(der).serial_number


def _serial_of(path: Path) -> int:
    return x509.load_pem_x509_certificate(path.read_bytes()).serial_number


async def test_rotation_keeps_open_connections(pki: Pki, tmp_path: Path) -> None:
    new = issue_server_cert(
        pki.ca, ["localhost", "127.0.0.1"], 10, out_dir=tmp_path, name="new", key_type="ec"
    )
    ctx = server_context(server_tls(pki))
    client = client_context(TlsClientSettings(ca_file=pki.ca.cert_path))
    app, _ = counting_app()
    async with serve(app, ctx) as port:
        old_reader, old_writer = await _open(port, client)
        assert await _request(old_reader, old_writer) == 200
        assert _serial(old_writer) == _serial_of(pki.server.cert)

        reload_server_context(ctx, TlsServerSettings(new.cert, new.key))

        reader, writer = await _open(port, client)
        assert _serial(writer) == _serial_of(new.cert)
        assert await _request(reader, writer) == 200
        # the connection opened before the reload goes on with its certificate
        assert await _request(old_reader, old_writer) == 200
        assert _serial(old_writer) == _serial_of(pki.server.cert)

        # a broken reload raises and leaves the live context alone
        with pytest.raises(ConfigError):
            reload_server_context(ctx, TlsServerSettings(new.cert, pki.server.key))
        _r3, w3 = await _open(port, client)
        assert _serial(w3) == _serial_of(new.cert)

        # mTLS switched on by reload: new handshakes need a certificate, old ones go on
        reload_server_context(ctx, TlsServerSettings(new.cert, new.key, client_ca=pki.ca.cert_path))
        r4, w4 = await _open(port, client)
        with pytest.raises((OSError, asyncio.IncompleteReadError)):
            await _request(r4, w4)  # TLS 1.3: the refusal arrives after the handshake
        assert await _request(old_reader, old_writer) == 200
        for w in (old_writer, writer, w3, w4):
            w.close()
            with contextlib.suppress(OSError):
                await w.wait_closed()


# --- expiry ----------------------------------------------------------------------------------


T0 = datetime(2026, 1, 1, tzinfo=UTC)
LATER = (T0 + timedelta(days=30)).timestamp()


@pytest.fixture
def expiring(pki: Pki, tmp_path: Path) -> IssuedFiles:
    return issue_server_cert(
        pki.ca, ["gw.example.com"], 35, out_dir=tmp_path, key_type="ec", now=T0
    )


def test_expiry_warning_and_gauge(expiring: IssuedFiles, pki: Pki) -> None:
    infos = inspect_certificate(expiring.cert, "cxone-listener", LATER)
    [info] = infos
    assert info.days_left == pytest.approx(5.0)
    [warning] = expiry_warnings(infos, 30)
    assert "expires in 5 days" in warning and str(expiring.cert) in warning
    assert expiry_warnings(infos, 4) == []
    expired = inspect_certificate(expiring.cert, "x", (T0 + timedelta(days=40)).timestamp())
    assert "EXPIRED" in expiry_warnings(expired, 30)[0]

    registry = CollectorRegistry()
    metrics = register_cert_metrics(registry)
    metrics.update(infos)
    labels = {"path": str(expiring.cert), "role": "cxone-listener"}
    assert registry.get_sample_value("byoc_certificate_days_left", labels) == pytest.approx(5.0)


async def test_watcher_logs_and_updates(
    expiring: IssuedFiles, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    registry = CollectorRegistry()
    sources = [(expiring.cert, "cxone-listener", None), (tmp_path / "gone.pem", "old", None)]
    checked = asyncio.Event()
    watcher = CertificateWatcher(
        lambda: sources,
        warn_days=30,
        interval=3600,
        metrics=register_cert_metrics(registry),
        clock=FakeClock(LATER),
        on_check=lambda infos, warnings: checked.set(),
    )
    with caplog.at_level(logging.WARNING, logger="gateway.tls"):
        watcher.start()
        await asyncio.wait_for(checked.wait(), 10)
        await watcher.stop()
    assert any("expires in 5 days" in r.getMessage() for r in caplog.records)
    assert any("gone.pem" in r.getMessage() and r.levelno == logging.ERROR for r in caplog.records)
    labels = {"path": str(expiring.cert), "role": "cxone-listener"}
    assert registry.get_sample_value("byoc_certificate_days_left", labels) == pytest.approx(5.0)

    sources.pop(0)  # a certificate no longer in use disappears from the gauge
    watcher.check()
    assert registry.get_sample_value("byoc_certificate_days_left", labels) is None


def test_collect_certificates_from_settings(pki: Pki, tmp_path: Path) -> None:
    p12 = pki.client.p12
    assert p12 is not None
    settings = Settings(
        source=None,
        mappings_dir=tmp_path,
        platform_listener=ListenerSettings(),
        cxone_listener=ListenerSettings(tls=server_tls(pki, client_ca=pki.ca.cert_path)),
        cxone=CxoneSettings(
            auth=CxoneAuthSettings(Secret("id"), Secret("secret")),
            tls=TlsClientSettings(
                ca_file=pki.ca.cert_path, cert_file=p12, key_password=Secret(PASSWORD)
            ),
        ),
        integrations=(),
    )
    infos = collect_certificates(settings, [(pki.intruder.cert, "platform:wh")])
    roles = [(i.role, i.subject) for i in infos]
    assert roles == [
        ("cxone-listener", "CN=localhost"),
        ("cxone-listener-client-ca", "CN=Test CA"),
        ("cxone-client", "CN=cxone"),
        ("cxone-client", "CN=Test CA"),  # the bundle's CA
        ("cxone-client-ca", "CN=Test CA"),
        ("platform:wh", "CN=intruder"),
    ]
    with pytest.raises(ConfigError, match=r"missing\.pem"):
        collect_certificates(settings, [(tmp_path / "missing.pem", "platform:x")])


def test_reload_warns_that_a_removed_ca_stays_trusted(
    pki: Pki, caplog: pytest.LogCaptureFixture
) -> None:
    ctx = server_context(server_tls(pki, client_ca=pki.ca.cert_path))
    with caplog.at_level(logging.INFO, logger="gateway.tls"):
        reload_server_context(ctx, server_tls(pki, client_ca=pki.foreign.ca))
    messages = [r.getMessage() for r in caplog.records]
    assert any("stay trusted until the gateway restarts" in m for m in messages)
    assert any(m.startswith("reloaded TLS certificate") for m in messages)
