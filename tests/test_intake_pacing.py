"""Intake waits (briefly) while the workers drain a queue: `delivery.intake_hold`."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from gateway.delivery.worker import Workers
from tests.harness import CHAT_CHANNEL, World, start_world


def _spy_paced(workers: Workers) -> tuple[asyncio.Event, list[float]]:
    """An event set when a webhook starts waiting; the times waited."""
    entered, waited = asyncio.Event(), []
    paced = workers.paced

    async def spy(limit: float) -> float:
        entered.set()
        took = await paced(limit)
        waited.append(took)
        return took

    workers.paced = spy  # type: ignore[method-assign]
    return entered, waited


def _gauge(world: World, name: str) -> Callable[[], float]:
    return lambda: world.gateway.metrics.registry.get_sample_value(name) or 0.0


async def _draining(world: World) -> tuple[str, list[str]]:
    """m0 delivered, m1 claimed from the queue and held at CXone, m2 queued behind it."""
    cxone = world.cxone
    cxone.hold("create_message")
    conv, m0 = await world.dm("usr_zebra", "m0")  # handed over at intake, held at CXone
    await cxone.wait_for(lambda: cxone.held("create_message") >= 1)
    _, m1 = await world.dm("usr_zebra", "m1", conversation_id=conv)  # queued behind m0
    _, m2 = await world.dm("usr_zebra", "m2", conversation_id=conv)
    workers = world.gateway.workers
    assert workers is not None and not workers.behind  # no claim has found a queue yet
    cxone.release("create_message")  # m0 goes; the worker then claims m1: held
    cxone.hold("create_message")
    await world.delivered(CHAT_CHANNEL, m0)
    await cxone.wait_for(lambda: cxone.held("create_message") >= 1)
    return conv, [m0, m1, m2]


@pytest.mark.parametrize("backend", ["memory", "sqlite"])
async def test_a_webhook_waits_while_the_workers_drain_a_queue(
    tmp_path: Path, backend: str
) -> None:
    async with start_world(tmp_path, backend=backend, workers=1, poll_interval=30.0) as world:
        workers = world.gateway.workers
        assert workers is not None
        _, ids = await _draining(world)
        assert workers.behind  # the only worker drains a queue
        entered, waited = _spy_paced(workers)
        later = asyncio.create_task(world.dm("usr_lion", "m3"))
        async with asyncio.timeout(5):
            await entered.wait()
        assert _gauge(world, "byoc_intake_holding")() == 1
        assert not later.done()  # the platform has no answer: the event is not written yet
        assert await world.gateway.store.depth() == 2  # m1 at CXone, m2 queued; not m3
        world.cxone.release()  # m1, then m2 with m1's completion, then no queue
        _, m3 = await later
        for message_id in [*ids, m3]:
            await world.delivered(CHAT_CHANNEL, message_id)
        assert [m.message_id for m in world.cxone.messages] == [*ids, m3]
        assert len(waited) == 1 and 0 < waited[0] < 1.0
        assert _gauge(world, "byoc_intake_holding")() == 0
        assert _gauge(world, "byoc_intake_hold_seconds_count")() == 1
        assert not workers.behind


async def test_a_webhook_is_written_once_intake_hold_has_passed(tmp_path: Path) -> None:
    overrides: dict[str, Any] = {"delivery": {"intake_hold": 0.05}}
    async with start_world(
        tmp_path, backend="sqlite", workers=1, poll_interval=30.0, overrides=overrides
    ) as world:
        workers = world.gateway.workers
        assert workers is not None
        _, ids = await _draining(world)
        assert workers.behind
        _, waited = _spy_paced(workers)
        _, m3 = await world.dm("usr_lion", "m3")  # answered although CXone still holds m1
        assert waited and waited[0] >= 0.05
        assert workers.behind
        assert all(a.status == 200 for a in world.wh.deliveries)
        world.cxone.release()
        for message_id in [*ids, m3]:
            await world.delivered(CHAT_CHANNEL, message_id)


async def test_intake_hold_zero_never_holds(tmp_path: Path) -> None:
    overrides: dict[str, Any] = {"delivery": {"intake_hold": 0}}
    async with start_world(tmp_path, workers=1, poll_interval=30.0, overrides=overrides) as world:
        workers = world.gateway.workers
        assert workers is not None
        _, ids = await _draining(world)
        _, waited = _spy_paced(workers)
        _, m3 = await world.dm("usr_lion", "m3")  # intake_hold 0: never waits
        assert waited == [0.0]
        world.cxone.release()
        for message_id in [*ids, m3]:
            await world.delivered(CHAT_CHANNEL, message_id)


async def test_a_free_worker_means_no_wait(tmp_path: Path) -> None:
    """A queue drained while another worker is idle holds nothing back: the new event
    is handed to the idle worker (and with Redis, claimed by it)."""
    async with start_world(tmp_path, workers=2, poll_interval=30.0) as world:
        workers = world.gateway.workers
        assert workers is not None
        _, ids = await _draining(world)
        assert not workers.behind
        _, waited = _spy_paced(workers)
        _, m3 = await world.dm("usr_lion", "m3")
        assert waited == []  # intake did not even ask
        # the idle worker took it at once: CXone holds it beside m1
        await world.cxone.wait_for(lambda: world.cxone.held("create_message") >= 2)
        world.cxone.release()
        for message_id in [*ids, m3]:
            await world.delivered(CHAT_CHANNEL, message_id)


async def test_no_more_webhooks_wait_than_there_are_workers(tmp_path: Path) -> None:
    """A platform sending faster than the gateway delivers, on ever more connections,
    would otherwise have thousands of webhooks waiting at once."""
    async with start_world(tmp_path, workers=1, poll_interval=30.0) as world:
        workers = world.gateway.workers
        assert workers is not None
        _, ids = await _draining(world)
        assert workers.behind
        first = asyncio.create_task(workers.paced(5.0))  # as intake calls it
        await asyncio.sleep(0)  # one turn: it waits
        assert _gauge(world, "byoc_intake_holding")() == 1
        assert await workers.paced(5.0) == 0.0  # one waits already (one worker)
        assert not first.done()
        world.cxone.release()
        assert 0 < await first < 5.0  # released when the queue was drained
        for message_id in ids:
            await world.delivered(CHAT_CHANNEL, message_id)


async def test_with_redis_a_webhook_waits_while_every_worker_holds_a_claimed_job(
    tmp_path: Path,
) -> None:
    """With Redis every job is claimed (no hand-over at intake): the one worker busy with
    a claimed job is a queue being drained, and a free worker ends the wait."""
    async with start_world(tmp_path, backend="redis", workers=1) as world:
        workers = world.gateway.workers
        assert workers is not None
        world.cxone.hold("create_message")
        _, m0 = await world.dm("usr_zebra", "m0")
        await world.cxone.wait_for(lambda: world.cxone.held("create_message") >= 1)
        assert workers.behind
        entered, waited = _spy_paced(workers)
        later = asyncio.create_task(world.dm("usr_lion", "m1"))
        async with asyncio.timeout(5):
            await entered.wait()
        world.cxone.release()
        _, m1 = await later
        for message_id in (m0, m1):
            await world.delivered(CHAT_CHANNEL, message_id)
        assert len(waited) == 1 and 0 < waited[0] < 1.0
