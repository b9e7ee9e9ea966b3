"""A generic fake platform API for tests: records every request, answers from a script.

Tests fill it per case:

    api = FakePlatform()
    api.on("POST", "/channels/{channel}/messages", json={"id": "m_1"}, status=201)
    api.on("POST", "/sendMessage", Answer(429, headers={"Retry-After": "0"}), Answer(200, ...))
    api.on("GET", "/ping", lambda req: Answer(200, text=req.query["x"]))
    api.on("GET", "/slow", hold)          # async def hold(req): await event.wait(); return ...
    runner, url = await serve_app(api.app)
    ...
    (sent,) = api.requests_to("POST", "/channels/c_1/messages")
    assert sent.json == {...}

A route answers with its scripted answers in order, the last one repeating; a request
no route matches gets `404 {"error": "no_route"}` and is recorded all the same. Tests
wait with `await api.wait_for(predicate)`, never with sleeps.
"""

from __future__ import annotations

import asyncio
import inspect
import re
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, TypeVar
from urllib.parse import parse_qsl

from aiohttp import web

from gateway import jsonutil

T = TypeVar("T")


@dataclass(frozen=True)
class Recorded:
    """One request as the platform received it."""

    method: str
    path: str
    query: Mapping[str, str | list[str]]
    headers: Mapping[str, str]  # lower-case names
    raw: bytes
    params: Mapping[str, str]  # the route's {placeholders}

    @property
    def content_type(self) -> str:
        return self.headers.get("content-type", "").split(";")[0].strip()

    @property
    def json(self) -> Any:
        """The body parsed as JSON (None when it is not JSON)."""
        if "json" not in self.content_type or not self.raw:
            return None
        return jsonutil.loads(self.raw)

    @property
    def form(self) -> dict[str, str | list[str]] | None:
        """The body parsed as a form; a repeated key gives a list (None when not a form)."""
        if self.content_type != "application/x-www-form-urlencoded":
            return None
        return _multi(parse_qsl(self.raw.decode(), keep_blank_values=True))

    @property
    def text(self) -> str:
        return self.raw.decode()


@dataclass(frozen=True)
class Answer:
    """A scripted response."""

    status: int = 200
    json: Any = None
    text: str | None = None
    headers: Mapping[str, str] = field(default_factory=dict)
    raw: bytes | None = None  # a binary body (a file), sent with `headers` as they are

    def response(self) -> web.Response:
        if self.raw is not None:
            return web.Response(status=self.status, body=self.raw, headers=self.headers)
        if self.text is not None:
            return web.Response(status=self.status, text=self.text, headers=self.headers)
        if self.json is None:
            return web.Response(status=self.status, headers=self.headers)
        return web.Response(
            status=self.status,
            body=jsonutil.dumps(self.json),
            content_type="application/json",
            headers=self.headers,
        )


Responder = Answer | Callable[[Recorded], Answer | Awaitable[Answer]]


class _Route:
    def __init__(self, method: str, template: str, answers: list[Responder]) -> None:
        self.method = method.upper()
        self.template = template
        names = re.sub(r"\\\{(\w+)\\\}", r"(?P<\1>[^/]+)", re.escape(template))
        self.pattern = re.compile(f"^{names}$")
        self.answers = answers
        self.used = 0

    def next(self) -> Responder:
        answer = self.answers[min(self.used, len(self.answers) - 1)]
        self.used += 1
        return answer


class FakePlatform:
    """An aiohttp app standing in for a platform's REST API."""

    def __init__(self) -> None:
        self.requests: list[Recorded] = []
        self._routes: list[_Route] = []
        self._changed = asyncio.Condition()
        self.app = web.Application()
        self.app.router.add_route("*", "/{tail:.*}", self._handle)

    def on(
        self,
        method: str,
        path: str,
        *answers: Responder,
        status: int = 200,
        json: Any = None,
        text: str | None = None,
    ) -> None:
        """Script a route (`{name}` matches one path segment); later calls take precedence."""
        script = list(answers) or [Answer(status, json, text)]
        self._routes.insert(0, _Route(method, path, script))

    def requests_to(self, method: str | None = None, path: str | None = None) -> list[Recorded]:
        """The recorded requests, optionally only those with this method and path."""
        return [
            r
            for r in self.requests
            if (method is None or r.method == method.upper()) and (path is None or r.path == path)
        ]

    async def wait_for(self, predicate: Callable[[], T], timeout: float = 5.0) -> T:
        """Wait until `predicate()` is truthy (re-checked on every request); return it."""
        async with asyncio.timeout(timeout), self._changed:
            while not (result := predicate()):
                await self._changed.wait()
            return result

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        raw = await request.read()
        route, params = self._match(request.method, request.path)
        recorded = Recorded(
            method=request.method,
            path=request.path,
            query=_multi(list(request.query.items())),
            headers={k.lower(): v for k, v in request.headers.items()},
            raw=raw,
            params=params,
        )
        self.requests.append(recorded)
        async with self._changed:
            self._changed.notify_all()
        if route is None:
            return web.json_response({"error": "no_route"}, status=404)
        answer = route.next()
        if callable(answer):
            answered = answer(recorded)  # an async responder may hold the answer back
            answer = await answered if inspect.isawaitable(answered) else answered
        return answer.response()

    def _match(self, method: str, path: str) -> tuple[_Route | None, dict[str, str]]:
        for route in self._routes:
            if route.method != method.upper():
                continue
            found = route.pattern.match(path)
            if found:
                return route, found.groupdict()
        return None, {}


def _multi(pairs: list[tuple[str, str]]) -> dict[str, str | list[str]]:
    out: dict[str, str | list[str]] = {}
    for key, value in pairs:
        if key in out:
            previous = out[key]
            out[key] = [*previous, value] if isinstance(previous, list) else [previous, value]
        else:
            out[key] = value
    return out
