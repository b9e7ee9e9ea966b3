"""Dry runs of a mapping: route a sample, render the exact requests, explain, send nothing.

The engine behind `byoc-gateway try` (gateway.trycmd holds its command line and text).
Results are plain JSON-ready dicts. Explaining which `when` gave what needs the
compiled routes, which the mapping engine keeps private (`CompiledMapping._parts`): if
they are not where this module looks, routing still works and only the explanation
is left out.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl

import yaml

from gateway.errors import (
    GatewayError,
    MappingError,
    MappingRuntimeError,
    RequestError,
    UpstreamRejected,
    UpstreamUnavailable,
)
from gateway.mapping import (
    CompiledMapping,
    Ignored,
    InboundCall,
    InboundItem,
    NoRoute,
    OutboundContext,
    OutboundPlan,
    PlatformRequest,
    PlatformResponse,
    load_mapping,
)
from gateway.mapping.expressions import EvalContext, ExpressionError, evaluation, truthy
from gateway.mapping.extraction import Extraction
from gateway.mapping.inbound import NO_ROUTE
from gateway.mapping.model import mask_url
from gateway.mapping.offline import CannedLookups, run_offline
from gateway.secrets import Redactor


@dataclass(frozen=True)
class Reference:
    """One `${NAME}` / `${NAME:-default}` / `${file:...}` in a mapping (outside `tests`)."""

    where: str  # JSON pointer of the string holding it
    name: str
    has_default: bool


# the grammar of gateway.secrets: ${NAME}, ${NAME:-default}, ${file:path}, $${ (a literal)
_REF = re.compile(r"\$\$\{|\$\{(file:[^}]+|[^}:]+)(?::-([^}]*))?\}")


def mapping_references(path: Path) -> list[Reference]:
    """Every reference a mapping file makes, with where it is."""
    try:
        tree = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, yaml.YAMLError):
        return []
    if not isinstance(tree, dict):
        return []
    found: list[Reference] = []
    stack: list[tuple[str, Any]] = [
        (f"/{_escape(str(k))}", v) for k, v in tree.items() if k != "tests"
    ]
    while stack:
        where, node = stack.pop()
        if isinstance(node, dict):
            stack.extend((f"{where}/{_escape(str(k))}", v) for k, v in node.items())
        elif isinstance(node, list):
            stack.extend((f"{where}/{i}", v) for i, v in enumerate(node))
        elif isinstance(node, str):
            found += [
                Reference(where, m.group(1), m.group(2) is not None)
                for m in _REF.finditer(node)
                if m.group(1)
            ]
    return found


def _escape(key: str) -> str:
    return key.replace("~", "~0").replace("/", "~1")


def load_for_dry_run(path: Path, env: Mapping[str, str]) -> tuple[CompiledMapping, str, list[str]]:
    """Load with the environment's secrets; a variable that is not set gets a placeholder.

    Returns the mapping, the mode ("environment": all set; "partial": placeholders for
    the unset ones; "placeholders": none looked up, like `check --no-secrets`) and what
    is missing.
    """
    placeholder = load_mapping(path, check_secrets=False)  # MappingError: a real problem
    try:
        return load_mapping(path, env=env), "environment", []
    except MappingError as exc:
        # everything but the secrets loaded above, so these are secret problems
        missing = [f"{p.reason} ({p.where})" for p in exc.problems]
    refs = mapping_references(path)
    unset = {
        r.name
        for r in refs
        if not r.name.startswith("file:") and not r.has_default and not env.get(r.name)
    }
    fill = {name: f"${{{name}}}" for name in unset}  # a reference stands for itself
    for attempt in range(2):
        try:
            return load_mapping(path, env={**env, **fill}), "partial", missing
        except MappingError as exc:
            # a placeholder where a URL must be: give those a URL that says what it is
            places = {p.where for p in exc.problems}
            names = {r.name for r in refs if r.where in places and r.name in unset}
            if attempt or not names:
                break
            fill.update({n: f"https://{n.lower().replace('_', '-')}.invalid" for n in names})
    return placeholder, "placeholders", missing


def secret_masker(m: CompiledMapping, mode: str, env: Mapping[str, str]) -> Redactor:
    """Mask every value a `${...}` reference brought in, except the platform's base URL.

    Credentials in headers are masked by name already; this also catches a secret a
    template put in a URL path or a body. The base URL stays readable: it is where
    the requests would go.
    """
    masker = Redactor()
    if mode == "placeholders":
        return masker
    for ref in mapping_references(Path(m.source)):
        value = _reference_value(ref.name, env, Path(m.source).parent)
        if value and value not in m.platform.base_url:
            masker.add(value)
    return masker


def _reference_value(name: str, env: Mapping[str, str], base_dir: Path) -> str | None:
    if not name.startswith("file:"):
        return env.get(name)
    path = Path(name[5:]) if Path(name[5:]).is_absolute() else base_dir / name[5:]
    try:
        return path.read_text(encoding="utf-8").rstrip("\n")
    except (OSError, UnicodeDecodeError):
        return None


def inbound_item(m: CompiledMapping, item: InboundItem) -> dict[str, Any]:
    """Route one item; say which route matched (and what each `when` gave) or why none did."""
    view: dict[str, Any] = {"index": item.position, "tried": trace_inbound(m, item)}
    try:
        routed = m.route_inbound(item)
    except MappingRuntimeError as exc:
        return {**view, "outcome": "error", "route": exc.route, "error": str(exc)}
    if isinstance(routed, Ignored):
        outcome = "no_route" if routed.route == NO_ROUTE else "ignored"
        return {
            **view,
            "outcome": outcome,
            "route": None if outcome == "no_route" else routed.route,
            "dedupe_key": routed.dedupe_key,
        }
    if routed.deferred:
        # rendered by the queue worker with lookups: show it with every lookup failing,
        # so the fallbacks the mapping declares are what `try` prints
        try:
            rendered = run_offline(m.render_inbound(item, CannedLookups(m.name, {})))
        except MappingRuntimeError as exc:
            return {**view, "outcome": "error", "route": exc.route, "error": str(exc)}
        if isinstance(rendered, InboundCall):
            routed = rendered
        view["note"] = "rendered as the worker would with no lookup answering (fallbacks shown)"
    return {**view, **_call_view(routed)}


def _call_view(call: InboundCall) -> dict[str, Any]:
    return {
        "outcome": "routed",
        "route": call.route,
        "channel": call.channel,
        "action": call.action,
        "thread_id": call.thread_id,
        "message_id": call.message_id,
        "dedupe_key": call.dedupe_key,
        "fields": dict(call.fields),
        "cxone_request": {"method": call.method, "path": call.path, "body": call.body},
    }


def trace_inbound(m: CompiledMapping, item: InboundItem) -> list[dict[str, Any]]:
    """Evaluate the inbound `when`s in order up to the first match."""
    parents = item.parents or ((item.parent,) if item.parent is not None else ())
    context = EvalContext(m.vars, parents, item.delivery, item.headers, item.query)
    with evaluation(context):
        return _trace(_engine(m, "inbound", "routes"), lambda route: item.item)


def _engine(m: CompiledMapping, side: str, attr: str) -> Any:
    # The explanation needs the compiled routes, which the engine keeps private; without
    # them `try` still routes, it only cannot show what each `when` gave.
    return getattr(getattr(getattr(m, "_parts", None), side, None), attr, ())


def _trace(routes: Any, data_for: Any) -> list[dict[str, Any]]:
    tried: list[dict[str, Any]] = []
    for route in routes:
        when = route.when
        entry: dict[str, Any] = {"route": route.name, "when": when.source if when else None}
        if when is None:
            tried.append({**entry, "value": None, "matched": True})
            break
        try:
            value = when.search(data_for(route))
        except (ExpressionError, MappingRuntimeError) as exc:
            tried.append({**entry, "error": str(exc), "matched": False})
            break
        matched = truthy(value)
        tried.append({**entry, "value": value, "matched": matched})
        if matched:
            break
    return tried


def outbound_call(
    m: CompiledMapping, ctx: OutboundContext, answers: Sequence[PlatformResponse]
) -> dict[str, Any]:
    """Route a CXone call; show the platform requests and, given answers, CXone's response."""
    view: dict[str, Any] = {
        "kind": ctx.kind,
        "endpoint": ctx.endpoint,
        "channel": ctx.channel,
        "channel_id": ctx.channel_id,
        "params": dict(ctx.params),
        "tried": trace_outbound(m, ctx),
    }
    try:
        plan = m.route_outbound(ctx)
    except NoRoute as exc:
        return {
            **view,
            "outcome": "no_route",
            "error": str(exc),
            "cxone_response": cxone_error(exc),
        }
    except (RequestError, MappingRuntimeError) as exc:
        return {
            **view,
            "outcome": "rejected",
            "error": str(exc),
            "cxone_response": cxone_error(exc),
        }
    view.update(
        outcome="routed",
        route=plan.route,
        fields=dict(plan.fields),
        platform_requests=[request_view(m, r, ctx.kind) for r in plan.requests],
        cxone_response=None,
    )
    if answers:
        responses = [answers[min(i, len(answers) - 1)] for i in range(len(plan.requests))]
        view["cxone_response"] = _complete(m, plan, responses)
    return view


def _complete(
    m: CompiledMapping, plan: OutboundPlan, responses: list[PlatformResponse]
) -> dict[str, Any]:
    try:
        if plan.ctx.kind == "sender_action":  # the endpoint answers 204 once sent
            bad = next((r for r in responses if not 200 <= r.status < 300), None)
            if bad is not None:
                raise m.platform_error(bad)
            return {"status": 204, "body": None}
        return {"status": 200, "body": m.complete_outbound(plan, responses)}
    except GatewayError as exc:
        return cxone_error(exc)


def trace_outbound(m: CompiledMapping, ctx: OutboundContext) -> list[dict[str, Any]]:
    """Evaluate the outbound `when`s in order up to the first match (as the engine does)."""
    root = {
        "kind": ctx.kind,
        "endpoint": ctx.endpoint,
        "channel": ctx.channel,
        "channel_id": ctx.channel_id,
        "params": dict(ctx.params),
        "body": ctx.body,
    }
    with evaluation(EvalContext(m.vars, (), ctx.body)):
        try:
            base = Extraction(_engine(m, "outbound", "base_extract"))(root)
        except ExpressionError:
            return []

        def data_for(route: Any) -> dict[str, Any]:
            fields = {**base, **route.fields(root)} if route.extract else base
            return {**root, **fields}

        return _trace(_engine(m, "outbound", "routes"), data_for)


def request_view(m: CompiledMapping, request: PlatformRequest, kind: str) -> dict[str, Any]:
    """One platform request as the operator should see it: credentials masked, body parsed."""
    masked = {n.lower() for n in request.masked} | {"authorization", "proxy-authorization"}
    headers = {k: ("***" if k.lower() in masked else v) for k, v in request.headers.items()}
    if m.platform.idempotency_header and kind == "reply":
        headers[m.platform.idempotency_header] = "<one key per reply, the same on retries>"
    body: Any = None
    if request.body is not None:
        ctype = request.headers.get("Content-Type", "")
        text = request.body.decode(errors="replace")
        if "json" in ctype:
            body = json.loads(text)
        elif "x-www-form-urlencoded" in ctype:
            body = dict(parse_qsl(text, keep_blank_values=True))
        else:
            body = text
    return {
        "method": request.method,
        "url": mask_url(request.url, masked),
        "headers": headers,
        "body": body,
    }


def cxone_error(exc: BaseException) -> dict[str, Any]:
    """The answer CXone would get for an error (as gateway.http_errors renders it)."""
    if isinstance(exc, RequestError):
        return {
            "status": exc.status,
            "body": exc.body or {"error": exc.code, "message": exc.message},
        }
    if isinstance(exc, MappingRuntimeError):
        return {"status": 422, "body": {"error": "mapping_error", "message": str(exc)}}
    if isinstance(exc, UpstreamRejected):
        status = 422 if exc.status is None or exc.status < 500 else 502
        detail = (f" ({exc.status} {exc.code})" if exc.status else "") + (
            f": {exc.message}" if exc.message else ""
        )
        return {
            "status": status,
            "body": {
                "error": "platform_rejected",
                "message": f"{exc.upstream} refused the request" + detail,
            },
        }
    if isinstance(exc, UpstreamUnavailable):
        return {
            "status": 503,
            "retried": True,
            "body": {
                "error": "platform_unavailable",
                "message": f"{exc.upstream} did not accept the request in time"
                + (f" (last attempt: {exc.message})" if exc.message else ""),
            },
        }
    return {"status": 502, "body": {"error": "upstream_error", "message": str(exc)}}


def reply_view(status: int, content_type: str, body: bytes) -> dict[str, Any]:
    """A synchronous answer to the platform (handshake, webhook.response)."""
    return {"status": status, "content_type": content_type, "body": body.decode(errors="replace")}
