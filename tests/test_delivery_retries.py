"""Delivery to CXone when CXone misbehaves: outages, rate limits, resets, timeouts, refusals.

The whole world runs here (simulated platform, simulated CXone, the real gateway over
sockets). Two styles:

- "hands-on" tests stop the background workers and run the real `Workers.process` on
  jobs they claim themselves, with the injected clock, so waiting times are asserted
  exactly: a job is claimable again only when its retry time has come;
- the others let the workers run and wait on what CXone received.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from email.utils import formatdate
from pathlib import Path
from typing import Any

import pytest

from gateway.clock import FakeClock, system_clock
from gateway.delivery.store import Job
from gateway.server import start_gateway
from tests.harness import CHAT_CHANNEL, World, start_world
from tests.procs import Load, Sims, start_sims, write_node_config

PROBE = "test-probe"
BUSY = {"error": "busy", "message": "try again later"}


@pytest.fixture
async def hands_on(tmp_path: Path, clock: FakeClock) -> AsyncIterator[World]:
    """A world whose background workers are stopped: the test runs each attempt."""
    async with start_world(tmp_path, clock=clock, max_delay=4.0) as world:
        workers = world.gateway.workers
        assert workers is not None
        await workers.stop()
        yield world


async def _claim(world: World) -> list[Job]:
    return await world.gateway.store.claim(PROBE, 10, 30)


async def _attempt(world: World) -> Job:
    """Claim the one ready job and make one delivery attempt with the real worker code."""
    (job,) = await _claim(world)
    workers = world.gateway.workers
    assert workers is not None
    await workers.process(job, PROBE)
    return job


async def _dead_attempts(world: World) -> list[dict[str, Any]]:
    (dead,) = await world.gateway.store.dead_letters()
    return dead.attempts


async def test_retry_after_in_seconds_and_as_a_date_is_honoured_and_capped(
    hands_on: World, clock: FakeClock
) -> None:
    world = hands_on
    _, msg = await world.dm("usr_zebra", "hello")
    start = int(clock.now) + 1
    clock.now = float(start)  # whole seconds: HTTP dates have no fraction
    world.cxone.script(
        "create_message",
        [
            (429, {"Retry-After": "40"}, BUSY),
            (503, {"Retry-After": formatdate(start + 40 + 100, usegmt=True)}, BUSY),
            (429, {"Retry-After": "999999"}, BUSY),  # capped at max_retry_after (300 s)
        ],
    )
    await _attempt(world)
    clock.advance(39.9)
    assert await _claim(world) == []
    clock.advance(0.1)
    await _attempt(world)  # at start+40; the date says start+140
    clock.advance(99.9)
    assert await _claim(world) == []
    clock.advance(0.1)
    await _attempt(world)
    clock.advance(299.9)
    assert await _claim(world) == []
    clock.advance(0.1)
    await _attempt(world)
    assert world.cxone.deliveries(CHAT_CHANNEL, msg) == 1
    assert await world.gateway.store.depth() == 0


async def test_backoff_without_retry_after_stays_under_the_growing_ceiling(
    hands_on: World, clock: FakeClock
) -> None:
    """base 0.05 s doubling, max 4 s: attempt n waits at most min(4, 0.05 * 2**(n-1))."""
    world = hands_on
    _, msg = await world.dm("usr_zebra", "hello")
    world.cxone.script("create_message", [(503, {}, BUSY)] * 9)
    for n in range(1, 10):
        await _attempt(world)  # fails: claimable again by the ceiling at the latest
        clock.advance(min(4.0, 0.05 * 2 ** (n - 1)) + 0.001)
    await _attempt(world)
    assert world.cxone.deliveries(CHAT_CHANNEL, msg) == 1


async def test_a_waiting_message_holds_its_thread_but_not_the_others(
    hands_on: World, clock: FakeClock
) -> None:
    world = hands_on
    conv_a, a1 = await world.dm("usr_zebra", "a1")
    _, a2 = await world.dm("usr_zebra", "a2", conversation_id=conv_a)
    _, b1 = await world.dm("usr_lion", "b1")
    world.cxone.script("create_message", [(503, {"Retry-After": "10"}, BUSY)])
    heads = await _claim(world)
    assert len(heads) == 2  # one head per thread, in parallel
    workers = world.gateway.workers
    assert workers is not None
    for job in heads:
        await workers.process(job, PROBE)
    assert [m.message_id for m in world.cxone.messages] == [b1]  # a1 got the 503
    assert await _claim(world) == []  # a2 waits behind a1
    clock.advance(10)
    await _attempt(world)
    await _attempt(world)
    assert [m.message_id for m in world.cxone.messages] == [b1, a1, a2]


async def test_a_message_out_of_retries_becomes_a_dead_letter_and_unblocks_its_thread(
    hands_on: World, clock: FakeClock
) -> None:
    world = hands_on
    conv, first = await world.dm("usr_zebra", "first")
    _, second = await world.dm("usr_zebra", "second", conversation_id=conv)
    world.cxone.script("create_message", [(502, {"Retry-After": "1"}, BUSY)] * 12)
    for _ in range(12):  # max_attempts of the sandbox
        await _attempt(world)
        clock.advance(1)
    assert await world.gateway.store.dead_count() == 1
    attempts = await _dead_attempts(world)
    assert [a["status"] for a in attempts] == [502] * 12
    (dead,) = await world.gateway.store.dead_letters()
    assert dead.reason.startswith("out of retries after 12 attempts")
    await _attempt(world)
    assert [m.message_id for m in world.cxone.messages] == [second]
    assert world.cxone.deliveries(CHAT_CHANNEL, first) == 0


async def test_a_400_is_a_dead_letter_at_once_with_the_reason(hands_on: World) -> None:
    world = hands_on
    _, msg = await world.dm("usr_zebra", "hello")
    world.cxone.script(
        "create_message", [(400, {}, {"error": "invalid_request", "message": "bad thread"})]
    )
    await _attempt(world)
    assert world.cxone.deliveries(CHAT_CHANNEL, msg) == 0
    (dead,) = await world.gateway.store.dead_letters()
    assert "HTTP 400" in dead.reason and "bad thread" in dead.reason
    assert [a["status"] for a in dead.attempts] == [400]
    assert await world.gateway.store.depth() == 0
    metrics = world.gateway.metrics.render().decode()
    assert 'byoc_dead_letters_total{mapping="watering-hole",reason="cxone_refused"} 1.0' in metrics


async def test_no_cxone_token_is_an_outage_not_the_message_fault(
    hands_on: World, clock: FakeClock
) -> None:
    """A refused or unreachable token endpoint is retried; the message is not dead-lettered."""
    world = hands_on
    _, msg = await world.dm("usr_zebra", "hello")
    world.cxone.script("token", [(401, {}, {"error": "invalid_client"})])
    world.cxone.reset_next("token")
    for _ in range(2):
        await _attempt(world)
        clock.advance(5)
        assert await world.gateway.store.dead_count() == 0
    await _attempt(world)
    assert world.cxone.deliveries(CHAT_CHANNEL, msg) == 1
    assert world.cxone.faults.pending() == {}  # both token failures were met


# --------------------------------------------------------------- workers running


async def test_outage_then_rate_limit_then_recovery_delivers_each_message_once_in_order(
    tmp_path: Path,
) -> None:
    """Real time: 503s for a while, a 429 with Retry-After: 1, then CXone recovers."""
    async with start_world(tmp_path, clock=system_clock, max_delay=0.2) as world:
        world.cxone.script(
            "create_message",
            [(503, {}, BUSY)] * 6 + [(429, {"Retry-After": "1"}, BUSY)] * 2,
        )
        sent: dict[str, list[str]] = {}
        for i in range(24):
            user = ("usr_zebra", "usr_lion", "usr_giraffe")[i % 3]
            conv, msg = await world.wh.user_sends_dm(user, f"message {i}")
            sent.setdefault(conv, []).append(msg)
        started = time.monotonic()
        await world.wh.flush()
        everything = {m for ids in sent.values() for m in ids}
        await world.cxone.wait_for(
            lambda: everything <= {m.message_id for m in world.cxone.messages}, timeout=30
        )
        assert time.monotonic() - started >= 1.0  # the Retry-After was waited for
        assert world.cxone.faults.pending() == {}
        assert all(not m.duplicate for m in world.cxone.messages)
        assert len(world.cxone.messages) == 24
        for conv, ids in sent.items():
            assert [m.message_id for m in world.cxone.messages_in(CHAT_CHANNEL, conv)] == ids
        assert await world.gateway.store.dead_count() == 0


async def test_connection_resets_from_cxone_are_retried(tmp_path: Path) -> None:
    async with start_world(tmp_path, clock=system_clock) as world:
        world.cxone.reset_next("create_message", 3)
        _, msg = await world.dm("usr_zebra", "hello")
        await world.delivered(CHAT_CHANNEL, msg)
        assert world.cxone.hits("create_message") == 4
        assert world.cxone.deliveries(CHAT_CHANNEL, msg) == 1


@pytest.fixture
async def quick_timeouts(tmp_path: Path) -> AsyncIterator[tuple[Sims, Load, str]]:
    """An in-process gateway whose CXone read timeout is 0.5 s (the sandbox has 5 s)."""
    async with start_sims(users=3) as sims:
        node = write_node_config(
            tmp_path / "node",
            wh_url=sims.wh_url,
            cxone_url=sims.cxone_url,
            backend="sqlite",
            cxone_timeouts={"connect": 1, "read": 0.5, "total": 1},
            lease_seconds=5,
        )
        running = await start_gateway(node.settings, shutdown_timeout=2.0)
        try:
            sims.wh.webhook_url = running.urls["platform"] + "/webhooks/watering-hole"
            yield sims, Load(sims), running.urls["cxone"]
        finally:
            await running.stop()


async def test_a_cxone_timeout_is_retried_and_the_repeat_is_a_known_duplicate(
    quick_timeouts: tuple[Sims, Load, str],
) -> None:
    sims, load, _ = quick_timeouts
    cxone = sims.cxone
    gate = cxone.hold("create_message")
    await load.send(1)
    # the first attempt hangs, times out, and the retry hangs too: then CXone answers both
    await cxone.wait_for(lambda: cxone.held("create_message") >= 2, timeout=10)
    gate.set()
    cxone.release()
    await load.wait_delivered(timeout=10)
    report = load.report()
    assert report.lost == [] and report.out_of_order == []
    # CXone processed the timed-out request too: the repeat has the same
    # idOnExternalPlatform, which is what CXone's own dedupe relies on
    assert all(m.duplicate == (n > 0) for n, m in enumerate(cxone.messages))


async def test_a_job_handed_over_at_intake_is_delivered_unless_it_waited_half_its_lease(
    hands_on: World, clock: FakeClock
) -> None:
    world = hands_on
    workers = world.gateway.workers
    assert workers is not None
    lease = world.gateway.settings.delivery.lease_seconds
    _, fresh_id = await world.dm("usr_zebra", "handed over")
    _, stale_id = await world.dm("usr_lion", "waited too long")
    fresh, stale = sorted(
        await world.gateway.store.claim(workers.direct_owner, 10, lease),
        key=lambda j: j.payload.find(b"waited too long"),
    )
    workers.offer(fresh)
    await workers._run(PROBE)  # stopped workers still deliver what was handed over
    assert [m.message_id for m in world.cxone.messages] == [fresh_id]
    assert await world.gateway.store.depth() == 1

    clock.advance(lease / 2)
    workers.offer(stale)
    await workers._run(PROBE)  # too old: left alone, its lease runs out
    assert [m.message_id for m in world.cxone.messages] == [fresh_id]
    assert await _claim(world) == []
    clock.advance(lease / 2)
    await _attempt(world)  # claimed like any job whose owner went away
    assert [m.message_id for m in world.cxone.messages] == [fresh_id, stale_id]
