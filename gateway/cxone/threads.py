"""What the gateway keeps per thread: aliases, the CXone channel, the CXone contact.

The channel a thread was last seen on lets the legacy reply endpoint, which names no
channel, find it; the contact number from CXone's create-message answer
(`consumerContact.id`) fills `{contact_id}` in contact actions (e.g. closing it). Both
live in the store's key-value space for 30 days, refreshed as messages pass.

Thread aliases join a proactive conversation's CXone thread and the platform's
conversation.

An agent-initiated (proactive) message reaches the gateway on a thread id CXone chose,
which the platform does not know. The mapping's proactive route opens a conversation
on the platform (the Watering Hole's `POST /conversations`) and names the new
conversation's id in its `result` as `platform_thread_id`; the DFO 3.0 answer also
carries it as `thread.idOnExternalPlatform`. From then on the gateway keeps both ids,
per mapping and channel role:

- outbound: a later reply or typing indicator on the CXone thread is routed as if it
  named the platform conversation (the CXone body's thread id is swapped before
  routing), so the ordinary reply route posts into that conversation;
- inbound: a message the platform user writes in that conversation reaches CXone on
  the CXone thread (the create-message body's `thread.idOnExternalPlatform` is swapped
  just before delivery), so it joins the agent's contact instead of opening a new one.

Whether a real tenant switches to the returned thread id is not published [open]; if
it does, its replies name the platform conversation directly and need no alias, and
inbound messages still land on the thread CXone opened. The aliases live in the
store's key-value space (shared by every instance) for 30 days from the proactive
message.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from gateway.delivery.store import Store
    from gateway.mapping import InboundCall

ALIAS_NS = "thread-alias"  # mapping, role, CXone thread -> platform conversation
REVERSE_NS = "thread-alias-rev"  # mapping, role, platform conversation -> CXone thread
CONTACTS_NS = "contact"  # thread key -> CXone contact number
THREAD_CHANNEL_NS = "thread-channel"  # mapping, thread -> CXone channel id
KEPT_FOR = 30 * 86400.0  # every record of this module: 30 days from its last write


def _key(mapping: str, role: str, thread_id: str) -> str:
    return f"{mapping}\x1f{role}\x1f{thread_id}"


def _channel_key(mapping: str, thread_id: str) -> str:
    return f"{mapping}\x1f{thread_id}"


async def remember(
    store: Store, mapping: str, role: str, cxone_thread: str, platform_thread: str
) -> None:
    """Record that a CXone thread and a platform conversation are one conversation."""
    await store.kv_set(
        ALIAS_NS, _key(mapping, role, cxone_thread), platform_thread.encode(), KEPT_FOR
    )
    await store.kv_set(
        REVERSE_NS, _key(mapping, role, platform_thread), cxone_thread.encode(), KEPT_FOR
    )


async def platform_thread(store: Store, mapping: str, role: str, cxone_thread: str) -> str | None:
    """The platform conversation a CXone thread stands for, if it is an alias."""
    value = await store.kv_get(ALIAS_NS, _key(mapping, role, cxone_thread))
    return value.decode() if value is not None else None


async def cxone_thread(store: Store, mapping: str, role: str, platform_thread: str) -> str | None:
    """The CXone thread a platform conversation belongs to, if CXone opened it."""
    value = await store.kv_get(REVERSE_NS, _key(mapping, role, platform_thread))
    return value.decode() if value is not None else None


def thread_of(body: Any) -> str | None:
    """The `thread.idOnExternalPlatform` of a CXone body, when it is a string."""
    thread = body.get("thread") if isinstance(body, dict) else None
    value = thread.get("idOnExternalPlatform") if isinstance(thread, dict) else None
    return value if isinstance(value, str) and value else None


def with_thread(body: dict[str, Any], thread_id: str) -> dict[str, Any]:
    """A copy of a CXone body naming another thread (the original is left alone)."""
    thread = body.get("thread")
    return {
        **body,
        "thread": {
            **(thread if isinstance(thread, dict) else {}),
            "idOnExternalPlatform": thread_id,
        },
    }


async def for_cxone(store: Store, call: InboundCall) -> dict[str, Any]:
    """The body to send CXone for an inbound call: on the CXone thread when aliased."""
    if call.action != "create_message" or thread_of(call.body) is None:
        return call.body
    alias = await cxone_thread(store, call.mapping, call.channel, call.thread_id)
    return call.body if alias is None else with_thread(call.body, alias)


async def remember_channel(store: Store, mapping: str, thread_id: str, channel_id: str) -> None:
    """Record which CXone channel a thread is on (the legacy reply endpoint names none)."""
    await store.kv_refresh(
        THREAD_CHANNEL_NS, _channel_key(mapping, thread_id), channel_id.encode(), KEPT_FOR
    )


async def channel_of(store: Store, mapping: str, thread_id: str) -> str | None:
    """The CXone channel a thread was last seen on, if any."""
    known = await store.kv_get(THREAD_CHANNEL_NS, _channel_key(mapping, thread_id))
    return known.decode() if known is not None else None


async def remember_contact(store: Store, thread_key: str, answer: Any) -> None:
    """Keep the contact number of CXone's create-message answer, if it names one."""
    contact = answer.get("consumerContact") if isinstance(answer, dict) else None
    if isinstance(contact, dict) and contact.get("id") is not None:
        await store.kv_refresh(CONTACTS_NS, thread_key, str(contact["id"]).encode(), KEPT_FOR)


async def contact_of(store: Store, thread_key: str) -> str | None:
    """The CXone contact number of a thread, if CXone named one."""
    known = await store.kv_get(CONTACTS_NS, thread_key)
    return known.decode() if known is not None else None
