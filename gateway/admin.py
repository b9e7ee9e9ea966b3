"""Operator endpoints on the CXone-facing listener: health, readiness, metrics.

The status page and its JSON form (`/status`, `/status.json`) are in
`gateway.status_page`; both are guarded by `require_admin` below.
"""

from __future__ import annotations

import asyncio
from typing import Any

from aiohttp import web

from gateway import jsonutil
from gateway.errors import GatewayError, Unauthorized
from gateway.keys import GATEWAY
from gateway.metrics import CONTENT_TYPE_LATEST, advance_counter
from gateway.runtime import Gateway
from gateway.websession import SessionSigner, derive_key

ADMIN_COOKIE = "byoc_admin"
ADMIN_SESSION_SECONDS = 8 * 3600.0
READY_CHECK_SECONDS = 5.0  # each readiness check answers within this, as probes expect


def routes() -> list[web.RouteDef]:
    """Health, readiness and metrics on the CXone-facing listener."""
    return [web.get("/healthz", healthz), web.get("/readyz", readyz), web.get("/metrics", metrics)]


async def healthz(request: web.Request) -> web.Response:
    """The process is alive."""
    return web.json_response({"status": "ok"})


async def readyz(request: web.Request) -> web.Response:
    """Mappings loaded, store reachable, CXone token obtainable."""
    gw = request.app[GATEWAY]
    checks: dict[str, str] = {}
    try:
        gw.routing  # noqa: B018 - raises until the configuration is loaded
        checks["config"] = "ok"
    except GatewayError as exc:
        checks["config"] = str(exc)
    try:
        async with asyncio.timeout(READY_CHECK_SECONDS):
            await gw.store.ping()
        checks["store"] = "ok"
    except (GatewayError, AttributeError, TimeoutError) as exc:
        checks["store"] = f"unavailable: {type(exc).__name__}"
    try:
        # a cached token counts; otherwise this fetches one (shared with the workers)
        async with asyncio.timeout(READY_CHECK_SECONDS):
            await gw.cxone.auth.token()
        checks["cxone_auth"] = "ok"
    except TimeoutError:
        checks["cxone_auth"] = "unavailable: no token within the check's time"
    except (GatewayError, AttributeError) as exc:
        checks["cxone_auth"] = f"unavailable: {exc}"[:200]
    ready = all(v == "ok" for v in checks.values())
    return web.Response(
        status=200 if ready else 503,
        body=jsonutil.dumps({"ready": ready, "checks": checks}),
        content_type="application/json",
    )


async def refresh_gauges(gw: Gateway) -> None:
    """Bring the values kept elsewhere (store, CXone auth) into the metrics."""
    try:
        gw.metrics.queue_depth.set(await gw.store.depth())
        gw.metrics.dead_letter_depth.set(await gw.store.dead_count())
    except (GatewayError, AttributeError):  # store down, or not opened yet
        pass
    try:
        refreshes = gw.cxone.auth.refresh_count
    except AttributeError:  # clients not started yet
        return
    advance_counter(gw.metrics.token_refreshes, refreshes)


async def metrics(request: web.Request) -> web.Response:
    """GET /metrics: Prometheus text format."""
    gw = request.app[GATEWAY]
    await refresh_gauges(gw)
    return web.Response(body=gw.metrics.render(), headers={"Content-Type": CONTENT_TYPE_LATEST})


def admin_signer(gw: Gateway) -> SessionSigner:
    """The signer of admin sessions; its key is derived from the admin token."""
    token = gw.settings.admin_token
    if token is None:
        raise Unauthorized("no admin token is configured", code="unauthorized")
    key = derive_key("admin-session", [token.reveal()])
    return SessionSigner(key, ADMIN_SESSION_SECONDS, gw.clock)


def admin_session(request: web.Request) -> dict[str, Any] | None:
    """Return the admin session of the request's cookie, when it is valid."""
    gw = request.app[GATEWAY]
    cookie = request.cookies.get(ADMIN_COOKIE)
    if gw.settings.admin_token is None or not cookie:
        return None
    return admin_signer(gw).verify(cookie)


def require_admin(request: web.Request) -> None:
    """Admin pages need the admin token: a Bearer header, or the login form's session cookie.

    Without a configured admin token they are closed.
    """
    gw = request.app[GATEWAY]
    token = gw.settings.admin_token
    auth = request.headers.get("Authorization", "")
    if auth[:7].lower() == "bearer ":
        ok = token is not None and token.matches(auth[7:].strip())
    else:
        ok = not auth and admin_session(request) is not None
    if not ok:
        raise Unauthorized(
            "the admin token is required",
            code="unauthorized",
            headers={"WWW-Authenticate": 'Bearer realm="byoc-gateway-admin"'},
        )
