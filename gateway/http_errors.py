"""Every failure becomes a JSON body with a stable `error` code (`error_response`).

Never a traceback, never an echo of the caller's input. The listeners apply it in their
request context (gateway.request_context); `error_middleware` does the same for the
sandbox's own pages.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable

from aiohttp import web

from gateway import jsonutil
from gateway.errors import MappingRuntimeError, RequestError, UpstreamRejected, UpstreamUnavailable

log = logging.getLogger("gateway.http")

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def json_error(
    status: int, code: str, message: str, headers: dict[str, str] | None = None
) -> web.Response:
    """Build a JSON error response."""
    return web.Response(
        status=status,
        body=jsonutil.dumps({"error": code, "message": message}),
        content_type="application/json",
        headers=headers,
    )


@web.middleware
async def error_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Turn gateway errors and unexpected exceptions into JSON responses."""
    try:
        return await handler(request)
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        return error_response(request, exc)
    except Exception as exc:
        return error_response(request, exc)


def error_response(request: web.BaseRequest, exc: Exception) -> web.Response:
    """The JSON response for a failure (an HTTPException below 400 is the caller's to raise)."""
    if isinstance(exc, RequestError):
        if exc.body is not None:
            return web.Response(
                status=exc.status,
                body=jsonutil.dumps(exc.body),
                content_type="application/json",
                headers=exc.headers,
            )
        return json_error(exc.status, exc.code, exc.message, exc.headers)
    if isinstance(exc, MappingRuntimeError):
        log.warning("mapping error: %s", exc)
        return json_error(422, "mapping_error", str(exc))
    if isinstance(exc, UpstreamRejected):
        return json_error(
            422 if exc.status is None or exc.status < 500 else 502,
            "platform_rejected",
            f"{exc.upstream} refused the request"
            + (f" ({exc.status} {exc.code})" if exc.status else "")
            + (f": {exc.message}" if exc.message else ""),
        )
    if isinstance(exc, UpstreamUnavailable):
        headers = {"Retry-After": str(int(exc.retry_after))} if exc.retry_after else None
        return json_error(
            503,
            "platform_unavailable",
            f"{exc.upstream} did not accept the request in time"
            + (f" (last attempt: {exc.message})" if exc.message else ""),
            headers,
        )
    if isinstance(exc, web.HTTPException):
        return json_error(exc.status, _http_code(exc.status), exc.reason, _keep_headers(exc))
    # the last line of defence: log it, tell the caller nothing more
    log.error("unhandled error on %s %s", request.method, request.path, exc_info=exc)
    return json_error(500, "internal_error", "the gateway failed to handle this request")


def _http_code(status: int) -> str:
    return {
        404: "not_found",
        405: "method_not_allowed",
        413: "payload_too_large",
        415: "unsupported_media_type",
    }.get(status, f"http_{status}")


def _keep_headers(exc: web.HTTPException) -> dict[str, str]:
    return {k: v for k, v in exc.headers.items() if k.lower() in ("allow", "retry-after")}
