"""The OAuth2 token endpoint CXone calls, and bearer verification (RFC 6749 / 6750).

Tokens are HS256 JWTs signed with the integration's signing key, so every gateway
instance can verify them without shared state. Two client secrets may be valid at once
(rotation). Failed attempts are slowed down per source address.
"""

from __future__ import annotations

import base64
import binascii
import secrets
import urllib.parse
from collections import OrderedDict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import jwt

from gateway import jsonutil
from gateway.clock import Clock, system_clock
from gateway.errors import BadRequest, InvalidClient, RequestError, Unauthorized
from gateway.secrets import Secret
from gateway.settings import IntegrationSettings

_ISSUER = "byoc-gateway"
_REALM = 'Bearer realm="byoc-gateway"'
_VERIFIED_MAX = 1024  # verified tokens remembered (a tenant holds a handful at a time)


@dataclass(frozen=True)
class TokenGrant:
    access_token: str = field(repr=False)  # a bearer credential: never in a repr
    expires_in: int = 0


def _oauth_error(
    cls: type[RequestError], code: str, description: str, headers: dict[str, str] | None = None
) -> RequestError:
    return cls(
        description,
        code=code,
        headers={"Cache-Control": "no-store", "Pragma": "no-cache", **(headers or {})},
        body={"error": code, "error_description": description},
    )


class FailureThrottle:
    """Count failed token requests per source; after `free` failures, ask for a delay."""

    def __init__(self, free: int = 5, window: float = 60.0, clock: Clock = system_clock) -> None:
        self._free = free
        self._window = window
        self._clock = clock
        self._failures: OrderedDict[str, list[float]] = OrderedDict()

    def penalty(self, source: str) -> float:
        """Seconds the next attempt from `source` should wait (0 when under the limit)."""
        now = self._clock()
        recent = [t for t in self._failures.get(source, []) if now - t < self._window]
        over = len(recent) - self._free
        return 0.0 if over < 0 else min(2.0 ** min(over, 4) * 0.25, 4.0)

    def failed(self, source: str) -> None:
        now = self._clock()
        times = [t for t in self._failures.pop(source, []) if now - t < self._window]
        times.append(now)
        self._failures[source] = times[-64:]
        while len(self._failures) > 10_000:  # bounded memory under a spray of sources
            self._failures.popitem(last=False)

    def succeeded(self, source: str) -> None:
        self._failures.pop(source, None)


class TokenIssuer:
    """Issue and verify the bearer tokens CXone uses to call the gateway."""

    def __init__(
        self, integrations: Sequence[IntegrationSettings], clock: Clock = system_clock
    ) -> None:
        self._by_client = {i.client_id: i for i in integrations}
        self._by_name = {i.name: i for i in integrations}
        self._clock = clock
        # compared against for unknown client ids, so both paths do the same work
        self._decoy = (Secret(secrets.token_urlsafe(32), "decoy"),)
        # tokens whose signature and claims were checked: token -> (integration, exp).
        # CXone reuses one token for an hour, so a reply costs a dict lookup instead of
        # two JWT decodes. A reload builds a new issuer, so rotated keys start empty.
        self._verified: OrderedDict[str, tuple[IntegrationSettings, float]] = OrderedDict()

    def integration_of(self, client_id: str) -> IntegrationSettings | None:
        """The integration a client id belongs to (client ids are not secret)."""
        return self._by_client.get(client_id)

    def parse_request(
        self, content_type: str, raw: bytes, authorization: str | None
    ) -> tuple[str, str, str]:
        """Return (grant_type, client_id, client_secret) from JSON, form and/or Basic auth."""
        params: Mapping[str, Any]
        if not raw.strip():
            params = {}
        elif "json" in content_type:
            try:
                parsed = jsonutil.loads(raw)
            except BadRequest:
                raise _oauth_error(
                    BadRequest, "invalid_request", "the body is not valid JSON"
                ) from None
            if not isinstance(parsed, dict):
                raise _oauth_error(BadRequest, "invalid_request", "the body must be a JSON object")
            params = parsed
        elif "x-www-form-urlencoded" in content_type or not content_type:
            try:
                params = dict(urllib.parse.parse_qsl(raw.decode("utf-8"), strict_parsing=True))
            except (UnicodeDecodeError, ValueError):
                raise _oauth_error(
                    BadRequest, "invalid_request", "the form body is malformed"
                ) from None
        else:
            raise _oauth_error(
                BadRequest, "invalid_request", "send JSON or application/x-www-form-urlencoded"
            )
        client_id = params.get("client_id")
        client_secret = params.get("client_secret")
        if authorization and authorization[:6].lower() == "basic ":
            try:
                decoded = base64.b64decode(authorization[6:].strip(), validate=True).decode("utf-8")
                user, _, password = decoded.partition(":")
            except (binascii.Error, UnicodeDecodeError):
                raise _oauth_error(
                    InvalidClient,
                    "invalid_client",
                    "malformed Basic credentials",
                    {"WWW-Authenticate": 'Basic realm="byoc-gateway"'},
                ) from None
            client_id = urllib.parse.unquote(user)
            client_secret = urllib.parse.unquote(password)
        grant = params.get("grant_type")
        if not isinstance(grant, str) or not grant:
            raise _oauth_error(BadRequest, "invalid_request", "grant_type is required")
        if grant != "client_credentials":
            raise _oauth_error(
                BadRequest, "unsupported_grant_type", "only client_credentials is supported"
            )
        if not isinstance(client_id, str) or not isinstance(client_secret, str):
            raise _oauth_error(
                InvalidClient,
                "invalid_client",
                "client authentication failed",
                {"WWW-Authenticate": 'Basic realm="byoc-gateway"'},
            )
        return grant, client_id, client_secret

    def issue(self, client_id: str, client_secret: str) -> TokenGrant:
        """Check the client's credentials and sign a token; InvalidClient otherwise."""
        integ = self._by_client.get(client_id)
        # Constant-time comparisons against every secret (both during a rotation), and a
        # decoy for unknown clients, so timing tells nothing about the secrets.
        candidates = integ.client_secrets if integ else self._decoy
        ok = False
        for secret in candidates:
            ok |= secret.matches(client_secret)
        if integ is None or not ok:
            raise _oauth_error(
                InvalidClient,
                "invalid_client",
                "client authentication failed",
                {"WWW-Authenticate": 'Basic realm="byoc-gateway"'},
            )
        now = int(self._clock())
        claims = {
            "iss": _ISSUER,
            "aud": integ.name,
            "sub": integ.client_id,
            "iat": now,
            "exp": now + integ.token_ttl,
            "jti": secrets.token_urlsafe(12),
        }
        token = jwt.encode(claims, integ.token_signing_key.reveal(), algorithm="HS256")
        return TokenGrant(access_token=token, expires_in=integ.token_ttl)

    def verify(self, authorization: str | None) -> IntegrationSettings:
        """Return the integration a bearer token belongs to; Unauthorized (401) otherwise."""
        if not authorization or authorization[:7].lower() != "bearer ":
            raise Unauthorized(
                "a bearer token is required",
                code="invalid_token",
                headers={"WWW-Authenticate": _REALM},
            )
        token = authorization[7:].strip()
        known = self._verified.get(token)
        if known is not None and known[1] > self._clock():
            return known[0]
        try:
            unverified = jwt.decode(token, options={"verify_signature": False})
            integ = self._by_name.get(str(unverified.get("aud")))
            if integ is None:
                raise jwt.InvalidTokenError("unknown audience")
            claims = jwt.decode(
                token,
                integ.token_signing_key.reveal(),
                algorithms=["HS256"],
                audience=integ.name,
                issuer=_ISSUER,
                options={
                    "require": ["exp", "iat", "sub", "aud", "iss"],
                    "verify_iat": False,
                    "verify_exp": False,  # checked below against the injectable clock
                },
            )
            try:
                expires = float(claims["exp"])
            except (TypeError, ValueError):
                raise jwt.InvalidTokenError("exp is not a number") from None
            if expires <= self._clock():
                raise jwt.ExpiredSignatureError("expired")
        except jwt.ExpiredSignatureError:
            raise Unauthorized(
                "the token has expired",
                code="invalid_token",
                headers={
                    "WWW-Authenticate": _REALM
                    + ', error="invalid_token", error_description="expired"'
                },
            ) from None
        except jwt.InvalidTokenError:
            raise Unauthorized(
                "the token is not valid",
                code="invalid_token",
                headers={"WWW-Authenticate": _REALM + ', error="invalid_token"'},
            ) from None
        if claims.get("sub") != integ.client_id:
            raise Unauthorized(
                "the token is not valid",
                code="invalid_token",
                headers={"WWW-Authenticate": _REALM + ', error="invalid_token"'},
            )
        self._verified[token] = (integ, expires)
        if len(self._verified) > _VERIFIED_MAX:
            self._verified.popitem(last=False)
        return integ
