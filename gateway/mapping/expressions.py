"""JMESPath extraction: compiled once at load, with the mapping language's custom functions.

Context functions (`vars()`, `parent()`, `delivery()`, ...) read a context variable that
the router sets while one item is evaluated, so an expression over an item of a batch
can still reach the delivery around it.
"""

from __future__ import annotations

import difflib
from collections.abc import Callable, Iterator, Mapping
from contextvars import ContextVar
from types import MappingProxyType
from typing import Any, NamedTuple, TypeVar, cast

import jmespath
import jmespath.exceptions
import jmespath.functions
import jmespath.visitor

from gateway import jsonutil
from gateway.errors import BadRequest
from gateway.mapping import bridging, values
from gateway.mapping.expr_closures import Closure, compile_ast, field_keys, path_closure

F = TypeVar("F", bound=Callable[..., Any])


class EvalContext(NamedTuple):
    """What the context functions can see while one item is evaluated.

    A named tuple, not a frozen dataclass: one is built per delivery and per event, and
    a frozen dataclass pays an `object.__setattr__` per field.
    """

    vars: Mapping[str, Any] = MappingProxyType({})
    parents: tuple[Any, ...] = ()  # nearest first
    delivery: Any = None
    headers: Mapping[str, str] = MappingProxyType({})
    query: Mapping[str, str] = MappingProxyType({})


_EMPTY = EvalContext()
_CONTEXT: ContextVar[EvalContext] = ContextVar("byoc_mapping_eval", default=_EMPTY)


class evaluation:  # lower case: it reads as a function, `with evaluation(context):`
    """Make `context` visible to the context functions for the duration of a block."""

    __slots__ = ("_context", "_token")

    def __init__(self, context: EvalContext) -> None:
        self._context = context

    def __enter__(self) -> None:
        self._token = _CONTEXT.set(self._context)

    def __exit__(self, *exc: object) -> None:
        _CONTEXT.reset(self._token)


def _signature(*arguments: dict[str, Any]) -> Callable[[F], F]:
    return cast(Callable[[F], F], jmespath.functions.signature(*arguments))


_ANY: dict[str, Any] = {"types": []}
_STR = {"types": ["string"]}
_STR_OR_NULL = {"types": ["string", "null"]}
_TIME = {"types": ["number", "string", "null"]}


class CustomFunctions(jmespath.functions.Functions):  # type: ignore[misc]
    """The JMESPath built-ins plus the mapping language's functions (docs/mappings.md)."""

    @_signature(_TIME)
    def _func_iso_ms(self, value: Any) -> str | None:
        return None if value is None else values.iso_ms(value)

    @_signature(_TIME)
    def _func_iso_s(self, value: Any) -> str | None:
        return None if value is None else values.iso_s(value)

    @_signature(_TIME)
    def _func_iso(self, value: Any) -> str | None:
        return None if value is None else values.iso(value)

    @_signature(_STR_OR_NULL, _STR)
    def _func_split(self, text: str | None, sep: str) -> list[str] | None:
        if text is None:
            return None
        if not sep:
            raise ValueError("split() needs a non-empty separator")
        return text.split(sep)

    @_signature(_STR_OR_NULL)
    def _func_lower(self, text: str | None) -> str | None:
        return None if text is None else text.lower()

    @_signature(_STR_OR_NULL)
    def _func_upper(self, text: str | None) -> str | None:
        return None if text is None else text.upper()

    @_signature(_STR_OR_NULL)
    def _func_trim(self, text: str | None) -> str | None:
        return None if text is None else text.strip()

    @_signature(_STR_OR_NULL, _STR, _STR)
    def _func_replace(self, text: str | None, old: str, new: str) -> str | None:
        return None if text is None else text.replace(old, new)

    @_signature(_ANY, _ANY)
    def _func_default(self, value: Any, fallback: Any) -> Any:
        return fallback if value is None else value

    @_signature({"types": ["array", "null"]}, _STR, _ANY)
    def _func_find_by(self, items: list[Any] | None, key: str, wanted: Any) -> Any:
        for element in items or ():
            if isinstance(element, dict) and _same(element.get(key), wanted):
                return element
        return None

    @_signature({"types": ["array", "null"]}, _STR, _ANY)
    def _func_filter_by(self, items: list[Any] | None, key: str, wanted: Any) -> list[Any]:
        # a JMESPath filter cannot compare with a value of the item being evaluated
        # (`[?id == ...]` sees only the list element), hence this function
        return [e for e in items or () if isinstance(e, dict) and _same(e.get(key), wanted)]

    @_signature({"types": ["object", "null"]})
    def _func_entries(self, value: dict[str, Any] | None) -> list[dict[str, Any]] | None:
        if value is None:
            return None
        return [{"key": k, "value": v} for k, v in value.items()]

    @_signature({"types": [], "variadic": True})
    def _func_concat(self, *parts: Any) -> str:
        return "".join(values.to_str(p) or "" for p in parts)

    @_signature(_ANY)
    def _func_to_str(self, value: Any) -> str | None:
        return values.to_str(value)

    @_signature({"types": [], "variadic": True})
    def _func_join_ids(self, *parts: Any) -> str:
        return bridging.join_ids(parts)

    @_signature(_STR_OR_NULL)
    def _func_split_ids(self, composite: str | None) -> list[str] | None:
        return bridging.split_ids(composite)

    @_signature({"types": ["string", "object", "null"]})
    def _func_media_url(self, value: Any) -> str | None:
        return bridging.media_url(value)

    @_signature(_STR_OR_NULL)
    def _func_from_json(self, text: str | None) -> Any:
        if text is None:
            return None
        try:
            return jsonutil.loads(text)
        except BadRequest:
            raise ValueError("from_json() got text that is not JSON") from None

    @_signature()
    def _func_now_iso_ms(self) -> str:
        return values.current_iso_ms()

    @_signature()
    def _func_vars(self) -> dict[str, Any]:
        return dict(_CONTEXT.get().vars)

    @_signature()
    def _func_parent(self) -> Any:
        parents = _CONTEXT.get().parents
        return parents[0] if parents else None

    @_signature()
    def _func_parents(self) -> list[Any]:
        return list(_CONTEXT.get().parents)

    @_signature()
    def _func_delivery(self) -> Any:
        return _CONTEXT.get().delivery

    @_signature()
    def _func_headers(self) -> dict[str, str]:
        return dict(_CONTEXT.get().headers)

    @_signature()
    def _func_query(self) -> dict[str, str]:
        return dict(_CONTEXT.get().query)


def _same(value: Any, wanted: Any) -> bool:
    """JMESPath equality: `true` is not `1`, and a number never equals a text."""
    if isinstance(value, bool) or isinstance(wanted, bool):
        return value is wanted
    return bool(value == wanted) and value is not None


FUNCTION_TABLE: Mapping[str, Mapping[str, Any]] = CustomFunctions.FUNCTION_TABLE
_OPTIONS = jmespath.Options(custom_functions=CustomFunctions())


class ExpressionError(Exception):
    """An expression failed on one input (wrong type, bad time value, ...)."""


# One interpreter for every search (jmespath builds a new one per call otherwise); it keeps
# no per-search state.
_INTERPRETER = jmespath.visitor.TreeInterpreter(_OPTIONS)


def _function_names(node: Any) -> Iterator[str]:
    if isinstance(node, dict):
        if node.get("type") == "function_expression":
            yield node["value"]
        for child in node.get("children", []):
            yield from _function_names(child)


_NONE: frozenset[str] = frozenset()  # shared by the many expressions that call no function


class Expr:
    """One compiled JMESPath expression."""

    __slots__ = ("_ast", "_run", "functions", "plain", "source", "where")

    def __init__(self, source: str, parsed: Any, where: str) -> None:
        self.source = source
        self.where = where
        self._ast = parsed.parsed
        keys = field_keys(self._ast)
        # a plain `a.b.c` (most extractions) cannot fail: callers may run `plain` itself
        self.plain: Closure | None = path_closure(keys) if keys is not None else None
        # compiled at the first search: a mapping's other expressions cost memory only
        # once a message uses them (RSS: 200 mappings)
        self._run: Closure | None = None
        self.functions: frozenset[str] = frozenset(_function_names(self._ast)) or _NONE

    def search(self, data: Any) -> Any:
        """Evaluate against `data`; raise ExpressionError with a readable reason."""
        plain = self.plain
        if plain is not None:
            return plain(data)
        run = self._run
        if run is None:
            run = self._run = compile_ast(self._ast, _OPTIONS.custom_functions, _INTERPRETER)
        try:
            return run(data)
        except jmespath.exceptions.JMESPathTypeError as exc:
            raise ExpressionError(
                f"`{self.source}`: {exc.function_name}() cannot take "
                f"{exc.actual_type} (expected {', '.join(exc.expected_types)})"
            ) from None
        except (jmespath.exceptions.JMESPathError, ValueError, TypeError, KeyError) as exc:
            raise ExpressionError(f"`{self.source}`: {exc}") from None

    def path_keys(self) -> tuple[str, ...] | None:
        """The keys of a plain path (`a.b.c` gives ("a", "b", "c")), else None."""
        return field_keys(self._ast) if self.plain is not None else None

    def test(self, data: Any) -> bool:
        """Evaluate as a condition (JMESPath truthiness)."""
        return truthy(self.search(data))

    def __repr__(self) -> str:
        return f"Expr({self.source!r})"


def truthy(value: Any) -> bool:
    """JMESPath truthiness: null, false, "", [] and {} are false; everything else is true."""
    if value is None or value is False:
        return False
    if isinstance(value, str | list | dict):
        return bool(value)
    return True


def compile_expr(source: str, where: str) -> Expr:
    """Compile a JMESPath expression; raise ValueError with a readable reason and fix."""
    try:
        parsed = jmespath.compile(source)
    except jmespath.exceptions.ParseError as exc:
        column = getattr(exc, "lex_position", None)
        token = getattr(exc, "token_value", None)
        detail = str(getattr(exc, "msg", "")) or "invalid expression"
        at = f" at column {column + 1}" if isinstance(column, int) else ""
        near = f" near {token!r}" if token not in (None, "") else ""
        raise ExpressionSyntaxError(
            f"JMESPath syntax error{at}{near}: {detail} in `{source}`",
            "check the expression; quote string literals with 'single quotes', literal "
            'values with `backticks`, and keys holding dots or dashes with "double quotes"',
        ) from None
    except jmespath.exceptions.JMESPathError as exc:
        raise ExpressionSyntaxError(f"JMESPath error in `{source}`: {exc}", "") from None
    _check_functions(parsed.parsed, source)
    return Expr(source, parsed, where)


class ExpressionSyntaxError(ValueError):
    """An expression does not compile; carries an operator-facing fix."""

    def __init__(self, reason: str, fix: str) -> None:
        super().__init__(reason)
        self.reason = reason
        self.fix = fix


def _check_functions(node: Any, source: str) -> None:
    if not isinstance(node, dict):
        return
    children = node.get("children", [])
    if node.get("type") == "function_expression":
        name = node["value"]
        spec = FUNCTION_TABLE.get(name)
        if spec is None:
            close = difflib.get_close_matches(name, list(FUNCTION_TABLE), n=1)
            hint = f"did you mean {close[0]}()? " if close else ""
            raise ExpressionSyntaxError(
                f"unknown function {name}() in `{source}`",
                f"{hint}see the function list in docs/mappings.md",
            )
        signature = spec["signature"]
        variadic = bool(signature) and bool(signature[-1].get("variadic"))
        count = len(children)
        if (variadic and count < len(signature)) or (not variadic and count != len(signature)):
            wanted = f"at least {len(signature)}" if variadic else str(len(signature))
            raise ExpressionSyntaxError(
                f"{name}() takes {wanted} argument(s), got {count} in `{source}`",
                "see the function list in docs/mappings.md",
            )
    for child in children:
        _check_functions(child, source)


_NEVER = Expr("`null`", jmespath.compile("`null`"), "")


def optional_expr(
    spec: Mapping[str, Any], key: str, where: str, report: Callable[[str, str, str], None]
) -> Expr | None:
    """Compile `spec[key]` (reported at `where/key`) when the key is there, else None."""
    if key not in spec:
        return None
    return compile_or_report(spec[key], f"{where}/{key}", report)


def compile_or_report(source: str, pointer: str, report: Callable[[str, str, str], None]) -> Expr:
    """Compile, or report the problem at `pointer` and return an expression giving null."""
    try:
        return compile_expr(source, pointer)
    except ExpressionSyntaxError as exc:
        report(pointer, exc.reason, exc.fix)
        return _NEVER
