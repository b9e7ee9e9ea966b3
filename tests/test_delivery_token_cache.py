"""StoreTokenCache: the CXone token shared through the store, over memory, sqlite and redis.

The sharing tests run several `CxoneAuth`s, each with its own HTTP session and its own
store connection (as separate processes would have), against the CXone simulator, and
count what reached its token endpoint.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AsyncExitStack
from pathlib import Path

import pytest

from gateway.clock import FakeClock
from gateway.cxone.auth import CxoneAuth
from gateway.delivery.memory import MemoryStore
from gateway.delivery.redis_store import RedisStore
from gateway.delivery.sqlite import SqliteStore
from gateway.delivery.store import Store
from gateway.delivery.token_cache import TOKEN_NS, StoreTokenCache, token_cache_key
from gateway.http import make_session
from gateway.sandbox.cxone import CxoneSim, CxoneSimConfig
from gateway.secrets import Secret
from gateway.settings import CxoneAuthSettings, CxoneSettings, Timeouts
from tests.harness import serve_app
from tests.test_store_contract import REDIS_URL, cleanup_redis, redis_available

KEY = "k" * 32
START = 1_764_158_400.0

# Opens one more connection to the same shared state (a "process"); closed by the test.
Connect = Callable[[], Awaitable[Store]]


@pytest.fixture(params=["memory", "sqlite", "redis"])
async def connect(
    request: pytest.FixtureRequest, tmp_path: Path, clock: FakeClock
) -> AsyncIterator[Connect]:
    """Yield a factory of store connections sharing one state."""
    backend = request.param
    if backend == "redis" and not redis_available():
        pytest.skip(f"no Redis at {REDIS_URL}")
    prefix = f"test-tc-{uuid.uuid4().hex[:12]}"
    shared_memory = MemoryStore(clock=clock)
    opened: list[Store] = []

    async def make() -> Store:
        store: Store
        if backend == "memory":
            store = shared_memory  # one process: every "connection" is the same object
        elif backend == "sqlite":
            store = SqliteStore(tmp_path / "state.sqlite3", clock=clock)
        else:
            store = RedisStore(REDIS_URL, prefix=prefix, clock=clock)
        await store.open()
        opened.append(store)
        return store

    try:
        yield make
    finally:
        for store in opened:
            await store.close()
        if backend == "redis":
            cleanup_redis(prefix)


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock(START)


# ------------------------------------------------------------------ the cache itself


async def test_get_returns_what_set_stored_until_it_expires(
    connect: Connect, clock: FakeClock
) -> None:
    cache = StoreTokenCache(await connect(), KEY, clock=clock)
    assert await cache.get() is None
    await cache.set("tok-1", START + 100)
    assert await cache.get() == ("tok-1", START + 100)
    clock.advance(99.5)
    assert await cache.get() == ("tok-1", START + 100)
    clock.advance(0.5)
    assert await cache.get() is None


async def test_another_connection_sees_the_token(connect: Connect, clock: FakeClock) -> None:
    writer = StoreTokenCache(await connect(), KEY, clock=clock)
    reader = StoreTokenCache(await connect(), KEY, clock=clock)
    await writer.set("shared", START + 3600)
    assert await reader.get() == ("shared", START + 3600)


async def test_an_expired_token_is_not_stored_and_clears_the_old_one(
    connect: Connect, clock: FakeClock
) -> None:
    cache = StoreTokenCache(await connect(), KEY, clock=clock)
    await cache.set("good", START + 60)
    await cache.set("stale", START - 1)
    assert await cache.get() is None


async def test_keys_are_isolated(connect: Connect, clock: FakeClock) -> None:
    store = await connect()
    a = StoreTokenCache(store, "a" * 32, clock=clock)
    b = StoreTokenCache(store, "b" * 32, clock=clock)
    await a.set("token-a", START + 60)
    assert await b.get() is None


async def test_an_unreadable_entry_counts_as_no_token(connect: Connect, clock: FakeClock) -> None:
    store = await connect()
    cache = StoreTokenCache(store, KEY, clock=clock)
    for junk in (b"not json", b'{"token": 5, "expires_at": 1e12}', b'{"token": "x"}', b"[]"):
        await store.kv_set(TOKEN_NS, KEY, junk, 60)
        assert await cache.get() is None


async def test_api_base_is_shared(connect: Connect, clock: FakeClock) -> None:
    a = StoreTokenCache(await connect(), KEY, clock=clock)
    b = StoreTokenCache(await connect(), KEY, clock=clock)
    assert await b.get_api_base() is None
    await a.set_api_base("https://api-na1.example/dfo/3.0")
    assert await b.get_api_base() == "https://api-na1.example/dfo/3.0"


async def test_the_lock_excludes_a_second_holder_until_released(
    connect: Connect, clock: FakeClock
) -> None:
    first = StoreTokenCache(await connect(), KEY, clock=clock, lock_ttl=5.0)
    second = StoreTokenCache(await connect(), KEY, clock=clock, lock_ttl=5.0)
    order: list[str] = []
    inside = asyncio.Event()
    leave = asyncio.Event()

    async def holder() -> None:
        async with first.lock() as ok:
            assert ok
            order.append("first in")
            inside.set()
            await leave.wait()
            order.append("first out")

    async def waiter() -> None:
        await inside.wait()
        async with second.lock() as ok:
            assert ok
            order.append("second in")

    task_a = asyncio.create_task(holder())
    task_b = asyncio.create_task(waiter())
    await inside.wait()
    leave.set()
    await asyncio.gather(task_a, task_b)
    assert order == ["first in", "first out", "second in"]


def test_the_key_names_the_credentials_without_revealing_them() -> None:
    def settings(key_id: str, issuer: str = "https://cxone.example") -> CxoneSettings:
        return CxoneSettings(
            auth=CxoneAuthSettings(
                access_key_id=Secret(key_id), access_key_secret=Secret("s3cret"), issuer=issuer
            )
        )

    key = token_cache_key(settings("AK1"))
    assert key == token_cache_key(settings("AK1"))
    assert key != token_cache_key(settings("AK2"))
    assert key != token_cache_key(settings("AK1", "https://other.example"))
    assert "AK1" not in key and len(key) == 32


def test_bad_arguments_are_refused() -> None:
    with pytest.raises(ValueError, match="key"):
        StoreTokenCache(MemoryStore(), "")
    with pytest.raises(ValueError, match="lock_ttl"):
        StoreTokenCache(MemoryStore(), KEY, lock_ttl=0)


# --------------------------------------------------- several gateways, one token fetch


@pytest.fixture
async def sim(clock: FakeClock) -> AsyncIterator[tuple[CxoneSim, str]]:
    cxone = CxoneSim(CxoneSimConfig(clock=clock, token_ttl=600))
    runner, url = await serve_app(cxone.app)
    try:
        yield cxone, url
    finally:
        await runner.cleanup()


def _settings(url: str, *, discover: bool) -> CxoneSettings:
    cfg = CxoneSimConfig()
    return CxoneSettings(
        auth=CxoneAuthSettings(
            access_key_id=Secret(cfg.access_key_id),
            access_key_secret=Secret(cfg.access_key_secret),
            client_id=Secret(cfg.app_client_id),
            client_secret=Secret(cfg.app_client_secret),
            issuer=url,
            refresh_margin=60.0,
        ),
        api_base=None if discover else f"{url}/dfo/3.0",
        timeouts=Timeouts(connect=2, read=5, total=8),
    )


async def _instances(
    stack: AsyncExitStack, connect: Connect, settings: CxoneSettings, clock: FakeClock, n: int
) -> list[CxoneAuth]:
    """`n` gateway instances: each its own session, store connection and CxoneAuth."""
    auths = []
    for _ in range(n):
        session = make_session(settings.timeouts)
        stack.push_async_callback(session.close)
        cache = StoreTokenCache(await connect(), token_cache_key(settings), clock=clock)
        auth = CxoneAuth(session, settings, clock=clock, cache=cache)
        stack.push_async_callback(auth.aclose)
        auths.append(auth)
    return auths


async def test_instances_starting_together_fetch_one_token(
    connect: Connect, clock: FakeClock, sim: tuple[CxoneSim, str]
) -> None:
    cxone, url = sim
    async with AsyncExitStack() as stack:
        auths = await _instances(stack, connect, _settings(url, discover=False), clock, 4)
        tokens = await asyncio.gather(*(a.token() for a in auths))
        assert len(set(tokens)) == 1
        assert cxone.token_fetches == 1


async def test_an_expiring_token_is_refreshed_once_for_all_instances(
    connect: Connect, clock: FakeClock, sim: tuple[CxoneSim, str]
) -> None:
    cxone, url = sim
    async with AsyncExitStack() as stack:
        auths = await _instances(stack, connect, _settings(url, discover=False), clock, 3)
        first = await auths[0].token()
        assert {await a.token() for a in auths} == {first}
        clock.advance(600 - 60)  # the refresh margin is reached everywhere at once
        renewed = await asyncio.gather(*(a.token() for a in auths))
        assert len(set(renewed)) == 1 and renewed[0] != first
        assert cxone.token_fetches == 2


async def test_a_token_cxone_refused_is_replaced_once(
    connect: Connect, clock: FakeClock, sim: tuple[CxoneSim, str]
) -> None:
    cxone, url = sim
    async with AsyncExitStack() as stack:
        auths = await _instances(stack, connect, _settings(url, discover=False), clock, 2)
        old = await auths[0].token()
        assert await auths[1].token() == old
        cxone.expire_tokens()  # CXone drops every token early: both see a 401
        for auth in auths:
            auth.invalidate(old)
        new = [await a.token() for a in auths]
        assert new[0] == new[1] != old
        assert cxone.token_fetches == 2


async def test_with_discovery_refreshes_are_still_shared(
    connect: Connect, clock: FakeClock, sim: tuple[CxoneSim, str]
) -> None:
    """Without cxone.api_base an instance's first fetch also discovers the API (see ops docs)."""
    cxone, url = sim
    async with AsyncExitStack() as stack:
        auths = await _instances(stack, connect, _settings(url, discover=True), clock, 3)
        for auth in auths:
            await auth.token()
        at_start = cxone.token_fetches
        assert 1 <= at_start <= 3
        clock.advance(600 - 60)
        renewed = await asyncio.gather(*(a.token() for a in auths))
        assert len(set(renewed)) == 1
        assert cxone.token_fetches == at_start + 1
