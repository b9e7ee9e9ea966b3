"""The exception tree of byoc-gateway.

    GatewayError                      base of everything the gateway raises on purpose
    ├── ConfigError                   a file an operator wrote is wrong (file, place, reason)
    │   ├── SecretError               a ${VAR} reference cannot be resolved
    │   └── MappingError              a mapping does not load, compile or pass its tests
    ├── MappingRuntimeError           a mapping failed on one message (missing field, ...)
    ├── RequestError                  a caller sent something we refuse (-> 4xx)
    │   ├── BadRequest                400, stable `error` code in the body
    │   ├── Unauthorized              401 (+ WWW-Authenticate)
    │   ├── InvalidClient             401 OAuth client authentication failed
    │   ├── Forbidden                 403
    │   ├── NotFound                  404
    │   ├── RequestTimeout            408 the body did not arrive in time
    │   ├── Gone                      410 a media URL that was valid once
    │   ├── PayloadTooLarge           413
    │   ├── UnsupportedEncoding       415
    │   ├── UnprocessableEntity       422
    │   └── BadGateway                502 the platform did not give a proxied file
    ├── UpstreamError                 CXone or a platform answered badly or not at all
    │   ├── UpstreamUnavailable       retryable: connection error, timeout, 429, 5xx
    │   └── UpstreamRejected          final: any other non-2xx, or a failure inside a 2xx
    └── StoreError                    the state backend failed

Only `gateway.cli` turns these into exit codes; only `gateway.http_errors` turns
them into HTTP responses.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


class GatewayError(Exception):
    """Base class of every error the gateway raises on purpose."""


@dataclass
class Problem:
    """One located problem in an operator's file."""

    file: str
    where: str  # JSON pointer or "line N" or route name; "" when the whole file
    reason: str
    fix: str = ""
    line: int | None = None

    def __str__(self) -> str:
        loc = self.file
        if self.line is not None:
            loc += f":{self.line}"
        if self.where:
            loc += f" at {self.where}"
        text = f"{loc}: {self.reason}"
        if self.fix:
            text += f" (fix: {self.fix})"
        return text

    def as_dict(self) -> dict[str, Any]:
        return {
            "file": self.file,
            "line": self.line,
            "where": self.where,
            "reason": self.reason,
            "fix": self.fix,
        }


class ConfigError(GatewayError):
    """An operator's file is wrong; carries one or more located problems."""

    def __init__(self, problems: list[Problem] | Problem | str) -> None:
        if isinstance(problems, str):
            problems = [Problem(file="", where="", reason=problems)]
        elif isinstance(problems, Problem):
            problems = [problems]
        self.problems: list[Problem] = problems
        super().__init__("; ".join(str(p) for p in problems))


class SecretError(ConfigError):
    """A `${VAR}` secret reference cannot be resolved."""


class MappingError(ConfigError):
    """A mapping file does not load, compile or pass its inline tests."""


class MappingRuntimeError(GatewayError):
    """A mapping failed while handling one message (missing field, bad value)."""

    def __init__(self, mapping: str, route: str, reason: str) -> None:
        self.mapping = mapping
        self.route = route
        self.reason = reason
        super().__init__(f"mapping {mapping!r}, route {route!r}: {reason}")


class RequestError(GatewayError):
    """A caller sent something we refuse; becomes a JSON 4xx response."""

    status = 400
    code = "invalid_request"

    def __init__(
        self,
        message: str,
        *,
        code: str | None = None,
        headers: dict[str, str] | None = None,
        body: dict[str, Any] | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        if code is not None:
            self.code = code
        self.headers = headers or {}
        # `body`, when given, replaces the default {"error", "message"} body
        # (the OAuth endpoint needs RFC 6749 bodies).
        self.body = body


class BadRequest(RequestError):
    status = 400
    code = "invalid_request"


class Unauthorized(RequestError):
    status = 401
    code = "unauthorized"


class InvalidClient(RequestError):
    status = 401
    code = "invalid_client"


class Forbidden(RequestError):
    status = 403
    code = "forbidden"


class NotFound(RequestError):
    status = 404
    code = "not_found"


class RequestTimeout(RequestError):
    """408: the body did not arrive within the listener's read timeout."""

    status = 408
    code = "request_timeout"


class Gone(RequestError):
    """410: a media URL that was valid once."""

    status = 410
    code = "media_url_expired"


class PayloadTooLarge(RequestError):
    status = 413
    code = "payload_too_large"


class UnsupportedEncoding(RequestError):
    """415: a Content-Encoding other than gzip, deflate or identity."""

    status = 415
    code = "unsupported_encoding"


class UnprocessableEntity(RequestError):
    status = 422
    code = "unprocessable"


class BadGateway(RequestError):
    """502: the platform did not give a file the gateway proxies."""

    status = 502
    code = "media_unavailable"


class UpstreamError(GatewayError):
    """CXone or a platform answered badly or not at all."""

    def __init__(
        self,
        upstream: str,
        message: str,
        *,
        status: int | None = None,
        code: str | None = None,
        retry_after: float | None = None,
    ) -> None:
        super().__init__(f"{upstream}: {message}")
        self.upstream = upstream
        self.message = message
        self.status = status
        self.code = code
        self.retry_after = retry_after


class UpstreamUnavailable(UpstreamError):
    """Retryable: connection error, timeout, 429, 502-504 (per the retry policy)."""


class UpstreamRejected(UpstreamError):
    """Final: the upstream refused the request; retrying will not help."""


class StoreError(GatewayError):
    """The state backend failed."""
