"""The CXone side of every mapping, read from gateway/cxone/defaults.yaml (data, not code)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

from gateway.errors import MappingError
from gateway.mapping.expressions import Expr, ExpressionSyntaxError, compile_expr
from gateway.mapping.loader import Problems, load_yaml
from gateway.mapping.templates import Node, compile_template

DEFAULTS_PATH = Path(__file__).resolve().parents[1] / "cxone" / "defaults.yaml"
ACTIONS = ("create_message", "message_status", "contact_status")
ENDPOINTS = ("legacy", "outbound", "sender_action")


@dataclass(frozen=True)
class ActionDefaults:
    """How one inbound action calls CXone."""

    method: str
    path: str
    required: tuple[str, ...]
    body: Mapping[str, Any]  # the template tree, merged with a route's `body:`


@dataclass(frozen=True)
class CxoneDefaults:
    """The parsed and checked defaults file."""

    actions: Mapping[str, ActionDefaults]
    extract: tuple[tuple[str, Expr], ...]
    responses: Mapping[str, Mapping[str, Any]]  # endpoint -> template tree
    compiled_responses: Mapping[str, Node]


@cache
def cxone_defaults(path: Path = DEFAULTS_PATH) -> CxoneDefaults:
    """Read, check and compile the defaults once; raise MappingError naming defaults.yaml."""
    problems = Problems(str(path))
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise MappingError(
            problems_for(path, f"cannot read the CXone defaults ({exc.strerror})")
        ) from None
    tree, _ = load_yaml(text, problems)
    if problems:
        raise MappingError(problems.items)
    defaults = _parse(tree, problems)
    if problems or defaults is None:
        raise MappingError(problems.items)
    return defaults


def problems_for(path: Path, reason: str) -> list[Any]:
    problems = Problems(str(path))
    problems.add("", reason, "reinstall byoc-gateway")
    return problems.items


def _parse(tree: Any, problems: Problems) -> CxoneDefaults | None:
    inbound = tree.get("inbound") if isinstance(tree, dict) else None
    outbound = tree.get("outbound") if isinstance(tree, dict) else None
    if not isinstance(inbound, dict) or not isinstance(outbound, dict):
        problems.add("", "needs `inbound:` and `outbound:` mappings")
        return None
    actions: dict[str, ActionDefaults] = {}
    for action in ACTIONS:
        spec = inbound.get(action)
        where = f"/inbound/{action}"
        if not isinstance(spec, dict) or not isinstance(spec.get("body"), dict):
            problems.add(where, f"the action {action} needs method, path, required and body")
            continue
        compile_template(spec["body"], f"{where}/body", problems.add)
        actions[action] = ActionDefaults(
            method=str(spec.get("method", "POST")),
            path=str(spec.get("path", "")),
            required=tuple(str(r) for r in spec.get("required", [])),
            body=spec["body"],
        )
    extract: list[tuple[str, Expr]] = []
    for name, source in (outbound.get("extract") or {}).items():
        try:
            extract.append((name, compile_expr(str(source), f"/outbound/extract/{name}")))
        except ExpressionSyntaxError as exc:
            problems.add(f"/outbound/extract/{name}", exc.reason, exc.fix)
    responses = outbound.get("responses") or {}
    compiled = {
        endpoint: compile_template(
            body, f"/outbound/responses/{endpoint}", problems.add, label="response"
        )
        for endpoint, body in responses.items()
    }
    return CxoneDefaults(actions, tuple(extract), responses, compiled)
