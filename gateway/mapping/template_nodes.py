"""The compiled nodes of a template tree, and how a leaf's value becomes JSON-like data.

`Native` and `Text` run Jinja; `Name`, `DefaultName`, `Concat` and `IfDefined` are fast
paths for the commonest leaves (`{{ field }}`, `{{ field | default(x) }}`, literal text
with plain `{{ field }}`s, `{{ x if field is defined else y }}`) that give what Jinja
gives without building its context objects. Which leaves take them:
`gateway.mapping.template_fast`.
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
            return finalize(context[self.name], self.label)
        except KeyError:
            pass
        found = environment("native").globals.get(self.name, MISSING)
        if found is MISSING:
            raise RenderError(_missing(self.name, self.label))
        return finalize(found, self.label)


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
        value = context.get(self.name, MISSING)
        if value is not MISSING:
            return finalize(value, self.label)
        if self.otherwise is not None:
            return self.otherwise.render(context)
        return finalize(self.fallback, self.label)


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
        return finalize(result, self.label)


class IfDefined(Node):
    """`{{ x if field is defined [and field] else fallback }}` without Jinja when it can.

    Defined means in the context or the globals, as Jinja resolves a name. While the
    field is absent (or, with `and field`, false) the leaf is `fallback`, `omit` or a
    constant; otherwise it is `then`: a fast node for `x` when `x` needs no Jinja, else
    the whole expression in Jinja.
    """

    __slots__ = ("_globals", "fallback", "label", "name", "then", "truthy")

    def __init__(
        self,
        name: str,
        fallback: Any,
        then: Node,
        label: str,
        *,
        truthy: bool = False,
        globals_: Mapping[str, Any],
    ) -> None:
        self.name = name
        self.fallback = fallback
        self.then = then
        self.label = label
        self.truthy = truthy  # `and field`: a false value also gives the fallback
        self._globals = globals_  # the environment's own, never changed after setup

    def render(self, context: Mapping[str, Any]) -> Any:
        value = context.get(self.name, MISSING)
        if value is MISSING:
            value = self._globals.get(self.name, MISSING)
        if value is MISSING or (self.truthy and not value):
            return finalize(self.fallback, self.label)
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


class Field(str):
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
                value = context.get(part, MISSING)
                if value is MISSING:
                    value = self._globals.get(part, MISSING)
                if value is MISSING:
                    value = self._undefined(name=str(part))
                out.append(str(self._finalize(value)))  # type: ignore[misc]
        except Exception as exc:
            raise RenderError(_explain(exc, self.label)) from None
        return "".join(out)


class DictNode(Node):
    """An object of leaves; `{{ field }}` and `{{ field | default(x) }}` leaves are inlined.

    Both start by looking `field` up and, when it is there, finalise its value: done here,
    with the check of `finalize` for plain values, a leaf costs no call of its own. A
    missing field goes to the leaf itself (the fallback, the globals, the error).

    `render` runs the function `gateway.mapping.template_code` generates for the whole
    object at its first render; `interpret` is the same walk, node by node (its
    definition, which the tests hold the generated function to).
    """

    __slots__ = ("_run", "items")

    def __init__(self, items: list[tuple[str, Node]]) -> None:
        self.items = items
        self._run: Callable[[Mapping[str, Any]], Any] | None = None  # generated when used

    def render(self, context: Mapping[str, Any]) -> Any:
        run = self._run
        if run is None:
            from gateway.mapping.template_code import generate  # it builds on these nodes

            run = self._run = generate(self)
        return run(context)

    def interpret(self, context: Mapping[str, Any]) -> Any:
        out: dict[str, Any] = {}
        get = context.get
        for key, node in self.items:
            if type(node) is not Name and type(node) is not DefaultName:
                value = interpreted(node, context)
            else:
                value = get(node.name, MISSING)
                if value is MISSING:
                    value = node.render(context)
                elif value is not None and type(value) not in PLAIN_SCALARS:
                    value = finalize(value, node.label)
            if value is not OMIT:
                out[key] = value
        return out


class ListNode(Node):
    __slots__ = ("items",)

    def __init__(self, items: list[Node]) -> None:
        self.items = items

    def render(self, context: Mapping[str, Any]) -> Any:
        return [v for v in (n.render(context) for n in self.items) if v is not OMIT]

    def interpret(self, context: Mapping[str, Any]) -> Any:
        return [v for v in (interpreted(n, context) for n in self.items) if v is not OMIT]


def interpreted(node: Node, context: Mapping[str, Any]) -> Any:
    """`node.render(context)` with no generated code anywhere in it (the reference)."""
    if isinstance(node, DictNode | ListNode):
        return node.interpret(context)
    return node.render(context)


MISSING = object()
# JSON scalars a payload takes as they are (their subclasses are converted)
PLAIN_SCALARS = (str, int, float, bool)


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


def finalize(value: Any, label: str) -> Any:
    """Turn a native result into plain JSON-like data, dropping `omit` inside containers."""
    kind = type(value)
    if value is None or value is OMIT or kind in PLAIN_SCALARS:
        return value
    # plain dicts and lists (most containers) skip the checks of the others, and the
    # abstract Mapping and Iterator checks, which cost more than a type comparison
    if kind is not dict and kind is not list:
        if isinstance(value, jinja2.Undefined):
            try:
                value._fail_with_undefined_error()
            except Exception as exc:
                raise RenderError(_explain(exc, label)) from None
        if isinstance(value, str):
            return str(value)
        if isinstance(value, int | float):
            return value
    if kind is dict or (kind is not list and isinstance(value, Mapping)):
        out: dict[str, Any] = {}
        for key, item in value.items():
            done = finalize(item, label)
            if done is not OMIT:
                out[key if isinstance(key, str) else values.to_str(key) or ""] = done
        return out
    if kind is list or isinstance(value, list | tuple | Iterator):
        items: list[Any] = []
        for item in value:
            done = finalize(item, label)
            if done is not OMIT:
                items.append(done)
        return items
    raise RenderError(f"{label}: a value of type {type(value).__name__} cannot go into a payload")
