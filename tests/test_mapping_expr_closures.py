"""Compiled closures compute exactly what jmespath's interpreter computes.

Every expression of the shipped mappings (the Watering Hole and the fictional platforms
of tests/fixtures) runs on every object and array of those mappings' own test inputs,
and a list covering each node type runs on generated JSON; results, and failures, must
be the same as `TreeInterpreter.visit` on the same AST.
"""

from __future__ import annotations

import gc
from collections.abc import Iterator
from pathlib import Path
from types import MappingProxyType
from typing import Any

import jmespath
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.mapping import load_mapping
from gateway.mapping.expr_closures import compile_ast
from gateway.mapping.expressions import _INTERPRETER, _OPTIONS, Expr, compile_expr
from gateway.sandbox.wiring import REPO_MAPPINGS

FIXTURES = Path(__file__).parent / "fixtures" / "platforms"
MAPPING_FILES = sorted(REPO_MAPPINGS.glob("*.yaml")) + sorted(FIXTURES.glob("*.yaml"))

EVERY_NODE_TYPE = [
    "a",
    "a.b",
    "a.b.c",
    "a.b.c.d",
    "@",
    "a[0]",
    "a[-1]",
    "a[1:3]",
    "a[::-1]",
    "a[*].b",
    "a[].b",
    "a[]",
    "*.b",
    "a.*",
    "a[?b == `1`].c",
    "a[?b != 'x']",
    "a[?b > `0`]",
    "a[?b <= `1.5`].b",
    "a[?b < c]",
    "a[?!b]",
    "a[?b && c]",
    "a || b",
    "a && b",
    "!a",
    "!`0`",
    "a == `0`",
    "a == `false`",
    "`1` == `true`",
    "a == b",
    "a >= b",
    "[a, b]",
    "{x: a, y: b.c}",
    "a | [0]",
    "a[*].[b, c]",
    "length(a)",
    "keys(@)",
    "sort_by(a, &b)",
    "max_by(a, &b)",
    "join(', ', a)",
    "to_string(a)",
    "not_null(a, b, 'd')",
    "contains(a, 'x')",
    "type(a)",
    'a.b[0].c || `"fallback"`',
    '`[1, 2, {"k": null}]`',
    "a[?contains(@, 'x')]",
    # functions whose arguments are checked at the call site (one typed parameter, two)
    "abs(a)",
    "starts_with(a, 'x')",
    "iso_ms(a)",
    "length(@)",
    # fused field paths and comparisons with a string constant (either side)
    "[a.b, c.d.a, a.b.c.d]",
    "a[?b.c == 'x'].d.a",
    "a.b == 'x'",
    "'x' == a",
    "a != 'ax'",
    "'' != a.b",
    '`"d"` == a',
    "`1` < a",
    "`0` >= a.b",
    # comparisons with a boolean constant (identity), one-argument calls
    "a != `true`",
    "`true` == a.b",
    "a.b != `false`",
    "upper(a)",
    "to_number(a)",
]


def _outcome(run: Any, data: Any) -> tuple[str, Any]:
    try:
        return "value", run(data)
    except Exception as exc:  # the same failure, of the same kind
        return "error", type(exc).__name__


def _same(expr: Expr, data: Any) -> None:
    expected = _outcome(lambda d: _INTERPRETER.visit(expr._ast, d), data)
    run = compile_ast(expr._ast, _OPTIONS.custom_functions, _INTERPRETER)
    assert _outcome(run, data) == expected, (expr.source, data)


def subvalues(value: Any) -> Iterator[Any]:
    yield value
    if isinstance(value, dict):
        for child in value.values():
            yield from subvalues(child)
    elif isinstance(value, list):
        for child in value:
            yield from subvalues(child)


def clocked(expr: Expr) -> bool:
    """The expression reads the clock (`now...()`): it moves between two evaluations."""
    return any(f.startswith("now") for f in expr.functions)


def _expressions_of(path: Path) -> tuple[list[Expr], list[Any]]:
    before = {id(o) for o in gc.get_objects() if isinstance(o, Expr)}
    mapping = load_mapping(path, env=None, check_secrets=False)
    exprs = [
        o
        for o in gc.get_objects()
        if isinstance(o, Expr) and id(o) not in before and not clocked(o)
    ]
    inputs = [t for test in mapping.tests for t in subvalues(dict(test))]
    return exprs, inputs


@pytest.mark.parametrize("path", MAPPING_FILES, ids=lambda p: p.stem)
def test_every_shipped_expression_agrees_with_the_interpreter(path: Path) -> None:
    exprs, inputs = _expressions_of(path)
    assert exprs and inputs
    for expr in exprs:
        for data in inputs:
            _same(expr, data)


def json_data(scalars: st.SearchStrategy[Any], max_list: int = 4) -> st.SearchStrategy[Any]:
    """JSON made of `scalars`, lists and objects keyed a-d (the keys the tests' paths use)."""
    return st.recursive(
        scalars,
        lambda inner: (
            st.lists(inner, max_size=max_list)
            | st.dictionaries(st.sampled_from(["a", "b", "c", "d"]), inner, max_size=4)
        ),
        max_leaves=25,
    )


_json = json_data(
    st.none()
    | st.booleans()
    | st.integers(-2, 3)
    | st.floats(allow_nan=False, allow_infinity=False, width=16)
    | st.sampled_from(["", "x", "ax", "d"])
)


@settings(max_examples=300, deadline=None)
@given(_json)
def test_every_node_type_agrees_with_the_interpreter_on_generated_json(data: Any) -> None:
    for source in EVERY_NODE_TYPE:
        _same(compile_expr(source, "/x"), data)


def test_the_node_list_covers_every_node_type_jmespath_has() -> None:
    seen: set[str] = set()

    def walk(node: Any) -> None:
        if isinstance(node, dict) and "type" in node:
            seen.add(node["type"])
            for child in node.get("children", []):
                walk(child)

    for source in EVERY_NODE_TYPE:
        walk(jmespath.compile(source).parsed)
    interpreted = {n[len("visit_") :] for n in dir(_INTERPRETER) if n.startswith("visit_")}
    assert interpreted <= seen, interpreted - seen


@pytest.mark.parametrize("source", ["abs(a, b)", "no_such_function(a)", 'abs(`"x"`)'])
@pytest.mark.parametrize("data", [{"a": -1, "b": 2}, {"a": "x"}, None])
def test_calls_the_compiler_refuses_fail_as_in_the_interpreter(source: str, data: Any) -> None:
    # compile_expr refuses a wrong arity or an unknown name; the closures still fail
    # with jmespath's own error, through call_function
    ast = jmespath.compile(source).parsed
    run = compile_ast(ast, _OPTIONS.custom_functions, _INTERPRETER)
    expected = _outcome(lambda d: _INTERPRETER.visit(ast, d), data)
    assert expected[0] == "error"
    assert _outcome(run, data) == expected


@pytest.mark.parametrize("source", ["a", "a.b", "a.b.c", "a.b.c.d"])
@pytest.mark.parametrize(
    "data",
    [
        {"a": {"b": {"c": {"d": 1}}}},
        {"a": MappingProxyType({"b": MappingProxyType({"c": {"d": "x"}})})},
        MappingProxyType({"a": {"b": None}}),
        {"a": [{"b": 1}]},
        {"a": "text"},
        [1],
        None,
    ],
)
def test_a_plain_path_searches_as_the_interpreter_does(source: str, data: Any) -> None:
    # any object with .get is walked (a read-only mapping too), anything else gives null
    expr = compile_expr(source, "test")
    assert expr.plain is not None
    assert expr.search(data) == _INTERPRETER.visit(expr._ast, data)


def test_closures_are_compiled_at_first_use_and_never_for_field_paths() -> None:
    path = compile_expr("a.b", "test")
    assert path.search({"a": {"b": 1}}) == 1
    assert path._run is None, "a field path is a chain of dict lookups, no closure"
    index = compile_expr("a[0]", "test")
    assert index._run is None, "nothing is compiled before a message needs it"
    assert index.search({"a": [5]}) == 5
    assert index._run is not None
