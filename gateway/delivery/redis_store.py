"""Shared store on Redis (redis.asyncio): several gateway processes share one queue.

Every key lives under `{prefix}:` (a Redis Cluster hash tag: all keys in one slot, so
the Lua scripts stay legal on a cluster). Layout, B = "{prefix}:":

    B t:<thread>   list of job ids, FIFO           B j:<id>  hash t, p, e, o (lease owner)
    B a:<id>       list of attempt records (JSON)  B ready   zset thread -> ready time
    B n            number of unfinished jobs       B d:<key> dedupe key -> expiry
    B x:<id>       dead letter hash t p r a f      B xi      zset dead id -> sequence
    B kv:<len(ns)>:<ns>:<key>, B l:<name>          value = "<expiry>\\n<bytes>"

A thread is in `ready` exactly while its list is non-empty; its score is when its head
may next be claimed: enqueue time, `not_before` after retry_later, or the end of the
current lease. So a claim takes threads with score <= now (expired leases included),
and re-scores them to now + lease: a killed process's leases simply run out. All
queue mutations are single Lua scripts, hence atomic across processes.

Times come from the injected clock and are passed into the scripts (never Redis TIME),
so FakeClock drives expiry in tests; expiring values also get a Redis PX TTL of the
same length as garbage collection.
"""

from __future__ import annotations

import math
from collections.abc import Awaitable, Sequence
from typing import Any, TypeVar, cast
from urllib.parse import urlsplit

import orjson
import redis.asyncio as aioredis
from redis.exceptions import RedisError

from gateway.clock import Clock, system_clock
from gateway.delivery.redis_scripts import ADD, CLAIM, DEL_IF, DROP, ENQUEUE, FINISH, REPLAY
from gateway.delivery.store import DeadLetter, Job, NewJob, Store, log, new_job_id
from gateway.errors import StoreError
from gateway.secrets import Secret

T = TypeVar("T")


def _num(x: float) -> str:
    return repr(float(x))


def _px(ttl: float) -> int:
    return max(1, math.ceil(ttl * 1000))


def _record(value: bytes, expires: float | None) -> bytes:
    head = b"-" if expires is None else _num(expires).encode()
    return head + b"\n" + value


def _text(v: Any) -> str:
    return v.decode() if isinstance(v, bytes) else str(v)


class RedisStore(Store):
    """Redis backend; see the module docstring for the key layout and the leases."""

    backend = "redis"

    def __init__(
        self, url: Secret | str, *, prefix: str = "byoc", clock: Clock = system_clock
    ) -> None:
        super().__init__(clock)
        self._url = url if isinstance(url, Secret) else Secret(url, "store.url")
        self.base = f"{{{prefix}}}:"
        self._redis: aioredis.Redis | None = None
        self._scripts: dict[str, Any] = {}
        self.where = _safe_url(self._url.reveal())

    def _wrap(self, what: str, exc: BaseException) -> StoreError:
        message = str(exc)
        parts = urlsplit(self._url.reveal())
        for secret in (self._url.reveal(), parts.password, parts.username):
            if secret:
                message = message.replace(secret, "***")
        return StoreError(
            f"redis store {self.where}: {what} failed: {type(exc).__name__}: {message}"
        )

    async def _do(self, what: str, aw: Awaitable[T]) -> T:
        try:
            return await aw
        except (RedisError, OSError) as exc:
            raise self._wrap(what, exc) from None

    @property
    def _r(self) -> aioredis.Redis:
        self._check_open()
        assert self._redis is not None
        return self._redis

    async def _script(self, name: str, args: Sequence[Any], keys: Sequence[Any] = ()) -> Any:
        return await self._do(name, self._scripts[name](keys=list(keys), args=list(args)))

    async def open(self) -> None:
        if self._opened:
            return
        try:
            client = aioredis.Redis.from_url(
                self._url.reveal(),
                decode_responses=False,
                socket_connect_timeout=5.0,
                socket_timeout=10.0,
                health_check_interval=30,
            )
        except ValueError as exc:
            raise self._wrap("open", exc) from None
        scripts = {
            "enqueue": ENQUEUE,
            "claim": CLAIM,
            "finish": FINISH,
            "replay": REPLAY,
            "drop": DROP,
            "add": ADD,
            "del_if": DEL_IF,
        }
        self._scripts = {name: client.register_script(src) for name, src in scripts.items()}
        try:
            await self._do("open", cast(Awaitable[Any], client.ping()))
        except StoreError:
            await client.aclose()
            raise
        self._redis = client
        self._opened = True

    async def close(self) -> None:
        if not self._opened:
            return
        await self._finish_later()
        client, self._redis = self._redis, None
        self._opened = False
        if client is not None:
            await client.aclose()

    async def ping(self) -> None:
        await self._do("ping", cast(Awaitable[Any], self._r.ping()))

    # -- queue -------------------------------------------------------------------------

    async def enqueue(self, jobs: Sequence[NewJob], dedupe_ttl: float) -> list[bool]:
        self._check_open()
        if not jobs:
            return []
        now = self._clock()
        args: list[Any] = [self.base, _num(now), _num(now + dedupe_ttl), _px(dedupe_ttl)]
        for job in jobs:
            has_key = job.dedupe_key is not None
            args += [
                new_job_id(),
                job.thread_key,
                job.payload,
                "1" if has_key else "0",
                job.dedupe_key or "",
            ]
        results = [bool(r) for r in await self._script("enqueue", args)]
        if any(results):
            self.notify_work()
        return results

    async def claim(self, owner: str, limit: int, lease: float) -> list[Job]:
        self._check_open()
        if limit <= 0:
            return []
        now = self._clock()
        rows = await self._script("claim", [self.base, _num(now), owner, limit, _num(now + lease)])
        return [Job(_text(r[0]), _text(r[1]), bytes(r[2]), int(r[4]), float(r[3])) for r in rows]

    async def _finish(self, job: Job, owner: str, mode: str, extra: str, attempt: bytes) -> bool:
        self._check_open()
        args = [self.base, job.id, job.thread_key, owner, _num(self._clock()), mode, extra, attempt]
        result = int(await self._script("finish", args))
        if result == 0:
            log.warning("%s ignored: %s no longer holds the lease on job %s", mode, owner, job.id)
        elif result == 2:
            self.notify_work()
        return result > 0

    async def complete(self, job: Job, owner: str) -> bool:
        return await self._finish(job, owner, "complete", "", b"")

    async def retry_later(
        self, job: Job, owner: str, not_before: float, attempt: dict[str, Any]
    ) -> bool:
        return await self._finish(job, owner, "retry", _num(not_before), orjson.dumps(attempt))

    async def dead_letter(self, job: Job, owner: str, reason: str, attempt: dict[str, Any]) -> bool:
        return await self._finish(job, owner, "dead", reason, orjson.dumps(attempt))

    async def dead_letters(self, limit: int = 100) -> list[DeadLetter]:
        if limit <= 0:
            self._check_open()
            return []
        ids = await self._do(
            "dead_letters",
            cast(Awaitable[list[bytes]], self._r.zrevrange(self.base + "xi", 0, limit - 1)),
        )
        if not ids:
            return []
        pipe = self._r.pipeline(transaction=False)
        for id in ids:
            pipe.hgetall(self.base + "x:" + _text(id))
        rows = await self._do("dead_letters", pipe.execute())
        return [_dead(_text(i), row) for i, row in zip(ids, rows, strict=True) if row]

    async def get_dead(self, id: str) -> DeadLetter | None:
        row = await self._do(
            "get_dead", cast(Awaitable[dict[bytes, bytes]], self._r.hgetall(self.base + "x:" + id))
        )
        return _dead(id, row) if row else None

    async def replay_dead(self, id: str) -> bool:
        self._check_open()
        done = bool(await self._script("replay", [self.base, id, _num(self._clock())]))
        if done:
            self.notify_work()
        return done

    async def drop_dead(self, id: str) -> bool:
        self._check_open()
        return bool(await self._script("drop", [self.base, id]))

    async def depth(self) -> int:
        value = await self._do("depth", cast(Awaitable[Any], self._r.get(self.base + "n")))
        return int(value or 0)

    async def dead_count(self) -> int:
        return int(await self._do("dead_count", self._r.zcard(self.base + "xi")))

    # -- key-value and locks -------------------------------------------------------------

    def _kv_key(self, ns: str, key: str) -> str:
        return f"{self.base}kv:{len(ns)}:{ns}:{key}"

    async def kv_get(self, ns: str, key: str) -> bytes | None:
        if self._later:  # a read sees what kv_set_later wrote before it (another connection)
            await self._finish_later()
        raw = await self._do(
            "kv_get", cast(Awaitable[bytes | None], self._r.get(self._kv_key(ns, key)))
        )
        if raw is None:
            return None
        head, _, value = raw.partition(b"\n")
        if head != b"-" and float(head) <= self._clock():
            return None
        return value

    async def kv_set(self, ns: str, key: str, value: bytes, ttl: float | None) -> None:
        k = self._kv_key(ns, key)
        if ttl is None:
            await self._do("kv_set", cast(Awaitable[Any], self._r.set(k, _record(value, None))))
        else:
            record = _record(value, self._clock() + ttl)
            await self._do("kv_set", cast(Awaitable[Any], self._r.set(k, record, px=_px(ttl))))

    async def _add(self, what: str, key: str, value: bytes, ttl: float | None) -> bool:
        self._check_open()
        now = self._clock()
        record = _record(value, None if ttl is None else now + ttl)
        px = "" if ttl is None else str(_px(ttl))
        return bool(
            await self._do(what, self._scripts["add"](keys=[], args=[key, record, _num(now), px]))
        )

    async def kv_add(self, ns: str, key: str, value: bytes, ttl: float | None) -> bool:
        return await self._add("kv_add", self._kv_key(ns, key), value, ttl)

    async def kv_delete(self, ns: str, key: str) -> None:
        await self._do("kv_delete", cast(Awaitable[Any], self._r.delete(self._kv_key(ns, key))))

    async def _lock_try(self, name: str, token: str, ttl: float) -> bool:
        return await self._add("lock", self.base + "l:" + name, token.encode(), ttl)

    async def _lock_release(self, name: str, token: str) -> None:
        self._check_open()
        await self._script("del_if", [token], keys=[self.base + "l:" + name])


def _dead(id: str, row: dict[bytes, bytes]) -> DeadLetter:
    return DeadLetter(
        id=id,
        thread_key=row[b"t"].decode(),
        payload=bytes(row[b"p"]),
        reason=row[b"r"].decode(),
        attempts=list(orjson.loads(row[b"a"])),
        failed_at=float(row[b"f"]),
    )


def _safe_url(url: str) -> str:
    """Describe a redis URL without credentials: scheme://host:port/db."""
    try:
        parts = urlsplit(url)
        host = parts.hostname or ""
        port = f":{parts.port}" if parts.port else ""
    except ValueError:
        return "<invalid url>"
    return f"{parts.scheme}://{host}{port}{parts.path}"
