"""CXone auth and DFO client against a small fake CXone over real sockets."""

from __future__ import annotations

import asyncio
import base64
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from email.utils import formatdate
from typing import Any

import aiohttp
import jwt
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from gateway import jsonutil
from gateway.clock import FakeClock
from gateway.cxone.auth import CxoneAuth
from gateway.cxone.client import CxoneClient
from gateway.errors import ConfigError, UpstreamRejected, UpstreamUnavailable
from gateway.http import client_timeout, make_session
from gateway.http_pool import HttpPool
from gateway.secrets import Secret
from gateway.settings import CxoneAuthSettings, CxoneSettings, Timeouts

KEY_ID = "AKIA-key-id-0001"
KEY_SECRET = "s3cr3t-access-key-value"
CLIENT_ID = "registered-app"
CLIENT_SECRET = "app-client-secret-xyz"
TENANT = "11eb0000-tenant-0001"
SIGNING_KEY = "fake-cxone-signing-key-of-32-bytes!!"

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
AiohttpServer = Callable[[web.Application], Awaitable[TestServer]]


class FakeCxone:
    """Discovery, token endpoint and DFO API; tests script the DFO answers."""

    def __init__(self) -> None:
        self.origin = ""
        self.expires_in: Any = 3600
        self.issued: list[str] = []
        self.token_forms: list[dict[str, str]] = []
        self.token_auth: list[str | None] = []
        self.oidc_calls = 0
        self.config_tenants: list[str] = []
        self.token_script: list[Handler] = []
        self.dfo_script: list[Handler] = []
        self.reject_next = 0  # answer this many DFO calls with 401
        self.dfo_calls: list[dict[str, Any]] = []
        self.release = asyncio.Event()  # lets held handlers finish at teardown

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_get("/.well-known/openid-configuration", self.oidc)
        app.router.add_get("/.well-known/cxone-configuration", self.cxone_config)
        app.router.add_post("/auth/token", self.token)
        app.router.add_route("*", "/api/dfo/3.0/{tail:.*}", self.dfo)
        return app

    async def oidc(self, request: web.Request) -> web.Response:
        self.oidc_calls += 1
        return web.json_response(
            {"issuer": self.origin, "token_endpoint": f"{self.origin}/auth/token"}
        )

    async def cxone_config(self, request: web.Request) -> web.Response:
        self.config_tenants.append(request.query.get("tenantId", ""))
        return web.json_response({"api_endpoint": f"{self.origin}/api", "area": "na1"})

    async def token(self, request: web.Request) -> web.StreamResponse:
        self.token_forms.append(dict(await request.post()))  # type: ignore[arg-type]
        self.token_auth.append(request.headers.get("Authorization"))
        if self.token_script:
            return await self.token_script.pop(0)(request)
        value = f"tok-{len(self.issued) + 1}"
        self.issued.append(value)
        id_token = jwt.encode(
            {"tenantId": TENANT, "iss": self.origin, "sub": "user"}, SIGNING_KEY, "HS256"
        )
        return web.json_response(
            {
                "access_token": value,
                "id_token": id_token,
                "token_type": "Bearer",
                "expires_in": self.expires_in,
            }
        )

    async def dfo(self, request: web.Request) -> web.StreamResponse:
        raw = await request.read()
        call = {
            "method": request.method,
            "path": request.raw_path,
            "auth": request.headers.get("Authorization"),
            "content_type": request.headers.get("Content-Type"),
            "body": jsonutil.loads(raw) if raw else None,
        }
        self.dfo_calls.append(call)
        bearer = (call["auth"] or "").removeprefix("Bearer ")
        if self.reject_next > 0 or bearer not in self.issued:
            self.reject_next = max(0, self.reject_next - 1)
            return web.json_response({"error": "invalid_token"}, status=401)
        if self.dfo_script:
            return await self.dfo_script.pop(0)(request)
        return web.json_response({"ok": True, "echo": call["body"]})

    @property
    def token_calls(self) -> int:
        return len(self.token_forms)


def answer(status: int, body: Any = None, headers: dict[str, str] | None = None) -> Handler:
    async def handler(request: web.Request) -> web.StreamResponse:
        if body is None:
            return web.Response(status=status, headers=headers)
        return web.json_response(body, status=status, headers=headers)

    return handler


def settings(
    fake: FakeCxone,
    *,
    discover: bool = True,
    api_base: bool = False,
    issuer: bool = True,
    basic: bool = True,
    timeouts: Timeouts | None = None,
) -> CxoneSettings:
    return CxoneSettings(
        auth=CxoneAuthSettings(
            access_key_id=Secret(KEY_ID, "KEY_ID"),
            access_key_secret=Secret(KEY_SECRET, "KEY_SECRET"),
            client_id=Secret(CLIENT_ID) if basic else None,
            client_secret=Secret(CLIENT_SECRET) if basic else None,
            token_endpoint=None if discover else f"{fake.origin}/auth/token",
            issuer=fake.origin if issuer else None,
            refresh_margin=60.0,
        ),
        api_base=f"{fake.origin}/api/dfo/3.0" if api_base else None,
        timeouts=timeouts or Timeouts(connect=5.0, read=5.0, total=5.0),
    )


@pytest.fixture
async def fake(aiohttp_server: AiohttpServer) -> AsyncIterator[FakeCxone]:
    cx = FakeCxone()
    server = await aiohttp_server(cx.app())
    cx.origin = str(server.make_url("")).rstrip("/")
    yield cx
    cx.release.set()


@pytest.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    async with make_session(Timeouts()) as s:
        yield s


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
async def http() -> AsyncIterator[HttpPool]:
    pool = HttpPool()
    yield pool
    await pool.close()


def client_for(
    session: aiohttp.ClientSession, http: HttpPool, cxs: CxoneSettings, clock: FakeClock
) -> CxoneClient:
    return CxoneClient(http, cxs, CxoneAuth(session, cxs, clock), clock)


# ---------------------------------------------------------------- authentication


async def test_discovery_token_and_api_endpoint(
    fake: FakeCxone, session: aiohttp.ClientSession, clock: FakeClock
) -> None:
    auth = CxoneAuth(session, settings(fake), clock)
    assert await auth.token() == "tok-1"
    assert auth.api_base == f"{fake.origin}/api/dfo/3.0"
    assert fake.oidc_calls == 1
    assert fake.config_tenants == [TENANT]
    assert fake.token_forms == [
        {"grant_type": "password", "username": KEY_ID, "password": KEY_SECRET}
    ]
    expected = base64.b64encode(f"{CLIENT_ID}:{CLIENT_SECRET}".encode()).decode()
    assert fake.token_auth == [f"Basic {expected}"]
    assert auth.refresh_count == 1


async def test_explicit_token_endpoint_and_api_base(
    fake: FakeCxone, session: aiohttp.ClientSession, clock: FakeClock
) -> None:
    auth = CxoneAuth(session, settings(fake, discover=False, api_base=True, basic=False), clock)
    assert auth.api_base == f"{fake.origin}/api/dfo/3.0"  # configured: known before any call
    assert await auth.token() == "tok-1"
    assert fake.oidc_calls == 0
    assert fake.config_tenants == []
    assert fake.token_auth == [None]  # no registered app configured: no Basic header


async def test_issuer_taken_from_the_id_token(
    fake: FakeCxone, session: aiohttp.ClientSession, clock: FakeClock
) -> None:
    auth = CxoneAuth(session, settings(fake, discover=False, issuer=False), clock)
    assert await auth.resolve_api_base() == f"{fake.origin}/api/dfo/3.0"
    assert fake.config_tenants == [TENANT]


async def test_no_token_endpoint_and_no_issuer_is_a_config_error(
    fake: FakeCxone, session: aiohttp.ClientSession
) -> None:
    with pytest.raises(ConfigError, match="token_endpoint or issuer"):
        CxoneAuth(session, settings(fake, discover=True, issuer=False))


async def test_token_is_cached_and_reused(
    fake: FakeCxone, session: aiohttp.ClientSession, http: HttpPool, clock: FakeClock
) -> None:
    client = client_for(session, http, settings(fake), clock)
    for _ in range(3):
        await client.create_message("chan-1", {"idOnExternalPlatform": "m"})
    assert fake.token_calls == 1
    assert [c["auth"] for c in fake.dfo_calls] == ["Bearer tok-1"] * 3


async def test_expiry_triggers_refresh(
    fake: FakeCxone, session: aiohttp.ClientSession, clock: FakeClock
) -> None:
    auth = CxoneAuth(session, settings(fake), clock)
    assert await auth.token() == "tok-1"
    clock.advance(3600 - 60 - 1)  # just inside expires_in - refresh_margin
    assert await auth.token() == "tok-1"
    clock.advance(2)
    assert await auth.token() == "tok-2"
    assert fake.token_calls == 2
    assert auth.refresh_count == 2
    assert fake.oidc_calls == 1  # discovery results are kept


async def test_cached_base_and_token_only_while_no_refresh_is_due(
    fake: FakeCxone, session: aiohttp.ClientSession, http: HttpPool, clock: FakeClock
) -> None:
    """`cached()` is the calls' shortcut: exactly what `token()` would give at once."""
    client = client_for(session, http, settings(fake), clock)
    auth = client.auth
    assert auth.cached() is None  # nothing fetched, nothing discovered
    await client.create_message("chan-1", {"n": 1})
    base = f"{fake.origin}/api/dfo/3.0"
    assert auth.cached() == (base, "tok-1")
    clock.advance(3600 - 60 - 1)
    assert auth.cached() == (base, "tok-1")
    clock.advance(2)
    assert auth.cached() is None  # due: the next call refreshes through token()
    await client.create_message("chan-1", {"n": 2})
    assert [c["auth"] for c in fake.dfo_calls] == ["Bearer tok-1", "Bearer tok-2"]
    auth.invalidate("tok-2")
    assert auth.cached() is None


async def test_short_lifetime_refreshes_half_way(
    fake: FakeCxone, session: aiohttp.ClientSession, clock: FakeClock
) -> None:
    fake.expires_in = "30"  # shorter than the margin; a string, as some servers send
    auth = CxoneAuth(session, settings(fake), clock)
    assert await auth.token() == "tok-1"
    clock.advance(14)
    assert await auth.token() == "tok-1"
    clock.advance(2)
    assert await auth.token() == "tok-2"


async def test_concurrent_callers_share_one_token_fetch(
    fake: FakeCxone, session: aiohttp.ClientSession, http: HttpPool, clock: FakeClock
) -> None:
    client = client_for(session, http, settings(fake), clock)
    results = await asyncio.gather(
        *(client.create_message(f"chan-{i}", {"n": i}) for i in range(50))
    )
    assert fake.token_calls == 1
    assert fake.oidc_calls == 1
    assert len(fake.config_tenants) == 1
    assert all(r.status == 200 for r in results)
    assert len(fake.dfo_calls) == 50


async def test_concurrent_callers_share_one_failure(
    fake: FakeCxone, session: aiohttp.ClientSession, clock: FakeClock
) -> None:
    fake.token_script.append(answer(503, {"error": "temporarily_unavailable"}))
    auth = CxoneAuth(session, settings(fake), clock)
    results = await asyncio.gather(*(auth.token() for _ in range(10)), return_exceptions=True)
    assert fake.token_calls == 1
    assert all(isinstance(r, UpstreamUnavailable) for r in results)
    assert auth.refresh_failures == 1
    assert await auth.token() == "tok-1"  # the failure is not cached


async def test_invalidate_drops_only_the_current_token(
    fake: FakeCxone, session: aiohttp.ClientSession, clock: FakeClock
) -> None:
    auth = CxoneAuth(session, settings(fake), clock)
    assert await auth.token() == "tok-1"
    auth.invalidate("some-older-token")
    assert await auth.token() == "tok-1"
    auth.invalidate("tok-1")
    assert await auth.token() == "tok-2"


async def test_token_refusal_never_leaks_secrets(
    fake: FakeCxone, session: aiohttp.ClientSession, clock: FakeClock
) -> None:
    fake.token_script.append(
        answer(
            400,
            {
                "error": "invalid_grant",
                "error_description": f"bad credentials for {KEY_ID} / {KEY_SECRET}",
            },
        )
    )
    auth = CxoneAuth(session, settings(fake), clock)
    with pytest.raises(UpstreamRejected) as info:
        await auth.token()
    err = info.value
    assert err.status == 400
    assert err.code == "invalid_grant"
    text = f"{err} {err.message!r} {err!r}"
    for secret in (KEY_ID, KEY_SECRET, CLIENT_SECRET):
        assert secret not in text
    assert "invalid_grant" in err.message


async def test_unreachable_token_endpoint_is_retryable(
    session: aiohttp.ClientSession, clock: FakeClock, unused_tcp_port: int
) -> None:
    cxs = CxoneSettings(
        auth=CxoneAuthSettings(
            access_key_id=Secret(KEY_ID),
            access_key_secret=Secret(KEY_SECRET),
            token_endpoint=f"http://127.0.0.1:{unused_tcp_port}/auth/token",
        ),
        api_base=f"http://127.0.0.1:{unused_tcp_port}/api/dfo/3.0",
    )
    with pytest.raises(UpstreamUnavailable) as info:
        await CxoneAuth(session, cxs, clock).token()
    assert info.value.code == "connection_error"


class MemoryTokenCache:
    """What the lead backs with the shared store: one token for every instance."""

    def __init__(self) -> None:
        self.entry: tuple[str, float] | None = None
        self.sets = 0
        self._lock = asyncio.Lock()

    async def get(self) -> tuple[str, float] | None:
        return self.entry

    async def set(self, token: str, expires_at: float) -> None:
        self.sets += 1
        self.entry = (token, expires_at)

    @asynccontextmanager
    async def _held(self) -> AsyncIterator[bool]:
        async with self._lock:
            yield True

    def lock(self) -> Any:
        return self._held()


async def test_shared_cache_gives_one_token_to_all_instances(
    fake: FakeCxone, session: aiohttp.ClientSession, clock: FakeClock
) -> None:
    cache = MemoryTokenCache()
    cxs = settings(fake, discover=False, api_base=True)
    instances = [CxoneAuth(session, cxs, clock, cache=cache) for _ in range(3)]
    tokens = await asyncio.gather(*(a.token() for a in instances for _ in range(5)))
    assert set(tokens) == {"tok-1"}
    assert fake.token_calls == 1
    assert cache.sets == 1
    # one instance is refused the token: it must not take it from the cache again
    instances[0].invalidate("tok-1")
    assert await instances[0].token() == "tok-2"
    assert cache.entry is not None and cache.entry[0] == "tok-2"
    instances[1].invalidate("tok-1")
    assert await instances[1].token() == "tok-2"  # picked up from the cache
    assert fake.token_calls == 2


# ---------------------------------------------------------------- DFO calls


async def test_401_once_refetches_and_retries(
    fake: FakeCxone, session: aiohttp.ClientSession, http: HttpPool, clock: FakeClock
) -> None:
    client = client_for(session, http, settings(fake), clock)
    await client.auth.token()
    fake.reject_next = 1
    result = await client.create_message("chan-1", {"idOnExternalPlatform": "m-1"})
    assert result.status == 200
    assert fake.token_calls == 2
    assert [c["auth"] for c in fake.dfo_calls] == ["Bearer tok-1", "Bearer tok-2"]
    assert fake.dfo_calls[0]["body"] == fake.dfo_calls[1]["body"]


async def test_401_twice_is_rejected(
    fake: FakeCxone, session: aiohttp.ClientSession, http: HttpPool, clock: FakeClock
) -> None:
    client = client_for(session, http, settings(fake), clock)
    fake.reject_next = 2
    with pytest.raises(UpstreamRejected) as info:
        await client.create_message("chan-1", {"idOnExternalPlatform": "m-1"})
    assert info.value.status == 401
    assert fake.token_calls == 2
    assert len(fake.dfo_calls) == 2


async def test_503_is_unavailable(
    fake: FakeCxone, session: aiohttp.ClientSession, http: HttpPool, clock: FakeClock
) -> None:
    client = client_for(session, http, settings(fake), clock)
    fake.dfo_script.append(answer(503))
    with pytest.raises(UpstreamUnavailable) as info:
        await client.create_message("chan-1", {})
    assert info.value.status == 503
    assert info.value.code == "http_503"
    assert info.value.retry_after is None
    assert info.value.upstream == "cxone"


async def test_429_retry_after_seconds_and_date(
    fake: FakeCxone, session: aiohttp.ClientSession, http: HttpPool, clock: FakeClock
) -> None:
    client = client_for(session, http, settings(fake), clock)
    fake.dfo_script.append(answer(429, {"message": "slow down"}, {"Retry-After": "7"}))
    date = formatdate(clock() + 120, usegmt=True)
    fake.dfo_script.append(answer(429, None, {"Retry-After": date}))
    with pytest.raises(UpstreamUnavailable) as first:
        await client.create_message("chan-1", {})
    assert first.value.status == 429
    assert first.value.retry_after == 7.0
    assert "slow down" in first.value.message
    with pytest.raises(UpstreamUnavailable) as second:
        await client.create_message("chan-1", {})
    assert second.value.retry_after == pytest.approx(120.0)


async def test_400_is_rejected_with_cxones_message(
    fake: FakeCxone, session: aiohttp.ClientSession, http: HttpPool, clock: FakeClock
) -> None:
    client = client_for(session, http, settings(fake), clock)
    fake.dfo_script.append(
        answer(
            400,
            {"error": {"code": "ValidationFailed", "message": "thread: this value is required"}},
        )
    )
    with pytest.raises(UpstreamRejected) as info:
        await client.create_message("chan-1", {"idOnExternalPlatform": "m-1"})
    assert info.value.status == 400
    assert info.value.code == "ValidationFailed"
    assert "thread: this value is required" in info.value.message


async def test_rejection_never_echoes_the_request_body(
    fake: FakeCxone, session: aiohttp.ClientSession, http: HttpPool, clock: FakeClock
) -> None:
    client = client_for(session, http, settings(fake), clock)
    text = "my card number is 4111 1111 1111 1111"
    fake.dfo_script.append(answer(422, {"message": f"text '{text}' is not allowed " + "x" * 500}))
    with pytest.raises(UpstreamRejected) as info:
        await client.create_message("chan-1", {"messageContent": {"payload": {"text": text}}})
    assert text not in str(info.value)
    assert "is not allowed" in info.value.message
    assert len(info.value.message) < 300


async def test_non_json_error_body(
    fake: FakeCxone, session: aiohttp.ClientSession, http: HttpPool, clock: FakeClock
) -> None:
    async def html(request: web.Request) -> web.Response:
        return web.Response(status=404, text="<html>not here</html>", content_type="text/html")

    client = client_for(session, http, settings(fake), clock)
    fake.dfo_script.append(html)
    with pytest.raises(UpstreamRejected) as info:
        await client.delete_channel("gone")
    assert info.value.status == 404
    assert info.value.code == "http_404"


async def test_connection_reset_is_unavailable(
    fake: FakeCxone, session: aiohttp.ClientSession, http: HttpPool, clock: FakeClock
) -> None:
    async def reset(request: web.Request) -> web.Response:
        assert request.transport is not None
        request.transport.abort()
        await fake.release.wait()
        return web.Response()

    client = client_for(session, http, settings(fake), clock)
    await client.auth.token()
    fake.dfo_script.append(reset)
    with pytest.raises(UpstreamUnavailable) as info:
        await client.create_message("chan-1", {})
    assert info.value.code == "connection_error"
    assert info.value.status is None


async def test_timeout_is_unavailable(
    fake: FakeCxone, session: aiohttp.ClientSession, http: HttpPool, clock: FakeClock
) -> None:
    entered = asyncio.Event()

    async def hold(request: web.Request) -> web.Response:
        entered.set()
        await fake.release.wait()
        return web.Response()

    cxs = settings(fake, timeouts=Timeouts(connect=1.0, read=0.2, total=0.2))
    client = client_for(session, http, cxs, clock)
    await client.auth.token()
    fake.dfo_script.append(hold)
    with pytest.raises(UpstreamUnavailable) as info:
        await client.create_message("chan-1", {})
    assert entered.is_set()
    assert info.value.code == "timeout"


# ---------------------------------------------------------------- typed helpers


async def test_typed_helpers_build_the_right_requests(
    fake: FakeCxone, session: aiohttp.ClientSession, http: HttpPool, clock: FakeClock
) -> None:
    client = client_for(session, http, settings(fake), clock)
    fake.dfo_script.append(answer(200, {"data": [{"id": "c1"}, {"id": "c2"}], "total": 2}))
    assert await client.list_channels() == [{"id": "c1"}, {"id": "c2"}]
    await client.create_message("chan/1 ?#", {"idOnExternalPlatform": "m"})
    await client.message_status("chan-1", "msg/9", {"status": "seen"})
    await client.contact_status(12345, "closed")
    await client.upsert_channel({"id": "chan-1", "name": "WH"})
    fake.dfo_script.append(answer(204))
    deleted = await client.delete_channel("chan-1")
    assert deleted.status == 204
    assert deleted.body is None
    fake.dfo_script.append(answer(200, {"brand": {"id": 7}, "user": {}, "accessToken": "a"}))
    verified = await client.verify_one_time_token("7", "42", "ott")
    assert verified["accessToken"] == "a"

    seen = [(c["method"], c["path"], c["body"]) for c in fake.dfo_calls]
    prefix = "/api/dfo/3.0"
    assert seen == [
        ("GET", f"{prefix}/channels", None),
        ("POST", f"{prefix}/channels/chan%2F1%20%3F%23/messages", {"idOnExternalPlatform": "m"}),
        ("PUT", f"{prefix}/channels/chan-1/messages/msg%2F9/status", {"status": "seen"}),
        ("PUT", f"{prefix}/contacts/12345/status", {"status": "closed"}),
        ("POST", f"{prefix}/channels", {"id": "chan-1", "name": "WH"}),
        ("DELETE", f"{prefix}/channels/chan-1", None),
        (
            "POST",
            f"{prefix}/one-time-token/verification",
            {"brandId": "7", "userId": "42", "token": "ott", "purpose": "channel-integration"},
        ),
    ]
    assert fake.dfo_calls[1]["content_type"] == "application/json"
    assert fake.dfo_calls[0]["content_type"] is None


async def test_result_carries_status_body_and_headers(
    fake: FakeCxone, session: aiohttp.ClientSession, http: HttpPool, clock: FakeClock
) -> None:
    client = client_for(session, http, settings(fake), clock)
    fake.dfo_script.append(answer(201, {"consumerContact": {"id": 991}}, {"X-Request-Id": "r-1"}))
    result = await client.call("POST", "/channels/c/messages", {"a": 1})
    assert result.status == 201
    assert result.body == {"consumerContact": {"id": 991}}
    assert result.headers["x-request-id"] == "r-1"


async def test_session_helpers_split_timeouts_by_phase() -> None:
    timeout = client_timeout(Timeouts(connect=1.5, read=4.0, total=9.0))
    assert (timeout.connect, timeout.sock_read, timeout.total) == (1.5, 4.0, 9.0)
    async with make_session(Timeouts(connect=1.5, read=4.0, total=9.0), limit=7) as s:
        assert s.timeout == timeout
        assert isinstance(s.connector, aiohttp.TCPConnector)
        assert s.connector.limit == 7
        assert s.headers["User-Agent"].startswith("byoc-gateway/")
