"""Issue 3: Gecko (Slack-style v0 signature with rotation and a time window, POST challenge,
rendered synchronous answer, custom-header auth, failures inside a 200, split replies)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from gateway import jsonutil
from gateway.clock import FakeClock
from tests.fakeplatform import Answer
from tests.reach_world import Reach, start_reach

ENV = {
    "GECKO_SIGNING_SECRET": "gecko-signing-secret-new",
    "GECKO_SIGNING_SECRET_PREVIOUS": "gecko-signing-secret-old",
    "GECKO_VERIFY_TOKEN": "gecko-verify-test",
    "GECKO_BOT_TOKEN": "xgb-gecko-bot-token",
    "GECKO_BOT_USER_ID": "U0BOT",
}


@pytest.fixture
async def gecko(tmp_path: Path, clock: FakeClock) -> AsyncIterator[Reach]:
    async with start_reach(tmp_path, "gecko", env=ENV, api_env="GECKO_API", clock=clock) as r:
        yield r


def dm(event_id: str, text: str, **event: Any) -> dict[str, Any]:
    body = {"type": "message", "channel": "D1", "user": "U1", "text": text}
    body.update(ts="1764158400.000100", client_msg_id=f"c-{event_id}", **event)
    return {"type": "event_callback", "team_id": "T1", "event_id": event_id, "event": body}


async def test_a_message_reaches_cxone_and_gecko_gets_its_receipt(gecko: Reach) -> None:
    answer = await gecko.post(dm("Ev1", "Is my order shipped?"))
    assert answer.status == 200
    assert answer.json == {"ok": True, "event_id": "Ev1"}
    got = await gecko.delivered("dm", "c-Ev1")
    assert got.thread_id == "D1"
    assert got.body["createdAtWithMilliseconds"] == "2025-11-26T12:00:00.000Z"
    # the bot's own message and an edit: acknowledged with the same receipt, not forwarded
    echo = await gecko.post(dm("Ev2", "echo", bot_id="B1"))
    edit = await gecko.post(dm("Ev3", "edit", subtype="message_changed"))
    assert echo.json == {"ok": True, "event_id": "Ev2"} and edit.status == 200
    assert gecko.ignored("echo") == gecko.ignored("other-events") == 1
    assert [m.message_id for m in gecko.cxone.messages] == ["c-Ev1"]


async def test_both_secrets_verify_during_a_rotation(gecko: Reach) -> None:
    for n, secret in enumerate(("gecko-signing-secret-new", "gecko-signing-secret-old")):
        assert (await gecko.post(dm(f"EvR{n}", "hi"), key=secret)).status == 200
    refused = await gecko.post(dm("EvR9", "hi"), key="gecko-signing-secret-older")
    assert refused.status == 401 and refused.json["error"] == "invalid_signature"
    await gecko.delivered("dm", "c-EvR1")


async def test_the_timestamp_is_signed_and_must_be_fresh(gecko: Reach, clock: FakeClock) -> None:
    now = clock()
    for offset in (-301, 301):
        answer = await gecko.post(dm("EvT", "hi"), timestamp=now + offset)
        assert answer.status == 401, offset
        assert "stale" in answer.json["message"]
    # a timestamp header that is not the signed one fails the signature
    raw = jsonutil.dumps(dm("EvT", "hi"))
    headers = gecko.sign(raw, timestamp=now - 10)
    headers["X-Gecko-Request-Timestamp"] = str(int(now))
    assert (await gecko.post(raw, signed=False, headers=headers)).status == 401
    del headers["X-Gecko-Request-Timestamp"]
    assert (await gecko.post(raw, signed=False, headers=headers)).status == 401
    assert (await gecko.post(dm("EvT", "hi"), timestamp=now - 299)).status == 200
    await gecko.delivered("dm", "c-EvT")


async def test_url_verification_echoes_the_challenge_as_json_and_forwards_nothing(
    gecko: Reach,
) -> None:
    challenge = {"type": "url_verification", "token": "gecko-verify-test", "challenge": "3eZbrw1aB"}
    answer = await gecko.post(challenge)
    assert (answer.status, answer.content_type) == (200, "application/json")
    assert answer.json == {"challenge": "3eZbrw1aB"}
    wrong = await gecko.post({**challenge, "token": "guess"})
    assert wrong.status == 403 and "3eZbrw1aB" not in wrong.text
    unsigned = await gecko.post(challenge, signed=False)
    assert unsigned.status == 401
    assert await gecko.gateway.store.depth() == 0
    assert gecko.cxone.messages == []


async def test_a_long_reply_is_split_and_sent_in_order(gecko: Reach) -> None:
    await gecko.post(dm("Ev1", "tell me about geckos"))
    await gecko.delivered("dm", "c-Ev1")
    gecko.api.on(
        "POST",
        "/chat.postMessage",
        Answer(json={"ok": True, "message": {"ts": "1764158410.000100"}}),
        Answer(json={"ok": True, "message": {"ts": "1764158410.000200"}}),
    )
    words = [f"word{i:03d}" for i in range(60)]  # 60 x 8 characters with spaces: 479
    result = await gecko.reply("dm", "D1", " ".join(words))
    assert result.status == 200, result.body
    assert result.body["message"]["idOnExternalPlatform"] == "1764158410.000200"
    sent = gecko.api.requests_to("POST", "/chat.postMessage")
    texts = [r.json["text"] for r in sent]
    assert len(texts) == 2 and all(len(t) <= 300 for t in texts)
    assert " ".join(texts).split() == words
    assert {r.headers["x-gecko-token"] for r in sent} == {ENV["GECKO_BOT_TOKEN"]}
    assert {r.headers["x-gecko-channel"] for r in sent} == {"D1"}


async def test_failures_inside_a_200_reach_cxone_as_errors(gecko: Reach) -> None:
    gecko.api.on(
        "POST",
        "/chat.postMessage",
        json={"ok": False, "error": "channel_not_found", "detail": "gone"},
    )
    result = await gecko.reply("dm", "D404", "hello?")
    assert result.status == 422
    assert result.body["error"] == "platform_rejected"
    assert "channel_not_found" in result.body["message"]
    gecko.api.on("POST", "/chat.postMessage", json={"ok": False, "error": "ratelimited"})
    result = await gecko.reply("dm", "D405", "hello again")
    assert result.status == 503
    assert result.body["error"] == "platform_unavailable"


async def test_a_refused_part_stops_the_rest_of_a_split_reply(gecko: Reach) -> None:
    gecko.api.on(
        "POST",
        "/chat.postMessage",
        json={"ok": False, "error": "is_archived", "detail": "archived"},
    )
    result = await gecko.reply("dm", "D1", " ".join(["word"] * 100))
    assert result.status == 422 and "is_archived" in result.body["message"]
    assert len(gecko.api.requests) == 1


async def test_a_retryable_failure_inside_a_200_is_retried_in_the_deadline(gecko: Reach) -> None:
    gecko.api.on(
        "POST",
        "/chat.postMessage",
        Answer(json={"ok": False, "error": "ratelimited"}),
        Answer(json={"ok": True, "message": {"ts": "1764158420.000100"}}),
    )
    result = await gecko.reply("dm", "D1", "hello")
    assert result.status == 200, result.body
    assert result.body["message"]["idOnExternalPlatform"] == "1764158420.000100"
    first, second = gecko.api.requests
    assert first.json == second.json
