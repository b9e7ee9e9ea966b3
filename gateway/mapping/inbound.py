"""Inbound routing: pick the first route whose `when` holds, extract, render the CXone call."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from functools import cached_property
from typing import Any
from urllib.parse import quote

from gateway.errors import MappingRuntimeError
from gateway.mapping.bridging import media_signing
from gateway.mapping.expressions import EvalContext, Expr, ExpressionError, evaluation
from gateway.mapping.extraction import Extraction
from gateway.mapping.lookups import Lookup, run_lookups
from gateway.mapping.model import (
    Action,
    Ignored,
    InboundCall,
    InboundIO,
    InboundItem,
    LookupOutcome,
    PlatformSpec,
)
from gateway.mapping.state import StateSpec
from gateway.mapping.templates import Node, RenderError
from gateway.mapping.values import to_str

NO_ROUTE = "(no route)"


@dataclass(frozen=True)
class InboundRoute:
    """One compiled inbound route."""

    name: str
    when: Expr | None
    ignore: bool
    channel: str
    action: Action | None
    extract: tuple[tuple[str, Expr], ...]
    required: tuple[str, ...]
    method: str
    path: str
    body: Node | None
    lookups: tuple[Lookup, ...] = ()
    state: StateSpec | None = None
    media: bool = False  # uses media_url(): signed when the worker renders it

    @cached_property
    def fields(self) -> Extraction:
        """`extract` as one generated function, numeric id fields as exact text."""
        return Extraction(self.extract, exact=True)

    @property
    def deferred(self) -> bool:
        """Rendered by the queue worker: it calls the platform, signs URLs or stores state."""
        return bool(self.lookups) or self.state is not None or self.media


class InboundRouter:
    """Route inbound items of one mapping."""

    def __init__(
        self,
        mapping: str,
        variables: Mapping[str, Any],
        routes: tuple[InboundRoute, ...],
        dedupe: Expr | None,
        platform: PlatformSpec,
    ) -> None:
        self.mapping = mapping
        self.vars = variables
        self.routes = routes
        self.dedupe = dedupe
        self.platform = platform

    def route(self, item: InboundItem) -> InboundCall | Ignored:
        """Turn one item into a CXone call, or say why it is ignored.

        A deferred route (lookups, media URLs, thread state) is routed only as far as the
        queue needs (thread, message id, dedupe key, channel); `render` finishes it.
        """
        with evaluation(self._context(item)):
            chosen = self._prepare(item)
            if isinstance(chosen, Ignored):
                return chosen
            route, fields, dedupe_key = chosen
        if route.deferred:
            return self._partial(route, fields, dedupe_key)
        return self._render(route, fields, dedupe_key)

    def dedupe_of(self, item: InboundItem) -> str | None:
        """The item's dedupe key, or None when it has none or it cannot be computed."""
        try:
            with evaluation(self._context(item)):
                return self._dedupe_key(item.item)
        except MappingRuntimeError:
            return None

    async def render(self, item: InboundItem, io: InboundIO) -> InboundCall | Ignored:
        """Route and render one item completely, running the route's lookups through `io`."""
        with evaluation(self._context(item)), media_signing(io.media_url):
            chosen = self._prepare(item)
            if isinstance(chosen, Ignored):
                return chosen
            route, fields, dedupe_key = chosen
            outcomes: tuple[LookupOutcome, ...] = ()
            if route.lookups:
                outcomes = await run_lookups(
                    self.mapping, route.name, route.lookups, fields, self.vars, self.platform, io
                )
            try:
                state = route.state.values(item.item) if route.state is not None else ()
            except ExpressionError as exc:
                raise MappingRuntimeError(self.mapping, route.name, f"state: {exc}") from None
            call = self._render(route, fields, dedupe_key)
        return call._replace(state=state, lookups=outcomes)

    def _context(self, item: InboundItem) -> EvalContext:
        parents = item.parents or ((item.parent,) if item.parent is not None else ())
        return EvalContext(self.vars, parents, item.delivery, item.headers, item.query)

    def _prepare(
        self, item: InboundItem
    ) -> tuple[InboundRoute, dict[str, Any], str | None] | Ignored:
        dedupe_key = self._dedupe_key(item.item)
        chosen = self._choose(item.item)
        if chosen is None:
            return Ignored(self.mapping, NO_ROUTE, dedupe_key)
        if chosen.ignore or chosen.action is None:
            return Ignored(self.mapping, chosen.name, dedupe_key)
        try:
            fields = chosen.fields(item.item)
        except ExpressionError as exc:
            raise MappingRuntimeError(self.mapping, chosen.name, str(exc)) from None
        return chosen, fields, dedupe_key

    def _partial(
        self, route: InboundRoute, fields: dict[str, Any], dedupe_key: str | None
    ) -> InboundCall:
        thread_id = to_str(fields.get("thread_id"))
        if not thread_id:
            raise MappingRuntimeError(
                self.mapping,
                route.name,
                f"required field(s) thread_id came out empty (thread_id: "
                f"`{_source(route, 'thread_id')}`)",
            )
        assert route.action is not None
        return InboundCall(
            mapping=self.mapping,
            route=route.name,
            channel=route.channel,
            action=route.action,
            thread_id=thread_id,
            message_id=to_str(fields.get("message_id")),
            dedupe_key=dedupe_key,
            method=route.method,
            path=route.path,
            body={},
            fields=fields,
            deferred=True,
        )

    def _dedupe_key(self, data: Any) -> str | None:
        if self.dedupe is None:
            return None
        try:
            value = to_str(self.dedupe.search(data))
        except ExpressionError as exc:
            raise MappingRuntimeError(self.mapping, "(dedupe)", str(exc)) from None
        return None if value is None or value == "" else f"{self.mapping}:{value}"

    def _choose(self, data: Any) -> InboundRoute | None:
        for route in self.routes:
            if route.when is None:
                return route
            try:
                if route.when.test(data):
                    return route
            except ExpressionError as exc:
                raise MappingRuntimeError(self.mapping, route.name, f"when: {exc}") from None
        return None

    def _render(
        self, route: InboundRoute, fields: dict[str, Any], dedupe_key: str | None
    ) -> InboundCall:
        action: Action | None = route.action
        assert action is not None  # ignore routes never get here
        missing = [name for name in route.required if name not in fields]
        if missing:
            sources = "; ".join(f"{n}: `{_source(route, n)}`" for n in missing)
            raise MappingRuntimeError(
                self.mapping,
                route.name,
                f"required field(s) {', '.join(missing)} came out empty ({sources})",
            )
        assert route.body is not None  # compiled together with the action
        try:
            body = route.body.render({**fields, "vars": self.vars})
        except RenderError as exc:
            raise MappingRuntimeError(self.mapping, route.name, str(exc)) from None
        thread_id = to_str(fields["thread_id"]) or ""
        message_id = to_str(fields.get("message_id"))
        path = route.path
        if message_id is not None and "{message_id}" in path:
            path = path.replace("{message_id}", quote(message_id, safe=""))
        return InboundCall(
            mapping=self.mapping,
            route=route.name,
            channel=route.channel,
            action=action,
            thread_id=thread_id,
            message_id=message_id,
            dedupe_key=dedupe_key,
            method=route.method,
            path=path,
            body=body if isinstance(body, dict) else {},
            fields=fields,
        )


def _source(route: InboundRoute, name: str) -> str:
    for field, expr in route.extract:
        if field == name:
            return expr.source
    return "not extracted"
