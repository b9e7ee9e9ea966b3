"""Issue 6.3: an agent-initiated message opens a conversation on the platform, and the
conversation then works both ways on CXone's thread (gateway.cxone.threads)."""

from __future__ import annotations

from typing import Literal

import pytest

from tests.harness import CHAT_CHANNEL, World

Endpoint = Literal["outbound", "legacy"]


def conversations_with(world: World, user: str) -> list[str]:
    return [c.id for c in world.wh.world.conversations.values() if c.user_id == user]


@pytest.mark.parametrize("endpoint", ["outbound", "legacy"])
async def test_a_proactive_message_round_trip(world: World, endpoint: Endpoint) -> None:
    cx, wh = world.cxone, world.wh
    assert conversations_with(world, "usr_zebra") == []

    # 1. the agent writes first: the platform gets a new conversation with the animal
    status, body, thread = await cx.agent_proactive(
        CHAT_CHANNEL, "usr_zebra", "Your parcel is ready.", endpoint=endpoint
    )
    assert status == 200, body
    (conv,) = conversations_with(world, "usr_zebra")
    first = wh.world.conversations[conv].messages[-1]
    assert (first.author_id, first.text) == ("usr_jungle", "Your parcel is ready.")
    if endpoint == "outbound":  # the DFO 3.0 answer names the platform's conversation
        assert body["thread"] == {"idOnExternalPlatform": conv}
        assert body["message"]["idOnExternalPlatform"] == first.id
    else:
        assert body == {"idOnExternalPlatform": first.id}

    # 2. a later reply on CXone's thread lands in that conversation, not a new one
    status, body = await cx.agent_reply(
        CHAT_CHANNEL, thread, "Pick it up by Friday.", endpoint=endpoint
    )
    assert status == 200, body
    assert conversations_with(world, "usr_zebra") == [conv]
    assert wh.world.conversations[conv].messages[-1].text == "Pick it up by Friday."

    # 3. typing on CXone's thread shows in the conversation
    assert (await cx.agent_typing(CHAT_CHANNEL, thread, True)).status == 204
    assert wh.world.conversations[conv].typing is True

    # 4. the animal answers in the conversation: CXone gets it on its own thread and contact
    _, msg = await world.dm("usr_zebra", "Thanks, on my way!", conversation_id=conv)
    got = await world.delivered(CHAT_CHANNEL, msg)
    assert got.thread_id == thread
    assert got.body["thread"] == {"idOnExternalPlatform": thread}
    assert got.contact_id == cx.contact_id(CHAT_CHANNEL, thread)
    assert cx.thread(CHAT_CHANNEL, conv) is None  # no second thread, no second contact

    # 5. and the agent's answer to that still goes to the same conversation
    status, _ = await cx.agent_reply(CHAT_CHANNEL, thread, "See you!", endpoint=endpoint)
    assert status == 200
    assert [m.text for m in wh.world.conversations[conv].messages] == [
        "Your parcel is ready.",
        "Pick it up by Friday.",
        "Thanks, on my way!",
        "See you!",
    ]
    assert not [v for v in cx.violations if v.source == "gateway"]


async def test_an_ordinary_conversation_gets_no_alias(world: World) -> None:
    conv, msg = await world.dm("usr_lion", "roar?")
    await world.delivered(CHAT_CHANNEL, msg)
    status, body = await world.cxone.agent_reply(CHAT_CHANNEL, conv, "Hello Leo")
    assert status == 200 and body["thread"] == {"idOnExternalPlatform": conv}
    _, again = await world.dm("usr_lion", "still here", conversation_id=conv)
    got = await world.delivered(CHAT_CHANNEL, again)
    assert got.thread_id == conv
