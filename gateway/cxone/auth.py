"""Access-key authentication to CXone: token fetch, caching, shared refresh, API discovery.

Flow (specs/cxone-byoc.md 2.1):

1. token endpoint: `auth.token_endpoint`, else `token_endpoint` of
   `{issuer}/.well-known/openid-configuration`;
2. `POST` form `grant_type=password&username=<access key id>&password=<secret>`, with the
   registered app's client id/secret as HTTP Basic when configured; the answer holds
   `access_token`, `id_token` and `expires_in`;
3. DFO base: `settings.api_base`, else `tenantId` from the id_token ->
   `GET {issuer}/.well-known/cxone-configuration?tenantId=...` -> `api_endpoint` + `/dfo/3.0`.

A token is reused until `expires_in - refresh_margin`; concurrent callers share one
in-flight refresh. With a `TokenCache`, several gateway instances share one token.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import logging
from collections.abc import Mapping
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass
from typing import Any, Protocol

import aiohttp
import jwt

from gateway.clock import Clock, system_clock
from gateway.cxone.auth_answers import json_object, oauth_error, positive_number
from gateway.errors import (
    ConfigError,
    GatewayError,
    Problem,
    StoreError,
    UpstreamRejected,
    UpstreamUnavailable,
)
from gateway.http import client_timeout, read_body
from gateway.retry import RetryPolicy, parse_retry_after
from gateway.secrets import REDACTOR
from gateway.settings import CxoneSettings

log = logging.getLogger(__name__)

UPSTREAM = "cxone"
DFO_PATH = "/dfo/3.0"
DEFAULT_EXPIRES_IN = 300.0  # when the token answer omits expires_in (RFC 6749: optional)
_MAX_BODY = 1_048_576  # auth and discovery documents are small
_MAX_MESSAGE = 200


class TokenCache(Protocol):
    """A token store shared by gateway instances (backed by the state store)."""

    async def get(self) -> tuple[str, float] | None:
        """Return (access token, expires_at on the auth clock), or None."""

    async def set(self, token: str, expires_at: float) -> None:
        """Remember a freshly fetched token for the other instances."""

    def lock(self) -> AbstractAsyncContextManager[Any]:
        """Return a cross-instance mutex held while one instance refreshes."""


@dataclass(frozen=True)
class _Token:
    value: str
    expires_at: float
    refresh_at: float


class CxoneAuth:
    """Bearer tokens for the CXone APIs, fetched with an access key."""

    def __init__(
        self,
        session: aiohttp.ClientSession,
        settings: CxoneSettings,
        clock: Clock = system_clock,
        *,
        cache: TokenCache | None = None,
    ) -> None:
        auth = settings.auth
        if not auth.token_endpoint and not auth.issuer:
            raise ConfigError(
                Problem("", "/cxone/auth", "no token endpoint", "set token_endpoint or issuer")
            )
        self._session = session
        self._settings = settings
        self._clock = clock
        self._cache = cache
        self._policy = RetryPolicy(settings.retry)
        self._timeout = client_timeout(settings.timeouts)
        self._issuer = auth.issuer.rstrip("/") if auth.issuer else None
        self._token_endpoint = auth.token_endpoint
        self._api_base = settings.api_base.rstrip("/") if settings.api_base else None
        self._current: _Token | None = None
        self._rejected: str | None = None  # refused by CXone: never take it from the cache
        self._inflight: asyncio.Task[_Token] | None = None
        self._secrets = tuple(
            s.reveal()
            for s in (
                auth.access_key_id,
                auth.access_key_secret,
                auth.client_id,
                auth.client_secret,
            )
            if s
        )
        self.refresh_count = 0  # successful token fetches from CXone (for metrics)
        self.refresh_failures = 0

    @property
    def api_base(self) -> str:
        """The DFO base URL; discovered with the first token unless configured."""
        if self._api_base is None:
            raise RuntimeError("CXone API base not known yet: await resolve_api_base() first")
        return self._api_base

    async def resolve_api_base(self) -> str:
        """Return the DFO base URL, fetching a token (and discovering) when needed."""
        if self._api_base is None:
            await self.token()
        return self.api_base

    def cached(self) -> tuple[str, str] | None:
        """(DFO base URL, token) while the token needs no refresh, else None.

        Every message's CXone call needs both; while they are known this spares the
        coroutines of `resolve_api_base` and `token` (three per inbound event).
        """
        current, base = self._current, self._api_base
        if current is None or base is None or self._clock() >= current.refresh_at:
            return None
        return base, current.value

    async def token(self) -> str:
        """Return a valid access token; concurrent callers share one refresh."""
        current = self._current
        if current is not None and self._clock() < current.refresh_at:
            return current.value
        task = self._inflight
        if task is None:
            task = asyncio.get_running_loop().create_task(self._obtain())
            self._inflight = task
            task.add_done_callback(self._refresh_done)
        # shield: one caller giving up must not cancel the refresh the others wait for
        token = await asyncio.shield(task)
        return token.value

    def invalidate(self, token: str) -> None:
        """Forget `token` after CXone refused it (only if it is still the current one)."""
        self._rejected = token
        if self._current is not None and self._current.value == token:
            self._current = None

    async def aclose(self) -> None:
        """Cancel a refresh still in flight (at shutdown)."""
        task = self._inflight
        if task is not None and not task.done():
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError, GatewayError):
                await task

    # ------------------------------------------------------------------ refresh

    def _refresh_done(self, task: asyncio.Task[_Token]) -> None:
        if self._inflight is task:
            self._inflight = None
        if not task.cancelled() and task.exception() is not None:
            self.refresh_failures += 1  # exception() also marks it retrieved

    async def _obtain(self) -> _Token:
        cache = self._cache
        if cache is None:
            token = await self._fetch()
        else:
            token = await self._shared() or await self._fetch_under_lock(cache)
        self._current = token
        return token

    async def _shared(self) -> _Token | None:
        """Return a usable token another instance fetched (and adopt its API base)."""
        if self._api_base is None:
            # discovery needs an id_token: without a shared API base, fetch our own
            self._api_base = await self._shared_api_base()
            if self._api_base is None:
                return None
        return await self._from_cache()

    async def _fetch_under_lock(self, cache: TokenCache) -> _Token:
        async with contextlib.AsyncExitStack() as stack:
            try:
                await stack.enter_async_context(cache.lock())
            except StoreError as exc:  # the store being down must not stop deliveries
                log.warning("token cache lock unavailable, refreshing alone: %s", exc)
            token = await self._shared()  # another instance may have just refreshed
            if token is None:
                token = await self._fetch()
                await self._cache_set(token)
        return token

    async def _shared_api_base(self) -> str | None:
        get = getattr(self._cache, "get_api_base", None)
        if get is None:
            return None
        try:
            value = await get()
        except StoreError as exc:
            log.warning("token cache unavailable: %s", exc)
            return None
        return value if isinstance(value, str) and value else None

    async def _from_cache(self) -> _Token | None:
        assert self._cache is not None
        try:
            entry = await self._cache.get()
        except StoreError as exc:
            log.warning("token cache unavailable: %s", exc)
            return None
        if entry is None:
            return None
        value, expires_at = entry
        refresh_at = expires_at - self._settings.auth.refresh_margin
        if not value or value == self._rejected or self._clock() >= refresh_at:
            return None
        return _Token(value, expires_at, refresh_at)

    async def _cache_set(self, token: _Token) -> None:
        assert self._cache is not None
        try:
            await self._cache.set(token.value, token.expires_at)
            set_api_base = getattr(self._cache, "set_api_base", None)
            if set_api_base is not None and self._api_base is not None:
                await set_api_base(self._api_base)
        except StoreError as exc:
            log.warning("token cache unavailable: %s", exc)

    async def _fetch(self) -> _Token:
        """Fetch a token from CXone (and discover the API base on the first fetch)."""
        auth = self._settings.auth
        endpoint = await self._discover_token_endpoint()
        headers = {"Accept": "application/json"}
        if auth.client_id and auth.client_secret:
            # raw id:secret, as the working middlewares send it (no form-encoding first)
            pair = f"{auth.client_id.reveal()}:{auth.client_secret.reveal()}".encode()
            headers["Authorization"] = "Basic " + base64.b64encode(pair).decode("ascii")
        form = {
            "grant_type": "password",
            "username": auth.access_key_id.reveal(),
            "password": auth.access_key_secret.reveal(),
        }
        started = self._clock()
        doc = await self._json("POST", endpoint, "token request", data=form, headers=headers)
        access = doc.get("access_token")
        if not isinstance(access, str) or not access:
            raise UpstreamRejected(
                UPSTREAM, "token response has no access_token", code="invalid_token_response"
            )
        lifetime = positive_number(doc.get("expires_in")) or DEFAULT_EXPIRES_IN
        # never refresh later than half-way: a margin above a short lifetime would
        # otherwise make every call fetch a new token
        margin = min(auth.refresh_margin, lifetime / 2)
        token = _Token(access, started + lifetime, started + lifetime - margin)
        if self._api_base is None:
            self._api_base = await self._discover_api_base(doc)
        self.refresh_count += 1
        log.info("fetched a CXone access token (valid %ds)", int(lifetime))
        return token

    # ---------------------------------------------------------------- discovery

    async def _discover_token_endpoint(self) -> str:
        if self._token_endpoint is None:
            assert self._issuer is not None  # checked in __init__
            url = f"{self._issuer}/.well-known/openid-configuration"
            doc = await self._json("GET", url, "OpenID discovery")
            self._token_endpoint = _url_field(doc, "token_endpoint", "OpenID discovery")
        return self._token_endpoint

    async def _discover_api_base(self, token_doc: Mapping[str, Any]) -> str:
        # The claims are read without verifying the signature on purpose: the token came
        # straight from the configured issuer over verified TLS, in answer to our own
        # credentials, so its transport already authenticates it; we only read routing
        # data (tenantId), never make an authorisation decision from it.
        claims: dict[str, Any] = {}
        for name in ("id_token", "access_token"):
            raw = token_doc.get(name)
            if isinstance(raw, str) and raw.count(".") == 2:
                try:
                    claims = jwt.decode(raw, options={"verify_signature": False})
                except jwt.PyJWTError:
                    continue
                if isinstance(claims.get("tenantId"), str) and claims["tenantId"]:
                    break
        tenant = claims.get("tenantId")
        if not isinstance(tenant, str) or not tenant:
            raise UpstreamRejected(
                UPSTREAM,
                "the id_token carries no tenantId; set cxone.api_base",
                code="no_tenant_id",
            )
        issuer = self._issuer
        iss = claims.get("iss")
        if issuer is None and isinstance(iss, str) and iss.startswith(("https://", "http://")):
            issuer = iss.rstrip("/")
        if issuer is None:
            raise UpstreamRejected(
                UPSTREAM, "cannot discover the API endpoint: set cxone.auth.issuer or api_base"
            )
        url = f"{issuer}/.well-known/cxone-configuration"
        doc = await self._json("GET", url, "CXone discovery", params={"tenantId": tenant})
        endpoint = _url_field(doc, "api_endpoint", "CXone discovery")
        base = endpoint.rstrip("/") + DFO_PATH
        log.info("discovered the CXone API base %s", base)
        return base

    # ------------------------------------------------------------------ transport

    async def _json(
        self,
        method: str,
        url: str,
        what: str,
        *,
        data: Mapping[str, str] | None = None,
        params: Mapping[str, str] | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> dict[str, Any]:
        """Make one request and return its JSON object; raise Upstream* on any failure."""
        try:
            async with self._session.request(
                method,
                url,
                data=data,
                params=params,
                headers=headers or {"Accept": "application/json"},
                timeout=self._timeout,
                allow_redirects=False,
            ) as resp:
                status = resp.status
                retry_after_raw = resp.headers.get("Retry-After")
                raw = await read_body(resp, _MAX_BODY, UPSTREAM)
        except Exception as exc:
            if self._policy.classify(None, exc) == "retry":
                kind = "timed out" if isinstance(exc, TimeoutError) else "connection failed"
                raise UpstreamUnavailable(
                    UPSTREAM, f"{what} {kind} ({type(exc).__name__})", code="connection_error"
                ) from exc
            if isinstance(exc, GatewayError):
                raise
            raise UpstreamRejected(
                UPSTREAM, f"{what} failed ({type(exc).__name__})", code="request_failed"
            ) from exc
        verdict = self._policy.classify(status, None)
        if verdict == "ok":
            doc = json_object(raw)
            if doc is None:
                raise UpstreamRejected(
                    UPSTREAM,
                    f"{what}: answer is not a JSON object",
                    status=status,
                    code="invalid_response",
                )
            return doc
        code, detail = oauth_error(raw)
        message = f"{what} refused (HTTP {status})"
        if detail:
            message += f": {self._scrub(detail)}"
        if verdict == "retry":
            raise UpstreamUnavailable(
                UPSTREAM,
                message,
                status=status,
                code=code or f"http_{status}",
                retry_after=parse_retry_after(retry_after_raw, self._clock()),
            )
        raise UpstreamRejected(UPSTREAM, message, status=status, code=code or f"http_{status}")

    def _scrub(self, text: str) -> str:
        for secret in self._secrets:
            if len(secret) >= 4:
                text = text.replace(secret, "***")
        text = REDACTOR.redact(text)
        text = "".join(ch if ch.isprintable() else " " for ch in text)
        return text[:_MAX_MESSAGE]


def _url_field(doc: Mapping[str, Any], key: str, what: str) -> str:
    value = doc.get(key)
    if not isinstance(value, str) or not value.startswith(("https://", "http://")):
        raise UpstreamRejected(UPSTREAM, f"{what}: no usable {key}", code="invalid_discovery")
    return value
