"""Issue 3: Magpie (a shared-secret header instead of a signature, numeric ids both ways)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from gateway.clock import FakeClock
from tests.reach_world import Reach, start_reach

ENV = {
    "MAGPIE_SECRET_TOKEN": "magpie-secret-new",
    "MAGPIE_SECRET_TOKEN_PREVIOUS": "magpie-secret-old",
    "MAGPIE_BOT_TOKEN": "magpie-bot-token-test",
}
HEADER = "X-Magpie-Bot-Api-Secret-Token"


@pytest.fixture
async def magpie(tmp_path: Path, clock: FakeClock) -> AsyncIterator[Reach]:
    async with start_reach(tmp_path, "magpie", env=ENV, api_env="MAGPIE_API", clock=clock) as r:
        yield r


def update(update_id: int, message_id: int, text: str) -> dict[str, Any]:
    person = {"id": 5550001, "is_bot": False, "first_name": "Mia", "username": "mia"}
    return {
        "update_id": update_id,
        "message": {
            "message_id": message_id,
            "date": 1764158400,
            "chat": {"id": 5550001, "type": "private"},
            "from": person,
            "text": text,
        },
    }


async def test_the_secret_header_is_compared_with_every_current_secret(magpie: Reach) -> None:
    cases = {
        "missing": ({}, 401),
        "wrong": ({HEADER: "magpie-secret-guess"}, 401),
        "a prefix of the secret": ({HEADER: "magpie-secret"}, 401),
        "current": ({HEADER: "magpie-secret-new"}, 200),
        "previous (rotation)": ({HEADER: "magpie-secret-old"}, 200),
    }
    for n, (name, (headers, status)) in enumerate(cases.items()):
        answer = await magpie.post(update(900 + n, 40 + n, name), signed=False, headers=headers)
        assert answer.status == status, name
    await magpie.delivered("chat", "44")
    assert sorted(m.message_id for m in magpie.cxone.messages) == ["43", "44"]


async def test_numeric_ids_reach_cxone_as_text_and_come_back_from_the_api(magpie: Reach) -> None:
    assert (await magpie.post(update(900001, 42, "hello"))).status == 200
    got = await magpie.delivered("chat", "42")
    assert got.thread_id == "5550001"
    assert got.body["authorEndUserIdentity"]["idOnExternalPlatform"] == "5550001"
    assert not magpie.cxone.violations
    magpie.api.on(
        "POST", "/sendMessage", json={"ok": True, "result": {"message_id": 43, "date": 1764158401}}
    )
    result = await magpie.reply("chat", "5550001", "Hi Mia", reply_to="42")
    assert result.status == 200, result.body
    assert result.body["message"]["idOnExternalPlatform"] == "43"
    (sent,) = magpie.api.requests
    assert sent.json == {"chat_id": "5550001", "text": "Hi Mia", "reply_to_message_id": "42"}
    assert sent.headers["authorization"] == "Bearer magpie-bot-token-test"
