"""create_app: build both listeners' applications and the resources they share.

Every route of each listener runs in its request context (gateway.request_context):
request id, the edge (gateway.edge.Edge: IP allow-list, 403 before any work; mTLS peer
names; body read deadline), every failure made a JSON body (nothing leaks), and the
access metric, which sees every final status. Each listener ends with a catch-all
route, so that unknown paths (404) and methods (405) are answered in that context too.

Resources are opened by cleanup contexts on the CXone-facing app, in this order and
closed in reverse: configuration (routing), certificate checks, store, HTTP clients,
workers.

mTLS on the CXone listener (`listeners.cxone.tls.client_ca`): with
`client_certificate: required` the TLS handshake refuses every client without a valid
certificate, and `client_subjects` is checked for every request (the edge).
With `client_certificate: optional` the handshake still refuses invalid certificates,
and the BYOC endpoints demand a valid one matching `client_subjects` for integrations
with `mtls: true` (gateway.cxone.endpoints); health, metrics and status then need none.
"""

from __future__ import annotations

import ssl
from collections.abc import AsyncIterator
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
from gateway.http_pool import HttpPool
from gateway.keys import GATEWAY, LISTENER
from gateway.media import MediaClient
from gateway.metrics import create_metrics
from gateway.platform import webhooks
from gateway.platform.client import PlatformClient
from gateway.request_context import CATCH_ALL, contextual, unmatched
from gateway.runtime import Gateway
from gateway.settings import Settings
from gateway.tls import client_context


@dataclass(frozen=True)
class GatewayApps:
    """The two listeners' applications and the services they share."""

    gateway: Gateway
    cxone: web.Application
    platform: web.Application


def create_apps(settings: Settings, *, clock: Clock = system_clock) -> GatewayApps:
    """Build both applications; nothing is opened until the CXone app starts."""
    gateway = Gateway(settings, clock=clock, metrics=create_metrics())

    cxone_app = web.Application(client_max_size=settings.cxone_listener.max_body_bytes)
    cxone_app[GATEWAY] = gateway
    cxone_app[LISTENER] = "cxone"
    cxone_edge = Edge(lambda: gateway.settings.cxone_listener)
    cxone_routes = [
        *cxone_endpoints.routes(),
        *cxone_pages.routes(),  # Action / Reconnect / Remove URLs (admin's browser)
        *admin.routes(),
        *status_page.routes(),
        web.route("*", CATCH_ALL, unmatched),  # 404 / 405 in the request context
    ]
    cxone_app.router.add_routes(contextual("cxone", cxone_edge, cxone_routes))
    cxone_app.cleanup_ctx.extend(
        [_routing_ctx, certificates_ctx, _store_ctx, _clients_ctx, _workers_ctx]
    )

    platform_app = web.Application(client_max_size=settings.platform_listener.max_body_bytes)
    platform_app[GATEWAY] = gateway
    platform_app[LISTENER] = "platform"
    platform_edge = Edge(lambda: gateway.settings.platform_listener)
    platform_routes = [
        web.get("/healthz", admin.healthz),
        *media.routes(),
        *webhooks.routes(),  # the catch-all
    ]
    platform_app.router.add_routes(contextual("platform", platform_edge, platform_routes))
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
