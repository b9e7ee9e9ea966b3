"""`gateway.edge.Edge` as a middleware of its own, for the small apps of the edge tests.

The gateway runs the edge inside its request-context middleware (`gateway.app`); these
tests check the edge alone, in front of handlers of their own.
"""

from __future__ import annotations

from aiohttp import web
from aiohttp.typedefs import Handler, Middleware

from gateway.edge import Edge, Provider
from gateway.settings import ListenerSettings


def edge_middleware(listener: Provider[ListenerSettings]) -> Middleware:
    edge = Edge(listener)

    @web.middleware
    async def middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
        refused = edge.admit(request)
        if refused is not None:
            return refused
        response = await handler(request)
        edge.finish(request, response)
        return response

    return middleware
