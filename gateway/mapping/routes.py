"""Compile the `inbound:` and `outbound:` routes of a mapping (CXone defaults merged in)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, cast

from gateway.mapping.defaults import CxoneDefaults
from gateway.mapping.expressions import Expr, compile_or_report, optional_expr
from gateway.mapping.inbound import InboundRoute
from gateway.mapping.loader import Problems
from gateway.mapping.lookups import compile_lookups
from gateway.mapping.model import Action
from gateway.mapping.outbound import ROOT_KEYS, Limits, OutboundRoute
from gateway.mapping.request import compile_request
from gateway.mapping.state import compile_state
from gateway.mapping.templates import Node, compile_template
from gateway.mapping.uploads import compile_upload
from gateway.mapping.values import deep_merge, escape_pointer

_INBOUND_RESERVED = frozenset({"vars"})
_OUTBOUND_RESERVED = frozenset({*ROOT_KEYS, "vars", "cxone", "uploads", "attachment"})
MEDIA_FUNCTION = "media_url"


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
        when = optional_expr(spec, "when", where, problems.add)
        extract = _extract(spec.get("extract"), f"{where}/extract", problems, _INBOUND_RESERVED)
        if spec.get("ignore"):
            for key in ("lookups", "state"):
                if key in spec:
                    problems.add(
                        f"{where}/{key}",
                        f"an ignore route forwards nothing, so it has no use for `{key}`",
                        f"remove `{key}`, or give the route a channel and an action",
                    )
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
        lookups = compile_lookups(
            spec.get("lookups") or {},
            f"{where}/lookups",
            problems,
            frozenset(name for name, _ in extract),
        )
        given = {name for name, _ in extract} | {f for lookup in lookups for f in lookup.fields}
        missing = [f for f in base.required if f not in given]
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
                lookups=lookups,
                state=compile_state(spec["state"], f"{where}/state", problems)
                if "state" in spec
                else None,
                media=any(MEDIA_FUNCTION in e.functions for _, e in extract)
                or MEDIA_FUNCTION in repr(override),
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
        when = optional_expr(spec, "when", where, problems.add)
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
                request=compile_request(spec["request"], f"{where}/request", problems),
                limits=limits,
                result=_extract(spec.get("result"), f"{where}/result", problems, frozenset()),
                success=optional_expr(spec, "success", where, problems.add),
                retryable=optional_expr(spec, "retryable", where, problems.add),
                responses=responses,
                require_state=tuple(spec.get("require_state") or ()),
                upload=compile_upload(spec["upload"], f"{where}/upload", problems)
                if "upload" in spec
                else None,
            )
        )
    return tuple(routes)
