"""Which template leaves need no Jinja, read from their Jinja syntax tree at compile time.

A leaf that matches one of these shapes is compiled to the fast nodes of
`gateway.mapping.template_nodes`, which give what Jinja gives (values and error
messages; tests/test_mapping_templates.py compares both) without its context objects:

- `concat_parts`: text of literal parts and plain `{{ name }}`s (paths, URLs);
- `default_of_name`: `{{ name | default(x) }}`;
- `guarded`: `{{ x if name is defined [and name | and ...] else fallback }}`, with `x`
  itself built from fast nodes when it is `plain` (names, constants, lists, dicts,
  `name | default(constant)`).
"""

from __future__ import annotations

from typing import Any, NamedTuple

import jinja2.nodes
from jinja2.sandbox import ImmutableSandboxedEnvironment

from gateway.mapping.template_env import OMIT
from gateway.mapping.template_nodes import (
    PLAIN_SCALARS,
    Const,
    DefaultName,
    DictNode,
    Field,
    ListNode,
    Name,
    Node,
)


def single_expression(env: ImmutableSandboxedEnvironment, expr: str) -> jinja2.nodes.Expr | None:
    """The syntax tree of `{{ expr }}` when it is one expression, else None."""
    body = env.parse("{{ " + expr + " }}").body
    if len(body) != 1 or not isinstance(body[0], jinja2.nodes.Output) or len(body[0].nodes) != 1:
        return None
    node = body[0].nodes[0]
    return node if isinstance(node, jinja2.nodes.Expr) else None


def concat_parts(ast: jinja2.nodes.Template) -> tuple[str, ...] | None:
    """The parts of a text that is only literal text and `{{ name }}`s, else None."""
    parts: list[str] = []
    for output in ast.body:
        if not isinstance(output, jinja2.nodes.Output):
            return None
        for node in output.nodes:
            if isinstance(node, jinja2.nodes.TemplateData):
                parts.append(node.data)
            elif isinstance(node, jinja2.nodes.Name) and node.ctx == "load":
                parts.append(Field(node.name))
            else:
                return None
    return tuple(parts)


def default_of_name(node: jinja2.nodes.Expr) -> tuple[str, Any, str | None] | None:
    """(field, constant fallback, fallback expression) for `field | default(...)`, else None."""
    if not (
        isinstance(node, jinja2.nodes.Filter)
        and node.name == "default"
        and isinstance(node.node, jinja2.nodes.Name)
        and len(node.args) == 1
        and not node.kwargs
        and node.dyn_args is None
        and node.dyn_kwargs is None
    ):
        return None
    name, arg = node.node.name, node.args[0]
    if isinstance(arg, jinja2.nodes.Name):
        return (name, OMIT, None) if arg.name == "omit" else (name, None, arg.name)
    if (
        isinstance(arg, jinja2.nodes.Call)
        and isinstance(arg.node, jinja2.nodes.Name)
        and arg.node.name == "now_iso_ms"  # other calls may fail: Jinja's eager order
        and not arg.args
        and not arg.kwargs
        and arg.dyn_args is None
        and arg.dyn_kwargs is None
    ):
        return name, None, arg.node.name + "()"
    try:
        return name, arg.as_const(), None
    except jinja2.nodes.Impossible:
        return None


class Guard(NamedTuple):
    """`x if name is defined [and ...] else fallback`, read at compile time."""

    name: str
    fallback: Any  # `omit` or a constant
    then: jinja2.nodes.Expr | None  # `x`, when the test is only `name is defined [and name]`
    truthy: bool  # `and name`: a false value also gives the fallback


def guarded(node: jinja2.nodes.Expr) -> Guard | None:
    """The guard of `x if name is defined [and ...] else fallback`, else None.

    While `name` is absent the expression gives `fallback`, since `and` stops at the
    undefined name. When the test is exactly `name is defined` or `name is defined and
    name`, `then` is `x`; with any other test the whole expression runs in Jinja.
    """
    if not isinstance(node, jinja2.nodes.CondExpr) or node.expr2 is None:
        return None
    test, rest = node.test, []
    while isinstance(test, jinja2.nodes.And):
        rest.append(test.right)
        test = test.left
    if not (
        isinstance(test, jinja2.nodes.Test)
        and test.name == "defined"
        and isinstance(test.node, jinja2.nodes.Name)
        and not test.args
        and not test.kwargs
        and test.dyn_args is None
        and test.dyn_kwargs is None
    ):
        return None
    name = test.node.name
    fallback = node.expr2
    if isinstance(fallback, jinja2.nodes.Name) and fallback.name == "omit":
        constant: Any = OMIT
    else:
        try:
            constant = fallback.as_const()
        except jinja2.nodes.Impossible:
            return None
    truthy = len(rest) == 1 and isinstance(rest[0], jinja2.nodes.Name) and rest[0].name == name
    simple = not rest or truthy
    return Guard(name, constant, node.expr1 if simple else None, truthy)


def plain(node: jinja2.nodes.Expr, label: str) -> Node | None:
    """Fast nodes computing `node`: names, constants, lists, dicts, `name | default(c)`."""
    if isinstance(node, jinja2.nodes.Name) and node.ctx == "load":
        return Name(node.name, label)
    if isinstance(node, jinja2.nodes.Const):
        value = node.value
        return Const(value) if value is None or type(value) in PLAIN_SCALARS else None
    if isinstance(node, jinja2.nodes.List):
        items = [plain(item, label) for item in node.items]
        return None if any(i is None for i in items) else ListNode(items)  # type: ignore[arg-type]
    if isinstance(node, jinja2.nodes.Dict):
        pairs: list[tuple[str, Node]] = []
        for pair in node.items:
            value_node = plain(pair.value, label)
            if not (isinstance(pair.key, jinja2.nodes.Const) and type(pair.key.value) is str):
                return None
            if value_node is None:
                return None
            pairs.append((pair.key.value, value_node))
        return DictNode(pairs)
    default = default_of_name(node)
    if default is not None and default[2] is None:  # a constant fallback, not a field or call
        return DefaultName(default[0], default[1], label)
    return None
