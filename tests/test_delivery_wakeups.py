"""Idle workers are woken one at a time: a new message costs one claim, not one per worker."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from tests.harness import CHAT_CHANNEL, start_world


async def test_messages_wake_one_worker_each_and_queued_ones_are_all_delivered(
    tmp_path: Path,
) -> None:
    # a long poll interval: every wake-up below comes from a new or freed job
    async with start_world(tmp_path, poll_interval=30.0) as world:
        store = world.gateway.store
        assert world.gateway.settings.delivery.workers >= 4
        claims: list[int] = []
        claim = store.claim

        async def counting(*args: Any, **kwargs: Any) -> Any:
            jobs = await claim(*args, **kwargs)
            claims.append(len(jobs))
            return jobs

        store.claim = counting  # type: ignore[method-assign]
        # one conversation, five messages: the first is handed over at intake, the
        # others queue behind it and are claimed in turn as each one completes
        conv, first = await world.dm("usr_zebra", "m0")
        ids = [first]
        for i in range(1, 5):
            ids.append((await world.dm("usr_zebra", f"m{i}", conversation_id=conv))[1])
        for message_id in ids:
            await world.delivered(CHAT_CHANNEL, message_id)
        assert [m.message_id for m in world.cxone.messages] == ids
        # each new or freed job woke one worker (and each that found one, one more);
        # the idle workers did not all rush the store (before: 67 claims here, not 16)
        found = sum(claims)
        assert found == 4
        assert len(claims) <= 5 * found, claims
