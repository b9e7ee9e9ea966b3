"""Idle workers are woken one at a time: a new message costs one claim, not one per worker."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

from gateway.delivery.store import Store
from tests.harness import CHAT_CHANNEL, start_world


def _count_claims(store: Store) -> list[int]:
    """Record how many jobs each `store.claim` found, from now on."""
    claims: list[int] = []
    claim = store.claim

    async def counting(*args: Any, **kwargs: Any) -> Any:
        jobs = await claim(*args, **kwargs)
        claims.append(len(jobs))
        return jobs

    store.claim = counting  # type: ignore[method-assign]
    return claims


async def test_messages_wake_one_worker_each_and_queued_ones_are_all_delivered(
    tmp_path: Path,
) -> None:
    # a long poll interval: every wake-up below comes from a new or freed job
    async with start_world(tmp_path, poll_interval=30.0) as world:
        store = world.gateway.store
        assert world.gateway.settings.delivery.workers >= 4
        claims = _count_claims(store)
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


async def test_a_backlog_drains_with_one_store_operation_per_message(tmp_path: Path) -> None:
    # CXone holds the first message: the next four queue behind it in the store
    async with start_world(tmp_path, backend="sqlite", poll_interval=30.0) as world:
        store = world.gateway.store
        calls: dict[str, list[int]] = {"claim": [], "complete": [], "complete_and_claim": []}
        claim, complete, both = store.claim, store.complete, store.complete_and_claim

        async def counting_claim(*args: Any, **kwargs: Any) -> Any:
            jobs = await claim(*args, **kwargs)
            calls["claim"].append(len(jobs))
            return jobs

        async def counting_complete(*args: Any, **kwargs: Any) -> Any:
            calls["complete"].append(1)
            return await complete(*args, **kwargs)

        drained = asyncio.Event()

        async def counting_both(*args: Any, **kwargs: Any) -> Any:
            done, jobs = await both(*args, **kwargs)
            calls["complete_and_claim"].append(len(jobs))
            if len(calls["complete_and_claim"]) == 4:
                drained.set()
            return done, jobs

        store.claim = counting_claim  # type: ignore[method-assign]
        store.complete = counting_complete  # type: ignore[method-assign]
        store.complete_and_claim = counting_both  # type: ignore[method-assign]
        gate = world.cxone.hold("create_message")
        conv, first = await world.dm("usr_zebra", "m0")
        ids = [first]
        for i in range(1, 5):
            ids.append((await world.dm("usr_zebra", f"m{i}", conversation_id=conv))[1])
        await world.cxone.wait_for(lambda: world.cxone.held("create_message") >= 1)
        gate.set()
        world.cxone.release()
        for message_id in ids:
            await world.delivered(CHAT_CHANNEL, message_id)
        assert [m.message_id for m in world.cxone.messages] == ids
        async with asyncio.timeout(5):  # CXone has m4 before its worker completes it
            await drained.wait()
        # m0 was handed over at intake and completed alone; its completion freed m1,
        # claimed on its own; m1..m4 each completed and claimed the next in one step
        assert calls["complete"] == [1]
        assert sum(calls["claim"]) == 1
        assert calls["complete_and_claim"] == [1, 1, 1, 0]
        assert await store.depth() == 0


async def test_messages_handed_over_at_intake_cost_no_claim(tmp_path: Path) -> None:
    # with SQLite a claim is a transaction: a worker that delivered a job handed over at
    # intake goes back to waiting instead of asking the store for more (before: one
    # claim per message, each finding nothing)
    async with start_world(tmp_path, backend="sqlite", poll_interval=30.0) as world:
        store = world.gateway.store
        claims = _count_claims(store)
        _, first = await world.dm("usr_zebra", "warm-up")
        await world.delivered(CHAT_CHANNEL, first)
        claims.clear()  # the workers' first claims at startup are behind us
        users = ["usr_lion", "usr_giraffe", "usr_hippo", "usr_meerkat"]
        ids = [(await world.dm(user, f"hello from {user}"))[1] for user in users]
        for message_id in ids:
            await world.delivered(CHAT_CHANNEL, message_id)
        assert sorted(m.message_id for m in world.cxone.messages) == sorted([first, *ids])
        assert claims == []
        # a message queued behind a busy thread is still claimed as soon as it is free
        gate = world.cxone.hold("create_message")
        conv, held = await world.dm("usr_lion", "first")
        await world.cxone.wait_for(lambda: world.cxone.held("create_message") >= 1)
        _, queued = await world.dm("usr_lion", "second", conversation_id=conv)
        gate.set()
        world.cxone.release()
        await world.delivered(CHAT_CHANNEL, held)
        await world.delivered(CHAT_CHANNEL, queued)
        assert sum(claims) == 1
