"""Issue 9: Ibis (ids that are JSON numbers: negative, beyond 2^53, beyond 2^64).

They reach CXone as exact decimal text and come back to the platform unchanged: as text
in the path and the query, as JSON numbers with every digit in the body.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from gateway import jsonutil
from gateway.clock import FakeClock
from gateway.mapping import CompiledMapping, InboundCall, OutboundContext, load_mapping
from tests.reach_world import PLATFORMS, Reach, start_reach

ENV = {"IBIS_WEBHOOK_SECRET": "ibis-webhook-secret", "IBIS_API_KEY": "ibis-api-key"}
BIG = 12345678901234567890123  # beyond 2^64
NEGATIVE = -9007199254740993  # -(2^53 + 1): the nearest double is -9007199254740992
BELOW_I64 = -9223372036854775809  # -(2^63 + 1): beyond a signed 64-bit integer
ABOVE_2_53 = 9007199254740993


@pytest.fixture
async def ibis(tmp_path: Path, clock: FakeClock) -> AsyncIterator[Reach]:
    async with start_reach(tmp_path, "ibis", env=ENV, api_env="IBIS_API", clock=clock) as r:
        yield r


def update(
    update_id: int, chat: int, user: int, message_id: int, reply_to: int | None = None
) -> dict[str, Any]:
    message: dict[str, Any] = {
        "id": message_id,
        "chat": {"id": chat, "title": f"chat {chat}"},
        "date": 1764158400,
        "from": {"id": user, "name": "Ida"},
        "text": f"hello from {user}",
    }
    if reply_to is not None:
        message["reply_to"] = {"id": reply_to}
    return {"update_id": update_id, "message": message}


async def test_numeric_ids_reach_cxone_as_exact_text(ibis: Reach) -> None:
    raw = jsonutil.dumps(
        {
            "updates": [
                update(2**64 + 1, BIG, BELOW_I64, BIG + 1),
                update(2**64 + 2, NEGATIVE, ABOVE_2_53, -1, reply_to=2**64),
            ]
        }
    )
    assert b"12345678901234567890123" in raw and b"-9223372036854775809" in raw
    assert (await ibis.post(raw)).status == 200
    first = await ibis.delivered("chat", str(BIG + 1))
    assert first.thread_id == "12345678901234567890123"
    assert first.body["authorEndUserIdentity"]["idOnExternalPlatform"] == "-9223372036854775809"
    second = await ibis.delivered("chat", "-1")
    assert second.thread_id == "-9007199254740993"
    assert second.body["authorEndUserIdentity"]["idOnExternalPlatform"] == "9007199254740993"
    assert second.body["replyToMessage"] == {"idOnExternalPlatform": "18446744073709551616"}
    assert not ibis.cxone.violations
    # the platform retries the delivery: the numeric dedupe keys match exactly
    assert (await ibis.post(raw)).json == {"accepted": 0, "duplicates": 2, "ignored": 0}


async def test_a_reply_takes_the_ids_back_unchanged(ibis: Reach) -> None:
    assert (await ibis.post({"updates": [update(7, NEGATIVE, ABOVE_2_53, 70)]})).status == 200
    await ibis.delivered("chat", "70")
    ibis.api.on("POST", "/chats/{chat}/messages", json={"result": {"id": 98765432109876543210987}})
    result = await ibis.reply("chat", str(NEGATIVE), "Hi Ida", reply_to=str(2**64))
    assert result.status == 200, result.body
    assert result.body["message"]["idOnExternalPlatform"] == "98765432109876543210987"
    assert result.body["thread"]["idOnExternalPlatform"] == "-9007199254740993"
    (sent,) = ibis.api.requests
    assert sent.path == "/chats/-9007199254740993/messages"
    assert sent.query == {"notify": "9007199254740993"}
    assert sent.raw == (
        b'{"chat_id":-9007199254740993,"to_user":9007199254740993,'
        b'"reply_to":18446744073709551616,"text":"Hi Ida"}'
    )
    assert sent.headers["x-ibis-key"] == "ibis-api-key"


async def test_an_id_beyond_64_bits_goes_back_in_path_and_body(ibis: Reach) -> None:
    assert (await ibis.post({"updates": [update(8, BIG, BELOW_I64, 80)]})).status == 200
    await ibis.delivered("chat", "80")
    ibis.api.on("POST", "/chats/{chat}/messages", json={"result": {"id": 81}})
    result = await ibis.reply("chat", str(BIG), "Hello")
    assert result.status == 200, result.body
    assert result.body["message"]["idOnExternalPlatform"] == "81"
    (sent,) = ibis.api.requests
    assert sent.path == f"/chats/{BIG}/messages"
    assert sent.query == {"notify": str(BELOW_I64)}
    assert sent.json == {"chat_id": BIG, "to_user": BELOW_I64, "text": "Hello"}
    assert b'"chat_id":12345678901234567890123,"to_user":-9223372036854775809' in sent.raw


@pytest.fixture(scope="module")
def mapping() -> CompiledMapping:
    env = {**ENV, "IBIS_API": "https://api.ibis.example"}
    return load_mapping(PLATFORMS / "ibis.yaml", env=env)


@settings(max_examples=150, deadline=None)
@given(chat=st.integers(-(10**30), 10**30), user=st.integers(-(10**30), 10**30))
@example(chat=-(2**63) - 1, user=2**64)
@example(chat=-(10**19) + 1, user=-(2**63))
@example(chat=2**53 + 1, user=-(2**53) - 1)
@example(chat=0, user=-1)
def test_any_integer_id_survives_both_ways(mapping: CompiledMapping, chat: int, user: int) -> None:
    raw = jsonutil.dumps({"updates": [update(1, chat, user, 1)]})
    (item,) = mapping.split(mapping.parse_body(raw, "application/json"), headers={}, query={})
    call = mapping.route_inbound(item)
    assert isinstance(call, InboundCall)
    assert call.thread_id == str(chat)
    body = jsonutil.loads(jsonutil.dumps(call.body))  # as CXone receives it
    assert body["authorEndUserIdentity"]["idOnExternalPlatform"] == str(user)

    cxone = {
        "thread": {"idOnExternalPlatform": str(chat)},
        "messageContent": {"type": "TEXT", "payload": {"text": "hi"}},
        "endUserRecipients": [{"idOnExternalPlatform": str(user)}],
    }
    ctx = OutboundContext("reply", "outbound", "chat", "ibis_chat", {}, cxone)
    (request,) = mapping.route_outbound(ctx).requests
    url = urlsplit(request.url)
    assert unquote(url.path) == f"/chats/{chat}/messages"
    assert url.query == f"notify={user}"
    assert request.body is not None
    assert request.body.startswith(f'{{"chat_id":{chat},"to_user":{user},'.encode())
    assert jsonutil.loads(request.body)["chat_id"] == chat
