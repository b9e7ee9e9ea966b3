"""create_app: build both listeners' applications and the resources they share.

One middleware on each listener, as it runs on every request:
  - request context: request id, access metrics (sees every final status), and every
    failure made a JSON body (http_errors.error_response); nothing leaks
  - inside it, the edge (gateway.edge.Edge): IP allow-list (403 before any work), mTLS
    peer names, body read deadline

Resources are opened by cleanup contexts on the CXone-facing app, in this order and
closed in reverse: configuration (routing), certificate checks, store, HTTP clients,
workers.

mTLS on the CXone listener (`listeners.cxone.tls.client_ca`): with
`client_certificate: required` the TLS handshake refuses every client without a valid
certificate, and `client_subjects` is checked for every request (edge middleware).
With `client_certificate: optional` the handshake still refuses invalid certificates,
and the BYOC endpoints demand a valid one matching `client_subjects` for integrations
with `mtls: true` (gateway.cxone.endpoints); health, metrics and status then need none.
"""

from __future__ import annotations

import re
import ssl
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass

from aiohttp import web

from gateway import admin, media, status_page
from gateway.certwatch import certificates_ctx
from gateway.clock import Clock, system_clock
from gateway.cxone import endpoints as cxone_endpoints
from gateway.cxone import pages as cxone_pages
from gateway.cxone.auth import CxoneAuth
from gateway.cxone.client import CxoneClient
from gateway.cxone.tokens import FailureThrottle
from gateway.delivery.store import open_store
from gateway.delivery.token_cache import StoreTokenCache, token_cache_key
from gateway.delivery.worker import Workers
from gateway.edge import Edge
from gateway.http import make_session
from gateway.http_errors import error_response
from gateway.http_pool import HttpPool
from gateway.ids import unique_id
from gateway.keys import GATEWAY, LISTENER
from gateway.logs import request_id
from gateway.media import MediaClient
from gateway.metrics import create_metrics
from gateway.platform import webhooks
from gateway.platform.client import PlatformClient
from gateway.runtime import Gateway
from gateway.settings import ListenerSettings, Settings
from gateway.tls import client_context

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
_RID = re.compile(r"^[A-Za-z0-9._-]{1,64}$")


@dataclass(frozen=True)
class GatewayApps:
    """The two listeners' applications and the services they share."""

    gateway: Gateway
    cxone: web.Application
    platform: web.Application


def _request_context(
    listener: str, edge: Edge
) -> Callable[[web.Request, Handler], Awaitable[web.StreamResponse]]:
    @web.middleware
    async def middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
        incoming = request.headers.get("X-Request-Id", "")
        rid = incoming if _RID.match(incoming) else unique_id(16)
        token = request_id.set(rid)
        status = 500
        try:
            try:
                refused = edge.admit(request)
                if refused is None:
                    response = await handler(request)
                    edge.finish(request, response)
                else:
                    response = refused
            except web.HTTPException as exc:
                if exc.status < 400:  # a redirect: aiohttp sends it
                    status = exc.status
                    raise
                response = error_response(request, exc)
            except Exception as exc:
                response = error_response(request, exc)
            status = response.status
            response.headers["X-Request-Id"] = rid
            return response
        finally:
            request_id.reset(token)
            route = request.match_info.route.resource
            endpoint = route.canonical if route is not None else "unmatched"
            if listener == "platform" and endpoint == "/{path}":
                endpoint = "webhook"
            request.app[GATEWAY].metrics.requests.labels(listener, endpoint, str(status)).inc()

    return middleware


def _middlewares(
    listener: str, settings: Callable[[], ListenerSettings]
) -> list[Callable[..., Awaitable[web.StreamResponse]]]:
    return [_request_context(listener, Edge(settings))]


def create_apps(settings: Settings, *, clock: Clock = system_clock) -> GatewayApps:
    """Build both applications; nothing is opened until the CXone app starts."""
    gateway = Gateway(settings, clock=clock, metrics=create_metrics())

    cxone_app = web.Application(
        middlewares=_middlewares("cxone", lambda: gateway.settings.cxone_listener),
        client_max_size=settings.cxone_listener.max_body_bytes,
    )
    cxone_app[GATEWAY] = gateway
    cxone_app[LISTENER] = "cxone"
    cxone_endpoints.add_routes(cxone_app)
    cxone_pages.add_routes(cxone_app)  # Action / Reconnect / Remove URLs (admin's browser)
    admin.add_routes(cxone_app)
    status_page.add_routes(cxone_app)
    cxone_app.cleanup_ctx.extend(
        [_routing_ctx, certificates_ctx, _store_ctx, _clients_ctx, _workers_ctx]
    )

    platform_app = web.Application(
        middlewares=_middlewares("platform", lambda: gateway.settings.platform_listener),
        client_max_size=settings.platform_listener.max_body_bytes,
    )
    platform_app[GATEWAY] = gateway
    platform_app[LISTENER] = "platform"
    platform_app.router.add_get("/healthz", admin.healthz)
    media.add_routes(platform_app)  # before the webhooks' catch-all
    webhooks.add_routes(platform_app)
    return GatewayApps(gateway, cxone_app, platform_app)


def create_app(settings: Settings, *, clock: Clock = system_clock) -> web.Application:
    """The CXone-facing app (it owns the resources); the platform app is create_apps().platform."""
    return create_apps(settings, clock=clock).cxone


async def _routing_ctx(app: web.Application) -> AsyncIterator[None]:
    await app[GATEWAY].load_initial()
    yield


async def _store_ctx(app: web.Application) -> AsyncIterator[None]:
    gw = app[GATEWAY]
    gw.store = open_store(gw.settings.store, clock=gw.clock)
    await gw.store.open()
    gw.throttle = FailureThrottle(clock=gw.clock)
    try:
        yield
    finally:
        await gw.store.close()


async def _clients_ctx(app: web.Application) -> AsyncIterator[None]:
    gw = app[GATEWAY]
    s = gw.settings
    cxone_ssl: ssl.SSLContext = client_context(s.cxone.tls)
    gw.cxone_tls = cxone_ssl  # a reload loads a renewed client certificate into it
    cxone_session = make_session(s.cxone.timeouts, ssl_context=cxone_ssl)
    platform_session = make_session(s.cxone.timeouts)
    # one CXone token for every instance sharing the store (redis: the whole fleet)
    cache = StoreTokenCache(
        gw.store,
        token_cache_key(s.cxone),
        clock=gw.clock,
        lock_ttl=max(30.0, 3 * s.cxone.timeouts.total),  # discovery + token + discovery
    )
    auth = CxoneAuth(cxone_session, s.cxone, clock=gw.clock, cache=cache)
    # the per-message calls: a pool each, so a slow platform cannot starve CXone's calls
    cxone_http, platform_http = HttpPool(), HttpPool()
    try:
        gw.cxone = CxoneClient(cxone_http, s.cxone, auth, clock=gw.clock, ssl_context=cxone_ssl)
        gw.platform = PlatformClient(platform_http, retry=s.cxone.retry, clock=gw.clock)
        gw.media = MediaClient(platform_session)  # proxied files, CXone's attachments
        yield
    finally:
        await auth.aclose()
        await platform_http.close()
        await cxone_http.close()
        await platform_session.close()
        await cxone_session.close()


async def _workers_ctx(app: web.Application) -> AsyncIterator[None]:
    gw = app[GATEWAY]
    workers = Workers(gw)
    gw.workers = workers
    workers.start()
    try:
        yield
    finally:
        await workers.stop()
