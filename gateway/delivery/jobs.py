"""What the inbound queue holds: one job per accepted webhook event.

The job keeps the event itself (so it can be routed again after a mapping is fixed and a
dead letter replayed) and the CXone call rendered at intake (so the normal path renders
once, with the mapping version that accepted it).
"""

from __future__ import annotations

from typing import Any, NamedTuple

from gateway import jsonutil
from gateway.mapping import CompiledMapping, InboundCall, InboundItem


class InboundJob(NamedTuple):
    """The decoded payload of a queued inbound event."""

    mapping: str
    version: str
    received_at: float
    item: Any
    parent: Any
    delivery: Any
    position: int  # in its delivery
    call: InboundCall | None
    error: str | None = None

    @classmethod
    def accept(
        cls,
        mapping: CompiledMapping,
        item: InboundItem,
        now: float,
        call: InboundCall | None,
        error: str | None = None,
    ) -> InboundJob:
        """The job for one event accepted at intake (ancestors kept only when routes use them)."""
        keep = mapping.webhook.needs_ancestors
        return cls(
            mapping.name,
            mapping.version,
            now,
            item.item,
            item.parent if keep else None,
            item.delivery if keep else None,
            item.position,
            call,
            error,
        )

    def encode(self) -> bytes:
        call = self.call
        return jsonutil.dumps(
            {
                "v": 1,
                "mapping": self.mapping,
                "version": self.version,
                "received_at": self.received_at,
                "item": self.item,
                "parent": self.parent,
                "delivery": self.delivery,
                "index": self.position,
                "error": self.error,
                "call": None
                if call is None
                else {
                    "route": call.route,
                    "channel": call.channel,
                    "action": call.action,
                    "thread_id": call.thread_id,
                    "message_id": call.message_id,
                    "dedupe_key": call.dedupe_key,
                    "method": call.method,
                    "path": call.path,
                    "body": call.body,
                },
            }
        )

    @staticmethod
    def decode(raw: bytes) -> InboundJob:
        d = jsonutil.loads(raw)
        c = d.get("call")
        call = (
            None
            if c is None
            else InboundCall(
                mapping=d["mapping"],
                route=c["route"],
                channel=c["channel"],
                action=c["action"],
                thread_id=c["thread_id"],
                message_id=c["message_id"],
                dedupe_key=c["dedupe_key"],
                method=c["method"],
                path=c["path"],
                body=c["body"],
                fields={},
            )
        )
        return InboundJob(
            mapping=d["mapping"],
            version=d["version"],
            received_at=float(d["received_at"]),
            item=d["item"],
            parent=d.get("parent"),
            delivery=d.get("delivery"),
            position=int(d.get("index", 0)),
            call=call,
            error=d.get("error"),
        )

    def as_item(self) -> InboundItem:
        return InboundItem(
            item=self.item,
            parent=self.parent,
            delivery=self.delivery,
            position=self.position,
            headers={},
            query={},
        )


def thread_key(mapping: str, channel: str, thread_id: str) -> str:
    """Jobs with the same key reach CXone in order."""
    return f"{mapping}\x1f{channel}\x1f{thread_id}"
