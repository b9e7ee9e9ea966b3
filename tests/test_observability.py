"""Issue 6.4-6.7: status page and JSON, Prometheus metrics, health and readiness, JSON logs."""

from __future__ import annotations

import dataclasses
import io
import logging
import re
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from prometheus_client.parser import text_string_to_metric_families

from gateway import jsonutil
from gateway.clock import FakeClock
from gateway.logs import configure_logging
from tests.harness import CHAT_CHANNEL, SECRETS, World, start_world

ADMIN = {"Authorization": f"Bearer {SECRETS.admin_token}"}
OUTBOUND = "/integration/box/2.0/channel/{channelId}/outbound"


async def fetch(world: World, path: str, **kw: Any) -> tuple[int, str, aiohttp.ClientResponse]:
    async with (
        aiohttp.ClientSession() as http,
        http.get(world.running.urls["cxone"] + path, allow_redirects=False, **kw) as resp,
    ):
        return resp.status, await resp.text(), resp


def sample(families: dict[str, Any], name: str, **labels: str) -> float:
    """Sum the samples called `name` whose labels include `labels`."""
    family = families[re.sub(r"_(total|count|sum|bucket)$", "", name)]
    return sum(
        float(s.value)
        for s in family.samples
        if s.name == name and all(s.labels.get(k) == v for k, v in labels.items())
    )


async def traffic(world: World) -> dict[str, int]:
    """Send a known mix of messages; return how many of each."""
    cx = world.cxone
    delivered = 0
    for user in ("usr_zebra", "usr_lion", "usr_hippo"):
        _, msg = await world.dm(user, f"hello from {user}")
        await world.delivered(CHAT_CHANNEL, msg)
        delivered += 1
    conv = next(iter(world.wh.world.conversations))
    for text in ("first answer", "second answer"):
        assert (await cx.agent_reply(CHAT_CHANNEL, conv, text)).status == 200
    assert (await cx.agent_typing(CHAT_CHANNEL, conv, True)).status == 204
    failed = await cx.agent_reply(CHAT_CHANNEL, "cnv_nope", "to nobody")
    assert failed.status >= 400
    # one retry: CXone answers 503 once, the message goes through on the next attempt
    cx.script("create_message", [(503, {"Retry-After": "0"}, {"error": "busy"})])
    conv2, msg = await world.dm("usr_giraffe", "retry me")
    await world.delivered(CHAT_CHANNEL, msg)
    delivered += 1
    # one dead letter: CXone refuses for good; the thread's next message still goes
    cx.script("create_message", [(400, {}, {"error": "invalid", "message": "no"})])
    await world.dm("usr_giraffe", "refused", conversation_id=conv2)
    _, after = await world.dm("usr_giraffe", "after the refusal", conversation_id=conv2)
    await world.delivered(CHAT_CHANNEL, after)
    delivered += 1
    assert (await world.gateway.reload()).ok
    return {"delivered": delivered, "sent": 2, "failed": 1, "dead": 1}


async def test_metrics_parse_and_count_what_was_sent(world: World) -> None:
    sent = await traffic(world)
    status, text, resp = await fetch(world, "/metrics")
    assert status == 200 and resp.headers["Content-Type"].startswith("text/plain")
    families = {f.name: f for f in text_string_to_metric_families(text)}

    chat = {"mapping": "watering-hole", "channel": "chat"}
    assert sample(
        families, "byoc_messages_total", **chat, route="direct-message", direction="inbound",
        outcome="delivered",
    ) == sent["delivered"]  # fmt: skip
    assert sample(
        families, "byoc_messages_total", **chat, route="chat-reply", direction="outbound",
        outcome="sent",
    ) == sent["sent"]  # fmt: skip
    assert sample(
        families, "byoc_messages_total", **chat, route="chat-reply", direction="outbound",
        outcome="failed",
    ) == sent["failed"]  # fmt: skip
    assert (
        sample(families, "byoc_messages_total", **chat, route="typing", direction="sender_action")
        == 1
    )
    assert sample(families, "byoc_http_requests_total", endpoint=OUTBOUND, status="200") == 2
    assert sample(families, "byoc_http_requests_total", listener="platform", status="200") >= 6
    assert (
        sample(
            families,
            "byoc_delivery_latency_seconds_count",
            mapping="watering-hole",
            action="create_message",
        )
        == sent["delivered"]
    )
    assert sample(families, "byoc_retries_total", upstream="cxone", reason="503") == 1
    assert sample(families, "byoc_dead_letters_total", mapping="watering-hole") == sent["dead"]
    assert sample(families, "byoc_dead_letter_depth") == 1
    assert sample(families, "byoc_queue_depth") == 0
    assert sample(families, "byoc_reloads_total", outcome="ok") == 1
    assert sample(families, "byoc_cxone_token_refreshes_total") == world.cxone.token_fetches
    assert "byoc_certificate_days_left" in families  # no TLS here: a family without samples


async def test_unknown_paths_and_methods_answer_json_in_the_request_context(world: World) -> None:
    """Each listener ends with a catch-all route, so 404 and 405 are the gateway's own
    answers (JSON, a request id, the access metric), as the router would decide them."""
    cxone, platform = world.running.urls["cxone"], world.running.urls["platform"]
    asked = {"X-Request-Id": "probe-1"}
    async with aiohttp.ClientSession() as http:
        async with http.get(cxone + "/nowhere", headers=asked) as resp:
            assert resp.status == 404 and resp.content_type == "application/json"
            assert (await resp.json())["error"] == "not_found"
            assert resp.headers["X-Request-Id"] == "probe-1"
        async with http.get(cxone + "/integration/box/1.0/token") as resp:
            assert resp.status == 405 and resp.headers["Allow"] == "POST"
            assert (await resp.json())["error"] == "method_not_allowed"
            assert re.fullmatch(r"[0-9a-f]{16}", resp.headers["X-Request-Id"])
        async with http.post(cxone + "/status.json") as resp:
            assert resp.status == 405
            assert set(resp.headers["Allow"].split(",")) == {"GET", "HEAD"}
        async with http.head(cxone + "/healthz") as resp:
            assert resp.status == 200  # HEAD of a GET route is still routed
        async with http.get(platform + "/nowhere") as resp:
            assert resp.status == 404 and (await resp.json())["error"] == "not_found"
        async with http.get(platform + "/healthz") as resp:
            assert resp.status == 200 and (await resp.json()) == {"status": "ok"}
    status, text, _ = await fetch(world, "/metrics")
    assert status == 200
    families = {f.name: f for f in text_string_to_metric_families(text)}
    unmatched = {"listener": "cxone", "endpoint": "unmatched"}
    assert sample(families, "byoc_http_requests_total", **unmatched, status="404") == 1
    assert sample(families, "byoc_http_requests_total", **unmatched, status="405") == 2
    assert (
        sample(families, "byoc_http_requests_total", listener="platform", endpoint="webhook") == 1
    )
    assert sample(families, "byoc_http_requests_total", endpoint="/healthz") == 2


async def test_status_json_and_page_show_the_same_numbers(world: World) -> None:
    sent = await traffic(world)
    status, text, _ = await fetch(world, "/status.json", headers=ADMIN)
    assert status == 200
    data = jsonutil.loads(text)
    chat = next(c for c in data["channels"] if c["id"] == CHAT_CHANNEL)
    mapping = world.gateway.routing.mappings["watering-hole"]
    assert chat["mapping"] == "watering-hole" and chat["mapping_version"] == mapping.version
    assert chat["messages_in"] == sent["delivered"]
    assert chat["messages_out"] == sent["sent"]
    assert chat["errors"] == sent["failed"]
    assert chat["dead_letters"] == sent["dead"]
    assert data["errors_by_route"] == [
        {
            "mapping": "watering-hole",
            "channel": "chat",
            "route": "chat-reply",
            "direction": "outbound",
            "outcome": "failed",
            "count": 1,
        }
    ]
    assert data["dead_letters_by_route"] == [
        {"mapping": "watering-hole", "channel": "chat", "route": "direct-message", "count": 1}
    ]
    assert data["queue_depth"] == 0 and data["dead_letters"] == 1 and data["store"] == "ok"
    assert data["last_reload"]["ok"] is True
    assert data["certificates"]["certificates"] == []

    status, html, resp = await fetch(world, "/status", headers=ADMIN)
    assert status == 200 and resp.content_type == "text/html"
    row = re.search(rf'<tr data-channel="{CHAT_CHANNEL}">(.*?)</tr>', html, re.S)
    assert row is not None
    cells = dict(re.findall(r'data-field="(\w+)">(\d+)<', row[1]))
    assert cells == {
        "in": str(sent["delivered"]),
        "out": "2",
        "errors": "1",
        "dead": "1",
    }
    assert mapping.version in row[1]


async def test_status_needs_the_admin_token(world: World) -> None:
    assert (await fetch(world, "/status.json"))[0] == 401
    assert (await fetch(world, "/status.json", headers={"Authorization": "Bearer nope"}))[0] == 401
    status, _, resp = await fetch(world, "/status")
    assert status == 303 and resp.headers["Location"] == "/status/login"
    assert (await fetch(world, "/status", headers={"Authorization": "Bearer nope"}))[0] == 401
    # the raw admin token in a cookie is not a session
    cookie = {"Cookie": f"byoc_admin={SECRETS.admin_token}"}
    assert (await fetch(world, "/status.json", headers=cookie))[0] == 401


async def test_the_login_form_sets_an_httponly_session_cookie(world: World) -> None:
    base = world.running.urls["cxone"]
    jar = aiohttp.CookieJar(unsafe=True)
    async with aiohttp.ClientSession(cookie_jar=jar) as http:

        async def login(token: str, csrf: str | None = None) -> aiohttp.ClientResponse:
            async with http.get(f"{base}/status/login") as page:
                found = re.search(r'name="csrf" value="([^"]+)"', await page.text())
                assert found is not None
            data = {"token": token, "csrf": found[1] if csrf is None else csrf}
            async with http.post(f"{base}/status/login", data=data, allow_redirects=False) as r:
                await r.read()
                return r

        assert (await login(SECRETS.admin_token, csrf="forged")).status == 403
        assert (await login("wrong-token")).status == 401
        ok = await login(SECRETS.admin_token)
        assert ok.status == 303 and ok.headers["Location"] == "/status"
        cookie = ok.cookies["byoc_admin"]
        assert cookie["httponly"] and cookie["samesite"] == "Strict" and cookie["path"] == "/"
        assert SECRETS.admin_token not in cookie.value

        async with http.get(f"{base}/status") as page:
            html = await page.text()
            assert page.status == 200 and CHAT_CHANNEL in html
        async with http.get(f"{base}/status.json") as doc:
            assert doc.status == 200
        found = re.search(r'name="csrf" value="([^"]+)"', html)
        assert found is not None
        async with http.post(
            f"{base}/status/logout", data={"csrf": found[1]}, allow_redirects=False
        ) as out:
            assert out.status == 303
        async with http.get(f"{base}/status.json") as doc:
            assert doc.status == 401


# --- health and readiness -----------------------------------------------------------------


@pytest.fixture
async def sqlite_world(tmp_path: Path, clock: FakeClock) -> AsyncIterator[World]:
    async with start_world(tmp_path, backend="sqlite", clock=clock) as w:
        yield w


async def readiness(world: World) -> tuple[int, dict[str, Any]]:
    status, text, resp = await fetch(world, "/readyz")
    assert resp.content_type == "application/json"
    return status, jsonutil.loads(text)


async def test_readyz_follows_the_store(sqlite_world: World) -> None:
    world = sqlite_world
    assert await readiness(world) == (
        200,
        {"ready": True, "checks": {"config": "ok", "store": "ok", "cxone_auth": "ok"}},
    )
    await world.gateway.store.close()
    status, body = await readiness(world)
    assert status == 503 and body["ready"] is False
    assert body["checks"]["store"].startswith("unavailable")
    assert (await fetch(world, "/healthz"))[0] == 200  # alive, just not ready
    await world.gateway.store.open()
    assert (await readiness(world))[0] == 200


async def test_readyz_follows_cxone_auth(world: World, clock: FakeClock) -> None:
    assert (await readiness(world))[0] == 200  # a token is fetched and cached
    fetched = world.cxone.token_fetches
    assert (await readiness(world))[0] == 200
    assert world.cxone.token_fetches == fetched  # a cached token counts: no fetch per probe

    clock.advance(3700)  # the token has run out; CXone's token endpoint is down
    world.cxone.script("token", [(503, {}, {"error": "temporarily_unavailable"})])
    status, body = await readiness(world)
    assert status == 503 and body["checks"]["cxone_auth"].startswith("unavailable")
    assert body["checks"]["store"] == "ok"

    status, body = await readiness(world)  # it is back
    assert status == 200, body
    assert world.cxone.token_fetches == fetched + 2


# --- logs ---------------------------------------------------------------------------------


@pytest.fixture
def log_lines() -> Iterator[io.StringIO]:
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    buf = io.StringIO()
    configure_logging("INFO", "json", stream=buf)
    try:
        yield buf
    finally:
        for handler in list(root.handlers):
            if handler not in handlers:
                root.removeHandler(handler)
        root.setLevel(level)


def gateway_lines(buf: io.StringIO) -> list[dict[str, Any]]:
    lines = [jsonutil.loads(line) for line in buf.getvalue().splitlines() if line]
    return [
        line
        for line in lines
        if line["logger"].startswith("gateway") and not line["logger"].startswith("gateway.sandbox")
    ]


async def test_logs_are_json_lines_without_text_or_names(
    world: World, log_lines: io.StringIO
) -> None:
    secret_texts = ["my parcel 4711 is lost", "We will find it, Zara", "Welcome back"]
    conv, msg = await world.dm("usr_zebra", secret_texts[0])
    await world.delivered(CHAT_CHANNEL, msg)
    reply = await world.cxone.agent_reply(CHAT_CHANNEL, conv, secret_texts[1])
    assert reply.status == 200
    proactive = await world.cxone.agent_proactive(
        CHAT_CHANNEL, "usr_meerkat", secret_texts[2], recipient_name="Milo Meerkat"
    )
    assert proactive.status == 200
    failed = await world.cxone.agent_reply(CHAT_CHANNEL, "cnv_nope", secret_texts[1])
    assert failed.status >= 400

    lines = gateway_lines(log_lines)
    raw = log_lines.getvalue()
    for forbidden in [*secret_texts, "Zara", "zara", "Milo", "milo"]:
        assert forbidden not in raw, forbidden
    for line in lines:
        assert {"ts", "level", "logger", "msg"} <= line.keys()
        assert re.match(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$", line["ts"])

    delivered = next(line for line in lines if line["msg"] == "delivered to CXone")
    assert delivered["channel"] == CHAT_CHANNEL and delivered["route"] == "direct-message"
    assert delivered["platform_id"] == msg and delivered["outcome"] == "delivered"
    assert isinstance(delivered["duration_ms"], float)

    sent = [line for line in lines if line["msg"] == "reply sent"]
    assert [s["route"] for s in sent] == ["chat-reply", "proactive-chat"]
    first = sent[0]
    assert (
        first["cxone_id"] == conv
        and first["platform_id"] == reply.body["message"]["idOnExternalPlatform"]
    )
    assert first["outcome"] == "sent" and first["request_id"]
    assert first["text"] == f"<{len(secret_texts[1])} chars redacted>"
    assert sent[1]["cxone_id"] == proactive.thread_id

    failure = next(line for line in lines if line["msg"].startswith("reply failed"))
    assert failure["level"] == "warning" and failure["outcome"] == "failed"
    assert failure["route"] == "chat-reply" and failure["request_id"]


async def test_message_text_is_logged_when_the_operator_opts_in(
    world: World, log_lines: io.StringIO
) -> None:
    gw = world.gateway
    settings = dataclasses.replace(
        gw.settings, logging=dataclasses.replace(gw.settings.logging, log_message_text=True)
    )
    gw.install(dataclasses.replace(gw.routing, settings=settings))  # as a reload would
    conv, msg = await world.dm("usr_zebra", "hi")
    await world.delivered(CHAT_CHANNEL, msg)
    assert (await world.cxone.agent_reply(CHAT_CHANNEL, conv, "opted-in text")).status == 200
    sent = next(line for line in gateway_lines(log_lines) if line["msg"] == "reply sent")
    assert sent["text"] == "opted-in text"
