"""Issue 2: the webhook edge: signatures, handshake, dedupe, echoes and unknown events."""

from __future__ import annotations

import hashlib
import hmac

import aiohttp

from gateway import jsonutil
from tests.harness import CHAT_CHANNEL, SECRETS, World


def _event(text: str = "hi", event_id: str = "evt_manual1") -> dict[str, object]:
    return {
        "id": event_id,
        "type": "message.created",
        "occurred_at_ms": 1764158400123,
        "data": {
            "conversation": {"id": "cnv_manual"},
            "message": {
                "id": f"msg_{event_id}",
                "text": text,
                "sent_at_ms": 1764158400123,
                "attachments": [],
            },
            "sender": {
                "id": "usr_zebra",
                "handle": "zara",
                "display_name": "Zara Zebra",
                "avatar_url": "",
            },
        },
    }


def _sign(raw: bytes, t: int, secret: str = SECRETS.wh_secret) -> str:
    mac = hmac.new(secret.encode(), f"{t}.".encode() + raw, hashlib.sha256).hexdigest()
    return f"t={t},v1={mac}"


async def _post(world: World, raw: bytes, headers: dict[str, str]) -> tuple[int, object]:
    async with (
        aiohttp.ClientSession() as s,
        s.post(
            world.webhook_url, data=raw, headers={"Content-Type": "application/json", **headers}
        ) as r,
    ):
        return r.status, await r.json()


async def test_bad_stale_or_missing_signatures_get_401_and_nothing_reaches_cxone(
    world: World,
) -> None:
    raw = jsonutil.dumps(
        {
            "delivery": {"id": "dlv_x", "attempt": 1},
            "account_id": "acc_jungle",
            "events": [_event()],
        }
    )
    now = int(world.gateway.clock())
    cases = {
        "missing": {},
        "wrong secret": {"WH-Signature": _sign(raw, now, "not-the-secret")},
        "stale": {"WH-Signature": _sign(raw, now - 301)},
        "future": {"WH-Signature": _sign(raw, now + 301)},
        "tampered": {"WH-Signature": _sign(raw, now)},
        "garbage": {"WH-Signature": "t=abc,v1=zz"},
    }
    for name, headers in cases.items():
        body = raw.replace(b'"hi"', b'"hI"') if name == "tampered" else raw
        status, answer = await _post(world, body, headers)
        assert status == 401, name
        assert isinstance(answer, dict) and answer["error"] == "invalid_signature", name
        assert "hi" not in str(answer)
    # and a correct one passes, proving the cases differ only by the signature
    status, _ = await _post(world, raw, {"WH-Signature": _sign(raw, now)})
    assert status == 200
    await world.delivered(CHAT_CHANNEL, "msg_evt_manual1")
    assert len(world.cxone.messages) == 1


async def test_handshake_echoes_only_with_the_right_verify_token(world: World) -> None:
    assert await world.wh.subscribe() is True
    async with aiohttp.ClientSession() as s:
        params = {"wh.mode": "subscribe", "wh.challenge": "abc123", "wh.verify_token": "wrong"}
        async with s.get(world.webhook_url, params=params) as r:
            assert r.status == 403
            assert "abc123" not in await r.text()
        params["wh.verify_token"] = SECRETS.wh_verify_token
        async with s.get(world.webhook_url, params=params) as r:
            assert r.status == 200 and await r.text() == "abc123"
            assert r.content_type == "text/plain"


async def test_the_same_delivery_twice_gives_one_cxone_message(world: World) -> None:
    conv, msg = await world.wh.user_sends_dm("usr_zebra", "only once")
    events = list(world.wh.queued_events)
    await world.wh.flush()
    await world.delivered(CHAT_CHANNEL, msg)
    raw, headers = world.wh.build_delivery(events, delivery_id="dlv_again", attempt=2)
    status, answer = await _post(world, raw, headers)
    assert status == 200 and answer == {"accepted": 0, "duplicates": 1, "ignored": 0}
    # a later message in the same thread still arrives, after the duplicate
    _, later = await world.dm("usr_zebra", "second", conversation_id=conv)
    await world.delivered(CHAT_CHANNEL, later)
    assert world.cxone.deliveries(CHAT_CHANNEL, msg) == 1


async def test_a_failed_delivery_is_redelivered_by_the_platform_and_deduplicated(
    world: World,
) -> None:
    # the gateway accepted the delivery, but the platform retries it anyway (lost answer)
    _, msg = await world.wh.user_sends_dm("usr_lion", "lost ack")
    attempts = await world.wh.flush()
    assert attempts[0].status == 200
    await world.delivered(CHAT_CHANNEL, msg)
    raw, headers = world.wh.build_delivery(
        attempts[0].events, delivery_id=attempts[0].delivery_id, attempt=2
    )
    status, answer = await _post(world, raw, headers)
    assert status == 200 and answer["duplicates"] == 1  # type: ignore[index]
    assert world.cxone.deliveries(CHAT_CHANNEL, msg) == 1


async def test_echoes_and_unknown_events_are_acknowledged_and_ignored(world: World) -> None:
    conv, msg = await world.dm("usr_zebra", "hello")
    await world.delivered(CHAT_CHANNEL, msg)
    status, _ = await world.cxone.agent_reply(CHAT_CHANNEL, conv, "an agent line")
    assert status == 200
    await world.wh.emit_unknown("badge.awarded", {"user_id": "usr_zebra", "badge": "fastest"})
    attempts = await world.wh.flush()  # the echo of the agent line + the unknown event
    assert [a.status for a in attempts] == [200]
    assert len(attempts[0].events) == 2
    _, later = await world.dm("usr_zebra", "after")
    await world.delivered(CHAT_CHANNEL, later)
    texts = [m.body["messageContent"]["payload"]["text"] for m in world.cxone.messages]
    assert texts == ["hello", "after"]
    metrics = world.gateway.metrics.render().decode()
    assert 'byoc_events_ignored_total{mapping="watering-hole",route="echo"} 1.0' in metrics
    assert 'byoc_events_ignored_total{mapping="watering-hole",route="unknown-event"} 1.0' in metrics


async def test_junk_bodies_get_clear_errors_without_tracebacks(world: World) -> None:
    now = int(world.gateway.clock())
    for raw in (b"{not json", b"[]", b'"just a string"', b"\xff\xfe", b""):
        status, answer = await _post(world, raw, {"WH-Signature": _sign(raw, now)})
        assert 400 <= status < 500, raw
        assert isinstance(answer, dict) and "error" in answer
        assert "Traceback" not in str(answer)
