"""JMESPath extraction and the custom functions of the mapping language."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.mapping import values
from gateway.mapping.expressions import (
    EvalContext,
    ExpressionError,
    ExpressionSyntaxError,
    compile_expr,
    evaluation,
    truthy,
)


def ev(source: str, data: Any = None, context: EvalContext | None = None) -> Any:
    expr = compile_expr(source, "/x")
    if context is None:
        return expr.search(data)
    with evaluation(context):
        return expr.search(data)


@pytest.mark.parametrize(
    ("source", "data", "expected"),
    [
        ("iso_ms(t)", {"t": 1764158400123}, "2025-11-26T12:00:00.123Z"),
        ("iso_ms(t)", {"t": "1764158400123"}, "2025-11-26T12:00:00.123Z"),
        ("iso_ms(t)", {"t": 0}, "1970-01-01T00:00:00.000Z"),
        ("iso_ms(t)", {}, None),
        ("iso_s(t)", {"t": 1764158400}, "2025-11-26T12:00:00.000Z"),
        ("iso_s(t)", {"t": 1764158400.5}, "2025-11-26T12:00:00.500Z"),
        ("iso_s(t)", {"t": "1764158400.123456"}, "2025-11-26T12:00:00.123Z"),
        ("iso(t)", {"t": 1764158400}, "2025-11-26T12:00:00.000Z"),
        ("iso(t)", {"t": 1764158400123}, "2025-11-26T12:00:00.123Z"),
        ("iso(t)", {"t": 1764158400123456}, "2025-11-26T12:00:00.123Z"),
        ("iso(t)", {"t": "1764158400"}, "2025-11-26T12:00:00.000Z"),
        ("iso(t)", {"t": "2025-11-26T12:00:00Z"}, "2025-11-26T12:00:00.000Z"),
        ("iso(t)", {"t": "2025-11-26T14:00:00.123456789+02:00"}, "2025-11-26T12:00:00.123Z"),
        ("iso(t)", {"t": "2025-11-26 12:00:00.5"}, "2025-11-26T12:00:00.500Z"),
        ("split(s, ',')", {"s": "a,b,,c"}, ["a", "b", "", "c"]),
        ("split(s, ',')", {}, None),
        ("lower(s)", {"s": "ÄbC"}, "äbc"),
        ("upper(s)", {"s": "abc"}, "ABC"),
        ("trim(s)", {"s": "  a b \n"}, "a b"),
        ("replace(s, 'a', 'o')", {"s": "banana"}, "bonono"),
        ("default(x, 'fb')", {}, "fb"),
        ("default(x, 'fb')", {"x": ""}, ""),
        ("default(x, 'fb')", {"x": False}, False),
        ("find_by(xs, 'k', 'b').v", {"xs": [{"k": "a", "v": 1}, {"k": "b", "v": 2}]}, 2),
        ("find_by(xs, 'k', 'z')", {"xs": [{"k": "a"}]}, None),
        ("find_by(xs, 'k', 'z')", {}, None),
        ("concat('a', n, '-', s, x)", {"n": 12, "s": "b"}, "a12-b"),
        ("concat(n)", {"n": 12345678901234567890123}, "12345678901234567890123"),
        ("to_str(n)", {"n": 1e18}, "1000000000000000000"),
        ("to_str(n)", {"n": 123456789012345678901234567890}, "123456789012345678901234567890"),
        ("to_str(n)", {"n": 1.5}, "1.5"),
        ("to_str(b)", {"b": True}, "true"),
        ("to_str(x)", {}, None),
        ("from_json(s).a", {"s": '{"a": [1]}'}, [1]),
        ("starts_with(s, 'cnv_')", {"s": "cnv_1"}, True),
        ("entries(@)", {"a": 1, "b": [2]}, [{"key": "a", "value": 1}, {"key": "b", "value": [2]}]),
        ("entries(x)", {}, None),
        (
            "entries(@)[?starts_with(key, 'MediaUrl')].value",
            {"NumMedia": "2", "MediaUrl0": "u0", "MediaType0": "t", "MediaUrl1": "u1"},
            ["u0", "u1"],
        ),
    ],
)
def test_functions(source: str, data: Any, expected: Any) -> None:
    assert ev(source, data) == expected


def test_context_functions() -> None:
    context = EvalContext(
        vars={"me": "usr_1"},
        parents=({"p": 1}, {"g": 2}),
        delivery={"d": 3},
        headers={"x-a": "b"},
        query={"q": "r"},
    )
    assert ev("vars().me", {}, context) == "usr_1"
    assert ev("parent().p", {}, context) == 1
    assert ev("parents()[1].g", {}, context) == 2
    assert ev("delivery().d", {}, context) == 3
    assert ev('headers()."x-a"', {}, context) == "b"
    assert ev("query().q", {}, context) == "r"
    assert ev("parent()", {}) is None
    assert ev("vars()", {}) == {}


def test_context_is_reset_after_the_block() -> None:
    with evaluation(EvalContext(vars={"a": 1})):
        assert ev("vars().a") == 1
    assert ev("vars().a") is None


@pytest.mark.parametrize(
    ("source", "reason"),
    [
        ("a ||| b", "JMESPath syntax error"),
        ("foo(", "JMESPath syntax error"),
        ("isoms(t)", "unknown function isoms()"),
        ("iso_ms(a, b)", "iso_ms() takes 1 argument(s), got 2"),
        ("vars(a)", "vars() takes 0 argument(s), got 1"),
        ("concat()", "concat() takes at least 1 argument(s), got 0"),
        ("a.b[?c == 'x'].length(d.e(f))", "unknown function e()"),
    ],
)
def test_compile_errors(source: str, reason: str) -> None:
    with pytest.raises(ExpressionSyntaxError) as info:
        compile_expr(source, "/x")
    assert reason in info.value.reason
    assert source in info.value.reason


@pytest.mark.parametrize(
    ("source", "data", "reason"),
    [
        ("iso_ms(t)", {"t": "soon"}, "not one"),
        ("iso_ms(t)", {"t": "NaN"}, "not one"),
        ("iso(t)", {"t": "Infinity"}, "not an ISO-8601 time"),
        ("iso_ms(t)", {"t": True}, "iso_ms() cannot take boolean"),
        ("iso(t)", {"t": "yesterday"}, "not an ISO-8601 time"),
        ("iso_ms(t)", {"t": 10**30}, "out of the supported date range"),
        ("split(s, '')", {"s": "x"}, "non-empty separator"),
        ("from_json(s)", {"s": "{nope"}, "not JSON"),
    ],
)
def test_runtime_errors_are_readable(source: str, data: Any, reason: str) -> None:
    with pytest.raises(ExpressionError) as info:
        ev(source, data)
    assert reason in str(info.value)
    assert source in str(info.value)


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (None, False),
        (False, False),
        ("", False),
        ([], False),
        ({}, False),
        (0, True),
        ("x", True),
        ([0], True),
        (True, True),
    ],
)
def test_truthiness(value: Any, expected: bool) -> None:
    assert truthy(value) is expected


def test_now_iso_ms_reads_the_mapping_clock() -> None:
    from gateway.mapping.values import fixed_clock

    with fixed_clock(lambda: 1764158400.25):
        assert ev("now_iso_ms()") == "2025-11-26T12:00:00.250Z"


@settings(max_examples=300, deadline=None)
@given(st.integers(min_value=-62_135_596_800_000, max_value=253_402_300_799_999))
def test_iso_from_ms_formats_as_strftime_does(ms: int) -> None:
    moment = datetime(1970, 1, 1, tzinfo=UTC) + timedelta(milliseconds=ms)
    expected = f"{moment:%Y-%m-%dT%H:%M:%S}.{moment.microsecond // 1000:03d}Z"
    assert values.iso_from_ms(ms) == expected
    assert values.iso_ms(ms) == values.iso_ms(str(ms)) == expected


@settings(max_examples=100, deadline=None)
@given(st.lists(st.integers(min_value=-2_000, max_value=2_000), min_size=2, max_size=20))
def test_iso_from_ms_is_right_whichever_second_came_before(steps: list[int]) -> None:
    # the last second's text is reused: seconds that repeat, alternate and go back
    ms = 1_764_158_399_000
    for step in steps:
        ms += step
        moment = datetime(1970, 1, 1, tzinfo=UTC) + timedelta(milliseconds=ms)
        expected = f"{moment:%Y-%m-%dT%H:%M:%S}.{moment.microsecond // 1000:03d}Z"
        assert values.iso_from_ms(ms) == expected
