"""JMESPath ASTs compiled to Python closures, once, at load.

jmespath's `TreeInterpreter` walks the AST on every search, dispatching on each node's
type through a dict lookup and a bound-method call; the mapping engine spent half of
its time there. Here every node becomes a closure over its compiled children, with the
interpreter's semantics copied rule for rule (jmespath/visitor.py, 1.0): `None` for a
field of a non-object, JMESPath falsiness (`""`, `[]`, `{}`, null, false, not 0) in
`||`, `&&`, `!` and filters, `0 == false` being false, ordering only between numbers
or strings, projections dropping nulls. Functions are looked up once and their
arguments checked as `Functions.call_function` checks them (anything unusual goes
through it, so its errors are unchanged), and an expression
reference (`&expr`) is left to the interpreter, which the sorting functions call back.

tests/test_mapping_expressions.py checks every expression of the shipped mappings and
a list covering each node type against the interpreter on generated data.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from numbers import Number
from typing import Any

import jmespath.functions
import jmespath.visitor

Closure = Callable[[Any], Any]

_ORDERING: dict[str, Callable[[Any, Any], bool]] = {
    "lt": lambda x, y: x < y,
    "gt": lambda x, y: x > y,
    "lte": lambda x, y: x <= y,
    "gte": lambda x, y: x >= y,
}


def _is_number(x: Any) -> bool:
    kind = type(x)
    if kind is int or kind is float:  # the usual cases, without the ABC check
        return True
    return kind is not bool and kind is not str and isinstance(x, Number)


def _equals(x: Any, y: Any) -> bool:
    if type(x) is str or type(y) is str:  # most comparisons: no number quirk can apply
        return bool(x == y)
    # 0 and 1 equal False and True in Python, not in JMESPath
    if _is_number(x) and x in (0, 1):
        return not isinstance(y, bool) and bool(x == y)
    if _is_number(y) and y in (0, 1):
        return not isinstance(x, bool) and bool(x == y)
    return bool(x == y)


def _is_false(value: Any) -> bool:
    return value == "" or value == [] or value == {} or value is None or value is False


def _comparable(x: Any) -> bool:
    return _is_number(x) or isinstance(x, str)


def compile_ast(
    node: dict[str, Any],
    functions: jmespath.functions.Functions,
    interpreter: jmespath.visitor.TreeInterpreter,
) -> Closure:
    """One closure computing what `interpreter.visit(node, value)` computes."""

    def sub(child: dict[str, Any]) -> Closure:
        return compile_ast(child, functions, interpreter)

    kind = node["type"]
    children: Sequence[Any] = node.get("children", ())

    if kind == "field":
        return path_closure((node["value"],))

    if kind == "subexpression":
        keys = field_keys(node)
        if keys is not None:  # `a.b.c`, the commonest subexpression: no closure per key
            return path_closure(keys)
    if kind in ("subexpression", "index_expression", "pipe"):
        return _chain([sub(c) for c in children])

    if kind in ("current", "identity"):
        return _identity

    if kind == "literal":
        constant = node["value"]
        return lambda value: constant

    if kind == "index":
        index = node["value"]

        def at(value: Any) -> Any:
            if not isinstance(value, list):
                return None
            try:
                return value[index]
            except IndexError:
                return None

        return at

    if kind == "slice":
        part = slice(*children)
        return lambda value: value[part] if isinstance(value, list) else None

    if kind == "key_val_pair":
        return sub(children[0])

    if kind == "comparator":
        op, (left, right) = node["value"], children
        if op in ("eq", "ne") and left["type"] == "literal":  # symmetric: constant on the right
            left, right = right, left
        literal = right["value"] if right["type"] == "literal" else None
        return _comparator(op, sub(left), sub(right), literal)

    if kind == "or_expression":
        left, right = sub(children[0]), sub(children[1])

        def either(value: Any) -> Any:
            matched = left(value)
            return right(value) if _is_false(matched) else matched

        return either

    if kind == "and_expression":
        left, right = sub(children[0]), sub(children[1])

        def both(value: Any) -> Any:
            matched = left(value)
            return matched if _is_false(matched) else right(value)

        return both

    if kind == "not_expression":
        inner = sub(children[0])

        def negate(value: Any) -> Any:
            result = inner(value)
            if _is_number(result) and result == 0:
                return False  # !0 is false: 0 is not falsy in JMESPath
            return not result

        return negate

    if kind == "function_expression":
        return _function(node["value"], [sub(c) for c in children], functions)

    if kind in ("projection", "value_projection", "filter_projection"):
        return _projection(kind, [sub(c) for c in children])

    if kind == "flatten":
        return _flatten(sub(children[0]))

    if kind == "multi_select_list":
        items = [sub(c) for c in children]
        return lambda value: None if value is None else [item(value) for item in items]

    if kind == "multi_select_dict":
        pairs = [(c["value"], sub(c)) for c in children]
        return lambda value: None if value is None else {k: f(value) for k, f in pairs}

    # expression references (&expr) and anything newer: the interpreter itself
    return lambda value: interpreter.visit(node, value)


def _identity(value: Any) -> Any:
    return value


def field_keys(node: dict[str, Any]) -> tuple[str, ...] | None:
    """The keys of a subexpression made of fields only (`a.b.c`), else None."""
    if node["type"] == "field":
        return (node["value"],)
    if node["type"] != "subexpression":
        return None
    keys: list[str] = []
    for child in node["children"]:
        sub = field_keys(child)
        if sub is None:
            return None
        keys.extend(sub)
    return tuple(keys)


def path_closure(keys: tuple[str, ...]) -> Closure:
    """What a chain of `field` closures computes: `.get` per key, None once one fails.

    A missing key ends the walk with None before the next `.get`: `None.get` would give
    the same None through an AttributeError, which costs a microsecond to raise and
    catch (the echo route's `data.author.id` on every direct message).
    """
    if len(keys) == 1:
        (only,) = keys

        def path1(value: Any) -> Any:
            try:
                return value.get(only)
            except AttributeError:
                return None

        return path1
    if len(keys) == 2:
        first, second = keys

        def path2(value: Any) -> Any:
            try:
                value = value.get(first)
                return None if value is None else value.get(second)
            except AttributeError:
                return None

        return path2
    if len(keys) == 3:  # `data.sender.id`: the commonest extraction of a webhook event
        a, b, c = keys

        def path3(value: Any) -> Any:
            try:
                value = value.get(a)
                if value is None:
                    return None
                value = value.get(b)
                return None if value is None else value.get(c)
            except AttributeError:
                return None

        return path3

    def path(value: Any) -> Any:
        try:
            for key in keys:
                value = value.get(key)
                if value is None:
                    return None
        except AttributeError:
            return None
        return value

    return path


def _chain(steps: list[Closure]) -> Closure:
    if len(steps) == 1:
        return steps[0]
    if len(steps) == 2:
        first, second = steps
        return lambda value: second(first(value))

    def chain(value: Any) -> Any:
        for step in steps:
            value = step(value)
        return value

    return chain


def _comparator(op: str, left: Closure, right: Closure, literal: Any = None) -> Closure:
    if type(literal) is str and op in ("eq", "ne"):
        # `type == 'message.created'`: with a string on one side _equals is plain ==
        if op == "eq":
            return lambda value: bool(left(value) == literal)
        return lambda value: bool(left(value) != literal)
    if type(literal) is bool and op in ("eq", "ne"):
        # `echo == `true``: true equals true alone (1 does not, in JMESPath)
        if op == "eq":
            return lambda value: left(value) is literal
        return lambda value: left(value) is not literal
    if op == "eq":
        return lambda value: _equals(left(value), right(value))
    if op == "ne":
        return lambda value: not _equals(left(value), right(value))
    order = _ORDERING[op]

    def compare(value: Any) -> Any:
        a, b = left(value), right(value)
        if not (_comparable(a) and _comparable(b)):
            return None
        return order(a, b)

    return compare


def _projection(kind: str, parts: list[Closure]) -> Closure:
    base, each = parts[0], parts[1]
    if kind == "filter_projection":
        keep = parts[2]

        def filtered(value: Any) -> Any:
            items = base(value)
            if not isinstance(items, list):
                return None
            out = []
            for element in items:
                if not _is_false(keep(element)):
                    current = each(element)
                    if current is not None:
                        out.append(current)
            return out

        return filtered

    def projected(value: Any) -> Any:
        items = base(value)
        if kind == "value_projection":
            try:
                items = items.values()
            except AttributeError:
                return None
        elif not isinstance(items, list):
            return None
        out = []
        for element in items:
            current = each(element)
            if current is not None:
                out.append(current)
        return out

    return projected


def _flatten(base: Closure) -> Closure:
    def flatten(value: Any) -> Any:
        items = base(value)
        if not isinstance(items, list):
            return None
        merged: list[Any] = []
        for element in items:
            if isinstance(element, list):
                merged.extend(element)
            else:
                merged.append(element)
        return merged

    return flatten


def _function(
    name: str, arguments: list[Closure], functions: jmespath.functions.Functions
) -> Closure:
    """A call whose arity and argument types are checked here, as `call_function` does.

    The signature is looked up once; per call only each argument's type name is checked
    against the allowed ones. Anything unusual (an unknown function, a wrong arity, a
    variadic or element-typed signature, an argument of a refused type) goes through
    `call_function`, which raises jmespath's own error or handles the case.
    """
    call = functions.call_function
    spec = functions.FUNCTION_TABLE.get(name)
    signature: list[dict[str, Any]] = spec["signature"] if spec is not None else []
    if (
        spec is None
        or (signature and signature[-1].get("variadic"))
        or len(signature) != len(arguments)
        or any("-" in t for parameter in signature for t in parameter["types"])
    ):
        return lambda value: call(name, [argument(value) for argument in arguments])
    function = spec["function"]
    if not arguments:  # vars(), delivery(), ...: nothing to evaluate or check
        return lambda value: function(functions)
    allowed = [
        frozenset(n for t in parameter["types"] for n in jmespath.functions.REVERSE_TYPES_MAP[t])
        if parameter["types"]
        else None
        for parameter in signature
    ]
    checks = [(i, names) for i, names in enumerate(allowed) if names is not None]
    if len(arguments) == 1 and checks:  # iso_ms(x), lower(x), ...: no list, no loop
        (argument,), ((_, names),) = arguments, checks

        def checked1(value: Any) -> Any:
            arg = argument(value)
            if type(arg).__name__ not in names:
                return call(name, [arg])  # raises jmespath's JMESPathTypeError
            return function(functions, arg)

        return checked1

    def checked(value: Any) -> Any:
        args = [argument(value) for argument in arguments]
        for i, names in checks:
            if type(args[i]).__name__ not in names:
                return call(name, args)  # raises jmespath's JMESPathTypeError
        return function(functions, *args)

    return checked
