"""What the simulated tenant remembers, and the change signal tests wait on."""

from __future__ import annotations

import asyncio
import itertools
from collections import Counter, deque
from collections.abc import Callable, Mapping
from dataclasses import asdict
from typing import Any, TypeVar

from gateway.clock import Clock
from gateway.sandbox.cxone.records import (
    CLOSED_STATUSES,
    CallKind,
    Contact,
    ContactChange,
    Entry,
    EntryKind,
    GatewayCall,
    Hit,
    HitOutcome,
    ReceivedMessage,
    StatusUpdate,
    Thread,
    Violation,
    ViolationSource,
    iso_ms,
)

T = TypeVar("T")


class SimState:
    """Everything the sim records; `tick()` marks each change and wakes waiters."""

    def __init__(self, clock: Clock, max_log: int = 500) -> None:
        self.clock = clock
        self.seq = 0
        self.closing = False
        self._changed = asyncio.Event()
        self.channels: dict[str, dict[str, Any]] = {}
        self.threads: dict[tuple[str, str], Thread] = {}
        self.contacts: dict[str, Contact] = {}
        self.messages: list[ReceivedMessage] = []
        self.statuses: list[StatusUpdate] = []
        self.contact_changes: list[ContactChange] = []
        self.violations: deque[Violation] = deque(maxlen=max_log)
        self.gateway_calls: list[GatewayCall] = []
        self.recent_hits: deque[Hit] = deque(maxlen=max_log)
        self.hit_counts: Counter[str] = Counter()
        self.back_visits: list[dict[str, str]] = []
        self._inbound_ids: dict[str, set[str]] = {}
        self._agent_ids: dict[str, set[str]] = {}
        self._contact_numbers = itertools.count(100_001)

    # -- change signal -------------------------------------------------------------

    def tick(self) -> int:
        """Count one change, wake every waiter, and return the new sequence number."""
        self.seq += 1
        event, self._changed = self._changed, asyncio.Event()
        event.set()
        return self.seq

    async def wait_for(self, predicate: Callable[[], T | None], seconds: float = 5.0) -> T:
        """Wait until `predicate()` is truthy (checked at every change); return its value."""
        try:
            async with asyncio.timeout(seconds):
                while True:
                    value = predicate()
                    if value:
                        return value
                    await self._changed.wait()
        except TimeoutError:
            raise TimeoutError(
                f"the CXone simulator did not reach the condition within {seconds} s "
                f"(at change {self.seq})"
            ) from None

    async def wait_changed(self, since: int, seconds: float) -> int:
        """Return the sequence number once it differs from `since`, or after `seconds`."""
        try:
            async with asyncio.timeout(seconds):
                while self.seq == since and not self.closing:
                    await self._changed.wait()
        except TimeoutError:
            pass
        return self.seq

    def close(self) -> None:
        """Wake every long poll for good (server shutdown)."""
        self.closing = True
        self.tick()

    # -- records -------------------------------------------------------------------

    def add_inbound(
        self, channel_id: str, body: Mapping[str, Any]
    ) -> tuple[ReceivedMessage, Contact]:
        """Record a validated create-message body; open thread and contact when new."""
        thread_id: str = body["thread"]["idOnExternalPlatform"]
        message_id: str = body["idOnExternalPlatform"]
        author: dict[str, Any] = dict(body["authorEndUserIdentity"])
        thread = self.threads.get((channel_id, thread_id))
        if thread is None:
            thread = Thread(channel_id, thread_id, end_user=author)
            thread.name = body["thread"].get("threadName")
            self.threads[(channel_id, thread_id)] = thread
        contact = self.contacts[thread.contact_id] if thread.contact_ids else None
        if contact is None or contact.status in CLOSED_STATUSES:
            contact = self._new_contact(thread, author["idOnExternalPlatform"])
        seen = self._inbound_ids.setdefault(channel_id, set())
        duplicate = message_id in seen
        seen.add(message_id)
        content = body["messageContent"]
        text = content["payload"].get("text") if content["type"] == "TEXT" else None
        seq = self.tick()
        now = self.clock()
        kind: EntryKind = "inbound" if body["direction"] == "inbound" else "outbound"
        thread.entries.append(Entry(seq, kind, now, message_id, text, dict(body), duplicate))
        message = ReceivedMessage(
            seq, channel_id, thread_id, message_id, dict(body), duplicate, contact.id, now
        )
        self.messages.append(message)
        return message, contact

    def add_agent_entry(
        self,
        channel_id: str,
        thread_id: str,
        *,
        endpoint: str,
        request_body: Mapping[str, Any],
        text: str,
        http_status: int,
        answer: Any,
        message_id: str | None,
        platform_thread_id: str | None,
    ) -> Entry:
        """Record an agent reply and the gateway's answer; a new thread is proactive."""
        thread = self.threads.get((channel_id, thread_id))
        if thread is None:
            recipients = request_body.get("endUserRecipients") or request_body.get("recipients")
            first = recipients[0] if recipients else {"idOnExternalPlatform": ""}
            thread = Thread(channel_id, thread_id, end_user=dict(first))
            self.threads[(channel_id, thread_id)] = thread
            self._new_contact(thread, str(first.get("idOnExternalPlatform", "")))
        ok = 200 <= http_status < 300 and message_id is not None
        if ok and message_id is not None:
            self._agent_ids.setdefault(channel_id, set()).add(message_id)
        if platform_thread_id and platform_thread_id != thread_id:
            thread.platform_thread_id = platform_thread_id
        thread.agent_typing = False
        entry = Entry(
            self.tick(),
            "agent",
            self.clock(),
            message_id,
            text,
            dict(request_body),
            endpoint=endpoint,
            http_status=http_status,
            ok=ok,
            answer=answer,
        )
        thread.entries.append(entry)
        return entry

    def set_typing(self, channel_id: str, thread_id: str, on: bool) -> None:
        """Remember whether the agent is typing on a known thread."""
        thread = self.threads.get((channel_id, thread_id))
        if thread is not None and thread.agent_typing != on:
            thread.agent_typing = on
            self.tick()

    def add_status(self, channel_id: str, message_id: str, body: Mapping[str, Any]) -> StatusUpdate:
        """Record a validated message-status body, attached to its message when known."""
        known = self.knows_message(channel_id, message_id)
        update = StatusUpdate(
            self.tick(),
            channel_id,
            message_id,
            body["status"],
            body["updatedAt"],
            body.get("reason"),
            known,
            self.clock(),
        )
        self.statuses.append(update)
        for thread in self.threads.values():
            if thread.channel_id != channel_id:
                continue
            for entry in thread.entries:
                if entry.message_id == message_id:
                    entry.statuses.append(
                        {
                            "status": update.status,
                            "updatedAt": update.updated_at,
                            "reason": update.reason,
                        }
                    )
        return update

    def knows_message(self, channel_id: str, message_id: str) -> bool:
        """Tell whether the id is an inbound message or an answered agent reply."""
        inbound = self._inbound_ids.get(channel_id, set())
        return message_id in inbound or message_id in self._agent_ids.get(channel_id, set())

    def change_contact(self, contact: Contact, status: str | None) -> ContactChange:
        """Set a contact's status (None: abandon it) and record the change."""
        if status is None:
            contact.abandoned = True
            contact.status = "closed"
        else:
            contact.status = status
        contact.history.append(contact.status)
        change = ContactChange(
            self.tick(),
            contact.id,
            "abandon" if status is None else "status",
            status,
            self.clock(),
        )
        self.contact_changes.append(change)
        return change

    def add_violation(self, source: ViolationSource, where: str, problems: tuple[str, ...]) -> None:
        """Remember a refused request or a bad gateway answer."""
        self.violations.append(Violation(self.tick(), source, where, problems, self.clock()))

    def add_hit(self, route: str, method: str, path: str, status: int, outcome: HitOutcome) -> None:
        """Count one request on a CXone-side route."""
        self.hit_counts[route] += 1
        self.recent_hits.append(
            Hit(self.tick(), route, method, path, status, outcome, self.clock())
        )

    def add_call(
        self,
        kind: CallKind,
        method: str,
        url: str,
        request_body: Any,
        *,
        status: int,
        response_body: Any,
        authorized: bool,
        violations: tuple[str, ...],
        error: str | None,
    ) -> GatewayCall:
        """Record one call to the gateway."""
        call = GatewayCall(
            self.tick(),
            kind,
            method,
            url,
            request_body,
            status,
            response_body,
            authorized,
            violations,
            error,
            self.clock(),
        )
        self.gateway_calls.append(call)
        return call

    def _new_contact(self, thread: Thread, end_user_id: str) -> Contact:
        contact = Contact(
            str(next(self._contact_numbers)), thread.channel_id, thread.id, end_user_id
        )
        self.contacts[contact.id] = contact
        thread.contact_ids.append(contact.id)
        return contact

    # -- views ---------------------------------------------------------------------

    def messages_in(self, channel_id: str, thread_id: str | None = None) -> list[ReceivedMessage]:
        """Return accepted create-message POSTs of a channel (and thread), in order."""
        return [
            m
            for m in self.messages
            if m.channel_id == channel_id and (thread_id is None or m.thread_id == thread_id)
        ]

    def snapshot(self) -> dict[str, Any]:
        """Return the whole state as JSON-ready data (for /_sim/state)."""
        return {
            "seq": self.seq,
            "channels": list(self.channels.values()),
            "threads": [_thread_json(t, self.contacts) for t in self.threads.values()],
            "contacts": [asdict(c) for c in self.contacts.values()],
            "statuses": [_stamped(asdict(s)) for s in self.statuses],
            "contact_changes": [_stamped(asdict(c)) for c in self.contact_changes],
            "violations": [_stamped(asdict(v)) for v in self.violations],
            "gateway_calls": [_stamped(asdict(c)) for c in self.gateway_calls[-100:]],
            "hits": dict(self.hit_counts),
            "recent_hits": [_stamped(asdict(h)) for h in list(self.recent_hits)[-50:]],
            "back_visits": self.back_visits,
        }


def _stamped(record: dict[str, Any]) -> dict[str, Any]:
    record["at"] = iso_ms(record["at"])
    return record


def _thread_json(thread: Thread, contacts: Mapping[str, Contact]) -> dict[str, Any]:
    contact = contacts.get(thread.contact_id) if thread.contact_ids else None
    return {
        "channel_id": thread.channel_id,
        "thread_id": thread.id,
        "name": thread.name,
        "end_user": thread.end_user,
        "contact_id": contact.id if contact else None,
        "contact_status": contact.status if contact else None,
        "contact_ids": thread.contact_ids,
        "agent_typing": thread.agent_typing,
        "platform_thread_id": thread.platform_thread_id,
        "messages": [_stamped(asdict(e)) for e in thread.entries],
    }
