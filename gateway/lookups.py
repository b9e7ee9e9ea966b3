"""What a mapping's lookups and media URLs need from the running gateway (queue worker).

`WorkerIO` is the engine's `InboundIO` for one mapping: lookup results are cached in
the store (namespace `lookup`: shared by every instance with the redis backend), a
lookup's request goes out through the platform client bounded by the lookup's own
`timeout`, and media URLs are signed by gateway.media. A store failure only costs the
cache: the lookup is made anyway.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import replace
from typing import TYPE_CHECKING, Any

from gateway import jsonutil
from gateway.errors import BadRequest, StoreError
from gateway.mapping import CompiledMapping, LookupOutcome, PlatformRequest, PlatformResponse
from gateway.media import sign_media_url

if TYPE_CHECKING:
    from gateway.runtime import Gateway

log = logging.getLogger("gateway.lookups")

LOOKUP_NS = "lookup"


class WorkerIO:
    """InboundIO for one mapping in the queue worker."""

    def __init__(self, gw: Gateway, mapping: CompiledMapping) -> None:
        self._gw = gw
        self._mapping = mapping

    async def cached(self, key: str) -> Any | None:
        try:
            raw = await self._gw.store.kv_get(LOOKUP_NS, key)
            return None if raw is None else jsonutil.loads(raw)
        except (StoreError, BadRequest) as exc:
            log.warning("lookup cache unavailable, asking the platform: %s", exc)
            return None

    async def remember(self, key: str, value: Any, ttl: float) -> None:
        try:
            await self._gw.store.kv_set(LOOKUP_NS, key, jsonutil.dumps(value), ttl)
        except StoreError as exc:
            log.warning("lookup result not cached: %s", exc)

    async def send(self, lookup: str, request: PlatformRequest, within: float) -> PlatformResponse:
        mapping = self._mapping
        timeouts = mapping.platform.timeouts
        # one attempt: a lookup that cannot answer in time has its fallback
        return await self._gw.platform.send(
            request,
            upstream=mapping.name,
            timeouts=replace(
                timeouts,
                connect=min(timeouts.connect, within),
                read=min(timeouts.read, within),
                total=within,
            ),
            deadline=within,
            ssl_context=self._gw.platform_tls.get(mapping.name),
            retry=False,
        )

    def media_url(self, fields: Mapping[str, Any]) -> str:
        return sign_media_url(self._gw, self._mapping.name, fields)


def count(gw: Gateway, mapping: str, outcomes: tuple[LookupOutcome, ...]) -> None:
    """Count every lookup by outcome; say why a failed one used its fallback."""
    for outcome in outcomes:
        gw.metrics.lookups.labels(mapping, outcome.name, outcome.result).inc()
        if outcome.result == "failed":
            log.warning(
                "lookup %s failed, delivering with its fallback: %s",
                outcome.name,
                outcome.reason,
                extra={"mapping": mapping, "outcome": "lookup_failed"},
            )
