"""The frozen values the mapping engine hands to the runtime (docs/internals.md section 1)."""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, Literal, NamedTuple, Protocol
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from gateway.errors import UnprocessableEntity
from gateway.secrets import Secret
from gateway.settings import Timeouts, TlsClientSettings

Action = Literal["create_message", "message_status", "contact_status"]
Kind = Literal["reply", "sender_action"]
Endpoint = Literal["legacy", "outbound", "sender_action"]

_SECRET_KEY = re.compile(r"secret|token|password|key|auth", re.IGNORECASE)


class NoRoute(UnprocessableEntity):
    """No outbound route of the mapping matches the CXone call."""

    code = "no_route"


class MaskedMapping(Mapping[str, Any]):
    """A read-only mapping whose repr hides values under secret-looking keys."""

    __slots__ = ("_data",)

    def __init__(self, data: Mapping[str, Any]) -> None:
        self._data = dict(data)

    def __getitem__(self, key: str) -> Any:
        return self._data[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self._data)

    def __len__(self) -> int:
        return len(self._data)

    def __repr__(self) -> str:
        shown = {k: ("***" if _SECRET_KEY.search(k) else v) for k, v in self._data.items()}
        return f"MaskedMapping({shown!r})"

    __str__ = __repr__


@dataclass(frozen=True)
class AuthSpec:
    """How every platform request authenticates: bearer, basic, header or query."""

    kind: Literal["bearer", "basic", "header", "query"]
    value: Secret  # the token, the password (basic), or the header/query value
    name: str = ""  # header or query parameter name; the username for basic
    username: Secret | None = None


@dataclass(frozen=True)
class AttachmentLimits:
    """What a channel accepts as outbound attachments."""

    max_bytes: int | None = None
    content_types: tuple[str, ...] = ()  # patterns such as image/* ; empty: any
    max_count: int | None = None


@dataclass(frozen=True)
class ChannelSpec:
    """One channel role of a mapping and the CXone channel flags it is created with."""

    role: str
    cxone: Mapping[str, Any]  # name, isPrivate, hasTreeStructure, ...
    attachments: AttachmentLimits | None  # None: the channel takes no attachments


@dataclass(frozen=True)
class PlatformSpec:
    """The platform's REST API as the platform client needs it."""

    base_url: str
    auth: AuthSpec | None
    timeouts: Timeouts
    idempotency_header: str | None
    tls: TlsClientSettings
    headers: Mapping[str, str] = field(default_factory=dict)  # sent with every request


@dataclass(frozen=True)
class WebhookSpec:
    """Where and how the platform delivers events."""

    path: str
    format: Literal["json", "form"]
    signature: Mapping[str, Any] = field(repr=False)  # schema-validated, secrets resolved
    max_body_bytes: int | None = None  # None: the listener's limit
    # the public base URL the platform calls (behind a proxy); None: the listener's
    public_url: str | None = None
    # Routing an item again later (from the queue) needs what surrounded it: the inbound
    # routes call parent()/parents()/delivery() (needs_ancestors) or headers()/query()
    # (needs_request).
    needs_ancestors: bool = False
    needs_request: bool = False


@dataclass(frozen=True)
class HandshakeReply:
    """A synchronous answer to the platform (subscription handshake or fixed response)."""

    status: int
    content_type: str
    body: bytes


class InboundItem(NamedTuple):
    """One event of a delivery, with what surrounds it."""

    item: Any
    parent: Any
    delivery: Any
    position: int  # in the delivery, from 0
    headers: Mapping[str, str]
    query: Mapping[str, str]
    parents: tuple[Any, ...] = ()  # nearest first (nested `foreach` levels)


class Ignored(NamedTuple):
    """An item acknowledged and counted but not forwarded."""

    mapping: str
    route: str
    dedupe_key: str | None


class InboundCall(NamedTuple):
    """A rendered call to CXone for one inbound item."""

    mapping: str
    route: str
    channel: str
    action: Action
    thread_id: str
    message_id: str | None
    dedupe_key: str | None
    method: str
    path: str
    body: dict[str, Any]
    fields: Mapping[str, Any]
    # Routed at intake only far enough for the queue (thread, dedupe, channel): the body
    # is rendered by the queue worker, where lookups may call the platform, media URLs
    # are signed and thread state is written (CompiledMapping.render_inbound).
    deferred: bool = False
    state: tuple[StateValue, ...] = ()  # to store under the thread once CXone accepted
    lookups: tuple[LookupOutcome, ...] = ()  # how each lookup of the route went


@dataclass(frozen=True)
class StateValue:
    """One value an inbound route stores under its thread (`state:`)."""

    name: str
    value: Any
    ttl: float  # seconds from when it is stored
    expires_at: float | None = None  # epoch seconds the message itself gives, if earlier


class ThreadState(NamedTuple):
    """The values stored under a thread, as an outbound route sees them."""

    values: Mapping[str, Any] = MappingProxyType({})
    expired: frozenset[str] = frozenset()  # stored once, since expired


LookupResult = Literal["fetched", "cached", "failed", "skipped"]


@dataclass(frozen=True)
class LookupOutcome:
    """How one lookup went for one message (`failed`: the fallback was used)."""

    name: str
    result: LookupResult
    reason: str = ""


class OutboundContext(NamedTuple):
    """A call CXone made to the gateway (reply or sender action)."""

    kind: Kind
    endpoint: Endpoint
    channel: str
    channel_id: str
    params: Mapping[str, str]
    body: Any
    state: ThreadState = ThreadState()  # loaded before routing


class PlatformRequest(NamedTuple):
    """One rendered request to the platform; repr masks credentials and hides the body."""

    method: str
    url: str
    headers: Mapping[str, str]
    body: bytes | None
    masked: tuple[str, ...] = ()  # header and query names to mask in the repr

    def __repr__(self) -> str:
        masked = {m.lower() for m in self.masked} | {"authorization", "proxy-authorization"}
        headers = {k: ("***" if k.lower() in masked else v) for k, v in self.headers.items()}
        size = "None" if self.body is None else f"<{len(self.body)} bytes>"
        return (
            f"PlatformRequest(method={self.method!r}, url={mask_url(self.url, masked)!r}, "
            f"headers={headers!r}, body={size})"
        )

    # str() is this repr: a tuple has no __str__ of its own


def mask_url(url: str, names: set[str]) -> str:
    """Hide the values of the named query parameters (credentials) in a URL."""
    parts = urlsplit(url)
    if not parts.query:
        return url
    pairs = [
        (k, "***" if k.lower() in names else v)
        for k, v in parse_qsl(parts.query, keep_blank_values=True)
    ]
    return urlunsplit(parts._replace(query=urlencode(pairs, safe="*")))


class OutboundPlan(NamedTuple):
    """The requests one CXone call turns into (several when a long text is split)."""

    mapping: str
    route: str
    ctx: OutboundContext
    fields: Mapping[str, Any]
    requests: tuple[PlatformRequest, ...]
    # the route uploads attachments first: `requests` is empty until
    # CompiledMapping.upload_attachments has sent these and rendered the requests
    pending_uploads: tuple[Mapping[str, Any], ...] = ()


class PlatformResponse(NamedTuple):
    """What the platform answered to one request."""

    status: int
    headers: Mapping[str, str]
    body: Any  # parsed JSON, or text, or None

    def scope(self) -> dict[str, Any]:
        """What `success` / `retryable` expressions read: {status, headers, body}."""
        return {"status": self.status, "headers": dict(self.headers), "body": self.body}


@dataclass(frozen=True)
class FetchedFile:
    """A file read into memory (an outbound attachment on its way to the platform)."""

    content: bytes
    content_type: str
    filename: str | None = None


class InboundIO(Protocol):
    """What rendering an inbound message in the queue worker may do beyond computing."""

    async def cached(self, key: str) -> Any | None:
        """A lookup's result fields cached under `key`, or None."""

    async def remember(self, key: str, value: Any, ttl: float) -> None:
        """Cache a lookup's result fields."""

    async def send(self, lookup: str, request: PlatformRequest, within: float) -> PlatformResponse:
        """Send a lookup's request; raise UpstreamError when there is no answer in time."""

    def media_url(self, fields: Mapping[str, Any]) -> str:
        """A signed URL on the gateway that streams one platform file."""


class UploadIO(Protocol):
    """What uploading outbound attachments needs: fetch from CXone, send to the platform."""

    async def fetch(self, url: str, max_bytes: int, within: float) -> FetchedFile:
        """Read one of CXone's attachment URLs (UnprocessableEntity when too large)."""

    async def send(self, request: PlatformRequest, index: int, within: float) -> PlatformResponse:
        """Send the upload of attachment `index`; raise UpstreamError without an answer."""


@dataclass(frozen=True)
class TestFailure:
    """One inline test that did not pass, with a readable diff."""

    __test__ = False  # not a pytest class

    mapping: str
    test: str
    file: str
    where: str
    line: int | None
    reason: str
    diff: str = ""

    def __str__(self) -> str:
        loc = self.file + (f":{self.line}" if self.line is not None else "")
        text = f"{loc} at {self.where}: test {self.test!r} failed: {self.reason}"
        return f"{text}\n{self.diff}" if self.diff else text

    def as_dict(self) -> dict[str, Any]:
        return {
            "test": self.test,
            "file": self.file,
            "where": self.where,
            "line": self.line,
            "reason": self.reason,
            "diff": self.diff,
        }
