"""Issue 3: Heron (timestamp and signatures in one header, platform-side rotation, retries
with one idempotency key)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from gateway import jsonutil
from gateway.clock import FakeClock
from tests.fakeplatform import Answer
from tests.reach_world import Reach, start_reach

ENV = {"HERON_WEBHOOK_SECRET": "heron-secret-new", "HERON_API_KEY": "heron-key-test"}


@pytest.fixture
async def heron(tmp_path: Path, clock: FakeClock) -> AsyncIterator[Reach]:
    async with start_reach(tmp_path, "heron", env=ENV, api_env="HERON_API", clock=clock) as r:
        yield r


def event(event_id: str, message_id: str, text: str) -> dict[str, Any]:
    customer = {"id": "cus_1", "name": "Hana"}
    body = {"id": message_id, "conversation": "hc_1", "body": text, "customer": customer}
    return {
        "id": event_id,
        "type": "message.received",
        "data": {"object": {**body, "created_ms": 1764158400123}},
    }


async def test_one_header_carries_the_timestamp_and_both_signatures_of_a_rotation(
    heron: Reach, clock: FakeClock
) -> None:
    raw = jsonutil.dumps(event("evt_1", "hm_1", "hello"))
    at = clock()
    new = heron.sign(raw, timestamp=at)["Heron-Signature"]
    old = heron.sign(raw, timestamp=at, key="heron-secret-old")["Heron-Signature"]
    assert new.startswith(f"t={int(at * 1000)},v1=")  # milliseconds
    both = f"{old},{new.split(',', 1)[1]}"  # t=...,v1=<old>,v1=<new>
    answer = await heron.post(raw, signed=False, headers={"Heron-Signature": both})
    assert answer.status == 200
    await heron.delivered("chat", "hm_1")
    only_old = await heron.post(raw, signed=False, headers={"Heron-Signature": old})
    assert only_old.status == 401
    stale = await heron.post(event("evt_2", "hm_2", "late"), timestamp=at - 301)
    assert stale.status == 401 and "stale" in stale.json["message"]
    moved = new.replace(f"t={int(at * 1000)}", f"t={int(at * 1000) + 1}")
    assert (await heron.post(raw, signed=False, headers={"Heron-Signature": moved})).status == 401


async def test_a_retried_reply_keeps_one_idempotency_key(heron: Reach) -> None:
    await heron.post(event("evt_1", "hm_1", "hello"))
    await heron.delivered("chat", "hm_1")
    heron.api.on(
        "POST",
        "/v1/conversations/hc_1/messages",
        Answer(503, json={"error": {"type": "api_error", "message": "try again"}}),
        Answer(200, json={"object": "message", "id": "hm_out_1", "created": 1764158401}),
    )
    result = await heron.reply("chat", "hc_1", "Hello Hana")
    assert result.status == 200, result.body
    assert result.body["message"]["idOnExternalPlatform"] == "hm_out_1"
    first, second = heron.api.requests
    assert first.headers["idempotency-key"] == second.headers["idempotency-key"]
    assert second.json == {"body": "Hello Hana"}
