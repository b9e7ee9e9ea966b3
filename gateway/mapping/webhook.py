"""The platform-facing side of a mapping: parse, handshakes, fixed answers, batch splitting."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal
from urllib.parse import parse_qsl

from gateway import jsonutil
from gateway.errors import BadRequest, MappingRuntimeError
from gateway.mapping.expressions import EvalContext, Expr, ExpressionError, evaluation
from gateway.mapping.model import HandshakeReply, InboundItem, WebhookSpec
from gateway.mapping.templates import Node, RenderError, render_text
from gateway.mapping.values import to_str

_FORBIDDEN = HandshakeReply(403, "text/plain; charset=utf-8", b"forbidden")


@dataclass(frozen=True)
class Reply:
    """A compiled fixed or rendered answer (`respond:` / `webhook.response`)."""

    status: int
    content_type: str
    body: Node | None
    json: bool

    def render(self, mapping: str, route: str, context: Mapping[str, Any]) -> HandshakeReply:
        """Render to bytes: a JSON tree for JSON content types, else text."""
        if self.body is None:
            return HandshakeReply(self.status, self.content_type, b"")
        try:
            if self.json:
                data = jsonutil.dumps(self.body.render(context))
            else:
                data = render_text(self.body, context).encode()
        except RenderError as exc:
            raise MappingRuntimeError(mapping, route, str(exc)) from None
        return HandshakeReply(self.status, self.content_type, data)


@dataclass(frozen=True)
class TokenCheck:
    """Where a handshake's verify token is read, and the expected value."""

    source: Literal["param", "header", "field"]
    name: str
    field: Expr | None
    value: Any  # gateway.secrets.Secret

    def matches(self, query: Mapping[str, str], headers: Mapping[str, str], body: Any) -> bool:
        """Compare the presented token in constant time."""
        if self.source == "param":
            presented = query.get(self.name)
        elif self.source == "header":
            presented = headers.get(self.name.lower())
        else:
            try:
                presented = to_str(self.field.search(body)) if self.field else None
            except ExpressionError:
                presented = None
        if not isinstance(presented, str):
            return False
        return bool(self.value.matches(presented))


@dataclass(frozen=True)
class Handshake:
    """One subscription handshake the platform may send."""

    name: str
    method: str
    when: Expr
    token: TokenCheck | None
    respond: Reply


class Webhook:
    """Everything the platform listener needs from a mapping, compiled."""

    def __init__(
        self,
        mapping: str,
        spec: WebhookSpec,
        levels: tuple[Expr, ...],
        dedupe: Expr | None,
        handshakes: tuple[Handshake, ...],
        response: Reply | None,
        variables: Mapping[str, Any],
    ) -> None:
        self.mapping = mapping
        self.spec = spec
        self.levels = levels
        self._plain_levels = all(level.plain is not None for level in levels)
        self.dedupe = dedupe
        self.handshakes = handshakes
        self._handshake_methods = frozenset(hs.method for hs in handshakes)
        self.response = response
        self.vars = variables

    def parse_body(self, raw: bytes, content_type: str | None) -> Any:
        """Parse a delivery as the mapping's format says; BadRequest on junk."""
        if self.spec.format == "json":
            payload = jsonutil.loads(raw)
            if not isinstance(payload, dict | list):
                raise BadRequest("the body must be a JSON object or array", code="invalid_json")
            return payload
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError:
            raise BadRequest("the form body is not UTF-8", code="invalid_form") from None
        try:
            pairs = parse_qsl(
                text, keep_blank_values=True, strict_parsing=bool(text), max_num_fields=1000
            )
        except ValueError:
            raise BadRequest("the body is not a valid form", code="invalid_form") from None
        form: dict[str, Any] = {}
        for key, value in pairs:
            if key in form:
                previous = form[key]
                form[key] = [*previous, value] if isinstance(previous, list) else [previous, value]
            else:
                form[key] = value
        return form

    def handshake(
        self, method: str, query: Mapping[str, str], headers: Mapping[str, str], body: Any | None
    ) -> HandshakeReply | None:
        """Answer a subscription handshake, or return None when this is not one."""
        if method.upper() not in self._handshake_methods:
            return None  # nearly every request: spare building the scope
        lowered = {k.lower(): v for k, v in headers.items()}
        scope = {"method": method.upper(), "query": dict(query), "headers": lowered, "body": body}
        for hs in self.handshakes:
            if hs.method != method.upper() or (hs.method == "POST" and body is None):
                continue
            try:
                with evaluation(EvalContext(self.vars, (), body, lowered, dict(query))):
                    if not hs.when.test(scope):
                        continue
            except ExpressionError:
                continue
            if hs.token is not None and not hs.token.matches(query, lowered, body):
                return _FORBIDDEN
            context = {"query": dict(query), "headers": lowered, "body": body, "vars": self.vars}
            return hs.respond.render(self.mapping, f"handshake {hs.name}", context)
        return None

    def sync_response(self, payload: Any) -> HandshakeReply | None:
        """Render `webhook.response` for an accepted delivery, if the mapping has one."""
        if self.response is None:
            return None
        return self.response.render(
            self.mapping, "(response)", {"body": payload, "vars": self.vars}
        )

    def split(
        self, payload: Any, *, headers: Mapping[str, str], query: Mapping[str, str]
    ) -> list[InboundItem]:
        """Split a delivery into items along `foreach` (one item when there is none)."""
        lowered = {k.lower(): v for k, v in headers.items()}
        plain_query = dict(query)
        if not self.levels:
            return [InboundItem(payload, None, payload, 0, lowered, plain_query, ())]
        if self._plain_levels:  # plain paths (`events`) call no function: no context to set
            nodes = self._expand(payload)
        else:
            with evaluation(EvalContext(self.vars, (), payload, lowered, plain_query)):
                nodes = self._expand(payload)
        return [
            InboundItem(item, parents[0], payload, index, lowered, plain_query, parents)
            for index, (item, parents) in enumerate(nodes)
        ]

    def _expand(self, payload: Any) -> list[tuple[Any, tuple[Any, ...]]]:
        """The items along `foreach`, each with its ancestors (nearest first)."""
        nodes: list[tuple[Any, tuple[Any, ...]]] = [(payload, ())]
        for depth, level in enumerate(self.levels):
            expanded: list[tuple[Any, tuple[Any, ...]]] = []
            for node, parents in nodes:
                try:
                    found = level.search(node)
                except ExpressionError as exc:
                    raise MappingRuntimeError(self.mapping, "(foreach)", str(exc)) from None
                if found is None and depth == 0:
                    # the mapping says where a delivery's items are; no items there at
                    # all means this is not a delivery of this platform
                    raise BadRequest(
                        f"the delivery has no `{level.source}`", code="invalid_delivery"
                    )
                if found is None:
                    continue
                children = found if isinstance(found, list) else [found]
                expanded.extend((child, (node, *parents)) for child in children)
            nodes = expanded
        return nodes
