"""Compile the `inbound:` and `outbound:` routes of a mapping (CXone defaults merged in)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, cast

from gateway.mapping.defaults import CxoneDefaults
from gateway.mapping.expressions import Expr, compile_or_report
from gateway.mapping.inbound import InboundRoute
from gateway.mapping.loader import Problems
from gateway.mapping.model import Action
from gateway.mapping.outbound import ROOT_KEYS, Limits, OutboundRoute
from gateway.mapping.request import BodyFormat, RequestTemplate
from gateway.mapping.templates import Node, compile_template
from gateway.mapping.values import deep_merge, escape_pointer

_INBOUND_RESERVED = frozenset({"vars"})
_OUTBOUND_RESERVED = frozenset({*ROOT_KEYS, "vars", "cxone"})


def _extract(
    tree: Mapping[str, str] | None, pointer: str, problems: Problems, reserved: frozenset[str]
) -> tuple[tuple[str, Expr], ...]:
    pairs = []
    for name, source in (tree or {}).items():
        where = f"{pointer}/{escape_pointer(name)}"
        if name in reserved:
            problems.add(
                where,
                f"{name!r} is a reserved name and cannot be a field",
                f"rename the field; reserved here: {', '.join(sorted(reserved))}",
            )
        pairs.append((name, compile_or_report(source, where, problems.add)))
    return tuple(pairs)


def _unique(routes: list[dict[str, Any]], pointer: str, problems: Problems) -> None:
    seen: dict[str, int] = {}
    for index, route in enumerate(routes):
        name = route.get("name", "")
        if name in seen:
            problems.add(
                f"{pointer}/{index}/name",
                f"the route name {name!r} is used twice (first at {pointer}/{seen[name]})",
                "give every route its own name",
            )
        seen.setdefault(name, index)
    for index, route in enumerate(routes[:-1]):
        if "when" not in route:
            problems.add(
                f"{pointer}/{index}",
                f"the route {route.get('name')!r} has no `when`, "
                "so the routes after it are never reached",
                "add a `when:` or move the route to the end",
            )


def compile_inbound(
    tree: list[dict[str, Any]],
    problems: Problems,
    defaults: CxoneDefaults,
    channels: Mapping[str, Any],
) -> tuple[InboundRoute, ...]:
    """Compile inbound routes in order."""
    _unique(tree, "/inbound", problems)
    routes = []
    for index, spec in enumerate(tree):
        where = f"/inbound/{index}"
        when = (
            compile_or_report(spec["when"], f"{where}/when", problems.add)
            if "when" in spec
            else None
        )
        extract = _extract(spec.get("extract"), f"{where}/extract", problems, _INBOUND_RESERVED)
        if spec.get("ignore"):
            routes.append(
                InboundRoute(spec["name"], when, True, "", None, extract, (), "", "", None)
            )
            continue
        action = cast(Action, spec["action"])
        channel = spec["channel"]
        if channel not in channels:
            problems.add(
                f"{where}/channel",
                f"unknown channel role {channel!r}",
                f"use one of: {', '.join(channels)}",
            )
        base = defaults.actions[action]
        missing = [f for f in base.required if f not in dict(extract)]
        if missing:
            problems.add(
                f"{where}/extract",
                f"the action {action} needs the field(s) "
                f"{', '.join(missing)}, which this route does not extract",
                "add them under extract:",
            )
        override = spec.get("body")
        if override is not None:
            compile_template(override, f"{where}/body", problems.add, label="body")
        body = compile_template(
            deep_merge(dict(base.body), override or {}), f"{where}/body", problems.add, label="body"
        )
        routes.append(
            InboundRoute(
                spec["name"],
                when,
                False,
                channel,
                action,
                extract,
                base.required,
                base.method,
                base.path,
                body,
            )
        )
    return tuple(routes)


def compile_outbound(
    tree: list[dict[str, Any]], problems: Problems, defaults: CxoneDefaults
) -> tuple[OutboundRoute, ...]:
    """Compile outbound routes in order."""
    _unique(tree, "/outbound", problems)
    routes = []
    for index, spec in enumerate(tree):
        where = f"/outbound/{index}"
        when = (
            compile_or_report(spec["when"], f"{where}/when", problems.add)
            if "when" in spec
            else None
        )
        limits = None
        if "limits" in spec:
            raw = spec["limits"]
            limits = Limits(
                raw["max_text_chars"], raw.get("on_too_long", "reject"), raw.get("field", "text")
            )
        responses: dict[str, Node] = dict(defaults.compiled_responses)
        for endpoint, override in (spec.get("response") or {}).items():
            pointer = f"{where}/response/{endpoint}"
            compile_template(override, pointer, problems.add, label="response")
            merged = deep_merge(dict(defaults.responses.get(endpoint, {})), override)
            responses[endpoint] = compile_template(merged, pointer, problems.add, label="response")
        routes.append(
            OutboundRoute(
                name=spec["name"],
                when=when,
                extract=_extract(
                    spec.get("extract"), f"{where}/extract", problems, _OUTBOUND_RESERVED
                ),
                request=_request(spec["request"], f"{where}/request", problems),
                limits=limits,
                result=_extract(spec.get("result"), f"{where}/result", problems, frozenset()),
                success=compile_or_report(spec["success"], f"{where}/success", problems.add)
                if "success" in spec
                else None,
                retryable=compile_or_report(spec["retryable"], f"{where}/retryable", problems.add)
                if "retryable" in spec
                else None,
                responses=responses,
            )
        )
    return tuple(routes)


def _request(spec: dict[str, Any], where: str, problems: Problems) -> RequestTemplate:
    if ("path" in spec) == ("url" in spec):
        problems.add(
            where,
            "a request needs exactly one of `path` (joined to "
            "platform.base_url) or `url` (absolute)",
            "keep one of them",
        )
    body_format = cast(BodyFormat, spec.get("body_format", "json"))
    body = None
    if "body" in spec:
        if body_format == "text" and not isinstance(spec["body"], str):
            problems.add(
                f"{where}/body",
                "with body_format: text the body must be a text template",
                "write the body as one string",
            )
        body = compile_template(
            spec["body"],
            f"{where}/body",
            problems.add,
            mode="text" if body_format == "text" else "native",
            label="request.body",
        )
    headers = []
    for name, value in (spec.get("headers") or {}).items():
        pointer = f"{where}/headers/{escape_pointer(name)}"
        if not name or any(c in name for c in " :\r\n\t"):
            problems.add(pointer, f"{name!r} is not a valid header name", "")
        headers.append(
            (
                name,
                compile_template(
                    value, pointer, problems.add, mode="text", label=f"request.headers.{name}"
                ),
            )
        )
    return RequestTemplate(
        method=compile_template(
            spec.get("method", "POST"),
            f"{where}/method",
            problems.add,
            mode="text",
            label="request.method",
        ),
        path=compile_template(
            spec["path"], f"{where}/path", problems.add, mode="path", label="request.path"
        )
        if "path" in spec
        else None,
        url=compile_template(
            spec["url"], f"{where}/url", problems.add, mode="path", label="request.url"
        )
        if "url" in spec
        else None,
        query=compile_template(spec["query"], f"{where}/query", problems.add, label="request.query")
        if "query" in spec
        else None,
        headers=tuple(headers),
        body=body,
        body_format=body_format,
    )
