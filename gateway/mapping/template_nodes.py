"""The compiled nodes of a template tree, and how a leaf's value becomes JSON-like data.

`Native` and `Text` run Jinja; `Name`, `DefaultName` and `Concat` are fast paths for
the commonest leaves (`{{ field }}`, `{{ field | default(x) }}`, literal text with plain
`{{ field }}`s) that give what Jinja gives without building its context objects, and
`IfDefined` skips Jinja for `{{ x if field is defined else y }}` while the field is absent.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator, Mapping
from typing import Any

import jinja2
import jinja2.nodes
from jinja2.exceptions import SecurityError
from jinja2.runtime import new_context
from jinja2.sandbox import ImmutableSandboxedEnvironment

from gateway.mapping import values
from gateway.mapping.template_env import OMIT, RenderError, environment


class Node:
    """A compiled template tree node."""

    __slots__ = ()

    def render(self, context: Mapping[str, Any]) -> Any:
        raise NotImplementedError


class Const(Node):
    __slots__ = ("value",)

    def __init__(self, value: Any) -> None:
        self.value = value

    def render(self, context: Mapping[str, Any]) -> Any:
        return self.value


class Name(Node):
    """Fast path for a leaf that is just `{{ field }}`."""

    __slots__ = ("label", "name")

    def __init__(self, name: str, label: str) -> None:
        self.name = name
        self.label = label

    def render(self, context: Mapping[str, Any]) -> Any:
        try:
            return _finalize(context[self.name], self.label)
        except KeyError:
            pass
        found = environment("native").globals.get(self.name, _MISSING)
        if found is _MISSING:
            raise RenderError(_missing(self.name, self.label))
        return _finalize(found, self.label)


class DefaultName(Node):
    """Fast path for `{{ field | default(x) }}`, the commonest optional leaf.

    `x` is a constant, `omit`, another field, or `now_iso_ms()`. A field or the call is
    evaluated only when `field` is missing (Jinja evaluates it every time; neither can
    fail or has an effect, so only the work differs).
    """

    __slots__ = ("fallback", "label", "name", "otherwise")

    def __init__(self, name: str, fallback: Any, label: str, otherwise: Node | None = None) -> None:
        self.name = name
        self.fallback = fallback
        self.label = label
        self.otherwise = otherwise  # the fallback when it is not a constant

    def render(self, context: Mapping[str, Any]) -> Any:
        value = context.get(self.name, _MISSING)
        if value is not _MISSING:
            return _finalize(value, self.label)
        if self.otherwise is not None:
            return self.otherwise.render(context)
        return _finalize(self.fallback, self.label)


def default_of_name(
    env: ImmutableSandboxedEnvironment, expr: str
) -> tuple[str, Any, str | None] | None:
    """(field, constant fallback, fallback expression) for `field | default(...)`, else None."""
    body = env.parse("{{ " + expr + " }}").body
    if len(body) != 1 or not isinstance(body[0], jinja2.nodes.Output) or len(body[0].nodes) != 1:
        return None
    node = body[0].nodes[0]
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


def defined_guard(env: ImmutableSandboxedEnvironment, expr: str) -> tuple[str, Any] | None:
    """(field, fallback) of `x if field is defined [and ...] else fallback`, else None.

    The fallback is `omit` or a constant: what the expression gives while `field` is
    absent, since `and` stops at the undefined field.
    """
    body = env.parse("{{ " + expr + " }}").body
    if len(body) != 1 or not isinstance(body[0], jinja2.nodes.Output) or len(body[0].nodes) != 1:
        return None
    node = body[0].nodes[0]
    if not isinstance(node, jinja2.nodes.CondExpr) or node.expr2 is None:
        return None
    test = node.test
    while isinstance(test, jinja2.nodes.And):
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
    fallback = node.expr2
    if isinstance(fallback, jinja2.nodes.Name) and fallback.name == "omit":
        return test.node.name, OMIT
    try:
        return test.node.name, fallback.as_const()
    except jinja2.nodes.Impossible:
        return None


class Native(Node):
    """A leaf that is one expression, evaluated to a native value.

    Jinja's TemplateExpression builds each call's context from the environment's
    globals, a ChainMap it copies twice per call; here the globals are flattened once at
    compile time and the context is built from one dict (same names, same precedence:
    the fields win over the globals).
    """

    __slots__ = ("_blocks", "_env", "_globals", "_name", "_root", "label")

    def __init__(self, fn: Callable[..., Any], label: str) -> None:
        template = fn._template  # type: ignore[attr-defined]  # jinja2.TemplateExpression
        self._env = template.environment
        self._name = template.name
        self._blocks = template.blocks
        self._root = template.root_render_func
        self._globals = dict(template.globals)
        self.label = label

    def render(self, context: Mapping[str, Any]) -> Any:
        try:
            ctx = new_context(
                self._env, self._name, self._blocks, {**self._globals, **context}, shared=True
            )
            for _ in self._root(ctx):
                pass
            result = ctx.vars["result"]
        except Exception as exc:
            raise RenderError(_explain(exc, self.label)) from None
        return _finalize(result, self.label)


class IfDefined(Node):
    """`{{ x if field is defined [and ...] else fallback }}` without Jinja while `field` is absent.

    Defined means in the context or the globals, as Jinja resolves a name; when it is,
    the whole expression runs in Jinja (`then`). `fallback` is `omit` or a constant.
    """

    __slots__ = ("_globals", "fallback", "name", "then")

    def __init__(self, name: str, fallback: Any, then: Native) -> None:
        self.name = name
        self.fallback = fallback
        self.then = then
        self._globals = then._globals

    def render(self, context: Mapping[str, Any]) -> Any:
        if self.name not in context and self.name not in self._globals:
            return _finalize(self.fallback, self.then.label)
        return self.then.render(context)


class Text(Node):
    __slots__ = ("_template", "label")

    def __init__(self, template: jinja2.Template, label: str) -> None:
        self._template = template
        self.label = label

    def render(self, context: Mapping[str, Any]) -> Any:
        try:
            return self._template.render(context)
        except Exception as exc:
            raise RenderError(_explain(exc, self.label)) from None


class _Field(str):
    """A `{{ field }}` part of a `Concat` (a str subclass only to tell it from text)."""


class Concat(Node):
    """Fast path for text of literal parts and plain `{{ field }}`s (most paths and URLs).

    What Jinja's compiled template does for such a text, without its context objects:
    each field is looked up in the context, then the globals, else undefined (strict),
    passed through the environment's finalize (text: None is ""; path: URL-quoted) and
    `str`; any failure is explained as Jinja's would be.
    """

    __slots__ = ("_finalize", "_globals", "_undefined", "label", "parts")

    def __init__(
        self, parts: tuple[str, ...], env: ImmutableSandboxedEnvironment, label: str
    ) -> None:
        self.parts = parts
        self._finalize = env.finalize
        self._globals = dict(env.globals)
        self._undefined = env.undefined
        self.label = label

    def render(self, context: Mapping[str, Any]) -> Any:
        out: list[str] = []
        try:
            for part in self.parts:
                if type(part) is str:
                    out.append(part)
                    continue
                value = context.get(part, _MISSING)
                if value is _MISSING:
                    value = self._globals.get(part, _MISSING)
                if value is _MISSING:
                    value = self._undefined(name=str(part))
                out.append(str(self._finalize(value)))  # type: ignore[misc]
        except Exception as exc:
            raise RenderError(_explain(exc, self.label)) from None
        return "".join(out)


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
                parts.append(_Field(node.name))
            else:
                return None
    return tuple(parts)


class DictNode(Node):
    __slots__ = ("items",)

    def __init__(self, items: list[tuple[str, Node]]) -> None:
        self.items = items

    def render(self, context: Mapping[str, Any]) -> Any:
        out: dict[str, Any] = {}
        for key, node in self.items:
            value = node.render(context)
            if value is not OMIT:
                out[key] = value
        return out


class ListNode(Node):
    __slots__ = ("items",)

    def __init__(self, items: list[Node]) -> None:
        self.items = items

    def render(self, context: Mapping[str, Any]) -> Any:
        return [v for v in (n.render(context) for n in self.items) if v is not OMIT]


_MISSING = object()


def _missing(name: str, label: str) -> str:
    return (
        f"the field {name!r} is missing (needed by {label}); extract it, or write "
        f"`{name} | default(...)` in the template"
    )


def _explain(exc: BaseException, label: str) -> str:
    if isinstance(exc, RenderError):
        return f"{label}: {exc}"
    if isinstance(exc, SecurityError):
        return f"{label}: the template sandbox refused an operation ({exc})"
    if isinstance(exc, jinja2.UndefinedError):
        match = re.match(r"^'([^']+)' is undefined$", str(exc))
        if match:
            return _missing(match.group(1), label)
        return f"{label}: {exc}"
    return f"{label}: {type(exc).__name__}: {exc}"


def _finalize(value: Any, label: str) -> Any:
    """Turn a native result into plain JSON-like data, dropping `omit` inside containers."""
    if value is None or value is OMIT or type(value) in (str, int, float, bool):
        return value
    if isinstance(value, jinja2.Undefined):
        try:
            value._fail_with_undefined_error()
        except Exception as exc:
            raise RenderError(_explain(exc, label)) from None
    if isinstance(value, str):
        return str(value)
    if isinstance(value, int | float):
        return value
    if isinstance(value, Mapping):
        out: dict[str, Any] = {}
        for key, item in value.items():
            done = _finalize(item, label)
            if done is not OMIT:
                out[key if isinstance(key, str) else values.to_str(key) or ""] = done
        return out
    if isinstance(value, list | tuple | Iterator):
        return [d for d in (_finalize(i, label) for i in value) if d is not OMIT]
    raise RenderError(f"{label}: a value of type {type(value).__name__} cannot go into a payload")
