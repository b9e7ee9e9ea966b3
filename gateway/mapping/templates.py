"""Structured rendering: a template is a YAML tree whose string leaves are Jinja.

A leaf that is exactly one `{{ expression }}` keeps the expression's native type; other
leaves render to text. Payloads are built as trees and serialised afterwards, so no
value can change a payload's structure. Jinja runs in an immutable sandbox with strict
undefined; `omit` removes the key or list element it is assigned to.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Mapping
from functools import lru_cache
from typing import Any

import jinja2
import jinja2.nodes

from gateway.mapping import values
from gateway.mapping.template_env import OMIT as OMIT
from gateway.mapping.template_env import Mode as Mode
from gateway.mapping.template_env import RenderError as RenderError
from gateway.mapping.template_env import environment
from gateway.mapping.template_fast import (
    concat_parts,
    default_of_name,
    guarded,
    plain,
    single_expression,
)
from gateway.mapping.template_nodes import (
    Concat,
    Const,
    DefaultName,
    DictNode,
    IfDefined,
    ListNode,
    Name,
    Native,
    Text,
)
from gateway.mapping.template_nodes import Node as Node
from gateway.mapping.values import fixed_clock as fixed_clock

Reporter = Callable[[str, str, str], None]  # (pointer, reason, fix)

_SINGLE = re.compile(r"^\{\{(?P<expr>(?:(?!\{\{|\}\}|\{%|%\}|\{#).)*)\}\}$", re.DOTALL)
_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


def compile_template(
    tree: Any, pointer: str, report: Reporter, *, mode: Mode = "native", label: str = ""
) -> Node:
    """Compile a YAML tree of Jinja leaves; report each broken leaf at its pointer."""
    if isinstance(tree, dict):
        return DictNode(
            [
                (
                    key,
                    compile_template(
                        value,
                        f"{pointer}/{values.escape_pointer(key)}",
                        report,
                        mode=mode,
                        label=f"{label}.{key}" if label else key,
                    ),
                )
                for key, value in tree.items()
            ]
        )
    if isinstance(tree, list):
        return ListNode(
            [
                compile_template(value, f"{pointer}/{i}", report, mode=mode, label=f"{label}[{i}]")
                for i, value in enumerate(tree)
            ]
        )
    if not isinstance(tree, str) or not any(t in tree for t in ("{{", "{%", "{#")):
        return Const(tree)
    return _compile_leaf(tree, pointer, report, mode, label or "the template")


def _compile_leaf(source: str, pointer: str, report: Reporter, mode: Mode, label: str) -> Node:
    kind, value = _recipe(source, mode)
    if kind == "error":
        reason, fix = value
        report(pointer, reason, fix)
        return Const(None)
    if kind == "name":
        return Name(value, label)
    if kind == "default":
        name, fallback, lazy = value
        otherwise = None
        if lazy is not None:  # a field or a call: compiled as its own leaf
            otherwise = _compile_leaf("{{ " + lazy + " }}", pointer, report, mode, label)
        return DefaultName(name, fallback, label, otherwise)
    if kind == "native":
        return Native(value, label)
    if kind == "guarded":
        guard, fn = value
        then = plain(guard.then, label) if guard.then is not None else None
        return IfDefined(
            guard.name,
            guard.fallback,
            Native(fn, label) if then is None else then,
            label,
            truthy=guard.truthy,
            globals_=environment(mode).globals,
        )
    if kind == "concat":
        return Concat(value, environment(mode), label)
    return Text(value, label)


@lru_cache(maxsize=8192)
def _recipe(source: str, mode: Mode) -> tuple[str, Any]:
    """Parse, check and compile one leaf once per process (mappings share most leaves).

    Every route of every mapping repeats the CXone defaults' leaves, and Jinja's compile
    (parse, generate Python, compile it) is the bulk of loading a mapping. Compiled
    templates are immutable and bound to the shared sandbox, so sharing them is safe.
    """
    env = environment(mode)
    try:
        ast = env.parse(source)
    except jinja2.TemplateSyntaxError as exc:
        return "error", (f"Jinja syntax error: {exc.message}", _JINJA_FIX)
    unsafe = _unsafe_names(ast.find_all((jinja2.nodes.Getattr, jinja2.nodes.Getitem)))
    if unsafe:
        return "error", (
            f"the template uses {unsafe!r}: names starting with '_' are not "
            "allowed in templates (sandbox)",
            "use the field names of your data only",
        )
    single = _SINGLE.match(source.strip()) if mode == "native" else None
    try:
        if single is not None:
            expr = single.group("expr").strip()
            if _NAME.match(expr) and expr not in ("true", "false", "none", "True", "False", "None"):
                return "name", expr
            node = single_expression(env, expr)  # read once for every fast shape
            fast = default_of_name(node) if node is not None else None
            if fast is not None:
                return "default", fast
            compiled = env.compile_expression(expr, undefined_to_none=False)
            guard = guarded(node) if node is not None else None
            if guard is not None:
                return "guarded", (guard, compiled)
            return "native", compiled
        parts = concat_parts(ast)
        if parts is not None:
            return "concat", parts
        return "text", env.from_string(source)
    except jinja2.TemplateSyntaxError as exc:
        return "error", (f"Jinja error: {exc.message}", _JINJA_FIX)


_JINJA_FIX = (
    "check the {{ ... }} expression: balanced brackets and quotes, known filters "
    "(see docs/mappings.md)"
)


def _unsafe_names(nodes: Iterable[jinja2.nodes.Node]) -> str | None:
    for node in nodes:
        if isinstance(node, jinja2.nodes.Getattr) and node.attr.startswith("_"):
            return str(node.attr)
        if isinstance(node, jinja2.nodes.Getitem):
            arg = node.arg
            if (
                isinstance(arg, jinja2.nodes.Const)
                and isinstance(arg.value, str)
                and arg.value.startswith("_")
            ):
                return arg.value
    return None


def render_text(node: Node, context: Mapping[str, Any]) -> str:
    """Render a text-mode node (path, url, header) to a string."""
    value = node.render(context)
    if value is OMIT:
        raise RenderError("`omit` cannot be used here")
    if value is None:
        return ""
    return value if isinstance(value, str) else str(value)
