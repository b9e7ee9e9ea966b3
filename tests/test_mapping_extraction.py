"""A route's generated extraction computes what its pairs compute one by one.

The reference is the definition: each pair's `Expr.search` in order, null fields left
out, the numbers of id fields made exact text when asked. It runs on every
route of the shipped mappings over every object and array of their own test inputs,
and on generated JSON for pairs that share prefixes, nest a leaf under another, mix
in expressions that are not plain paths, and hold keys no Python name could.
"""

from __future__ import annotations

import itertools
from pathlib import Path
from types import MappingProxyType
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.mapping import load_mapping
from gateway.mapping.expressions import Expr, compile_expr
from gateway.mapping.extraction import Extraction
from gateway.mapping.values import NUMBERS, is_id_field, to_str
from tests.test_mapping_expr_closures import MAPPING_FILES, clocked, json_data, subvalues


def _exact_ids(fields: dict[str, Any]) -> dict[str, Any]:
    return {
        k: to_str(v) if isinstance(v, NUMBERS) and not isinstance(v, bool) and is_id_field(k) else v
        for k, v in fields.items()
    }


def _reference(pairs: tuple[tuple[str, Expr], ...], data: Any, exact: bool) -> Any:
    try:
        fields = {n: v for n, e in pairs if (v := e.search(data)) is not None}
    except Exception as exc:
        return "error", type(exc).__name__, str(exc)
    return "value", _exact_ids(fields) if exact else fields


def _generated(pairs: tuple[tuple[str, Expr], ...], data: Any, exact: bool) -> Any:
    try:
        return "value", Extraction(pairs, exact=exact)(data)
    except Exception as exc:
        return "error", type(exc).__name__, str(exc)


def _agree(pairs: tuple[tuple[str, Expr], ...], data: Any) -> None:
    for exact in (False, True):
        expected = _reference(pairs, data, exact)
        got = _generated(pairs, data, exact)
        assert got == expected, (pairs, data, exact)
        if got[0] == "value":  # same values, same order of fields
            assert list(got[1]) == list(expected[1])


def _route_pairs(path: Path) -> tuple[list[tuple[tuple[str, Expr], ...]], list[Any]]:
    mapping = load_mapping(path, env=None, check_secrets=False)
    parts = mapping._parts
    pairs = [r.extract for r in parts.inbound.routes]
    pairs += [r.extract for r in parts.outbound.routes] + [r.result for r in parts.outbound.routes]
    pairs += [lookup.result for r in parts.inbound.routes for lookup in r.lookups]
    pairs += [r.upload.result for r in parts.outbound.routes if r.upload is not None]
    pairs.append(parts.outbound.base_extract)
    inputs = [t for test in mapping.tests for t in subvalues(dict(test))]
    return [p for p in pairs if p and not any(clocked(e) for _, e in p)], inputs


@pytest.mark.parametrize("path", MAPPING_FILES, ids=lambda p: p.stem)
def test_every_shipped_route_extracts_as_its_pairs_do(path: Path) -> None:
    routes, inputs = _route_pairs(path)
    assert routes and inputs
    for pairs, data in itertools.product(routes, inputs):
        _agree(pairs, data)


def _pairs(*items: tuple[str, str]) -> tuple[tuple[str, Expr], ...]:
    return tuple((name, compile_expr(source, f"/x/{name}")) for name, source in items)


SHARED_PREFIXES = _pairs(
    ("thread_id", "a.b.c"),
    ("text", "a.b"),  # a prefix of the one before, extracted after it
    ("reply_to", "a.b.d"),
    ("id", "c"),
    ("author_id", "a.c"),
    ("count", "length(a.b)"),  # not a plain path: fails on a number
    ("either", "a.d || c"),
    ("deep", "a.b.c.d.a"),
    ("flag_id", "d"),
    ("odd", '"it\'s"."a\\"b"'),  # keys needing quotes in Python too
    ("newline", '"x\\ny".a'),
)


def test_keys_no_python_name_could_hold_are_looked_up_as_written() -> None:
    data = {"it's": {'a"b': 1}, "x\ny": {"a": 2}, "a": {"b": "t"}}
    assert Extraction(SHARED_PREFIXES)(data) == {"text": "t", "count": 1, "odd": 1, "newline": 2}


@pytest.mark.parametrize(
    "data",
    [
        {"a": MappingProxyType({"b": {"c": 7}}), "c": 2.5, "d": True},
        MappingProxyType({"a": {"b": "t"}}),
        {"a": {"b": [1]}, "c": 10**20},
        {"a": {"b": 3}},  # length() of a number fails
        {"a": "text", "c": False},
        [1],
        None,
    ],
)
def test_unusual_values_extract_as_their_pairs_do(data: Any) -> None:
    _agree(SHARED_PREFIXES, data)


_json = json_data(  # large integers and any float: the id fields' exact text
    st.none()
    | st.booleans()
    | st.integers(-2, 10**20)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.sampled_from(["", "x", "ab"]),
    max_list=3,
)


@settings(max_examples=300, deadline=None)
@given(_json)
def test_generated_json_extracts_as_the_pairs_do(data: Any) -> None:
    _agree(SHARED_PREFIXES, data)
