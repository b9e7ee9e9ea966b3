"""Issue 3: Toucan (Ed25519 signatures, a signed ping, single-event bodies, attachments both
ways with per-channel limits, a templated method for typing)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from gateway.clock import FakeClock
from tests.reach_world import Reach, start_reach

SEED = bytes(range(32))
PUBLIC = (
    Ed25519PrivateKey.from_private_bytes(SEED)
    .public_key()
    .public_bytes(Encoding.Raw, PublicFormat.Raw)
)
ENV = {"TOUCAN_PUBLIC_KEY": PUBLIC.hex(), "TOUCAN_BOT_TOKEN": "toucan-bot-token-test"}
DM = "1200000000000000001"
FORUM = "1200000000000000009"


@pytest.fixture
async def toucan(tmp_path: Path, clock: FakeClock) -> AsyncIterator[Reach]:
    async with start_reach(tmp_path, "toucan", env=ENV, api_env="TOUCAN_API", clock=clock) as r:
        yield r


def message(mid: str, channel: str, text: str, **extra: Any) -> dict[str, Any]:
    return {
        "event": "MESSAGE_CREATE",
        "id": mid,
        "channel_id": channel,
        "guild_id": None if channel == DM else "1000",
        "author": {"id": "1100000000000000001", "username": "tui", "global_name": "Tui"},
        "content": text,
        "timestamp": "2025-11-26T12:00:00.123000+00:00",
        "attachments": [],
        **extra,
    }


async def test_the_signed_ping_is_answered_and_never_forwarded(toucan: Reach) -> None:
    answer = await toucan.post({"type": 1, "id": "1", "application_id": "2"}, key=SEED)
    assert (answer.status, answer.content_type, answer.json) == (
        200,
        "application/json",
        {"type": 1},
    )
    unsigned = await toucan.post({"type": 1}, signed=False)
    assert unsigned.status == 401
    other_key = await toucan.post({"type": 1}, key=bytes(32))
    assert other_key.status == 401
    stale = await toucan.post({"type": 1}, key=SEED, timestamp=toucan.clock() - 301)
    assert stale.status == 401
    assert await toucan.gateway.store.depth() == 0 and toucan.cxone.messages == []


async def test_single_events_with_attachments_reach_the_right_channel(toucan: Reach) -> None:
    picture = {
        "id": "9",
        "filename": "receipt.png",
        "url": "https://cdn.toucan.example/a/9/receipt.png",
        "content_type": "image/png",
        "size": 48213,
    }
    answer = await toucan.post(message("1301", DM, "my receipt", attachments=[picture]), key=SEED)
    assert answer.status == 200
    reference = {"message_id": "1290"}
    await toucan.post(message("1302", FORUM, "same here", message_reference=reference), key=SEED)
    bot = message("1303", DM, "beep", author={"id": "1", "username": "helper", "bot": True})
    await toucan.post(bot, key=SEED)
    dm = await toucan.delivered("dm", "1301")
    assert dm.thread_id == DM
    assert dm.body["attachments"] == [
        {"url": "https://cdn.toucan.example/a/9/receipt.png", "friendlyName": "receipt.png"}
    ]
    assert dm.body["createdAtWithMilliseconds"] == "2025-11-26T12:00:00.123Z"
    post = await toucan.delivered("forum", "1302")
    assert post.body["replyToMessage"] == {"idOnExternalPlatform": "1290"}
    assert toucan.ignored("bot") == 1
    assert not toucan.cxone.violations


async def test_a_reply_sends_cxone_attachments_within_the_channel_limits(toucan: Reach) -> None:
    await toucan.post(message("1301", DM, "hi"), key=SEED)
    await toucan.delivered("dm", "1301")
    toucan.api.on(
        "POST",
        f"/channels/{DM}/messages",
        json={"id": "1300000000000000002", "timestamp": "2025-11-26T12:00:05.000000+00:00"},
    )
    files = [
        {"url": "https://cxone.example/f/a.png?sig=x", "friendlyName": "a.png"},
        {"url": "https://cxone.example/f/invoice.pdf?sig=y", "friendlyName": "invoice.pdf"},
    ]
    result = await toucan.reply("dm", DM, "your files", attachments=files)
    assert result.status == 200, result.body
    assert result.body["message"]["idOnExternalPlatform"] == "1300000000000000002"
    (sent,) = toucan.api.requests
    assert sent.headers["authorization"] == "Bearer toucan-bot-token-test"
    assert sent.json == {
        "content": "your files",
        "attachments": [
            {"url": "https://cxone.example/f/a.png?sig=x", "filename": "a.png"},
            {"url": "https://cxone.example/f/invoice.pdf?sig=y", "filename": "invoice.pdf"},
        ],
    }
    refused = {
        "dm: three files": ("dm", DM, [*files, files[0]], "at most 2"),
        "dm: a program": (
            "dm",
            DM,
            [{"url": "https://x/setup.exe", "friendlyName": "setup.exe"}],
            "application/octet-stream",
        ),
        "dm: no extension": (
            "dm",
            DM,
            [{"url": "https://x/blob", "friendlyName": "blob"}],
            "unknown",
        ),
        "forum: any file": ("forum", FORUM, files[:1], "takes no attachments"),
    }
    for name, (role, thread, attachments, reason) in refused.items():
        result = await toucan.reply(role, thread, "files", attachments=attachments)
        assert result.status == 422, name
        assert result.body["error"] == "attachment_not_allowed", name
        assert reason in result.body["message"], name
    assert len(toucan.api.requests) == 1


async def test_typing_uses_a_templated_method(toucan: Reach) -> None:
    toucan.api.on("PUT", "/channels/{channel}/typing", status=204)
    toucan.api.on("DELETE", "/channels/{channel}/typing", status=204)
    assert (await toucan.cxone.agent_typing(toucan.channels["dm"], DM, True)).status == 204
    assert (await toucan.cxone.agent_typing(toucan.channels["dm"], DM, False)).status == 204
    assert [(r.method, r.path, r.raw) for r in toucan.api.requests] == [
        ("PUT", f"/channels/{DM}/typing", b""),
        ("DELETE", f"/channels/{DM}/typing", b""),
    ]
    # the forum has no typing route of its own: the same route serves it
    assert (await toucan.cxone.agent_typing(toucan.channels["forum"], FORUM, True)).status == 204


async def test_a_refused_typing_indicator_is_an_error_for_cxone(toucan: Reach) -> None:
    toucan.api.on(
        "PUT",
        "/channels/{channel}/typing",
        status=404,
        json={"code": 10003, "message": "Unknown Channel"},
    )
    result = await toucan.cxone.agent_typing(toucan.channels["dm"], DM, True)
    assert result.status == 422
    assert "10003" in result.body["message"]
