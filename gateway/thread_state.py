"""Thread state in the store: what inbound routes stored under a thread, with expiries.

One key per (mapping, channel role, platform thread) holds a JSON object
`{name: {"v": value, "e": expires_at}}`. The queue worker merges new values in once
CXone has accepted the message (messages of one thread are delivered one at a time, so
the read-modify-write does not race); a reply loads it before routing. An expired value
is kept a while longer (GRACE) so that a refused reply can say "expired" rather than
"missing". Times are the gateway clock's, like the store's own TTLs.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from gateway import jsonutil
from gateway.delivery.store import Store
from gateway.errors import BadRequest
from gateway.mapping import StateValue, ThreadState

STATE_NS = "thread-state"
GRACE = 86_400.0  # how long an expired value is remembered as expired


def _key(mapping: str, role: str, thread_id: str) -> str:
    return f"{mapping}\x1f{role}\x1f{thread_id}"


async def _read(store: Store, key: str) -> dict[str, Any]:
    raw = await store.kv_get(STATE_NS, key)
    if raw is None:
        return {}
    try:
        entries = jsonutil.loads(raw)
    except BadRequest:
        return {}
    return entries if isinstance(entries, dict) else {}


async def load(store: Store, mapping: str, role: str, thread_id: str, now: float) -> ThreadState:
    """The thread's live values, and the names of those that expired."""
    entries = await _read(store, _key(mapping, role, thread_id))
    live: dict[str, Any] = {}
    expired: set[str] = set()
    for name, entry in entries.items():
        if not isinstance(entry, dict) or "v" not in entry:
            continue
        if float(entry.get("e", 0)) > now:
            live[name] = entry["v"]
        else:
            expired.add(name)
    return ThreadState(live, frozenset(expired))


async def save(
    store: Store,
    mapping: str,
    role: str,
    thread_id: str,
    values: Sequence[StateValue],
    now: float,
) -> None:
    """Merge values into the thread's state; each lives its ttl (or to its expires_at)."""
    if not values:
        return
    key = _key(mapping, role, thread_id)
    entries = {
        name: entry
        for name, entry in (await _read(store, key)).items()
        if isinstance(entry, dict) and float(entry.get("e", 0)) + GRACE > now
    }
    for value in values:
        expires = now + value.ttl
        if value.expires_at is not None:
            expires = min(expires, value.expires_at)
        entries[value.name] = {"v": value.value, "e": expires}
    last = max(float(e["e"]) for e in entries.values())
    await store.kv_set(STATE_NS, key, jsonutil.dumps(entries), max(1.0, last - now + GRACE))
