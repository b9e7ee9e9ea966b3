"""Issue 5: the edge limits and the token endpoint's hardening, through the real gateway.

Body bombs, oversized headers and slow-drip clients are each refused in bounded time on
both listeners; deep JSON is refused after parsing; error bodies never echo the input;
the IP allow-list honours X-Forwarded-For only from trusted proxies and reloads; failed
token requests from one source are slowed down; refusals carry WWW-Authenticate.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import gzip
import re
import ssl
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from yarl import URL

from gateway import jsonutil
from gateway.sandbox.watering_hole.webhooks import SIGNATURE_HEADER, signature_header
from tests.security_world import (
    CHAT_CHANNEL,
    SECRETS,
    WEBHOOK_PATH,
    Pki,
    TlsWorld,
    build_pki,
    fetch,
    start_tls_world,
    token_request,
)

READ_TIMEOUT = 1.0
LIMIT = 65_536  # max_body_bytes of the world
CANARY = "canary-7f3a9c"


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    return build_pki(tmp_path_factory.mktemp("pki"))


@pytest.fixture
async def world(tmp_path: Path, pki: Pki) -> AsyncIterator[TlsWorld]:
    async with start_tls_world(tmp_path, pki, read_timeout=READ_TIMEOUT) as w:
        yield w


async def _bearer(world: TlsWorld) -> dict[str, str]:
    ok = token_request(SECRETS.byoc_client_id, SECRETS.byoc_client_secret)
    status, body, _ = await fetch(world.box_url + "/1.0/token", world.as_cxone(), "POST", **ok)
    assert status == 200
    return {"Authorization": f"Bearer {body['access_token']}"}


def _signed(body: bytes) -> dict[str, str]:
    return {
        "Content-Type": "application/json",
        SIGNATURE_HEADER: signature_header(body, (SECRETS.wh_secret,), int(time.time())),
    }


async def _targets(world: TlsWorld) -> list[tuple[str, ssl.SSLContext, dict[str, str]]]:
    """(url, client context, headers) of one body-reading endpoint per listener."""
    reply = f"{world.box_url}/2.0/channel/{CHAT_CHANNEL}/outbound"
    return [
        (reply, world.as_cxone(), await _bearer(world)),
        (world.platform_url + WEBHOOK_PATH, world.tls_as(), {}),
    ]


async def test_body_bombs_and_big_bodies_get_413_fast(world: TlsWorld) -> None:
    bomb = gzip.compress(b"{" + b" " * (50 * 1024 * 1024) + b"}")  # 50 MiB of JSON, ~50 KiB
    assert len(bomb) < LIMIT
    for url, ctx, headers in await _targets(world):
        for body, extra in (
            (bomb, {"Content-Encoding": "gzip"}),
            (b"[" + b"0," * LIMIT + b"0]", {}),  # plainly too big
        ):
            hdrs = {**headers, **extra}
            if "webhooks" in url:
                hdrs.update(_signed(body))
            started = time.monotonic()
            status, answer, _ = await fetch(url, ctx, "POST", data=body, headers=hdrs)
            assert (status, answer["error"]) == (413, "payload_too_large"), (url, answer)
            assert time.monotonic() - started < 5


async def test_deep_json_is_refused_and_errors_never_echo_the_input(world: TlsWorld) -> None:
    deep = jsonutil.dumps({"thread": {"idOnExternalPlatform": CANARY}, "x": [[[[[[]]]]]] * 1})
    nested: object = CANARY
    for _ in range(60):
        nested = [nested]
    deep = jsonutil.dumps({"messageContent": nested, "events": [nested]})
    for url, ctx, headers in await _targets(world):
        hdrs = {**headers, "Content-Type": "application/json"}
        if "webhooks" in url:
            hdrs.update(_signed(deep))
        status, answer, _ = await fetch(url, ctx, "POST", data=deep, headers=hdrs)
        assert (status, answer["error"]) == (400, "too_deep"), answer
        assert CANARY not in str(answer)
        # junk that quotes the canary: the error does not repeat it
        junk = f'{{"text": "{CANARY}", '.encode()
        if "webhooks" in url:
            hdrs.update(_signed(junk))
        status, answer, _ = await fetch(url, ctx, "POST", data=junk, headers=hdrs)
        assert status == 400 and CANARY not in str(answer)


async def _raw(url: str, ctx: ssl.SSLContext) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    parsed = URL(url)
    assert parsed.host is not None and parsed.port is not None
    return await asyncio.wait_for(asyncio.open_connection(parsed.host, parsed.port, ssl=ctx), 10)


async def _close(writer: asyncio.StreamWriter) -> None:
    writer.close()
    with contextlib.suppress(OSError, ssl.SSLError):
        await writer.wait_closed()


async def test_oversized_headers_are_refused_fast(world: TlsWorld) -> None:
    for url, ctx, _ in await _targets(world):
        path = URL(url).raw_path
        for head in (
            f"POST {path} HTTP/1.1\r\nHost: x\r\nX-Big: {CANARY}{'a' * 20_000}\r\n\r\n",
            f"POST {path} HTTP/1.1\r\nHost: x\r\n"
            + "".join(f"X-H{i}: {i}\r\n" for i in range(300))
            + "\r\n",
            f"GET {path}?{'q' * 20_000} HTTP/1.1\r\nHost: x\r\n\r\n",
        ):
            reader, writer = await _raw(url, ctx)
            started = time.monotonic()
            try:
                writer.write(head.encode())
                await writer.drain()
                answer = await asyncio.wait_for(reader.read(65536), 5)
            except (ConnectionError, ssl.SSLError):
                answer = b""  # refused by closing: also fine
            finally:
                await _close(writer)
            assert time.monotonic() - started < 5
            assert re.match(rb"HTTP/1\.[01] 400 ", answer), answer[:300]
            assert answer.endswith(
                b'{"error":"bad_request","message":"the request line or headers are malformed'
                b' or too large"}'
            )
            assert CANARY.encode() not in answer and b"aaaa" not in answer


async def test_slow_drip_clients_are_cut_off_in_bounded_time(world: TlsWorld) -> None:
    for url, ctx, headers in await _targets(world):
        path = URL(url).raw_path
        auth = "".join(f"{k}: {v}\r\n" for k, v in headers.items())
        # a body trickling one byte at a time: 408 once read_timeout has passed
        reader, writer = await _raw(url, ctx)
        started = time.monotonic()
        writer.write(
            f"POST {path} HTTP/1.1\r\nHost: x\r\n{auth}Content-Type: application/json\r\n"
            f"Content-Length: 1000\r\n\r\n".encode()
        )
        answer = b""
        try:
            for _ in range(100):  # would take 10 s
                writer.write(b" ")
                await writer.drain()
                with contextlib.suppress(TimeoutError):
                    answer += await asyncio.wait_for(reader.read(65536), 0.1)
                if answer or reader.at_eof():
                    break
        except (ConnectionError, ssl.SSLError):
            pass
        finally:
            await _close(writer)
        elapsed = time.monotonic() - started
        assert READ_TIMEOUT * 0.9 < elapsed < READ_TIMEOUT + 3, elapsed
        assert answer.startswith(b"HTTP/1.1 408 "), answer[:200]

        # a request head trickling in: the connection is closed
        reader, writer = await _raw(url, ctx)
        started = time.monotonic()
        closed = False
        try:
            for byte in f"POST {path} HTTP/1.1\r\nHost: x\r\nX-Slow: ".encode() + b"a" * 200:
                writer.write(bytes([byte]))
                await writer.drain()
                with contextlib.suppress(TimeoutError):
                    if await asyncio.wait_for(reader.read(65536), 0.05) == b"":
                        closed = True
                        break
        except (ConnectionError, ssl.SSLError):
            closed = True
        finally:
            await _close(writer)
        assert closed and time.monotonic() - started < READ_TIMEOUT + 3


async def test_ip_allow_list_with_trusted_proxies_and_reload(tmp_path: Path, pki: Pki) -> None:
    async with start_tls_world(
        tmp_path,
        pki,
        cxone_allow=("203.0.113.0/24",),
        trusted_proxies=("127.0.0.1/32",),
    ) as world:
        health = world.cxone_url + "/healthz"
        cxone = world.as_cxone()

        async def status(xff: str | None) -> tuple[int, object]:
            headers = {"X-Forwarded-For": xff} if xff is not None else {}
            code, body, _ = await fetch(health, cxone, headers=headers)
            return code, body

        assert await status(None) == (
            403,
            {"error": "forbidden", "message": "this client address is not allowed"},
        )
        assert (await status("203.0.113.7"))[0] == 200
        assert (await status("198.51.100.1, 203.0.113.7"))[0] == 200  # right-most untrusted
        assert (await status("203.0.113.7, 198.51.100.1"))[0] == 403
        assert (await status(f"{CANARY}"))[0] == 403  # junk from a trusted proxy: unknown
        # the platform listener has no allow-list
        assert (await fetch(world.platform_url + "/healthz", world.tls_as()))[0] == 200

        # allow-lists and proxies reload with the configuration; without a trusted
        # proxy, X-Forwarded-For is ignored: it cannot be used to claim an address
        world.rewrite_config(cxone_allow=("203.0.113.0/24",))
        assert (await world.gateway.reload()).ok
        assert (await status("203.0.113.7"))[0] == 403
        world.rewrite_config(cxone_allow=("127.0.0.1/32",))
        assert (await world.gateway.reload()).ok
        assert (await status(None))[0] == 200


async def test_token_refusals_are_rfc_compliant_and_slowed_down(world: TlsWorld) -> None:
    token = world.box_url + "/1.0/token"
    cxone = world.as_cxone()
    wrong = token_request(SECRETS.byoc_client_id, "not-the-secret")
    status, body, headers = await fetch(token, cxone, "POST", **wrong)
    assert (status, body["error"]) == (401, "invalid_client")
    assert headers["WWW-Authenticate"].startswith("Basic")
    assert headers["Cache-Control"] == "no-store"
    assert "not-the-secret" not in str(body)
    basic = base64.b64encode(b"jungle-byoc:nope").decode()
    status, body, headers = await fetch(
        token,
        cxone,
        "POST",
        data="grant_type=client_credentials",
        headers={
            "Authorization": f"Basic {basic}",
            "Content-Type": "application/x-www-form-urlencoded",
        },
    )
    assert (status, body["error"]) == (401, "invalid_client") and "Basic" in headers[
        "WWW-Authenticate"
    ]

    reply = f"{world.box_url}/2.0/channel/{CHAT_CHANNEL}/outbound"
    status, body, headers = await fetch(reply, cxone, "POST", json={})
    assert status == 401 and headers["WWW-Authenticate"] == 'Bearer realm="byoc-gateway"'
    status, body, headers = await fetch(
        reply, cxone, "POST", json={}, headers={"Authorization": "Bearer a.b.c"}
    )
    assert status == 401 and 'error="invalid_token"' in headers["WWW-Authenticate"]

    # repeated failures from one source: the later attempts wait
    timings = []
    for _ in range(5):  # failures 3 to 7 of this source
        started = time.monotonic()
        assert (await fetch(token, cxone, "POST", **wrong))[0] == 401
        timings.append(time.monotonic() - started)
    assert max(timings[:3]) < 0.25 and timings[-1] >= 0.4, timings
