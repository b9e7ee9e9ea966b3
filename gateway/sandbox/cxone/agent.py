"""CXone's client role: agent replies, typing and proactive messages sent to the gateway.

Like CXone, the agent side calls with its cached bearer token (none at first), and on a
401 fetches a token from the gateway's token URL and retries once. Every call and every
answer is recorded, and answers that break the BYOC contract become violations.
"""

from __future__ import annotations

import base64
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal, NamedTuple
from urllib.parse import quote, quote_plus, urlencode

import aiohttp
from yarl import URL

from gateway import jsonutil
from gateway.errors import BadRequest
from gateway.sandbox.cxone import validate
from gateway.sandbox.cxone.config import CxoneSimConfig
from gateway.sandbox.cxone.records import CallKind
from gateway.sandbox.cxone.state import SimState

Endpoint = Literal["outbound", "legacy"]


class AgentResult(NamedTuple):
    """The gateway's final answer to one agent action (status 0: no answer at all)."""

    status: int
    body: Any


class ProactiveResult(NamedTuple):
    """The gateway's answer to a proactive message, and the new thread's id."""

    status: int
    body: Any
    thread_id: str


@dataclass(frozen=True)
class _Answer:
    status: int
    body: Any
    is_json: bool
    content_type: str
    cache_control: str
    error: str | None


class Agent:
    """Calls the gateway's integration box the way CXone does."""

    def __init__(self, config: CxoneSimConfig, state: SimState) -> None:
        self.config = config
        self.state = state
        self.box_url = config.gateway_box_url
        self.explicit_token_url = config.gateway_token_url
        self.client_id = config.gateway_client_id
        self.client_secret = config.gateway_client_secret
        self.client_auth = config.gateway_client_auth
        self.token: str | None = None  # the cached bearer token the gateway issued
        self.token_fetches = 0
        self._session: aiohttp.ClientSession | None = None

    @property
    def token_url(self) -> str | None:
        """Return the gateway's token URL (default: <box>/1.0/token)."""
        if self.explicit_token_url:
            return self.explicit_token_url
        return self.box_url.rstrip("/") + "/1.0/token" if self.box_url else None

    async def start(self) -> None:
        """Open the HTTP session."""
        if self._session is None:
            timeout = aiohttp.ClientTimeout(
                total=self.config.gateway_timeout, connect=self.config.gateway_connect_timeout
            )
            ssl_ctx = self.config.gateway_ssl
            connector = aiohttp.TCPConnector(ssl=ssl_ctx if ssl_ctx is not None else True)
            self._session = aiohttp.ClientSession(timeout=timeout, connector=connector)

    async def close(self) -> None:
        """Close the HTTP session."""
        if self._session is not None:
            await self._session.close()
            self._session = None

    # -- actions -------------------------------------------------------------------

    async def reply(
        self,
        channel_id: str,
        thread_id: str,
        text: str,
        *,
        endpoint: Endpoint = "outbound",
        reply_to: str | None = None,
        recipients: Sequence[Mapping[str, Any]] | None = None,
        attachments: Sequence[Mapping[str, Any]] | None = None,
        brand_id: int | str | None = None,
    ) -> AgentResult:
        """Send an agent reply to the gateway; record it on the thread with the platform id."""
        content = {"type": "TEXT", "payload": {"text": text}}
        people = self._recipients(channel_id, thread_id, recipients)
        body: dict[str, Any] = {
            "brand": self._brand(brand_id),
            "thread": {"idOnExternalPlatform": thread_id},
            "messageContent": content,
        }
        if endpoint == "outbound":
            body["endUserRecipients"] = people
            segments: tuple[str, ...] = ("2.0", "channel", channel_id, "outbound")
            check = validate.outbound_answer
        elif endpoint == "legacy":
            body["recipients"] = people
            body["authorUser"] = self._author()
            segments = ("1.0", "posts", thread_id, "messages")
            check = validate.legacy_answer
        else:
            raise BadRequest("endpoint must be outbound or legacy", code="invalid_endpoint")
        if reply_to is not None:
            body["replyToMessage"] = {"idOnExternalPlatform": reply_to}
        body["isReplyToSpecificMessage"] = reply_to is not None
        body["attachments"] = [dict(a) for a in attachments or ()]
        answer = await self._exchange("reply", segments, body, 200, check)
        message_id, platform_thread_id = _reply_ids(endpoint, answer)
        self.state.add_agent_entry(
            channel_id,
            thread_id,
            endpoint=endpoint,
            request_body=body,
            text=text,
            http_status=answer.status,
            answer=answer.body,
            message_id=message_id,
            platform_thread_id=platform_thread_id,
        )
        return AgentResult(answer.status, answer.body)

    async def typing(
        self, channel_id: str, thread_id: str, on: bool, *, brand_id: int | str | None = None
    ) -> AgentResult:
        """Send the agent's typing indicator (sender action); the gateway must answer 204."""
        body = {
            "senderAction": {"action": "isTypingOn" if on else "isTypingOff"},
            "authorUser": self._author(),
            "brand": self._brand(brand_id),
        }
        segments = ("1.0", "channel", channel_id, "thread", thread_id, "sender-action")
        answer = await self._exchange("typing", segments, body, 204, validate.anything)
        if 200 <= answer.status < 300:
            self.state.set_typing(channel_id, thread_id, on)
        return AgentResult(answer.status, answer.body)

    async def proactive(
        self,
        channel_id: str,
        recipient_id: str,
        text: str,
        *,
        recipient_name: str | None = None,
        endpoint: Endpoint = "outbound",
        thread_id: str | None = None,
    ) -> ProactiveResult:
        """Start a conversation on a thread the platform does not know yet."""
        thread_id = thread_id or f"proactive-{uuid.uuid4().hex}"
        person = {
            "idOnExternalPlatform": recipient_id,
            "name": recipient_name or recipient_id,
            "isPrimary": True,
        }
        result = await self.reply(
            channel_id, thread_id, text, endpoint=endpoint, recipients=[person]
        )
        return ProactiveResult(result.status, result.body, thread_id)

    # -- helpers -------------------------------------------------------------------

    def _brand(self, brand_id: int | str | None) -> dict[str, Any]:
        return {"id": self.config.brand_id if brand_id is None else brand_id}

    def _author(self) -> dict[str, Any]:
        cfg = self.config
        return {
            "id": cfg.agent_user_id,
            "firstName": cfg.agent_first_name,
            "surname": cfg.agent_surname,
        }

    def _recipients(
        self, channel_id: str, thread_id: str, given: Sequence[Mapping[str, Any]] | None
    ) -> list[dict[str, Any]]:
        if given is not None:
            return [dict(r) for r in given]
        thread = self.state.threads.get((channel_id, thread_id))
        if thread is None:
            return []
        user = thread.end_user
        name = " ".join(str(user[k]) for k in ("firstName", "lastName") if user.get(k))
        name = name or str(user.get("nickname") or user.get("idOnExternalPlatform", ""))
        return [
            {
                "idOnExternalPlatform": user.get("idOnExternalPlatform"),
                "name": name,
                "isPrimary": True,
            }
        ]

    def _url(self, segments: Sequence[str]) -> URL:
        if not self.box_url:
            raise BadRequest(
                "the gateway's integration box URL is not set", code="gateway_not_configured"
            )
        base = URL(self.box_url)
        path = base.raw_path.rstrip("/") + "".join("/" + quote(s, safe="") for s in segments)
        return base.with_path(path, encoded=True)

    async def _exchange(
        self,
        kind: CallKind,
        segments: Sequence[str],
        body: Mapping[str, Any],
        expected: int,
        check: validate.Check,
    ) -> _Answer:
        """Call with the cached token; on 401 fetch a token and retry once."""
        url = self._url(segments)
        answer = await self._call(kind, url, body, self.token, expected, check, fresh=False)
        if answer.status == 401:
            token = await self._fetch_token()
            if token is not None:
                answer = await self._call(kind, url, body, token, expected, check, fresh=True)
        return answer

    async def _call(
        self,
        kind: CallKind,
        url: URL,
        body: Mapping[str, Any],
        token: str | None,
        expected: int,
        check: validate.Check,
        *,
        fresh: bool,
    ) -> _Answer:
        headers = {"Content-Type": "application/json", "Accept": "application/json"}
        if token is not None:
            headers["Authorization"] = f"Bearer {token}"
        answer = await self._send(url, jsonutil.dumps(body), headers)
        problems: list[str] = []
        if answer.status == 401 and fresh:
            problems.append("401 with the token the gateway just issued")
        if answer.status == 403 and not fresh:
            problems.append(
                "403 for a missing or expired token: CXone refetches tokens on 401 only"
            )
        if 200 <= answer.status < 300:
            problems += _success_problems(answer, expected, check)
        elif answer.status:
            problems += _error_problems(answer)
        self._record(kind, "POST", url, body, answer, token is not None, problems)
        return answer

    async def _fetch_token(self) -> str | None:
        """Fetch a bearer token from the gateway's token URL (client credentials)."""
        url = self.token_url
        if url is None or self.client_id is None or self.client_secret is None:
            raise BadRequest(
                "the gateway's token URL, client id and client secret must be set",
                code="gateway_not_configured",
            )
        grant = {"grant_type": "client_credentials"}
        creds = {"client_id": self.client_id, "client_secret": self.client_secret}
        headers = {"Accept": "application/json"}
        if self.client_auth == "json":
            headers["Content-Type"] = "application/json"
            payload = jsonutil.dumps({**grant, **creds})
        else:
            headers["Content-Type"] = "application/x-www-form-urlencoded"
            if self.client_auth == "basic":
                # RFC 6749 2.3.1: form-encode id and secret before Basic encoding
                user, secret = quote_plus(self.client_id), quote_plus(self.client_secret)
                basic = base64.b64encode(f"{user}:{secret}".encode()).decode()
                headers["Authorization"] = f"Basic {basic}"
                payload = urlencode(grant).encode()
            else:
                payload = urlencode({**grant, **creds}).encode()
        self.token_fetches += 1
        answer = await self._send(URL(url), payload, headers)
        problems: list[str] = []
        if answer.status == 200:
            problems += _success_problems(answer, 200, validate.token_answer)
            if "no-store" not in answer.cache_control.lower():
                problems.append("Cache-Control: a token answer must say no-store (RFC 6749 5.1)")
        elif answer.status:
            problems += _error_problems(answer)
        shown = {**grant, "client_id": self.client_id, "client_secret": "***"}
        self._record("token", "POST", URL(url), shown, answer, False, problems)
        token = answer.body.get("access_token") if isinstance(answer.body, dict) else None
        if answer.status == 200 and isinstance(token, str) and token:
            self.token = token
            return token
        return None

    async def _send(self, url: URL, payload: bytes, headers: Mapping[str, str]) -> _Answer:
        if self._session is None:
            raise RuntimeError("start the CXone simulator before calling the gateway")
        try:
            async with self._session.post(url, data=payload, headers=headers) as resp:
                raw = await resp.read()
                ctype = resp.content_type
                cache = resp.headers.get("Cache-Control", "")
                status = resp.status
        except (aiohttp.ClientError, TimeoutError) as exc:
            return _Answer(0, None, False, "", "", f"{type(exc).__name__}: {exc}")
        if not raw:
            return _Answer(status, None, False, ctype, cache, None)
        try:
            return _Answer(status, jsonutil.loads(raw), True, ctype, cache, None)
        except BadRequest:
            return _Answer(status, raw.decode(errors="replace")[:2000], False, ctype, cache, None)

    def _record(
        self,
        kind: CallKind,
        method: str,
        url: URL,
        body: Any,
        answer: _Answer,
        authorized: bool,
        problems: list[str],
    ) -> None:
        self.state.add_call(
            kind,
            method,
            str(url),
            body,
            status=answer.status,
            response_body=answer.body,
            authorized=authorized,
            violations=tuple(problems),
            error=answer.error,
        )
        if problems:
            self.state.add_violation("gateway", f"{kind}: {method} {url}", tuple(problems))


def _success_problems(answer: _Answer, expected: int, check: validate.Check) -> list[str]:
    problems: list[str] = []
    if answer.status != expected:
        problems.append(f"status: expected {expected}, got {answer.status}")
    if expected == 204:
        if answer.body is not None:
            problems.append("body: a 204 answer has no body")
        return problems
    if not answer.is_json:
        return [*problems, "body: must be JSON"]
    if answer.content_type != "application/json":
        problems.append(f"Content-Type: must be application/json, got {answer.content_type!r}")
    return problems + validate.run(check, answer.body)


def _error_problems(answer: _Answer) -> list[str]:
    if not answer.is_json or validate.run(validate.error_answer, answer.body):
        return [f"body: a {answer.status} answer must be a JSON object with an error code"]
    return []


def _reply_ids(endpoint: Endpoint, answer: _Answer) -> tuple[str | None, str | None]:
    """Return the platform message id and thread id of a successful reply answer."""
    body = answer.body
    if not (200 <= answer.status < 300 and isinstance(body, dict)):
        return None, None
    if endpoint == "legacy":
        message_id = body.get("idOnExternalPlatform")
        return (message_id if isinstance(message_id, str) else None), None
    message = body.get("message")
    thread = body.get("thread")
    message_id = message.get("idOnExternalPlatform") if isinstance(message, dict) else None
    thread_id = thread.get("idOnExternalPlatform") if isinstance(thread, dict) else None
    return (
        message_id if isinstance(message_id, str) else None,
        thread_id if isinstance(thread_id, str) else None,
    )
