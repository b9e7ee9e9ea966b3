"""The sandbox page: static HTML/CSS/JS and a small JSON proxy to the two simulators.

The browser talks to this one origin only:

    GET  /                         the page (static/sandbox.html, .css, .js; no CDN, no build)
    GET  /api/info                 the sandbox's URLs and CXone channel ids
    GET  /api/state                {watering_hole: <WH /_sim/state>, cxone: <CXone /_sim/state>}
    GET  /api/changes?wh=N&cx=M    long poll: {wh, cx, changed} once either side moved
    POST /api/wh/<action>          dm | post | comment | receipt | close  -> WH /_sim/<action>
    POST /api/cx/<action>          reply | typing | proactive             -> CXone /_sim/<action>

It forwards only to the two simulator URLs it was built with, and only the listed
actions. Customer text is hostile by design: the page renders it with `textContent`,
and the responses carry a strict Content-Security-Policy (no inline script, no other
origin). POSTs must be JSON (so another site cannot forge them as a "simple" request)
and the Host must be an IP literal or localhost (no DNS rebinding).
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from importlib import resources
from typing import Any

import aiohttp
from aiohttp import web

from gateway import jsonutil
from gateway.errors import BadRequest, Forbidden, NotFound, RequestError
from gateway.http_errors import error_middleware, json_error

log = logging.getLogger("gateway.sandbox.page")

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

WH_ACTIONS = frozenset({"dm", "post", "comment", "receipt", "close"})
CX_ACTIONS = frozenset({"reply", "typing", "proactive"})
MAX_BODY_BYTES = 64 * 1024

# name -> content type; nothing else is served
STATIC_FILES: Mapping[str, str] = {
    "sandbox.html": "text/html",
    "sandbox.css": "text/css",
    "sandbox.js": "text/javascript",
}

SECURITY_HEADERS: Mapping[str, str] = {
    "Content-Security-Policy": (
        "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
        "connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
    ),
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "X-Frame-Options": "DENY",
}


@dataclass(frozen=True)
class PageConfig:
    """Where the simulators are, and what the page shows about the sandbox."""

    watering_hole_url: str  # the WH simulator's base URL (control API under /_sim/)
    cxone_url: str  # the CXone simulator's base URL (control API under /_sim/)
    channels: Mapping[str, str]  # channel role (chat, board) -> CXone channel id
    info: Mapping[str, Any] = field(default_factory=dict)  # URLs shown on the page
    bind_host: str = "127.0.0.1"  # a host name the page may also be opened by
    poll_seconds: float = 20.0  # how long /api/changes waits at most
    connect_timeout: float = 2.0
    action_timeout: float = 30.0  # an agent reply waits for gateway and platform


@dataclass
class _Page:
    config: PageConfig
    files: dict[str, bytes] = field(default_factory=dict)
    session: aiohttp.ClientSession | None = None
    closing: asyncio.Event = field(default_factory=asyncio.Event)

    def client(self) -> aiohttp.ClientSession:
        if self.session is None:
            raise RuntimeError("the sandbox page app is not started")
        return self.session


PAGE = web.AppKey("sandbox_page", _Page)


class UpstreamFailed(RequestError):
    """A simulator did not answer usefully."""

    status = 502
    code = "simulator_unavailable"


def create_page_app(config: PageConfig) -> web.Application:
    """Build the sandbox page application (the HTTP session opens on startup)."""
    app = web.Application(
        middlewares=[_security_headers, error_middleware, _local_only],
        client_max_size=MAX_BODY_BYTES,
    )
    app[PAGE] = _Page(config)
    app.cleanup_ctx.append(_resources_ctx)
    app.on_shutdown.append(_on_shutdown)
    r = app.router
    r.add_get("/", _index)
    r.add_get("/static/{name}", _static)
    r.add_get("/api/info", _info)
    r.add_get("/api/state", _state)
    r.add_get("/api/changes", _changes)
    r.add_post("/api/wh/{action}", _wh_action)
    r.add_post("/api/cx/{action}", _cx_action)
    return app


# -- lifecycle ------------------------------------------------------------------------


def _read_static() -> dict[str, bytes]:
    folder = resources.files("gateway.sandbox").joinpath("static")
    return {name: folder.joinpath(name).read_bytes() for name in STATIC_FILES}


async def _resources_ctx(app: web.Application) -> AsyncIterator[None]:
    page = app[PAGE]
    page.files = await asyncio.to_thread(_read_static)
    timeout = aiohttp.ClientTimeout(total=None, connect=page.config.connect_timeout)
    page.session = aiohttp.ClientSession(timeout=timeout, trust_env=False)
    try:
        yield
    finally:
        await page.session.close()
        page.session = None


async def _on_shutdown(app: web.Application) -> None:
    # before the server waits for handlers: end every long poll now
    app[PAGE].closing.set()


# -- middlewares ----------------------------------------------------------------------


@web.middleware
async def _security_headers(request: web.Request, handler: Handler) -> web.StreamResponse:
    response = await handler(request)
    response.headers.update(SECURITY_HEADERS)
    if request.path.startswith("/api/"):
        response.headers["Cache-Control"] = "no-store"
    return response


def _local_host(host: str, bind_host: str) -> bool:
    name = host.rsplit(":", 1)[0] if not host.endswith("]") else host
    name = name.strip("[]").lower()
    if name in ("localhost", bind_host.lower()):
        return True
    try:
        ipaddress.ip_address(name)
    except ValueError:
        return False
    return True


@web.middleware
async def _local_only(request: web.Request, handler: Handler) -> web.StreamResponse:
    # A page reached through a DNS name could be a rebinding attack; an IP or localhost
    # cannot. A POST from another origin is refused outright.
    if not _local_host(request.host, request.app[PAGE].config.bind_host):
        raise Forbidden("open the sandbox by IP address or localhost", code="forbidden_host")
    if request.method == "POST":
        origin = request.headers.get("Origin")
        if origin is not None and origin != f"{request.scheme}://{request.host}":
            raise Forbidden("cross-origin requests are refused", code="forbidden_origin")
    return await handler(request)


# -- static files ---------------------------------------------------------------------


def _file(page: _Page, name: str) -> web.Response:
    ctype = STATIC_FILES.get(name)
    if ctype is None:
        raise NotFound("no such file", code="not_found")
    return web.Response(
        body=page.files[name],
        content_type=ctype,
        charset="utf-8",
        headers={"Cache-Control": "no-cache"},
    )


async def _index(request: web.Request) -> web.Response:
    return _file(request.app[PAGE], "sandbox.html")


async def _static(request: web.Request) -> web.Response:
    name = request.match_info["name"]
    if name == "sandbox.html":
        raise NotFound("no such file", code="not_found")
    return _file(request.app[PAGE], name)


# -- the JSON proxy -------------------------------------------------------------------


def _json(payload: Any, status: int = 200) -> web.Response:
    return web.Response(
        status=status, body=jsonutil.dumps(payload), content_type="application/json"
    )


async def _info(request: web.Request) -> web.Response:
    config = request.app[PAGE].config
    return _json({"channels": dict(config.channels), **config.info})


async def _fetch(
    page: _Page,
    upstream: str,
    method: str,
    url: str,
    *,
    timeout: float,  # noqa: ASYNC109 (a per-call client timeout, not a sync tool)
    body: bytes | None = None,
) -> tuple[int, Any]:
    """Call a simulator; return (status, parsed JSON) or raise UpstreamFailed."""
    headers = {"Content-Type": "application/json"} if body is not None else None
    try:
        async with page.client().request(
            method,
            url,
            data=body,
            headers=headers,
            timeout=aiohttp.ClientTimeout(total=timeout, connect=page.config.connect_timeout),
        ) as resp:
            raw = await resp.read()
            status = resp.status
    except (aiohttp.ClientError, TimeoutError):
        raise UpstreamFailed(f"the {upstream} simulator did not answer") from None
    try:
        parsed = jsonutil.loads(raw) if raw else None
    except BadRequest:
        raise UpstreamFailed(
            f"the {upstream} simulator answered with something else than JSON"
        ) from None
    return status, parsed


def _sim_url(page: _Page, side: str, path: str) -> str:
    base = page.config.watering_hole_url if side == "wh" else page.config.cxone_url
    return f"{base.rstrip('/')}/_sim/{path}"


async def _state(request: web.Request) -> web.Response:
    page = request.app[PAGE]
    timeout = page.config.action_timeout
    wh, cx = await asyncio.gather(
        _fetch(page, "Watering Hole", "GET", _sim_url(page, "wh", "state"), timeout=timeout),
        _fetch(page, "CXone", "GET", _sim_url(page, "cx", "state"), timeout=timeout),
    )
    for (status, _), name in ((wh, "Watering Hole"), (cx, "CXone")):
        if status != 200:
            raise UpstreamFailed(f"the {name} simulator answered {status}")
    return _json({"watering_hole": wh[1], "cxone": cx[1]})


def _seq_param(request: web.Request, key: str) -> int:
    raw = request.query.get(key, "-1")
    try:
        value = int(raw)
    except ValueError:
        raise BadRequest(f"{key} must be an integer", code="invalid_query") from None
    if not -1 <= value < 2**53:
        raise BadRequest(f"{key} is out of range", code="invalid_query")
    return value


async def _seq_after(page: _Page, side: str, since: int) -> int:
    """Long-poll one simulator; return its seq (unchanged after the poll time)."""
    seconds = page.config.poll_seconds
    url = _sim_url(page, side, f"changes?since={since}&timeout={seconds:g}")
    name = "Watering Hole" if side == "wh" else "CXone"
    status, body = await _fetch(page, name, "GET", url, timeout=seconds + 10)
    seq = body.get("seq") if isinstance(body, dict) else None
    if status != 200 or not isinstance(seq, int):
        raise UpstreamFailed(f"the {name} simulator answered {status}")
    return seq


async def _changes(request: web.Request) -> web.Response:
    """Wait until either simulator's seq differs from the one given (or the poll time)."""
    page = request.app[PAGE]
    since = {"wh": _seq_param(request, "wh"), "cx": _seq_param(request, "cx")}
    polls = {asyncio.ensure_future(_seq_after(page, side, n)): side for side, n in since.items()}
    closing = asyncio.ensure_future(page.closing.wait())
    seen = dict(since)
    try:
        async with asyncio.timeout(page.config.poll_seconds + 5):
            done, _ = await asyncio.wait([*polls, closing], return_when=asyncio.FIRST_COMPLETED)
    except TimeoutError:
        done = set()
    finally:
        for task in (*polls, closing):
            task.cancel()
        await asyncio.gather(*polls, closing, return_exceptions=True)
    for task in done:
        if task in polls:
            seen[polls[task]] = task.result()  # re-raises UpstreamFailed
    return _json({**seen, "changed": seen != since})


async def _forward(request: web.Request, side: str, allowed: frozenset[str]) -> web.Response:
    page = request.app[PAGE]
    action = request.match_info["action"]
    if action not in allowed:
        raise NotFound("unknown action", code="unknown_action")
    if request.content_type != "application/json":
        raise BadRequest("Content-Type must be application/json", code="unsupported_media_type")
    body = jsonutil.loads(await request.read())
    if not isinstance(body, dict):
        raise BadRequest("the body must be a JSON object", code="invalid_body")
    name = "Watering Hole" if side == "wh" else "CXone"
    status, answer = await _fetch(
        page,
        name,
        "POST",
        _sim_url(page, side, action),
        body=jsonutil.dumps(body),
        timeout=page.config.action_timeout,
    )
    if 200 <= status < 300:
        return _json(answer, status)
    if 400 <= status < 500:
        code, message = _error_of(answer)
        return json_error(status, code, message)
    raise UpstreamFailed(f"the {name} simulator answered {status}")


def _error_of(answer: Any) -> tuple[str, str]:
    """Read either simulator's error body: {error: code, message} or {error: {code, message}}."""
    if isinstance(answer, dict):
        error: Any = answer.get("error")
        source: dict[str, Any] = error if isinstance(error, dict) else answer
        code = source.get("code") if isinstance(error, dict) else error
        message = source.get("message")
        if isinstance(code, str):
            return code, message if isinstance(message, str) else code
    return "invalid_request", "the simulator refused the request"


async def _wh_action(request: web.Request) -> web.Response:
    return await _forward(request, "wh", WH_ACTIONS)


async def _cx_action(request: web.Request) -> web.Response:
    return await _forward(request, "cx", CX_ACTIONS)


async def serve_page(config: PageConfig, host: str, port: int) -> tuple[web.AppRunner, str]:
    """Start the page app on host:port (0: any free port); return its runner and URL."""
    runner = web.AppRunner(create_page_app(config), access_log=None, shutdown_timeout=5.0)
    await runner.setup()
    try:
        site = web.TCPSite(runner, host, port)
        await site.start()
    except BaseException:
        await runner.cleanup()
        raise
    return runner, base_url(runner, host, port)


def base_url(runner: web.AppRunner, host: str, port: int) -> str:
    """Return http://host:port of a started runner, with the port it really bound."""
    bound = port
    for address in runner.addresses:
        if isinstance(address, tuple) and len(address) >= 2:
            bound = int(address[1])
            break
    shown = "127.0.0.1" if host in ("0.0.0.0", "", "::") else host
    if ":" in shown:
        shown = f"[{shown}]"
    return f"http://{shown}:{bound}"
