"""Issue 3: Termite (nested batches, X-Hub-Signature-256, GET handshake, query-token auth)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from gateway import jsonutil
from gateway.clock import FakeClock
from tests.reach_world import Reach, start_reach

ENV = {
    "TERMITE_APP_SECRET": "termite-app-secret-test",
    "TERMITE_VERIFY_TOKEN": "termite-verify-test",
    "TERMITE_PAGE_TOKEN": "termite-page-token-test",
    "TERMITE_PAGE_ID": "page_1",
}


@pytest.fixture
async def termite(tmp_path: Path, clock: FakeClock) -> AsyncIterator[Reach]:
    async with start_reach(tmp_path, "termite", env=ENV, api_env="TERMITE_API", clock=clock) as r:
        yield r


def change(conversation: str, *messages: dict[str, Any]) -> dict[str, Any]:
    return {
        "field": "messages",
        "value": {
            "conversation": {"id": conversation},
            "contacts": [{"id": "usr_1", "name": "Tess Termite"}],
            "messages": list(messages),
        },
    }


def text(mid: str, body: str, ts: int = 1764158400) -> dict[str, Any]:
    return {"mid": mid, "from": "usr_1", "timestamp": ts, "type": "text", "text": {"body": body}}


BATCH = {
    "object": "termite_page",
    "entry": [
        {
            "id": "page_1",
            "time": 1764158400123,
            "changes": [
                change("cnv_1", text("m_1", "first"), {"mid": "m_2", "type": "delivery"}),
                {"field": "feed", "value": {"post": "p_1"}},
            ],
        },
        {
            "id": "page_1",
            "time": 1764158402000,
            "changes": [
                change(
                    "cnv_1",
                    text("m_3", "second", 1764158401),
                    {"mid": "m_4", "type": "text", "is_echo": True, "text": {"body": "echo"}},
                    {"mid": "m_5", "type": "read", "timestamp": 1764158403, "read": {"mid": "m_0"}},
                ),
                change("cnv_2", text("m_6", "other thread"), {"mid": "m_7", "type": "reaction"}),
            ],
        },
    ],
}


async def test_a_batch_of_batches_reaches_cxone_in_order(termite: Reach) -> None:
    answer = await termite.post(BATCH)
    assert answer.status == 200
    assert answer.json == {"accepted": 4, "duplicates": 0, "ignored": 3}
    await termite.delivered("inbox", "m_6")
    await termite.delivered("inbox", "m_3")
    first = await termite.delivered("inbox", "m_1")
    assert first.thread_id == "cnv_1"
    assert first.body["authorEndUserIdentity"]["firstName"] == "Tess Termite"
    assert first.body["externalAttributes"] == [{"key": "page", "value": "page_1"}]
    in_cnv_1 = [m.message_id for m in termite.cxone.messages if m.thread_id == "cnv_1"]
    assert in_cnv_1 == ["m_1", "m_3"]
    (seen,) = await termite.cxone.wait_for(lambda: termite.cxone.statuses)
    assert (seen.message_id, seen.status) == ("m_0", "seen")
    assert termite.ignored("echo") == termite.ignored("delivery-receipt") == 1
    assert termite.ignored("anything-else") == 1
    # the platform retries the whole batch: nothing arrives twice
    again = await termite.post(BATCH)
    assert again.json == {"accepted": 0, "duplicates": 4, "ignored": 3}
    assert not termite.cxone.violations


async def test_x_hub_signature_256_is_checked_on_the_raw_body(termite: Reach) -> None:
    raw = jsonutil.dumps(BATCH)
    good = termite.sign(raw)
    assert good["X-Hub-Signature-256"].startswith("sha256=")
    cases = {
        "missing": {},
        "other secret": termite.sign(raw, key="someone-else"),
        "no prefix": {"X-Hub-Signature-256": good["X-Hub-Signature-256"][7:]},
        "tampered": good,
    }
    for name, headers in cases.items():
        body = raw.replace(b"first", b"f1rst") if name == "tampered" else raw
        answer = await termite.post(body, signed=False, headers=headers)
        assert answer.status == 401, name
    # the same JSON re-serialised with spaces is other bytes: refused as well
    spaced = jsonutil.dumps_str(BATCH).replace(",", ", ").encode()
    assert (await termite.post(spaced, signed=False, headers=good)).status == 401
    assert termite.cxone.messages == []


async def test_the_subscription_get_echoes_the_challenge_only_with_the_verify_token(
    termite: Reach,
) -> None:
    query = {"hub.mode": "subscribe", "hub.challenge": "1158201444", "hub.verify_token": "wrong"}
    refused = await termite.get(query)
    assert refused.status == 403 and "1158201444" not in refused.text
    query["hub.verify_token"] = ENV["TERMITE_VERIFY_TOKEN"]
    answer = await termite.get(query)
    assert (answer.status, answer.content_type, answer.text) == (200, "text/plain", "1158201444")
    assert (await termite.get({"hello": "world"})).status == 405
    assert termite.cxone.messages == [] and termite.api.requests == []


async def test_a_reply_carries_the_token_in_the_query_and_finds_the_id_in_a_list(
    termite: Reach,
) -> None:
    await termite.post(
        {
            "object": "termite_page",
            "entry": [{"id": "page_1", "changes": [change("cnv_1", text("m_1", "hi"))]}],
        }
    )
    await termite.delivered("inbox", "m_1")
    termite.api.on(
        "POST",
        "/page_1/conversations/{conversation}/messages",
        json={"messages": [{"id": "m_out_1"}]},
    )
    result = await termite.reply("inbox", "cnv_1", "Hello Tess")
    assert result.status == 200, result.body
    assert result.body["message"]["idOnExternalPlatform"] == "m_out_1"
    (sent,) = termite.api.requests
    assert sent.params == {"conversation": "cnv_1"}
    assert sent.query == {"messaging_type": "RESPONSE", "access_token": ENV["TERMITE_PAGE_TOKEN"]}
    assert sent.headers["x-termite-trace"] == "cxone-termite_inbox"
    assert "authorization" not in sent.headers
    assert sent.json == {"recipient": {"conversation": "cnv_1"}, "message": {"text": "Hello Tess"}}


async def test_a_reply_too_long_for_termite_is_refused_with_a_clear_error(termite: Reach) -> None:
    result = await termite.reply("inbox", "cnv_1", "word " * 200)
    assert result.status == 422
    assert result.body["error"] == "text_too_long"
    assert "1000 characters" in result.body["message"] and "at most 640" in result.body["message"]
    assert termite.api.requests == []
