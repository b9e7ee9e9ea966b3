"""Issue 2: a chat round trip between The Watering Hole and CXone, through the real gateway."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from gateway.sandbox.cxone.agent import Endpoint
from tests.harness import CHAT_CHANNEL, World, start_world

ISO_MS = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$")


async def test_dm_becomes_a_cxone_message_with_thread_author_and_iso_time(world: World) -> None:
    conv, msg = await world.dm("usr_zebra", "Is the watering hole open today?")
    got = await world.delivered(CHAT_CHANNEL, msg)
    body = got.body
    assert got.thread_id == conv
    assert body["idOnExternalPlatform"] == msg
    assert body["thread"] == {"idOnExternalPlatform": conv}
    assert body["messageContent"] == {
        "type": "TEXT",
        "payload": {"text": "Is the watering hole open today?"},
    }
    assert body["direction"] == "inbound"
    author = body["authorEndUserIdentity"]
    assert author["idOnExternalPlatform"] == "usr_zebra"
    assert author["firstName"] == "Zara Zebra" and author["nickname"] == "zara"
    sent_ms = world.wh.world.messages[msg].created_at_ms
    assert ISO_MS.match(body["createdAtWithMilliseconds"])
    assert body["createdAtWithMilliseconds"].endswith(f".{sent_ms % 1000:03d}Z")
    assert not world.cxone.violations


async def test_dm_with_attachments_reaches_cxone_attachments(world: World) -> None:
    attachment = {
        "kind": "image",
        "url": "https://cdn.example/z.png",
        "name": "z.png",
        "size_bytes": 10,
    }
    _, msg = await world.dm("usr_zebra", "look", attachments=[attachment])
    got = await world.delivered(CHAT_CHANNEL, msg)
    assert got.body["attachments"] == [
        {"url": "https://cdn.example/z.png", "friendlyName": "z.png"}
    ]


@pytest.mark.parametrize("endpoint", ["outbound", "legacy"])
async def test_agent_reply_appears_on_the_platform_and_cxone_gets_its_id(
    world: World, endpoint: Endpoint
) -> None:
    conv, msg = await world.dm("usr_lion", "roar?")
    await world.delivered(CHAT_CHANNEL, msg)
    status, body = await world.cxone.agent_reply(
        CHAT_CHANNEL, conv, f"Hello Leo ({endpoint})", endpoint=endpoint
    )
    assert status == 200, body
    conversation = world.wh.world.conversations[conv]
    sent = conversation.messages[-1]
    assert sent.author_id == "usr_jungle" and sent.text == f"Hello Leo ({endpoint})"
    if endpoint == "legacy":
        assert body == {"idOnExternalPlatform": sent.id}
    else:
        assert body["message"]["idOnExternalPlatform"] == sent.id
        assert body["message"]["url"] == sent.permalink
        assert body["thread"] == {"idOnExternalPlatform": conv}
        assert body["message"]["createdAtWithMilliseconds"].endswith(
            f".{sent.created_at_ms % 1000:03d}Z"
        )
    assert not [v for v in world.cxone.violations if v.source == "gateway"]


async def test_a_retried_reply_posts_once(world: World) -> None:
    conv, msg = await world.dm("usr_hippo", "hi")
    await world.delivered(CHAT_CHANNEL, msg)
    first = await world.cxone.agent_reply(CHAT_CHANNEL, conv, "only once please")
    again = await world.cxone.agent_reply(CHAT_CHANNEL, conv, "only once please")
    assert first.status == again.status == 200
    assert first.body == again.body
    texts = [m.text for m in world.wh.world.conversations[conv].messages]
    assert texts.count("only once please") == 1


async def test_a_repeat_whose_answer_record_was_lost_still_posts_once(
    world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The answer record is written without waiting (`kv_set_later`); lost (a crash at
    that moment), the repeat sends again under the first Idempotency-Key, and the
    platform answers with the message it already made."""
    conv, msg = await world.dm("usr_hippo", "hi")
    await world.delivered(CHAT_CHANNEL, msg)
    monkeypatch.setattr(world.gateway.store, "kv_set_later", lambda *args: None)
    first = await world.cxone.agent_reply(CHAT_CHANNEL, conv, "once, even so")
    again = await world.cxone.agent_reply(CHAT_CHANNEL, conv, "once, even so")
    assert first.status == again.status == 200
    posts = [c for c in world.wh.api_calls if c.path.endswith("/messages") and c.method == "POST"]
    assert first.body == again.body
    assert len(posts) == 2 and len({c.headers.get("Idempotency-Key") for c in posts}) == 1
    texts = [m.text for m in world.wh.world.conversations[conv].messages]
    assert texts.count("once, even so") == 1


async def test_with_no_idempotency_window_every_reply_posts(tmp_path: Path) -> None:
    """`outbound.idempotency_window: 0` turns replies' deduplication off: the same reply
    twice posts twice, each under its own Idempotency-Key (a key kept from the first
    would make the platform answer the second with the first message, posting nothing)."""
    overrides = {"outbound": {"idempotency_window": 0}}
    async with start_world(tmp_path, overrides=overrides) as world:
        conv, msg = await world.dm("usr_hippo", "hi")
        await world.delivered(CHAT_CHANNEL, msg)
        first = await world.cxone.agent_reply(CHAT_CHANNEL, conv, "twice on purpose")
        again = await world.cxone.agent_reply(CHAT_CHANNEL, conv, "twice on purpose")
        assert first.status == again.status == 200
        assert first.body != again.body
        posts = [
            c for c in world.wh.api_calls if c.path.endswith("/messages") and c.method == "POST"
        ]
        assert len(posts) == 2 and len({c.headers.get("Idempotency-Key") for c in posts}) == 2
        texts = [m.text for m in world.wh.world.conversations[conv].messages]
        assert texts.count("twice on purpose") == 2


async def test_reply_retried_after_a_platform_hiccup_keeps_its_idempotency_key(
    world: World,
) -> None:
    conv, msg = await world.dm("usr_giraffe", "hello")
    await world.delivered(CHAT_CHANNEL, msg)
    world.wh.fail_next(1, 503, path_contains="/messages")
    world.wh.reset_next(1, path_contains="/messages", after=True)
    status, body = await world.cxone.agent_reply(CHAT_CHANNEL, conv, "despite the hiccups")
    assert status == 200, body
    posts = [c for c in world.wh.api_calls if c.path.endswith("/messages") and c.method == "POST"]
    keys = {c.headers.get("Idempotency-Key") for c in posts}
    assert len(posts) == 3 and len(keys) == 1 and None not in keys
    texts = [m.text for m in world.wh.world.conversations[conv].messages]
    assert texts.count("despite the hiccups") == 1
    assert (
        body["message"]["idOnExternalPlatform"]
        == world.wh.world.conversations[conv].messages[-1].id
    )


async def test_platform_refusal_gives_cxone_a_clear_error(world: World) -> None:
    conv, msg = await world.dm("usr_meerkat", "bye")
    await world.delivered(CHAT_CHANNEL, msg)
    await world.wh.close_conversation(conv)
    status, body = await world.cxone.agent_reply(CHAT_CHANNEL, conv, "are you there?")
    assert status == 422
    assert body["error"] == "platform_rejected"
    assert "conversation_closed" in body["message"]


async def test_typing_on_and_off_reach_the_platform(world: World) -> None:
    conv, msg = await world.dm("usr_zebra", "typing test")
    await world.delivered(CHAT_CHANNEL, msg)
    on = await world.cxone.agent_typing(CHAT_CHANNEL, conv, True)
    assert on.status == 204
    assert world.wh.world.conversations[conv].typing is True
    off = await world.cxone.agent_typing(CHAT_CHANNEL, conv, False)
    assert off.status == 204
    assert world.wh.world.conversations[conv].typing is False


async def test_receipts_reach_cxone_message_status(world: World) -> None:
    conv, msg = await world.dm("usr_zebra", "receipts")
    await world.delivered(CHAT_CHANNEL, msg)
    _, body = await world.cxone.agent_reply(CHAT_CHANNEL, conv, "one")
    one = body["message"]["idOnExternalPlatform"]
    _, body = await world.cxone.agent_reply(CHAT_CHANNEL, conv, "two")
    two = body["message"]["idOnExternalPlatform"]
    await world.wh.message_delivered(one)
    await world.wh.message_read(one)
    await world.wh.message_failed(two, "blocked by user")
    await world.wh.flush()
    statuses = await world.cxone.wait_for(
        lambda: [s for s in world.cxone.statuses] if len(world.cxone.statuses) >= 3 else None
    )
    got = [(s.message_id, s.status, s.reason) for s in statuses]
    assert got == [
        (one, "delivered", None),
        (one, "seen", None),
        (two, "failed", "blocked by user"),
    ]
    assert all(s.channel_id == CHAT_CHANNEL and s.known for s in statuses)


async def test_conversation_closed_closes_the_cxone_contact(world: World) -> None:
    conv, msg = await world.dm("usr_lion", "thanks, bye")
    await world.delivered(CHAT_CHANNEL, msg)
    contact = world.cxone.contact_id(CHAT_CHANNEL, conv)
    assert contact is not None
    await world.wh.close_conversation(conv)
    await world.wh.flush()
    change = await world.cxone.wait_for(
        lambda: world.cxone.contact_changes[-1] if world.cxone.contact_changes else None
    )
    assert change.contact_id == contact and change.status == "closed"
