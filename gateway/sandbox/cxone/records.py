"""The records of a simulated tenant: threads, contacts, messages, calls, violations."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Literal

EntryKind = Literal["inbound", "outbound", "agent"]
CallKind = Literal["reply", "typing", "token"]
HitOutcome = Literal["handled", "scripted", "reset"]
ViolationSource = Literal["cxone-api", "gateway"]

# A message on a thread whose contact has one of these statuses opens a new contact.
CLOSED_STATUSES = frozenset({"closed", "trashed"})


def iso_ms(ts: float) -> str:
    """Format Unix seconds as ISO-8601 UTC with milliseconds."""
    text = datetime.fromtimestamp(ts, UTC).isoformat(timespec="milliseconds")
    return text.replace("+00:00", "Z")


@dataclass
class Contact:
    """A routable work item built on a thread (numeric-string id)."""

    id: str
    channel_id: str
    thread_id: str
    end_user_id: str
    status: str = "new"
    history: list[str] = field(default_factory=lambda: ["new"])
    abandoned: bool = False


@dataclass
class Entry:
    """One line of a thread's conversation, in order of arrival."""

    seq: int
    kind: EntryKind
    at: float
    message_id: str | None
    text: str | None
    body: Any
    duplicate: bool = False
    endpoint: str | None = None  # agent replies: outbound | legacy
    http_status: int | None = None  # agent replies: the gateway's answer
    ok: bool = True
    answer: Any = None  # agent replies: the gateway's answer body
    statuses: list[dict[str, Any]] = field(default_factory=list)


@dataclass
class Thread:
    """A conversation, keyed by channel id and thread.idOnExternalPlatform."""

    channel_id: str
    id: str
    end_user: dict[str, Any]
    contact_ids: list[str] = field(default_factory=list)
    name: str | None = None
    entries: list[Entry] = field(default_factory=list)
    agent_typing: bool = False
    platform_thread_id: str | None = None  # what the gateway answered for a proactive reply

    @property
    def contact_id(self) -> str:
        """Return the id of the thread's current contact."""
        return self.contact_ids[-1]


@dataclass(frozen=True)
class ReceivedMessage:
    """One accepted create-message POST (duplicates included, flagged)."""

    seq: int
    channel_id: str
    thread_id: str
    message_id: str
    body: dict[str, Any]
    duplicate: bool
    contact_id: str
    at: float


@dataclass(frozen=True)
class StatusUpdate:
    """One accepted message-status PUT."""

    seq: int
    channel_id: str
    message_id: str
    status: str
    updated_at: str
    reason: str | None
    known: bool  # the id was an inbound message or an agent reply the gateway answered
    at: float


@dataclass(frozen=True)
class ContactChange:
    """One accepted contact status PUT or abandon POST."""

    seq: int
    contact_id: str
    action: Literal["status", "abandon"]
    status: str | None
    at: float


@dataclass(frozen=True)
class Violation:
    """A request the sim refused, or a gateway answer that breaks the contract."""

    seq: int
    source: ViolationSource
    where: str
    problems: tuple[str, ...]
    at: float


@dataclass(frozen=True)
class GatewayCall:
    """One HTTP call the sim made to the gateway as CXone (status 0: no answer)."""

    seq: int
    kind: CallKind
    method: str
    url: str
    request_body: Any
    status: int
    response_body: Any
    authorized: bool  # a bearer token was sent
    violations: tuple[str, ...]
    error: str | None
    at: float


@dataclass(frozen=True)
class Hit:
    """One request on a CXone-side route and what answered it."""

    seq: int
    route: str
    method: str
    path: str
    status: int
    outcome: HitOutcome
    at: float
