"""Operator endpoints on the CXone-facing listener: health, readiness, metrics, status."""

from __future__ import annotations

from aiohttp import web

from gateway import jsonutil
from gateway.errors import GatewayError, Unauthorized
from gateway.keys import GATEWAY
from gateway.metrics import CONTENT_TYPE_LATEST


def add_routes(app: web.Application) -> None:
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)
    app.router.add_get("/metrics", metrics)
    app.router.add_get("/status.json", status_json)


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
        await gw.store.ping()
        checks["store"] = "ok"
    except (GatewayError, AttributeError) as exc:
        checks["store"] = f"unavailable: {type(exc).__name__}"
    try:
        await gw.cxone.auth.token()
        checks["cxone_auth"] = "ok"
    except (GatewayError, AttributeError) as exc:
        checks["cxone_auth"] = f"unavailable: {exc}"[:200]
    ready = all(v == "ok" for v in checks.values())
    return web.Response(
        status=200 if ready else 503,
        body=jsonutil.dumps({"ready": ready, "checks": checks}),
        content_type="application/json",
    )


async def metrics(request: web.Request) -> web.Response:
    gw = request.app[GATEWAY]
    try:
        gw.metrics.queue_depth.set(await gw.store.depth())
        gw.metrics.dead_letter_depth.set(await gw.store.dead_count())
    except GatewayError:
        pass
    return web.Response(body=gw.metrics.render(), headers={"Content-Type": CONTENT_TYPE_LATEST})


def require_admin(request: web.Request) -> None:
    """Admin pages need the admin token (Bearer); without a configured token they are closed."""
    gw = request.app[GATEWAY]
    token = gw.settings.admin_token
    auth = request.headers.get("Authorization", "")
    given = (
        auth[7:].strip() if auth[:7].lower() == "bearer " else request.cookies.get("byoc_admin", "")
    )
    if token is None or not given or not token.matches(given):
        raise Unauthorized(
            "the admin token is required",
            code="unauthorized",
            headers={"WWW-Authenticate": 'Bearer realm="byoc-gateway-admin"'},
        )


async def status_json(request: web.Request) -> web.Response:
    """The operator's view: mappings and versions, last reload, queue, dead letters."""
    require_admin(request)
    gw = request.app[GATEWAY]
    routing = gw.routing
    body = {
        "routing": routing.describe(),
        "last_reload": gw.last_reload.as_dict() if gw.last_reload else None,
        "queue_depth": await gw.store.depth(),
        "dead_letters": await gw.store.dead_count(),
        "channels": [
            {"id": cid, "integration": integ.name, "mapping": b.mapping, "role": b.role}
            for cid, (integ, b) in routing.bindings.items()
        ],
    }
    return web.Response(body=jsonutil.dumps(body), content_type="application/json")
