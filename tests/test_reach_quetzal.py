"""Issue 8: Quetzal (lookups, thread state, the media proxy) through the real gateway.

Quetzal's webhooks carry a user id but no name, an image id but no URL, and a reply
token valid for a minute. The mapping bridges each gap without gateway code: a cached
profile lookup with a fallback, a signed media URL on the gateway that streams the
image with the channel token, and the reply token kept as thread state for the reply.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from gateway.clock import FakeClock
from gateway.server import start_gateway
from tests.fakeplatform import Answer, Recorded
from tests.ports import free_port
from tests.reach_world import Reach, start_reach
from tests.test_store_contract import REDIS_URL, cleanup_redis, redis_available

ENV = {"QUETZAL_CHANNEL_SECRET": "quetzal-secret", "QUETZAL_CHANNEL_TOKEN": "quetzal-token"}
USER = "U4af4980629"
PICTURE = b"\xff\xd8\xff\xe0 a small jpeg \x00\x01\x02"


@pytest.fixture
async def quetzal(tmp_path: Path, clock: FakeClock) -> AsyncIterator[Reach]:
    port = free_port()  # the public URL (media links) must be known before the start
    platform = {"port": port, "public_url": f"http://127.0.0.1:{port}"}
    async with start_reach(
        tmp_path,
        "quetzal",
        env=ENV,
        api_env="QUETZAL_API",
        clock=clock,
        overrides={"listeners": {"platform": platform}},
    ) as r:
        yield r


def delivery(n: int, clock: FakeClock, *, image: bool = False, **extra: Any) -> dict[str, Any]:
    message = {"id": f"46878957789826{n:04d}", "type": "image" if image else "text"}
    if not image:
        message["text"] = f"message {n}"
    event = {
        "type": "message",
        "webhookEventId": f"01QUETZAL{n:04d}",
        "timestamp": int(clock() * 1000),
        "replyToken": f"rt_{n}",
        "source": {"type": "user", "userId": USER},
        "message": message,
        **extra,
    }
    return {"destination": "Ubot", "events": [event]}


def lookups(reach: Reach, outcome: str) -> float:
    value = reach.gateway.metrics.registry.get_sample_value(
        "byoc_lookups_total", {"mapping": "quetzal", "lookup": "profile", "outcome": outcome}
    )
    return value or 0.0


async def test_a_name_is_looked_up_once_then_served_from_the_cache(
    quetzal: Reach, clock: FakeClock
) -> None:
    quetzal.api.on(
        "GET", "/profile/{user}", json={"displayName": "Kira", "pictureUrl": "https://k/k.png"}
    )
    for n in (1, 2):
        assert (await quetzal.post(delivery(n, clock))).status == 200
        got = await quetzal.delivered("chat", f"46878957789826{n:04d}")
        assert got.body["authorEndUserIdentity"]["firstName"] == "Kira"
        assert got.body["authorEndUserIdentity"]["image"] == "https://k/k.png"
    (asked,) = quetzal.api.requests_to("GET", f"/profile/{USER}")
    assert asked.headers["authorization"] == "Bearer quetzal-token"
    assert (lookups(quetzal, "fetched"), lookups(quetzal, "cached")) == (1, 1)
    assert not quetzal.cxone.violations


async def test_a_lookup_that_times_out_delivers_with_the_fallback_name(
    quetzal: Reach, clock: FakeClock
) -> None:
    release = asyncio.Event()

    async def hang(request: Recorded) -> Answer:
        await release.wait()
        return Answer(200, json={"displayName": "Too late"})

    quetzal.api.on("GET", "/profile/{user}", hang)
    try:
        answer = await quetzal.post(delivery(3, clock))
        # acknowledged at once: intake never waits for the platform's API
        assert answer.status == 200 and answer.json["accepted"] == 1
        assert not quetzal.cxone.messages  # the lookup is still waiting, in the worker
        got = await quetzal.delivered("chat", "468789577898260003")
    finally:
        release.set()
    assert got.body["authorEndUserIdentity"]["firstName"] == "Quetzal user 0629"
    assert got.body["messageContent"]["payload"]["text"] == "message 3"
    assert quetzal.api.requests_to("GET", f"/profile/{USER}")
    assert lookups(quetzal, "failed") == 1


async def test_the_reply_token_is_kept_for_the_reply_and_refused_once_expired(
    quetzal: Reach, clock: FakeClock
) -> None:
    quetzal.api.on("GET", "/profile/{user}", json={"displayName": "Kira"})
    quetzal.api.on("POST", "/message/reply", json={"sentMessages": [{"id": "m_out_1"}]})
    expires_ms = int((clock() + 45) * 1000)  # sooner than the mapping's 60 s
    await quetzal.post(delivery(4, clock, replyTokenExpiresAt=expires_ms))
    await quetzal.delivered("chat", "468789577898260004")

    sent = await quetzal.reply("chat", USER, "Hi Kira")
    assert sent.status == 200, sent.body
    assert sent.body["message"]["idOnExternalPlatform"] == "m_out_1"
    (reply,) = quetzal.api.requests_to("POST", "/message/reply")
    assert reply.json == {"replyToken": "rt_4", "messages": [{"type": "text", "text": "Hi Kira"}]}

    clock.advance(46)
    late = await quetzal.reply("chat", USER, "Are you still there?")
    assert late.status == 422
    assert late.body["error"] == "thread_state_expired"
    assert "reply_token" in late.body["message"]
    assert len(quetzal.api.requests_to("POST", "/message/reply")) == 1  # nothing else sent

    unknown = await quetzal.reply("chat", "U-never-wrote", "Hello?")
    assert (unknown.status, unknown.body["error"]) == (422, "thread_state_missing")


async def test_an_image_behind_bearer_auth_is_served_by_a_signed_expiring_url(
    quetzal: Reach, clock: FakeClock
) -> None:
    quetzal.api.on("GET", "/profile/{user}", json={"displayName": "Kira"})
    quetzal.api.on(
        "GET",
        "/message/{id}/content",
        Answer(200, raw=PICTURE, headers={"Content-Type": "image/jpeg"}),
    )
    await quetzal.post(delivery(5, clock, image=True))
    got = await quetzal.delivered("chat", "468789577898260005")
    (attachment,) = got.body["attachments"]
    assert attachment["friendlyName"] == "468789577898260005.jpg"
    url = attachment["url"]
    base = f"{quetzal.settings.platform_listener.public_url}/media/quetzal/"
    assert url.startswith(base)
    assert "quetzal-token" not in url and not quetzal.api.requests_to("GET")[1:]

    async with aiohttp.ClientSession() as http:
        async with http.get(url) as r:
            assert r.status == 200
            assert r.headers["Content-Type"] == "image/jpeg"
            assert await r.read() == PICTURE
        (fetched,) = quetzal.api.requests_to("GET", "/message/468789577898260005/content")
        assert fetched.headers["authorization"] == "Bearer quetzal-token"

        token = url[len(base) :]
        body, mac = token.split(".")
        flipped = body[:-2] + ("A" if body[-2] != "A" else "B") + body[-1]
        for tampered in (f"{base}{flipped}.{mac}", f"{base}{body}.{mac[:-1]}", f"{base}{body}"):
            async with http.get(tampered) as r:
                assert (r.status, (await r.json())["error"]) == (403, "invalid_media_url")
        other = url.replace("/media/quetzal/", "/media/magpie/")
        async with http.get(other) as r:
            assert r.status == 403

        clock.advance(601)  # the mapping's media.ttl is 600 s
        async with http.get(url) as r:
            assert (r.status, (await r.json())["error"]) == (410, "media_url_expired")
    assert len(quetzal.api.requests_to("GET", "/message/468789577898260005/content")) == 1


@pytest.mark.redis
async def test_with_redis_another_instance_uses_the_cache_and_the_thread_state(
    tmp_path: Path, clock: FakeClock
) -> None:
    if not redis_available():
        pytest.skip(f"no Redis at {REDIS_URL}")
    prefix = f"qz{uuid.uuid4().hex[:12]}"
    store = {"backend": "redis", "url": REDIS_URL, "prefix": prefix}
    try:
        async with start_reach(
            tmp_path,
            "quetzal",
            env=ENV,
            api_env="QUETZAL_API",
            clock=clock,
            overrides={"store": store},
        ) as reach:
            reach.api.on("GET", "/profile/{user}", json={"displayName": "Kira"})
            reach.api.on("POST", "/message/reply", json={"sentMessages": [{"id": "m_out_1"}]})
            await reach.post(delivery(6, clock))
            await reach.delivered("chat", "468789577898260006")
            await reach.running.stop()  # the first instance is gone: only Redis remembers

            reach.running = await start_gateway(reach.settings, clock=clock, shutdown_timeout=2)
            try:
                reach.cxone.gateway_box_url = reach.running.urls["cxone"] + "/integration/box"
                sent = await reach.reply("chat", USER, "Hi from the other instance")
                assert sent.status == 200, sent.body
                (reply,) = reach.api.requests_to("POST", "/message/reply")
                assert reply.json["replyToken"] == "rt_6"  # stored by the first instance

                await reach.post(delivery(7, clock))
                got = await reach.delivered("chat", "468789577898260007")
                assert got.body["authorEndUserIdentity"]["firstName"] == "Kira"
                assert len(reach.api.requests_to("GET", f"/profile/{USER}")) == 1  # the cache
            finally:
                await reach.running.stop()
    finally:
        cleanup_redis(prefix)
