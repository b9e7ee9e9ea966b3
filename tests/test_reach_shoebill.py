"""Issue 8: Shoebill (64-bit ids, composite threads, times, uploads) through the real gateway.

Shoebill's ids are 19-digit numbers, beyond what a double holds: they reach CXone as
exact text and go back to the platform as exact numbers. A conversation is a channel
in a guild, two ids in one CXone thread id, split again for the reply. Times come in
four forms and all reach CXone the same. A file is uploaded to Shoebill before the
message that carries it, fetched from CXone's short-lived URL at once.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web

from gateway.clock import FakeClock
from tests.fakeplatform import Answer
from tests.harness import serve_app
from tests.reach_world import Reach, start_reach

ENV = {"SHOEBILL_WEBHOOK_SECRET": "shoebill-secret", "SHOEBILL_BOT_TOKEN": "shoebill-bot"}
GUILD, CHANNEL, MESSAGE, AUTHOR = (
    9312345678901234567,
    9412345678901234567,
    9512345678901234567,
    9612345678901234567,
)
THREAD = f"{GUILD}:{CHANNEL}"
PHOTO = b"\x89PNG\r\n\x1a\n a tiny picture \x00\xff"


@pytest.fixture
async def shoebill(tmp_path: Path, clock: FakeClock) -> AsyncIterator[Reach]:
    async with start_reach(tmp_path, "shoebill", env=ENV, api_env="SHOEBILL_API", clock=clock) as r:
        yield r


def message(n: int, sent: Any, message_id: int | None = None) -> dict[str, Any]:
    return {
        "event_id": f"evt_{n}",
        "type": "message_create",
        "guild_id": GUILD,
        "channel_id": CHANNEL,
        "id": message_id or n,
        "sent": sent,
        "content": f"message {n}",
        "author": {"id": AUTHOR, "username": "ada"},
    }


async def test_a_19_digit_id_is_intact_in_both_directions(shoebill: Reach) -> None:
    raw = (
        b'{"event_id":"evt_1","type":"message_create","guild_id":9312345678901234567,'
        b'"channel_id":9412345678901234567,"id":9512345678901234567,"sent":1764158400,'
        b'"content":"hello","author":{"id":9612345678901234567,"username":"ada"}}'
    )
    assert (await shoebill.post(raw)).status == 200
    got = await shoebill.delivered("channel", str(MESSAGE))
    assert got.thread_id == THREAD == "9312345678901234567:9412345678901234567"
    assert got.body["authorEndUserIdentity"]["idOnExternalPlatform"] == "9612345678901234567"
    assert not shoebill.cxone.violations

    shoebill.api.on(
        "POST",
        "/channels/{channel}/messages",
        Answer(
            200,
            text='{"message":{"id":9712345678901234567,"timestamp":"2025-11-26T12:00:01.5Z"}}',
            headers={"Content-Type": "application/json"},
        ),
    )
    result = await shoebill.reply("channel", THREAD, "hi ada")
    assert result.status == 200, result.body
    assert result.body["message"]["idOnExternalPlatform"] == "9712345678901234567"
    assert result.body["message"]["createdAtWithMilliseconds"] == "2025-11-26T12:00:01.500Z"
    (sent,) = shoebill.api.requests
    assert sent.path == "/channels/9412345678901234567/messages"
    assert b'"guild_id":9312345678901234567' in sent.raw  # a number, every digit
    assert sent.headers["authorization"] == "Bot shoebill-bot"


async def test_every_time_form_reaches_cxone_as_iso_with_milliseconds(shoebill: Reach) -> None:
    forms = [1764158400.123, 1764158400123, "1764158400.123", "2025-11-26T13:00:00.123+01:00"]
    for n, sent in enumerate(forms, 1):
        assert (await shoebill.post(message(n, sent))).status == 200
    for n in range(1, len(forms) + 1):
        got = await shoebill.delivered("channel", str(n))
        assert got.body["createdAtWithMilliseconds"] == "2025-11-26T12:00:00.123Z", forms[n - 1]


async def test_an_attachment_is_uploaded_before_the_message_is_sent(shoebill: Reach) -> None:
    files = web.Application()  # CXone's file storage: short-lived URLs, no auth needed
    fetched: list[str] = []

    async def photo(request: web.Request) -> web.Response:
        fetched.append(request.path_qs)
        return web.Response(body=PHOTO, content_type="image/png")

    files.router.add_get("/files/{name}", photo)
    runner, files_url = await serve_app(files)
    try:
        shoebill.api.on(
            "POST",
            "/channels/{channel}/attachments",
            json={"attachment": {"id": 9812345678901234567}},
        )
        shoebill.api.on(
            "POST", "/channels/{channel}/messages", json={"message": {"id": 7, "timestamp": 1}}
        )
        result = await shoebill.reply(
            "channel",
            THREAD,
            "here is the photo",
            attachments=[
                {"url": f"{files_url}/files/photo.png?sig=abc", "friendlyName": "photo.png"}
            ],
        )
    finally:
        await runner.cleanup()
    assert result.status == 200, result.body
    assert fetched == ["/files/photo.png?sig=abc"]
    upload, sent = shoebill.api.requests
    assert upload.path == f"/channels/{CHANNEL}/attachments"
    assert upload.content_type == "multipart/form-data"
    assert (
        b'name="file"; filename="photo.png"\r\nContent-Type: image/png\r\n\r\n' + PHOTO
        in upload.raw
    )
    assert b'name="purpose"\r\n\r\nmessage\r\n' in upload.raw
    assert sent.path == f"/channels/{CHANNEL}/messages"
    assert sent.json == {
        "guild_id": GUILD,
        "content": "here is the photo",
        "attachment_ids": ["9812345678901234567"],
    }
    nonce = "x-shoebill-nonce"  # each request its own idempotency key
    assert (
        upload.headers[nonce]
        and sent.headers[nonce]
        and upload.headers[nonce] != sent.headers[nonce]
    )


async def test_an_attachment_larger_than_the_channel_takes_is_refused(shoebill: Reach) -> None:
    async def big(request: web.Request) -> web.Response:
        return web.Response(body=b"%PDF" + b"0" * 1_048_576, content_type="application/pdf")

    files = web.Application()
    files.router.add_get("/files/big.pdf", big)
    runner, files_url = await serve_app(files)
    try:
        result = await shoebill.reply(
            "channel",
            THREAD,
            "a big file",
            attachments=[{"url": f"{files_url}/files/big.pdf", "friendlyName": "big.pdf"}],
        )
    finally:
        await runner.cleanup()
    assert (result.status, result.body["error"]) == (422, "attachment_not_allowed")
    assert not shoebill.api.requests  # nothing reached the platform
