"""What runs around every request of a listener: request id, edge checks, errors, metric.

Each route's handler is wrapped once, when the routes are added (`contextual`), instead
of running as an aiohttp middleware: with any middleware aiohttp also runs one of its
own around every request (`_fix_request_current_app`) and calls both through a
partial, about 15,000 instructions per request (1.3 % of an inbound event's;
docs/performance.md). What the wrapper does, in order:

  - the request id (X-Request-Id when it is well-formed, else a new one), logged with
    every record of the request and echoed in the answer;
  - the edge (gateway.edge.Edge): IP allow-list (403 before any work), mTLS peer names,
    the body read deadline;
  - every failure made a JSON body (http_errors.error_response): nothing leaks;
  - the access metric `byoc_requests_total`, which sees every final status.

A router answers an unknown path (404) or a known path with another method (405) by
itself, around no handler: each listener therefore ends with a catch-all route. The
platform listener's is the webhook intake; the CXone listener's is `unmatched`, which
answers 404 or 405 as the router would, through the same wrapper.
"""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable, Iterable

from aiohttp import web

from gateway.edge import Edge
from gateway.http_errors import error_response
from gateway.ids import unique_id
from gateway.keys import GATEWAY
from gateway.logs import request_id

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

CATCH_ALL = "/{path:.*}"  # the last route of each listener (see the module docstring)
_CATCH_ALL_CANONICAL = "/{path}"
_RID = re.compile(r"^[A-Za-z0-9._-]{1,64}$")


def contextual(listener: str, edge: Edge, routes: Iterable[web.RouteDef]) -> list[web.RouteDef]:
    """The same routes, each handler wrapped in the request context of `listener`."""
    out = []
    for route in routes:
        handler = route.handler
        if isinstance(handler, type):  # a class-based view: none here, none wrapped
            raise TypeError(f"route {route.path}: class-based views are not supported")
        wrapped = wrap(listener, edge, handler)
        out.append(web.RouteDef(route.method, route.path, wrapped, route.kwargs))
    return out


def wrap(listener: str, edge: Edge, handler: Handler) -> Handler:
    """`handler` with the request context of `listener` around it (module docstring)."""
    # the access metric's endpoint label: the route's path pattern, the same for every
    # request this handler serves (one wrapper per route), read from the first one
    endpoint = ""

    async def in_context(request: web.Request) -> web.StreamResponse:
        nonlocal endpoint
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
            if not endpoint:
                endpoint = _endpoint(listener, request)
            request.app[GATEWAY].metrics.requests.labels(listener, endpoint, str(status)).inc()

    return in_context


def _endpoint(listener: str, request: web.Request) -> str:
    """The route's path pattern as the metric's label; the catch-all's by its role."""
    resource = request.match_info.route.resource
    if resource is None:
        return "unmatched"
    if resource.canonical == _CATCH_ALL_CANONICAL:
        return "webhook" if listener == "platform" else "unmatched"
    return resource.canonical


async def unmatched(request: web.Request) -> web.StreamResponse:
    """The CXone listener's catch-all: 405 (with Allow) for a known path, else 404."""
    allowed: set[str] = set()
    for resource in request.app.router.resources():
        if resource is request.match_info.route.resource:
            continue
        _, methods = await resource.resolve(request)
        allowed |= methods
    if allowed:
        raise web.HTTPMethodNotAllowed(request.method, allowed)
    raise web.HTTPNotFound()
