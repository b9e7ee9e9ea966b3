"""RedisStore specifics: errors without credentials, key prefixes."""

from __future__ import annotations

import socket
import uuid
from collections.abc import Iterator

import pytest
import redis

from gateway.delivery.redis_store import RedisStore
from gateway.delivery.store import NewJob
from gateway.errors import StoreError
from gateway.secrets import Secret
from tests.test_store_contract import REDIS_URL, cleanup_redis, redis_available


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


async def test_unreachable_server_raises_store_error_without_credentials() -> None:
    url = Secret(f"redis://gwuser:hunter2-secret@127.0.0.1:{free_port()}/3", "REDIS_URL")
    store = RedisStore(url)
    with pytest.raises(StoreError) as caught:
        await store.open()
    message = str(caught.value)
    assert "hunter2-secret" not in message and "gwuser" not in message
    assert "redis://127.0.0.1:" in message and "open failed" in message
    assert caught.value.__cause__ is None and caught.value.__context__ is not None
    with pytest.raises(StoreError, match="not open"):
        await store.ping()


async def test_malformed_url_raises_store_error() -> None:
    with pytest.raises(StoreError) as caught:
        await RedisStore("http://nope:secretpw@host/0").open()
    assert "secretpw" not in str(caught.value)


@pytest.fixture
def prefixes() -> Iterator[tuple[str, str]]:
    if not redis_available():
        pytest.skip(f"no Redis server answers at {REDIS_URL} (set REDIS_URL or start one)")
    pair = (f"test-{uuid.uuid4().hex}", f"test-{uuid.uuid4().hex}")
    yield pair
    for prefix in pair:
        cleanup_redis(prefix)


@pytest.mark.redis
async def test_prefixes_isolate_gateways(prefixes: tuple[str, str]) -> None:
    async with (
        RedisStore(REDIS_URL, prefix=prefixes[0]) as a,
        RedisStore(REDIS_URL, prefix=prefixes[1]) as b,
    ):
        assert await a.enqueue([NewJob("t", b"1", "k")], 60) == [True]
        assert await b.enqueue([NewJob("t", b"1", "k")], 60) == [True]
        await a.kv_set("ns", "k", b"a", None)
        assert await b.kv_get("ns", "k") is None
        assert len(await b.claim("w", 5, 30)) == 1
        assert len(await a.claim("w", 5, 30)) == 1
    client = redis.Redis.from_url(REDIS_URL)
    try:
        keys = [k.decode() for k in client.scan_iter(match=f"{{{prefixes[0]}}}:*")]
    finally:
        client.close()
    assert keys and all(k.startswith(f"{{{prefixes[0]}}}:") for k in keys)


@pytest.mark.redis
async def test_expiring_values_also_get_a_redis_ttl(prefixes: tuple[str, str]) -> None:
    async with RedisStore(REDIS_URL, prefix=prefixes[0]) as store:
        await store.enqueue([NewJob("t", b"1", "k")], 60)
        await store.kv_set("ns", "short", b"v", 60)
        await store.kv_set("ns", "forever", b"v", None)
        assert await store.kv_add("ns", "added", b"v", 60)
    client = redis.Redis.from_url(REDIS_URL)
    base = f"{{{prefixes[0]}}}:"
    try:
        assert 0 < client.pttl(base + "d:k") <= 60_000
        assert 0 < client.pttl(base + "kv:2:ns:short") <= 60_000
        assert 0 < client.pttl(base + "kv:2:ns:added") <= 60_000
        assert client.pttl(base + "kv:2:ns:forever") == -1
    finally:
        client.close()
