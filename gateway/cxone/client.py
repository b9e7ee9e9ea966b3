"""The CXone DFO 3.0 API client: one attempt per call, plus the single 401 refetch.

Retries over time belong to the caller (the queue worker calls `call` once per
attempt); this client only classifies the outcome through `RetryPolicy`:
retryable -> `UpstreamUnavailable` (with `retry_after`), final -> `UpstreamRejected`.
Error messages carry what CXone said, truncated, and never the request body.
"""

from __future__ import annotations

import logging
import ssl
from collections.abc import Mapping
from typing import Any, NamedTuple
from urllib.parse import quote, urlencode

from gateway import jsonutil
from gateway.clock import Clock, system_clock
from gateway.cxone.auth import UPSTREAM, CxoneAuth
from gateway.errors import GatewayError, UpstreamRejected, UpstreamUnavailable
from gateway.http_pool import MAX_ANSWER_BYTES, HttpPool
from gateway.retry import RetryPolicy, parse_retry_after
from gateway.secrets import REDACTOR
from gateway.settings import CxoneSettings

log = logging.getLogger(__name__)

_MAX_MESSAGE = 200
_MIN_ECHO = 4  # request strings shorter than this are not worth masking
_MESSAGE_KEYS = ("error_description", "message", "errorMessage", "detail", "title")
_CODE_KEYS = ("error", "code", "errorCode")


class CxoneResult(NamedTuple):
    """A successful (2xx) CXone answer; `body` is parsed JSON, or None when empty or not JSON."""

    status: int
    body: Any
    headers: Mapping[str, str]


def seg(value: str | int) -> str:
    """Quote one path segment (nothing is safe: '/', '?', '#' are escaped too)."""
    return quote(str(value), safe="")


class CxoneClient:
    """Calls the DFO API with a bearer token from `CxoneAuth`."""

    def __init__(
        self,
        http: HttpPool,
        settings: CxoneSettings,
        auth: CxoneAuth,
        clock: Clock = system_clock,
        ssl_context: ssl.SSLContext | None = None,
    ) -> None:
        """`ssl_context` (gateway.tls.client_context) carries CXone's CAs and the client cert."""
        if not isinstance(auth, CxoneAuth):
            raise TypeError("CxoneClient(http, settings, auth, clock=..., ssl_context=...)")
        self._http = http
        self._settings = settings
        self._clock = clock
        self._ssl = ssl_context
        self.auth = auth
        self.policy = RetryPolicy(settings.retry)

    async def call(
        self,
        method: str,
        path: str,
        body: Any | None = None,
        *,
        params: Mapping[str, str] | None = None,
        refetch_on_401: bool = True,
    ) -> CxoneResult:
        """Make one call to `{dfo base}{path}`; refetch the token and retry once on a 401.

        `refetch_on_401=False` is for calls whose 401 is about something else than the
        gateway's token (a one-time token): it must not cost the gateway its token.
        """
        if not path.startswith("/"):
            raise ValueError(f"CXone path must start with '/': {path!r}")
        known = self.auth.cached()
        if known is None:
            base = await self.auth.resolve_api_base()
            token = await self.auth.token()
        else:
            base, token = known
        url = base + path
        data = jsonutil.dumps(body) if body is not None else None
        what = f"{method} {path}"
        status, headers, raw = await self._send(method, url, what, data, token, params)
        if status == 401 and refetch_on_401:  # CXone drops tokens early: fetch anew, once
            self.auth.invalidate(token)
            log.info("CXone refused the token on %s; fetching a new one", what)
            token = await self.auth.token()
            status, headers, raw = await self._send(method, url, what, data, token, params)
            if status == 401:
                self.auth.invalidate(token)
        return self._outcome(what, status, headers, raw, body)

    async def _send(
        self,
        method: str,
        url: str,
        what: str,
        data: bytes | None,
        token: str,
        params: Mapping[str, str] | None,
    ) -> tuple[int, Mapping[str, str], bytes]:
        headers = {"Authorization": f"Bearer {token}", "Accept": "application/json"}
        if data is not None:
            headers["Content-Type"] = "application/json"
        if params:
            url += ("&" if "?" in url else "?") + urlencode(params)
        try:
            # no redirect is followed: the bearer token never goes to another host
            answer = await self._http.request(
                method,
                url,
                headers=headers,
                body=data,
                timeouts=self._settings.timeouts,
                max_body=MAX_ANSWER_BYTES,
                upstream=UPSTREAM,
                ssl_context=self._ssl,
            )
            return answer.status, answer.headers, answer.body
        except GatewayError:
            raise
        except Exception as exc:
            name = type(exc).__name__
            if self.policy.classify(None, exc) == "retry":
                if isinstance(exc, TimeoutError):
                    raise UpstreamUnavailable(
                        UPSTREAM, f"{what} timed out ({name})", code="timeout"
                    ) from exc
                raise UpstreamUnavailable(
                    UPSTREAM, f"{what} connection failed ({name})", code="connection_error"
                ) from exc
            raise UpstreamRejected(
                UPSTREAM, f"{what} failed ({name})", code="request_failed"
            ) from exc

    def _outcome(
        self, what: str, status: int, headers: Mapping[str, str], raw: bytes, request_body: Any
    ) -> CxoneResult:
        parsed = _parse(raw)
        verdict = self.policy.classify(status, None)
        if verdict == "ok":
            return CxoneResult(status, parsed, headers)
        code, detail = _error_details(parsed)
        message = f"{what} answered HTTP {status}"
        if detail:
            message += f": {_clean(detail, request_body)}"
        code = code or f"http_{status}"
        if verdict == "retry":
            retry_after = parse_retry_after(headers.get("Retry-After"), self._clock())
            raise UpstreamUnavailable(
                UPSTREAM, message, status=status, code=code, retry_after=retry_after
            )
        raise UpstreamRejected(UPSTREAM, message, status=status, code=code)

    # ------------------------------------------------------------------ typed helpers

    async def create_message(self, channel_id: str, body: Mapping[str, Any]) -> CxoneResult:
        """Post a customer message to a channel (creates thread, end user and contact)."""
        return await self.call("POST", f"/channels/{seg(channel_id)}/messages", body)

    async def message_status(
        self, channel_id: str, message_id: str, body: Mapping[str, Any]
    ) -> CxoneResult:
        """Report delivered / seen / failed for a message the gateway sent."""
        path = f"/channels/{seg(channel_id)}/messages/{seg(message_id)}/status"
        return await self.call("PUT", path, body)

    async def contact_status(self, contact_id: str | int, status: str) -> CxoneResult:
        """Set a contact's status (e.g. `closed` when the customer ended the chat)."""
        return await self.call("PUT", f"/contacts/{seg(contact_id)}/status", {"status": status})

    async def list_channels(self, params: Mapping[str, str] | None = None) -> list[dict[str, Any]]:
        """Return the channels (points of contact) of the tenant, one page."""
        result = await self.call("GET", "/channels", params=params)
        return _channel_list(result.body)

    async def upsert_channel(self, body: Mapping[str, Any]) -> CxoneResult:
        """Create or update a channel (CXone upserts by `id`)."""
        return await self.call("POST", "/channels", body)

    async def delete_channel(self, channel_id: str) -> CxoneResult:
        """Delete a channel."""
        return await self.call("DELETE", f"/channels/{seg(channel_id)}")

    async def verify_one_time_token(
        self, brand_id: str | int, user_id: str | int, token: str
    ) -> dict[str, Any]:
        """Verify the one-time token of an Action URL visit; return `{brand, user, accessToken}`."""
        body = {
            "brandId": brand_id,
            "userId": user_id,
            "token": token,
            "purpose": "channel-integration",
        }
        # a 401 here refuses the one-time token, not ours
        result = await self.call("POST", "/one-time-token/verification", body, refetch_on_401=False)
        if not isinstance(result.body, dict):
            raise UpstreamRejected(
                UPSTREAM,
                "one-time token verification: answer is not a JSON object",
                status=result.status,
                code="invalid_response",
            )
        return result.body


def _parse(raw: bytes) -> Any:
    if not raw.strip():
        return None
    try:
        return jsonutil.loads(raw)
    except GatewayError:
        return None


def _error_details(doc: Any, depth: int = 0) -> tuple[str | None, str]:
    """Find (code, message) in the common error shapes (OAuth, DFO, RFC 9457, lists)."""
    if depth > 4:
        return None, ""
    if isinstance(doc, str):
        return None, doc
    if isinstance(doc, list):
        for item in doc[:5]:
            code, message = _error_details(item, depth + 1)
            if message:
                return code, message
        return None, ""
    if not isinstance(doc, dict):
        return None, ""
    if isinstance(doc.get("error"), dict):  # {"error": {"code": ..., "message": ...}}
        return _error_details(doc["error"], depth + 1)
    code = next((str(doc[k]) for k in _CODE_KEYS if _scalar(doc.get(k))), None)
    message = next((doc[k] for k in _MESSAGE_KEYS if isinstance(doc.get(k), str) and doc[k]), "")
    if not message and "errors" in doc:
        inner_code, message = _error_details(doc["errors"], depth + 1)
        code = code or inner_code
    return code, message


def _scalar(value: Any) -> bool:
    return isinstance(value, str | int) and not isinstance(value, bool) and str(value) != ""


def _request_strings(body: Any, out: set[str], depth: int = 0) -> set[str]:
    if depth > 20:
        return out
    if isinstance(body, str):
        if len(body) >= _MIN_ECHO:
            out.add(body)
    elif isinstance(body, Mapping):
        for value in body.values():
            _request_strings(value, out, depth + 1)
    elif isinstance(body, list | tuple):
        for value in body:
            _request_strings(value, out, depth + 1)
    return out


def _clean(text: str, request_body: Any) -> str:
    """Mask request values CXone echoed (customer text), secrets and control characters."""
    for value in sorted(_request_strings(request_body, set()), key=len, reverse=True):
        text = text.replace(value, "***")
    text = REDACTOR.redact(text)
    text = "".join(ch if ch.isprintable() else " " for ch in text)
    if len(text) > _MAX_MESSAGE:
        text = text[: _MAX_MESSAGE - 1] + "…"
    return text


def _channel_list(body: Any) -> list[dict[str, Any]]:
    if isinstance(body, dict):
        for key in ("data", "channels", "items", "results"):
            if isinstance(body.get(key), list):
                body = body[key]
                break
    if not isinstance(body, list):
        return []
    return [item for item in body if isinstance(item, dict)]
