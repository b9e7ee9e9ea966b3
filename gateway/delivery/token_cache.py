"""The CXone access token shared through the state store, so instances fetch it once.

`StoreTokenCache` implements `gateway.cxone.auth.TokenCache` over the store's key-value
state and cross-instance lock. With the redis backend every gateway process sharing the
Redis (and prefix) sees one token: the first to need a refresh takes the lock, fetches,
and writes the token; the others wait on the lock, then read it. With sqlite, processes
sharing the file share the token the same way; with memory it is per process.

The token is a bearer credential: it is stored for its remaining lifetime only (the
value expires with it) and the key is derived from the credentials' identity (issuer or
token endpoint, access key id, app client id), never from a secret, so two tenants or
two access keys on one Redis never see each other's token.
"""

from __future__ import annotations

import hashlib
from contextlib import AbstractAsyncContextManager

from gateway import jsonutil
from gateway.clock import Clock, system_clock
from gateway.delivery.store import Store
from gateway.errors import GatewayError
from gateway.settings import CxoneSettings

__all__ = ["TOKEN_NS", "StoreTokenCache", "token_cache_key"]

TOKEN_NS = "cxone-token"  # noqa: S105 (a key-value namespace, not a secret)
API_BASE_NS = "cxone-api-base"
DEFAULT_LOCK_TTL = 30.0


def token_cache_key(settings: CxoneSettings) -> str:
    """Return a stable, secret-free key naming the CXone credentials of `settings`."""
    auth = settings.auth
    parts = (
        auth.token_endpoint or auth.issuer or "",
        auth.access_key_id.reveal(),
        auth.client_id.reveal() if auth.client_id else "",
    )
    # hashed: the access key id is not a secret, but it need not be readable in Redis
    return hashlib.sha256("\x1f".join(parts).encode()).hexdigest()[:32]


class StoreTokenCache:
    """A `TokenCache` over `Store.kv_*` and `Store.lock` (see the module docstring)."""

    def __init__(
        self,
        store: Store,
        key: str,
        *,
        clock: Clock = system_clock,
        lock_ttl: float = DEFAULT_LOCK_TTL,
    ) -> None:
        if not key:
            raise ValueError("StoreTokenCache needs a non-empty key")
        if lock_ttl <= 0:
            raise ValueError("lock_ttl must be positive")
        self._store = store
        self._key = key
        self._clock = clock
        self._lock_ttl = lock_ttl

    @property
    def key(self) -> str:
        return self._key

    async def get(self) -> tuple[str, float] | None:
        """Return (token, expires_at) while one is cached and unexpired, else None."""
        raw = await self._store.kv_get(TOKEN_NS, self._key)
        if raw is None:
            return None
        try:
            doc = jsonutil.loads(raw)
            token, expires_at = doc["token"], float(doc["expires_at"])
        except (GatewayError, KeyError, TypeError, ValueError):
            return None  # unreadable (another version wrote it?): fetch a fresh one
        if not isinstance(token, str) or not token or expires_at <= self._clock():
            return None
        return token, expires_at

    async def set(self, token: str, expires_at: float) -> None:
        """Share a token until it expires; an already expired one is not stored."""
        ttl = expires_at - self._clock()
        if ttl <= 0 or not token:
            await self._store.kv_delete(TOKEN_NS, self._key)
            return
        value = jsonutil.dumps({"token": token, "expires_at": expires_at})
        await self._store.kv_set(TOKEN_NS, self._key, value, ttl)

    def lock(self) -> AbstractAsyncContextManager[bool]:
        """Return the cross-instance refresh mutex (yields False when it timed out).

        A holder that dies keeps it at most `lock_ttl` seconds; waiting gives up after
        the same time and refreshes alone, so a lost lock costs one extra fetch at most.
        """
        return self._store.lock(f"cxone-token:{self._key}", self._lock_ttl)

    async def get_api_base(self) -> str | None:
        """Return the DFO API base an instance discovered, so others can skip discovery."""
        raw = await self._store.kv_get(API_BASE_NS, self._key)
        if raw is None:
            return None
        value = raw.decode("utf-8", "replace")
        return value if value.startswith(("https://", "http://")) else None

    async def set_api_base(self, api_base: str) -> None:
        """Remember the discovered DFO API base (one day; rediscovered after)."""
        await self._store.kv_set(API_BASE_NS, self._key, api_base.encode(), 86_400.0)
