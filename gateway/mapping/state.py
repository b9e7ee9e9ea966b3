"""Thread state: values an inbound route stores under its thread for outbound routes.

An inbound route's `state:` names values (JMESPath over the item, like `extract`), each
with a lifetime: the route's `ttl`, a shorter `ttl` of its own, or an `expires_at` the
message gives (any time form `iso()` reads). The queue worker stores them once CXone
has accepted the message; an outbound route reads them as `state.<name>` and may
`require_state` them, which refuses the reply with a clear 422 when one is missing or
expired. The store keeps them (gateway.thread_state), shared by every instance.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from gateway.errors import UnprocessableEntity
from gateway.mapping.expressions import Expr, ExpressionError, compile_or_report
from gateway.mapping.loader import Problems
from gateway.mapping.model import StateValue, ThreadState
from gateway.mapping.values import escape_pointer, iso


@dataclass(frozen=True)
class StateEntry:
    """One compiled `state.store` value."""

    name: str
    value: Expr
    ttl: float
    expires_at: Expr | None = None


@dataclass(frozen=True)
class StateSpec:
    """An inbound route's `state:`."""

    entries: tuple[StateEntry, ...]

    def values(self, item: Any) -> tuple[StateValue, ...]:
        """Evaluate against the item; a value that comes out null is not stored."""
        out = []
        for entry in self.entries:
            value = entry.value.search(item)
            if value is None:
                continue
            expires = entry.expires_at.search(item) if entry.expires_at is not None else None
            out.append(
                StateValue(
                    entry.name,
                    value,
                    entry.ttl,
                    None if expires is None else epoch_seconds(expires, entry.expires_at),
                )
            )
        return tuple(out)


def epoch_seconds(value: Any, expr: Expr | None = None) -> float:
    """Any time form `iso()` reads -> epoch seconds (millisecond precision)."""
    try:
        text = iso(value)
    except ValueError as exc:
        where = f"`{expr.source}`: " if expr is not None else ""
        raise ExpressionError(f"{where}{exc}") from None
    return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()


def compile_state(spec: Mapping[str, Any], where: str, problems: Problems) -> StateSpec:
    """Compile `state: {ttl, store: {name: expression | {value, ttl, expires_at}}}`."""
    default_ttl = float(spec["ttl"])
    entries = []
    for name, raw in spec["store"].items():
        at = f"{where}/store/{escape_pointer(name)}"
        if isinstance(raw, str):
            entries.append(StateEntry(name, compile_or_report(raw, at, problems.add), default_ttl))
            continue
        ttl = float(raw.get("ttl", default_ttl))
        if ttl > default_ttl:
            problems.add(
                f"{at}/ttl",
                f"the value lives longer ({ttl:g} s) than the route's state "
                f"ttl ({default_ttl:g} s)",
                "raise state.ttl, or shorten this ttl",
            )
        entries.append(
            StateEntry(
                name,
                compile_or_report(raw["value"], f"{at}/value", problems.add),
                ttl,
                compile_or_report(raw["expires_at"], f"{at}/expires_at", problems.add)
                if "expires_at" in raw
                else None,
            )
        )
    return StateSpec(tuple(entries))


def require(state: ThreadState, names: Iterable[str], mapping: str, route: str) -> None:
    """Refuse a reply whose route needs thread state that is missing or expired."""
    for name in names:
        if name in state.values:
            continue
        if name in state.expired:
            raise UnprocessableEntity(
                f"the thread's {name} has expired, so this reply cannot be sent (mapping "
                f"{mapping}, route {route}); a new inbound message stores a fresh one",
                code="thread_state_expired",
            )
        raise UnprocessableEntity(
            f"the thread has no {name}: no inbound message stored one (or it is long "
            f"gone), so this reply cannot be sent (mapping {mapping}, route {route})",
            code="thread_state_missing",
        )
