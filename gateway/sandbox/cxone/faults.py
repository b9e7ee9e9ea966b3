"""Failure injection on the CXone-side routes: scripted answers, resets, hangs."""

from __future__ import annotations

import asyncio
from collections import Counter, deque
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from aiohttp import web

from gateway import jsonutil
from gateway.sandbox.cxone.config import ROUTES
from gateway.sandbox.cxone.records import HitOutcome


@dataclass(frozen=True)
class Scripted:
    """One canned answer: status, headers and a body (JSON value, str, bytes or None)."""

    status: int
    headers: Mapping[str, str]
    body: Any

    def response(self) -> web.Response:
        """Build the aiohttp response."""
        headers = dict(self.headers)
        if self.body is None or self.status in (204, 304):
            return web.Response(status=self.status, headers=headers)
        if isinstance(self.body, bytes):
            return web.Response(status=self.status, headers=headers, body=self.body)
        if isinstance(self.body, str):
            return web.Response(status=self.status, headers=headers, text=self.body)
        return web.Response(
            status=self.status,
            headers=headers,
            body=jsonutil.dumps(self.body),
            content_type="application/json",
        )


def _route(name: str) -> str:
    if name not in ROUTES:
        raise ValueError(f"unknown route {name!r}; one of: {', '.join(ROUTES)}")
    return name


class Faults:
    """Per-route queues of scripted answers, pending resets and holds."""

    def __init__(self, on_change: Callable[[], object]) -> None:
        self._on_change = on_change
        self._scripts: dict[str, deque[Scripted]] = {}
        self._resets: Counter[str] = Counter()
        self._holds: dict[str, asyncio.Event] = {}
        self.held: Counter[str] = Counter()  # requests waiting on a hold, per route

    def script(self, route: str, responses: Iterable[tuple[int, Mapping[str, str], Any]]) -> None:
        """Answer the next requests of `route` with these, in order, then behave normally."""
        queue = self._scripts.setdefault(_route(route), deque())
        queue.extend(Scripted(int(s), dict(h), b) for s, h, b in responses)

    def pending(self) -> dict[str, int]:
        """Return how many scripted answers and resets are still queued, per route."""
        counts = {route: len(queue) for route, queue in self._scripts.items() if queue}
        for route, n in self._resets.items():
            if n:
                counts[route] = counts.get(route, 0) + n
        return counts

    def reset_next(self, route: str, n: int = 1) -> None:
        """Abort the connection of the next `n` requests of `route` without answering."""
        self._resets[_route(route)] += n

    def hold(self, route: str) -> asyncio.Event:
        """Make requests of `route` hang until the returned event is set (or `release`)."""
        event = self._holds.get(_route(route))
        if event is None or event.is_set():
            event = self._holds[route] = asyncio.Event()
        return event

    def release(self, route: str | None = None) -> None:
        """Let held requests of `route` (None: every route) proceed."""
        for name in [route] if route is not None else list(self._holds):
            event = self._holds.pop(name, None)
            if event is not None:
                event.set()

    async def apply(
        self, route: str, request: web.Request
    ) -> tuple[web.StreamResponse, HitOutcome] | None:
        """Hold, reset or answer from the script; None means: handle normally."""
        event = self._holds.get(route)
        if event is not None and not event.is_set():
            self.held[route] += 1
            self._on_change()
            try:
                await event.wait()
            finally:
                self.held[route] -= 1
                self._on_change()
        if self._resets[route] > 0:
            self._resets[route] -= 1
            if request.transport is not None:
                request.transport.abort()
            return web.Response(status=499), "reset"
        queue = self._scripts.get(route)
        if queue:
            return queue.popleft().response(), "scripted"
        return None
