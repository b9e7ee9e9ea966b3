"""CXone authentication as the gateway meets it: discovery, access-key tokens, one-time tokens."""

from __future__ import annotations

import base64
import binascii
import hmac
import secrets
from collections.abc import Callable
from dataclasses import dataclass

import jwt
from aiohttp import web

from gateway.clock import Clock
from gateway.errors import BadRequest, NotFound, Unauthorized
from gateway.sandbox.cxone import validate
from gateway.sandbox.cxone.config import CxoneSimConfig
from gateway.sandbox.cxone.responses import Invalid, json_response, read_json

BaseOf = Callable[[web.Request], str]


@dataclass(frozen=True)
class OneTimeToken:
    """A token the Action URL carries; verified once."""

    brand_id: str
    user_id: str
    expires_at: float


class TokenStore:
    """Bearer tokens and one-time tokens the simulated tenant issued."""

    def __init__(self, clock: Clock) -> None:
        self._clock = clock
        self._access: dict[str, float] = {}
        self._one_time: dict[str, OneTimeToken] = {}

    def issue(self, ttl: float) -> str:
        """Issue a bearer token valid for `ttl` seconds of the clock."""
        token = "cxsim-" + secrets.token_urlsafe(24)
        self._access[token] = self._clock() + ttl
        return token

    def valid(self, token: str) -> bool:
        """Tell whether a bearer token was issued and has not expired."""
        expires_at = self._access.get(token)
        return expires_at is not None and self._clock() < expires_at

    def expire_all(self) -> None:
        """Invalidate every bearer token issued so far."""
        self._access.clear()

    def issue_one_time(self, brand_id: str, user_id: str, ttl: float) -> str:
        """Issue a single-use token for the Action URL."""
        token = secrets.token_urlsafe(18)
        self._one_time[token] = OneTimeToken(brand_id, user_id, self._clock() + ttl)
        return token

    def redeem_one_time(self, token: str, brand_id: str, user_id: str) -> bool:
        """Use up a one-time token; true when it was valid for this brand and user."""
        issued = self._one_time.pop(token, None)
        return (
            issued is not None
            and self._clock() < issued.expires_at
            and hmac.compare_digest(issued.brand_id, brand_id)
            and hmac.compare_digest(issued.user_id, user_id)
        )


def bearer(request: web.Request, tokens: TokenStore) -> str:
    """Return the request's valid bearer token or raise a 401 CXone-style."""
    scheme, _, token = request.headers.get("Authorization", "").partition(" ")
    token = token.strip()
    if scheme.lower() != "bearer" or not token:
        reason = "missing bearer token"
    elif not tokens.valid(token):
        reason = "unknown or expired bearer token"
    else:
        return token
    raise Unauthorized(
        reason,
        code="invalid_token",
        headers={"WWW-Authenticate": 'Bearer error="invalid_token"'},
    )


def _oauth_error(status: int, error: str, description: str) -> BadRequest | Unauthorized:
    body = {"error": error, "error_description": description}
    if status == 401:
        return Unauthorized(
            description,
            code=error,
            body=body,
            headers={"WWW-Authenticate": 'Basic realm="cxone-sim"'},
        )
    return BadRequest(description, code=error, body=body)


def _basic(request: web.Request) -> tuple[str, str] | None:
    scheme, _, encoded = request.headers.get("Authorization", "").partition(" ")
    if scheme.lower() != "basic":
        return None
    try:
        user, sep, password = (
            base64.b64decode(encoded.strip(), validate=True).decode().partition(":")
        )
    except (binascii.Error, UnicodeDecodeError):
        return None
    return (user, password) if sep else None


def _same(a: str, b: str) -> bool:
    return hmac.compare_digest(a.encode(), b.encode())


class AuthApi:
    """Handlers of discovery, the access-key token endpoint and one-time tokens."""

    def __init__(self, config: CxoneSimConfig, tokens: TokenStore, base_of: BaseOf) -> None:
        self.config = config
        self.tokens = tokens
        self.base_of = base_of

    async def openid_configuration(self, request: web.Request) -> web.StreamResponse:
        """GET /.well-known/openid-configuration."""
        base = self.base_of(request)
        return json_response(
            {
                "issuer": base,
                "token_endpoint": f"{base}/auth/token",
                "grant_types_supported": ["password", "client_credentials"],
                "token_endpoint_auth_methods_supported": ["client_secret_basic"],
                "id_token_signing_alg_values_supported": ["HS256"],
            }
        )

    async def cxone_configuration(self, request: web.Request) -> web.StreamResponse:
        """GET /.well-known/cxone-configuration?tenantId=..."""
        tenant = request.query.get("tenantId", "")
        if not tenant:
            raise BadRequest("tenantId query parameter is required", code="invalid_request")
        if tenant != self.config.tenant_id:
            raise NotFound("unknown tenant", code="tenant_not_found")
        base = self.base_of(request)
        return json_response(
            {"tenantId": tenant, "api_endpoint": base, "ui_endpoint": base, "area": "sim"}
        )

    async def token(self, request: web.Request) -> web.StreamResponse:
        """POST /auth/token: grant_type=password with the access key, app client as Basic."""
        if request.content_type != "application/x-www-form-urlencoded":
            raise _oauth_error(400, "invalid_request", "the body must be form-encoded")
        form = await request.post()
        cfg = self.config
        if cfg.require_client_auth:
            client = _basic(request)
            if (
                client is None
                or not _same(client[0], cfg.app_client_id)
                or not _same(client[1], cfg.app_client_secret)
            ):
                raise _oauth_error(401, "invalid_client", "client authentication failed")
        grant = form.get("grant_type")
        username, password = form.get("username"), form.get("password")
        if not isinstance(grant, str) or not grant:
            raise _oauth_error(400, "invalid_request", "grant_type is required")
        if grant != "password":
            raise _oauth_error(400, "unsupported_grant_type", "only grant_type=password")
        if not isinstance(username, str) or not isinstance(password, str):
            raise _oauth_error(400, "invalid_request", "username and password are required")
        if not (_same(username, cfg.access_key_id) and _same(password, cfg.access_key_secret)):
            raise _oauth_error(400, "invalid_grant", "unknown access key or wrong secret")
        now = int(cfg.clock())
        id_token = jwt.encode(
            {
                "iss": self.base_of(request),
                "sub": f"user:{cfg.access_key_id}",
                "aud": cfg.app_client_id,
                "tenantId": cfg.tenant_id,
                "iat": now,
                "exp": now + cfg.token_ttl,
            },
            cfg.id_token_key,
            algorithm="HS256",
        )
        return json_response(
            {
                "access_token": self.tokens.issue(cfg.token_ttl),
                "id_token": id_token,
                "token_type": "Bearer",
                "expires_in": cfg.token_ttl,
            },
            headers={"Cache-Control": "no-store", "Pragma": "no-cache"},
        )

    async def verify_one_time_token(self, request: web.Request) -> web.StreamResponse:
        """POST /dfo/3.0/one-time-token/verification (no bearer: the token is the proof)."""
        body = await read_json(request)
        problems = validate.run(validate.one_time_token, body)
        if problems:
            raise Invalid("one-time token verification", problems)
        brand, user = str(body["brandId"]), str(body["userId"])
        if not self.tokens.redeem_one_time(body["token"], brand, user):
            raise Unauthorized("unknown, used or expired one-time token", code="invalid_token")
        return json_response(
            {
                "brand": {"id": body["brandId"]},
                "user": {"id": body["userId"]},
                "accessToken": self.tokens.issue(self.config.token_ttl),
            }
        )
