"""JSON answers, request parsing and the error middleware of the simulator."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web

from gateway import jsonutil
from gateway.errors import BadRequest, RequestError
from gateway.sandbox.cxone.faults import Faults
from gateway.sandbox.cxone.state import SimState

log = logging.getLogger("gateway.sandbox.cxone")

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


class UnsupportedMediaType(RequestError):
    status = 415
    code = "unsupported_media_type"


class Invalid(BadRequest):
    """A body that breaks the contract; lists every problem."""

    def __init__(self, what: str, problems: list[str]) -> None:
        message = f"{what} is invalid: " + "; ".join(problems)
        super().__init__(
            message,
            code="validation_failed",
            body={"error": "validation_failed", "message": message, "errors": problems},
        )
        self.problems = tuple(problems)


def json_response(
    body: Any, status: int = 200, headers: dict[str, str] | None = None
) -> web.Response:
    """Answer with a JSON body."""
    return web.Response(
        status=status, headers=headers, body=jsonutil.dumps(body), content_type="application/json"
    )


def error_response(exc: RequestError) -> web.Response:
    """Turn a refused request into its JSON answer."""
    body = exc.body if exc.body is not None else {"error": exc.code, "message": exc.message}
    return json_response(body, exc.status, exc.headers)


async def read_json(request: web.Request) -> Any:
    """Parse a JSON request body (Content-Type must say JSON)."""
    ctype = request.content_type
    if ctype != "application/json" and not ctype.endswith("+json"):
        raise UnsupportedMediaType("Content-Type must be application/json")
    return jsonutil.loads(await request.read())


async def read_object(request: web.Request) -> dict[str, Any]:
    """Parse a JSON object request body."""
    body = await read_json(request)
    if not isinstance(body, dict):
        raise BadRequest("the body must be a JSON object", code="invalid_body")
    return body


@web.middleware
async def error_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Answer every failure with JSON, never a traceback."""
    try:
        return await handler(request)
    except RequestError as exc:
        return error_response(exc)
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        return json_response(
            {"error": exc.reason.lower().replace(" ", "_"), "message": exc.reason},
            exc.status,
        )
    except Exception:
        log.exception("CXone simulator failed on %s %s", request.method, request.path)
        return json_response({"error": "internal", "message": "simulator error"}, 500)


def guarded(route: str, handler: Handler, faults: Faults, state: SimState) -> Handler:
    """Wrap a CXone-side handler with failure injection and request accounting."""

    async def run(request: web.Request) -> web.StreamResponse:
        injected = await faults.apply(route, request)
        if injected is not None:
            response, outcome = injected
            state.add_hit(route, request.method, request.path, response.status, outcome)
            return response
        try:
            response = await handler(request)
        except RequestError as exc:
            response = error_response(exc)
            # a 401 on an API call is the normal "fetch a token" signal, not a mistake
            if exc.status != 401 or route == "token":
                problems = exc.problems if isinstance(exc, Invalid) else (exc.message,)
                state.add_violation(
                    "cxone-api", f"{route}: {request.method} {request.path}", problems
                )
        state.add_hit(route, request.method, request.path, response.status, "handled")
        return response

    return run
