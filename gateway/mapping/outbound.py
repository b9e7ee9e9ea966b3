"""Outbound routing: a CXone reply or sender action -> platform requests -> CXone's answer."""

from __future__ import annotations

import fnmatch
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from functools import cached_property
from typing import Any, Literal

from gateway.errors import (
    MappingRuntimeError,
    UnprocessableEntity,
    UpstreamError,
    UpstreamRejected,
    UpstreamUnavailable,
)
from gateway.mapping.expressions import EvalContext, Expr, ExpressionError, evaluation
from gateway.mapping.extraction import Extraction
from gateway.mapping.model import (
    ChannelSpec,
    NoRoute,
    OutboundContext,
    OutboundPlan,
    PlatformRequest,
    PlatformResponse,
    PlatformSpec,
    UploadIO,
)
from gateway.mapping.request import RequestTemplate
from gateway.mapping.state import require
from gateway.mapping.templates import Node, RenderError
from gateway.mapping.uploads import UploadSpec, upload_all
from gateway.mapping.values import guess_content_type, to_str

ROOT_KEYS = ("kind", "endpoint", "channel", "channel_id", "params", "body", "state")


@dataclass(frozen=True)
class Limits:
    """How long a text may be, and what happens to a longer one."""

    max_text_chars: int
    on_too_long: Literal["split", "reject"]
    field: str = "text"


@dataclass(frozen=True)
class OutboundRoute:
    """One compiled outbound route."""

    name: str
    when: Expr | None
    extract: tuple[tuple[str, Expr], ...]
    request: RequestTemplate
    limits: Limits | None
    result: tuple[tuple[str, Expr], ...]
    success: Expr | None
    retryable: Expr | None
    responses: Mapping[str, Node]  # endpoint -> CXone response template (defaults + route)
    require_state: tuple[str, ...] = ()  # thread state the route cannot do without
    upload: UploadSpec | None = None  # sent once per attachment before `request`

    @cached_property
    def fields(self) -> Extraction:
        """`extract` as one generated function."""
        return Extraction(self.extract)

    @cached_property
    def results(self) -> Extraction:
        """`result` as one generated function, numeric id fields as exact text."""
        return Extraction(self.result, exact=True)


def split_text(text: str, limit: int) -> list[str]:
    """Cut a text into parts of at most `limit` characters, at whitespace where possible."""
    parts: list[str] = []
    rest = text
    while len(rest) > limit:
        cut = next((i for i in range(limit, 0, -1) if rest[i].isspace()), 0)
        head = rest[:cut].rstrip() if cut else ""
        if not head:
            head, rest = rest[:limit], rest[limit:]
        else:
            rest = rest[cut:].lstrip()
        parts.append(head)
    if rest or not parts:
        parts.append(rest)
    return parts


class OutboundRouter:
    """Route CXone calls of one mapping to the platform and back."""

    def __init__(
        self,
        mapping: str,
        variables: Mapping[str, Any],
        base_extract: tuple[tuple[str, Expr], ...],
        routes: tuple[OutboundRoute, ...],
        platform: PlatformSpec,
        channels: Mapping[str, ChannelSpec],
        error_code: Expr | None,
        error_message: Expr | None,
    ) -> None:
        self.mapping = mapping
        self.vars = variables
        self.base_extract = base_extract
        self.base_fields = Extraction(base_extract)
        self.routes = routes
        self.by_name = {r.name: r for r in routes}
        self.platform = platform
        self.channels = channels
        self.error_code = error_code
        self.error_message = error_message

    def route(self, ctx: OutboundContext) -> OutboundPlan:
        """Pick the route for a CXone call and render its platform request(s).

        A route with `upload:` and attachments to send returns a plan whose requests are
        rendered by `upload` once the attachments are on the platform.
        """
        root = _root(ctx)
        if ctx.channel not in self.channels:
            raise NoRoute(f"the mapping {self.mapping!r} has no channel {ctx.channel!r}")
        with evaluation(EvalContext(self.vars, (), ctx.body)):
            try:
                base = self.base_fields(root)
            except ExpressionError as exc:
                raise MappingRuntimeError(self.mapping, "(extract)", str(exc)) from None
            chosen, fields = self._choose(root, base)
        require(ctx.state, chosen.require_state, self.mapping, chosen.name)
        self._check_attachments(ctx.channel, fields)
        # each plan built once: dataclasses.replace costs more than the plan (5 µs)
        attachments = fields.get("attachments")
        if chosen.upload is not None and isinstance(attachments, list) and attachments:
            pending = tuple(a for a in attachments if a)
            return OutboundPlan(self.mapping, chosen.name, ctx, fields, (), pending)
        extra: dict[str, Any] = {"uploads": []} if chosen.upload is not None else {}
        requests = self._requests(chosen, fields, root, extra)
        return OutboundPlan(self.mapping, chosen.name, ctx, fields, requests)

    def thread_of(self, ctx: OutboundContext) -> str | None:
        """The default `thread_id` of a CXone call (the key of its thread state)."""
        expr = dict(self.base_extract).get("thread_id")
        if expr is None:
            return None
        with evaluation(EvalContext(self.vars, (), ctx.body)):
            try:
                return to_str(expr.search(_root(ctx)))
            except ExpressionError:
                return None

    async def upload(self, plan: OutboundPlan, io: UploadIO) -> OutboundPlan:
        """Upload a plan's pending attachments, then render its requests with `uploads`."""
        route = self.by_name[plan.route]
        if route.upload is None or not plan.pending_uploads:
            return plan
        root = _root(plan.ctx)
        uploads = await upload_all(
            self.mapping,
            route.name,
            route.upload,
            plan.pending_uploads,
            {**plan.fields, "vars": self.vars, "cxone": root, "state": root["state"]},
            self.platform,
            self.channels[plan.ctx.channel].attachments,
            io,
            self.error_for,
        )
        requests = self._requests(route, plan.fields, root, {"uploads": uploads})
        return plan._replace(requests=requests, pending_uploads=())

    def _requests(
        self,
        chosen: OutboundRoute,
        fields: Mapping[str, Any],
        root: Mapping[str, Any],
        extra: Mapping[str, Any],
    ) -> tuple[PlatformRequest, ...]:
        texts: list[str | None] = [None]
        limits = chosen.limits
        text = fields.get(limits.field) if limits else None
        if limits and isinstance(text, str) and len(text) > limits.max_text_chars:
            if limits.on_too_long == "reject":
                raise UnprocessableEntity(
                    f"the reply has {len(text)} characters; this channel takes at most "
                    f"{limits.max_text_chars} (mapping {self.mapping}, route {chosen.name})",
                    code="text_too_long",
                )
            texts = list(split_text(text, limits.max_text_chars))
        requests = []
        for index, part in enumerate(texts):
            context = {**fields, **extra, "vars": self.vars, "cxone": root, "state": root["state"]}
            if part is not None and limits is not None:
                context[limits.field] = part
                if index > 0:  # attachments travel with the first part only
                    context.pop("attachments", None)
                    if "uploads" in context:
                        context["uploads"] = []
            try:
                requests.append(chosen.request.render(self.platform, context))
            except RenderError as exc:
                raise MappingRuntimeError(self.mapping, chosen.name, str(exc)) from None
        return tuple(requests)

    def _choose(
        self, root: dict[str, Any], base: dict[str, Any]
    ) -> tuple[OutboundRoute, dict[str, Any]]:
        for route in self.routes:
            try:
                fields = {**base, **route.fields(root)} if route.extract else base
                if route.when is None or route.when.test({**root, **fields}):
                    return route, fields
            except ExpressionError as exc:
                raise MappingRuntimeError(self.mapping, route.name, str(exc)) from None
        raise NoRoute(
            f"no outbound route of mapping {self.mapping!r} matches this "
            f"{root['kind']} on channel {root['channel']!r}"
        )

    def _check_attachments(self, role: str, fields: Mapping[str, Any]) -> None:
        attachments = fields.get("attachments")
        if not attachments or not isinstance(attachments, list):
            return
        limits = self.channels[role].attachments
        if limits is None:
            raise UnprocessableEntity(
                f"the {role!r} channel takes no attachments", code="attachment_not_allowed"
            )
        if limits.max_count is not None and len(attachments) > limits.max_count:
            raise UnprocessableEntity(
                f"the {role!r} channel takes at most {limits.max_count} attachment(s)",
                code="attachment_not_allowed",
            )
        for number, item in enumerate(attachments, 1):
            if not isinstance(item, dict):
                continue
            size = item.get("size_bytes")
            if limits.content_types:
                kind = item.get("content_type")
                if not isinstance(kind, str) or not kind:
                    # CXone sends only {url, friendlyName}: the extension tells the type
                    kind = guess_content_type(
                        item.get("name"),
                        item.get("friendlyName"),
                        item.get("filename"),
                        item.get("url"),
                    )
                if kind is None:
                    raise UnprocessableEntity(
                        f"attachment {number}: its type is unknown (no content_type and no "
                        f"known file extension); the {role!r} channel takes only "
                        f"{', '.join(limits.content_types)}",
                        code="attachment_not_allowed",
                    )
                kind = kind.split(";", 1)[0].strip().lower()
                if not any(fnmatch.fnmatchcase(kind, p) for p in limits.content_types):
                    raise UnprocessableEntity(
                        f"attachment {number}: the {role!r} channel does not take {kind} "
                        f"attachments (it takes {', '.join(limits.content_types)})",
                        code="attachment_not_allowed",
                    )
            if isinstance(size, int) and limits.max_bytes is not None and size > limits.max_bytes:
                raise UnprocessableEntity(
                    f"attachment {number}: the {role!r} channel takes attachments up to "
                    f"{limits.max_bytes} bytes",
                    code="attachment_not_allowed",
                )

    def complete(self, plan: OutboundPlan, responses: Sequence[PlatformResponse]) -> dict[str, Any]:
        """Check the platform's answers, extract `result`, render CXone's response body."""
        route = self.by_name.get(plan.route)
        if route is None or not responses:
            raise MappingRuntimeError(
                self.mapping, plan.route, "nothing to complete: no route or no platform response"
            )
        for response in responses:
            self.check(plan, response)
        last = responses[-1]
        try:
            results = route.results(last.body) if route.result else {}
        except ExpressionError as exc:
            raise MappingRuntimeError(self.mapping, route.name, f"result: {exc}") from None
        node = route.responses.get(plan.ctx.endpoint)
        if node is None:
            return {}
        root = _root(plan.ctx)
        try:
            body = node.render(
                {**plan.fields, **results, "vars": self.vars, "cxone": root, "state": root["state"]}
            )
        except RenderError as exc:
            raise MappingRuntimeError(self.mapping, route.name, f"response: {exc}") from None
        return body if isinstance(body, dict) else {}

    def check(self, plan: OutboundPlan, response: PlatformResponse) -> None:
        """Raise the upstream error one platform answer stands for (non-2xx or `success`)."""
        if not 200 <= response.status < 300:
            raise self.error_for(response)
        route = self.by_name.get(plan.route)
        if route is not None:
            self._check_success(route, response)

    def _check_success(self, route: OutboundRoute, response: PlatformResponse) -> None:
        if route.success is None:
            return
        scope = response.scope()
        try:
            if route.success.test(scope):
                return
            retry = route.retryable.test(scope) if route.retryable else False
        except ExpressionError as exc:
            raise MappingRuntimeError(self.mapping, route.name, f"success: {exc}") from None
        code, message = self._error_fields(response.body)
        cls = UpstreamUnavailable if retry else UpstreamRejected
        detail = f": {message}" if message else ""
        raise cls(
            self.mapping,
            f"the platform reported a failure ({code or 'no code'}){detail}",
            status=response.status,
            code=code,
        )

    def _error_fields(self, body: Any) -> tuple[str | None, str | None]:
        out: list[str | None] = []
        for expr in (self.error_code, self.error_message):
            try:
                out.append(to_str(expr.search(body)) if expr is not None else None)
            except ExpressionError:
                out.append(None)
        return out[0], out[1]

    def error_for(self, response: PlatformResponse) -> UpstreamError:
        """Build the error for a non-2xx answer: retryable for 408, 429 and 5xx."""
        code, message = self._error_fields(response.body)
        text = (
            f"HTTP {response.status}"
            + (f" {code}" if code else "")
            + (f": {message}" if message else "")
        )
        retry_after = _retry_after(response.headers)
        if response.status in (408, 429) or response.status >= 500:
            return UpstreamUnavailable(
                self.mapping, text, status=response.status, code=code, retry_after=retry_after
            )
        return UpstreamRejected(self.mapping, text, status=response.status, code=code)


def _root(ctx: OutboundContext) -> dict[str, Any]:
    """What outbound expressions read: the CXone call and the thread's state."""
    return {
        "kind": ctx.kind,
        "endpoint": ctx.endpoint,
        "channel": ctx.channel,
        "channel_id": ctx.channel_id,
        "params": dict(ctx.params),
        "body": ctx.body,
        "state": dict(ctx.state.values),
    }


def _retry_after(headers: Mapping[str, str]) -> float | None:
    for key, value in headers.items():
        if key.lower() == "retry-after":
            try:
                return max(0.0, float(value))
            except ValueError:
                return None
    return None
