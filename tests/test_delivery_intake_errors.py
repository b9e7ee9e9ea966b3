"""An event whose route fails at intake is kept once, even when the platform redelivers it."""

from __future__ import annotations

import aiohttp

from gateway import jsonutil
from tests.harness import World


async def _post(world: World, raw: bytes, headers: dict[str, str]) -> tuple[int, object]:
    async with (
        aiohttp.ClientSession() as s,
        s.post(world.webhook_url, data=raw, headers=headers) as r,
    ):
        return r.status, await r.json()


async def test_a_redelivered_event_that_cannot_be_routed_is_kept_once(world: World) -> None:
    # a message.created without its text: the route cannot render it, the event is kept
    # for a dead letter (replayable once the mapping copes) and must not be kept twice
    event = {
        "id": "evt_no_text",
        "type": "message.created",
        "occurred_at_ms": 1764158400123,
        "data": {
            "conversation": {"id": "cnv_broken"},
            "message": {"id": "msg_no_text", "sent_at_ms": 1764158400123, "attachments": []},
            "sender": {
                "id": "usr_zebra",
                "handle": "zara",
                "display_name": "Zara",
                "avatar_url": "",
            },
        },
    }
    raw, headers = world.wh.build_delivery([event], delivery_id="dlv_broken", attempt=1)
    assert await _post(world, raw, headers) == (200, {"accepted": 1, "duplicates": 0, "ignored": 0})
    raw, headers = world.wh.build_delivery([event], delivery_id="dlv_broken", attempt=2)
    assert await _post(world, raw, headers) == (200, {"accepted": 0, "duplicates": 1, "ignored": 0})
    store = world.gateway.store
    assert await store.depth() + await store.dead_count() == 1  # queued or dead: once
    assert jsonutil.loads(raw)["events"][0]["id"] == "evt_no_text"
