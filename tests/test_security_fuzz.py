"""Issue 5: hostile input at every endpoint of both listeners never gets a 5xx or a traceback.

Hypothesis throws random bytes, random JSON (sometimes correctly signed, sometimes with
a valid bearer token, sometimes compressed) and random headers at every route the two
running applications have (read from their routers, so new endpoints are covered too),
over real mTLS connections. A last test writes random bytes straight onto the socket.
"""

from __future__ import annotations

import asyncio
import contextlib
import gzip
import itertools
import re
import ssl
import time
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import aiohttp
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from yarl import URL

from gateway import jsonutil
from gateway.sandbox.watering_hole.webhooks import SIGNATURE_HEADER, signature_header
from tests.harness import InThread
from tests.security_world import (
    BOARD_CHANNEL,
    CHAT_CHANNEL,
    SECRETS,
    WEBHOOK_PATH,
    Pki,
    TlsWorld,
    build_pki,
    fetch,
    threaded_tls_world,
    token_request,
)

PROFILE = settings(
    max_examples=200,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
_SOURCES = itertools.count()  # a new caller address for every request (see the fixture)
_PLACEHOLDER = re.compile(r"\{([^}:]+)(:[^}]*)?\}")


@dataclass(frozen=True)
class Target:
    listener: str  # "cxone" / "platform"
    method: str  # "*" for any
    path: str  # with {placeholders}


@dataclass
class Fuzzing:
    threaded: InThread[TlsWorld]
    world: TlsWorld
    targets: list[Target]
    bearer: str
    sessions: dict[str, aiohttp.ClientSession]


def _targets(world: TlsWorld) -> list[Target]:
    out = {Target("platform", "POST", WEBHOOK_PATH), Target("platform", "GET", WEBHOOK_PATH)}
    for listener, app in (
        ("cxone", world.running.apps.cxone),
        ("platform", world.running.apps.platform),
    ):
        for route in app.router.routes():
            info = route.resource.get_info() if route.resource is not None else {}
            path = info.get("path") or info.get("formatter")
            if path and route.method != "HEAD":
                out.add(Target(listener, route.method, path))
    return sorted(out, key=lambda t: (t.listener, t.path, t.method))


@pytest.fixture(scope="module")
def fuzz(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Fuzzing]:
    pki: Pki = build_pki(tmp_path_factory.mktemp("pki"))
    # the callers stand behind a trusted proxy, each with its own address, so the token
    # endpoint's slow-down for repeated failures (per source) does not slow the test down
    threaded = threaded_tls_world(
        tmp_path_factory.mktemp("fuzz"), pki, read_timeout=1.0, trusted_proxies=("127.0.0.1/32",)
    )
    world = threaded.world
    assert world is not None

    async def setup() -> tuple[str, dict[str, aiohttp.ClientSession]]:
        ok = token_request(SECRETS.byoc_client_id, SECRETS.byoc_client_secret)
        status, body, _ = await fetch(world.box_url + "/1.0/token", world.as_cxone(), "POST", **ok)
        assert status == 200
        timeout = aiohttp.ClientTimeout(total=15)
        sessions = {
            "cxone": aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(ssl=world.as_cxone()), timeout=timeout
            ),
            "platform": aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(ssl=world.tls_as()), timeout=timeout
            ),
        }
        return str(body["access_token"]), sessions

    bearer, sessions = threaded.run(setup())
    yield Fuzzing(threaded, world, _targets(world), bearer, sessions)

    async def teardown() -> None:
        for session in sessions.values():
            await session.close()

    threaded.run(teardown())
    threaded.close()


# --- strategies ------------------------------------------------------------------------

json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=40),
    lambda children: (
        st.lists(children, max_size=5) | st.dictionaries(st.text(max_size=12), children, max_size=5)
    ),
    max_leaves=30,
)
# DFO-shaped bodies with random leaves reach deeper into the reply paths
dfo_like = st.fixed_dictionaries(
    {
        "thread": st.fixed_dictionaries({"idOnExternalPlatform": json_values}),
        "messageContent": st.fixed_dictionaries(
            {"type": st.sampled_from(["TEXT", "PLUGIN", "x"]), "payload": json_values}
        ),
    },
    optional={
        "endUserRecipients": json_values,
        "recipients": json_values,
        "senderAction": st.fixed_dictionaries({"action": json_values}),
        "attachments": json_values,
        "brand": json_values,
        "replyToMessage": json_values,
    },
)
webhook_like = st.fixed_dictionaries(
    {"events": st.lists(st.dictionaries(st.sampled_from(["id", "type", "data"]), json_values))}
)
bodies = st.one_of(
    st.binary(max_size=2048),
    json_values.map(jsonutil.dumps),
    dfo_like.map(jsonutil.dumps),
    webhook_like.map(jsonutil.dumps),
    st.integers(min_value=1, max_value=400).map(lambda n: b"[" * n + b"]" * n),  # deep
)
TOKEN_CHARS = "!#$%&'*+-.^_`|~0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"
_RESERVED = {"content-length", "transfer-encoding", "host", "connection", "expect", "upgrade"}
header_names = st.text(alphabet=TOKEN_CHARS, min_size=1, max_size=24).filter(
    lambda n: n.lower() not in _RESERVED
)
header_values = st.text(
    alphabet=st.characters(min_codepoint=0x20, max_codepoint=0xFF, blacklist_characters="\x7f"),
    max_size=200,
).map(str.strip)
segments = st.one_of(
    st.sampled_from([CHAT_CHANNEL, BOARD_CHANNEL, "unknown", "..", "%2e%2e", "a" * 300]),
    st.text(alphabet="abcXYZ019-_.~%", min_size=1, max_size=30),
)


@st.composite
def requests(draw: st.DrawFn, targets: list[Target], bearer: str) -> dict[str, Any]:
    deep = [t for t in targets if "/integration/box/" in t.path or t.path == WEBHOOK_PATH]
    target = draw(st.sampled_from(deep) | st.sampled_from(targets))  # half on the deep ones
    method = target.method
    if method == "*":
        method = draw(st.sampled_from(["GET", "POST", "PUT", "DELETE", "PATCH", "OPTIONS"]))
    path = _PLACEHOLDER.sub(lambda _: draw(segments), target.path)
    if path == "/":
        path = draw(st.sampled_from(["/", "/x", "/webhooks/other", "/" + "a" * 2000]))
    body = draw(bodies) if method not in ("GET", "HEAD", "OPTIONS") else b""
    headers = draw(st.dictionaries(header_names, header_values, max_size=6))
    auth = draw(
        st.sampled_from([f"Bearer {bearer}"] * 4 + [None, "Bearer x.y.z", "Basic !!", "Bearer "])
        | header_values
    )
    if auth is not None:
        headers["Authorization"] = auth
    headers["Content-Type"] = draw(
        st.sampled_from(
            [
                "application/json",
                "application/json",
                "application/json",
                "application/x-www-form-urlencoded",
                "text/plain",
                "multipart/form-data; boundary=x",
                "application/json; charset=utf-16",
            ]
        )
        | header_values
    )
    encoding = draw(
        st.sampled_from([None] * 6 + ["gzip", "deflate", "br", "identity", "gzip, gzip"])
    )
    if encoding is not None:
        headers["Content-Encoding"] = encoding
        if draw(st.booleans()):  # really compressed, or a lie
            body = gzip.compress(body) if encoding.startswith("gzip") else zlib.compress(body)
    if target.path == WEBHOOK_PATH and draw(st.integers(0, 3)):  # mostly signed
        stamp = int(time.time()) - draw(st.sampled_from([0, 0, 3600]))
        headers[SIGNATURE_HEADER] = signature_header(body, (SECRETS.wh_secret,), stamp)
    n = next(_SOURCES)
    headers.setdefault("X-Forwarded-For", f"198.18.{n // 250 % 250}.{n % 250 + 1}")
    query = draw(st.dictionaries(st.text(max_size=10), st.text(max_size=30), max_size=3))
    return {
        "listener": target.listener,
        "method": method,
        "path": path,
        "query": query,
        "body": body,
        "headers": headers,
    }


def _assert_clean(status: int, raw: bytes, what: Any) -> None:
    assert status < 500, (status, raw[:300], what)
    assert b"Traceback" not in raw and b'File "' not in raw, (raw[:300], what)


# --- tests ---------------------------------------------------------------------------------


def test_every_route_is_covered(fuzz: Fuzzing) -> None:
    paths = {t.path for t in fuzz.targets}
    for expected in (
        "/integration/box/1.0/token",
        "/integration/box/1.0/posts/{postId}/messages",
        "/integration/box/2.0/channel/{channelId}/outbound",
        "/integration/box/1.0/channel/{channelId}/thread/{threadId}/sender-action",
        "/healthz",
        "/metrics",
        "/status.json",
        WEBHOOK_PATH,
    ):
        assert expected in paths, paths


@PROFILE
@given(data=st.data())
def test_random_requests_never_get_a_5xx_or_a_traceback(fuzz: Fuzzing, data: st.DataObject) -> None:
    req = data.draw(requests(fuzz.targets, fuzz.bearer))
    world = fuzz.world
    base = world.cxone_url if req["listener"] == "cxone" else world.platform_url

    async def send() -> tuple[int, bytes]:
        url = URL(base).with_path(req["path"]).with_query(req["query"])
        session = fuzz.sessions[req["listener"]]
        async with session.request(
            req["method"], url, data=req["body"], headers=req["headers"], allow_redirects=False
        ) as resp:
            return resp.status, await resp.read()

    status, raw = fuzz.threaded.run(send())
    _assert_clean(status, raw, {k: v for k, v in req.items() if k != "body"})


@settings(
    max_examples=40,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(
    junk=st.one_of(
        st.binary(min_size=1, max_size=600),
        st.builds(
            lambda line, heads: line + b"\r\n" + b"\r\n".join(heads),
            st.sampled_from([b"POST /integration/box/1.0/token HTTP/1.1", b"GET / HTTP/1.1"]),
            st.lists(st.binary(max_size=80), max_size=6),
        ),
    ),
    listener=st.sampled_from(["cxone", "platform"]),
)
def test_random_bytes_on_the_socket_never_get_a_5xx_or_a_traceback(
    fuzz: Fuzzing, junk: bytes, listener: str
) -> None:
    world = fuzz.world
    url = URL(world.cxone_url if listener == "cxone" else world.platform_url)
    ctx: ssl.SSLContext = world.as_cxone() if listener == "cxone" else world.tls_as()

    async def send() -> bytes:
        assert url.host is not None and url.port is not None
        reader, writer = await asyncio.open_connection(url.host, url.port, ssl=ctx)
        try:
            writer.write(junk + b"\r\n\r\n")
            await writer.drain()
            # the server answers, or closes within its read timeout (1 s here)
            return await asyncio.wait_for(reader.read(65536), 5)
        except (ConnectionError, ssl.SSLError):
            return b""
        finally:
            writer.close()
            with contextlib.suppress(ConnectionError, ssl.SSLError):
                await writer.wait_closed()

    raw = fuzz.threaded.run(send())
    if raw:
        match = re.match(rb"HTTP/1\.[01] (\d{3}) ", raw)
        assert match is not None, raw[:200]
        _assert_clean(int(match[1]), raw, junk[:200])
