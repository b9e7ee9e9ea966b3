"""Scale-out: two `byoc-gateway serve` processes sharing one Redis.

Both run as real child processes with the same gateway.yaml settings (same Redis key
prefix, their own ports); the platform's deliveries alternate between them, as behind a
load balancer. Counting what the CXone simulator received:

- both share the work, every message arrives exactly once, each thread in order;
- the CXone access token is fetched once for both;
- when one is SIGKILLed mid-load, the other finishes its unfinished work (after the
  dead one's leases run out): nothing lost, thread order kept, repeats only of what the
  dead one had in flight (the same idOnExternalPlatform, absorbed by CXone's dedupe).
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from pathlib import Path

import pytest

from tests.procs import GatewayProcess, Load, Sims, metric, start_sims, write_node_config
from tests.test_store_contract import REDIS_URL, cleanup_redis, redis_available

WORKERS = 4
DELIVERED = {"direction": "inbound", "outcome": "delivered"}

pytestmark = pytest.mark.redis


@pytest.fixture
def prefix_name() -> Iterator[str]:
    if not redis_available():
        pytest.skip(f"no Redis at {REDIS_URL}")
    name = f"so{uuid.uuid4().hex[:12]}"
    try:
        yield name
    finally:
        cleanup_redis(f"byoc-{name}")


@asynccontextmanager
async def two_gateways(
    tmp_path: Path, sims: Sims, name: str, *, api_base: bool = True
) -> AsyncIterator[tuple[GatewayProcess, GatewayProcess]]:
    """Start two gateways on one Redis prefix (the directory name), both ready."""
    nodes = [
        write_node_config(
            tmp_path / side / name,  # same directory name: same Redis prefix
            wh_url=sims.wh_url,
            cxone_url=sims.cxone_url,
            backend="redis",
            redis_url=REDIS_URL,
            workers=WORKERS,
            lease_seconds=5,  # a dead process's leases run out quickly...
            cxone_timeouts={"connect": 1, "read": 3, "total": 4},  # ...yet outlive any call
            api_base=api_base,  # False: each instance discovers the CXone API itself
        )
        for side in ("a", "b")
    ]
    a, b = GatewayProcess(nodes[0], "gateway-a"), GatewayProcess(nodes[1], "gateway-b")
    try:
        a.start()
        b.start()
        await asyncio.gather(a.wait_ready(), b.wait_ready())
        yield a, b
    finally:
        a.stop()
        b.stop()
        for gw in (a, b):
            assert "Traceback" not in gw.log_text(), gw.log_tail()


async def delivered_counts(*urls: str, at_least: int) -> list[float]:
    """The instances' delivered counters, once they add up to `at_least` (or after 10 s).

    CXone records a message before the worker that sent it has counted it, so the
    counters of other processes settle a moment after CXone's record: a bounded poll over
    HTTP, there being nothing in another process to await.
    """
    loop = asyncio.get_running_loop()
    deadline = loop.time() + 10
    while True:
        counts = [await metric(url, "byoc_messages_total", **DELIVERED) for url in urls]
        if sum(counts) >= at_least or loop.time() > deadline:
            return counts
        await asyncio.sleep(0.05)


async def test_two_instances_share_the_work_and_deliver_each_message_once(
    tmp_path: Path, prefix_name: str
) -> None:
    async with start_sims(users=20) as sims, two_gateways(tmp_path, sims, prefix_name) as (a, b):
        load = Load(sims)
        await load.send(1_000, webhook_urls=[a.webhook_url, b.webhook_url])
        await load.wait_delivered(timeout=60)
        report = load.report()
        assert (report.lost, report.duplicates, report.out_of_order) == ([], [], [])
        assert load.accepted_as_sent()
        by_a, by_b = await delivered_counts(a.cxone_url, b.cxone_url, at_least=1_000)
        assert by_a + by_b == 1_000
        assert by_a > 0 and by_b > 0
        assert await a.terminate() == 0
        assert await b.terminate() == 0


@pytest.mark.parametrize("api_base", [True, False], ids=["api_base", "discovery"])
async def test_two_instances_fetch_one_cxone_token(
    tmp_path: Path, prefix_name: str, api_base: bool
) -> None:
    async with (
        start_sims(users=5) as sims,
        two_gateways(tmp_path, sims, prefix_name, api_base=api_base) as (a, b),
    ):
        load = Load(sims)
        await load.send(100, webhook_urls=[a.webhook_url])
        await load.send(100, webhook_urls=[b.webhook_url])
        await load.wait_delivered(timeout=30)
        assert sims.cxone.token_fetches == 1, f"{sims.cxone.token_fetches} token fetches"


async def test_one_instance_killed_mid_load_the_other_finishes(
    tmp_path: Path, prefix_name: str
) -> None:
    async with start_sims(users=30) as sims, two_gateways(tmp_path, sims, prefix_name) as (a, b):
        load = Load(sims)
        sending = asyncio.create_task(load.send(2_000, webhook_urls=[a.webhook_url, b.webhook_url]))
        await sims.wh.wait_for(lambda: len(sims.wh.deliveries) >= 10, timeout=30)
        await load.wait_delivered(1)
        (by_a,) = await delivered_counts(a.cxone_url, at_least=1)
        assert by_a > 0
        a.kill()
        await sending  # the deliveries sent to the dead instance fail
        before = {m.message_id for m in sims.cxone.messages}

        await load.redeliver(b.webhook_url)  # the balancer now sends everything to b
        await load.wait_delivered(timeout=60)
        report = load.report()
        assert report.lost == []
        assert report.out_of_order == []
        assert len(report.duplicates) <= WORKERS, report.duplicates
        assert set(report.duplicates) <= before
        assert await b.terminate() == 0
