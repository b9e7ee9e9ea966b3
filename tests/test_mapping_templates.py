"""Structured rendering: native types, omit, strict undefined, sandbox, quoting."""

from __future__ import annotations

from collections import OrderedDict
from typing import Any

import pytest
from markupsafe import Markup

from gateway.mapping.templates import (
    OMIT,
    Node,
    RenderError,
    compile_template,
    fixed_clock,
    render_text,
)

Reported = list[tuple[str, str, str]]


def build(tree: Any, mode: str = "native") -> Node:
    problems: Reported = []
    node = compile_template(
        tree,
        "/t",
        lambda *p: problems.append(p),
        mode=mode,  # type: ignore[arg-type]
        label="body",
    )
    assert problems == []
    return node


def render(tree: Any, **context: Any) -> Any:
    return build(tree).render(context)


@pytest.mark.parametrize(
    ("template", "context", "expected"),
    [
        ("{{ n }}", {"n": 5}, 5),
        ("{{ n + 1 }}", {"n": 5}, 6),
        ("{{ b }}", {"b": False}, False),
        ("{{ x }}", {"x": None}, None),
        ("{{ xs }}", {"xs": [1, "a"]}, [1, "a"]),
        ("{{ {'a': n} }}", {"n": 1}, {"a": 1}),
        ("{{ xs | map(attribute='u') }}", {"xs": [{"u": 1}, {"u": 2}]}, [1, 2]),
        ("  {{ n }}  ", {"n": 5}, 5),
        ("n={{ n }}", {"n": 5}, "n=5"),
        ("{{ a }}{{ b }}", {"a": 1, "b": 2}, "12"),
        ("{{ x }}!", {"x": None}, "!"),
        ("{{ true }}", {}, True),
        ("{{ none }}", {}, None),
        ("plain text", {}, "plain text"),
        (7, {}, 7),
        ("{{ s | urlquote }}", {"s": "a/b c"}, "a%2Fb%20c"),
        ("{{ t | iso_ms }}", {"t": 1764158400123}, "2025-11-26T12:00:00.123Z"),
        ("{{ t | iso_s }}", {"t": 1764158400}, "2025-11-26T12:00:00.000Z"),
        ("{{ t | iso }}", {"t": "2025-11-26T12:00:00Z"}, "2025-11-26T12:00:00.000Z"),
        ("{{ v | tojson }}", {"v": {"a": '<"x">'}}, '{"a":"<\\"x\\">"}'),
        ("{{ n | to_str }}", {"n": 10**20}, "100000000000000000000"),
        ("{{ missing | default('d') }}", {}, "d"),
        ("{{ vars.k }}", {"vars": {"k": "v"}}, "v"),
    ],
)
def test_native_and_text_leaves(template: Any, context: dict[str, Any], expected: Any) -> None:
    result = render({"k": template}, **context)
    assert result == {"k": expected}
    assert type(result["k"]) is type(expected)


def test_now_iso_ms_reads_the_clock() -> None:
    with fixed_clock(lambda: 1764158400.5):
        assert render("{{ now_iso_ms() }}") == "2025-11-26T12:00:00.500Z"


def test_omit_removes_keys_and_list_elements() -> None:
    tree = {
        "a": "{{ omit }}",
        "b": "{{ x | default(omit) }}",
        "c": ["{{ omit }}", 1],
        "d": "{{ {'e': omit, 'f': 1} }}",
        "g": {"h": "{{ omit }}"},
    }
    assert render(tree) == {"c": [1], "d": {"f": 1}, "g": {}}
    assert build("{{ omit }}").render({}) is OMIT


def test_omit_inside_text_is_an_error() -> None:
    with pytest.raises(RenderError, match="omit"):
        render({"k": "x {{ omit }}"})


def test_missing_field_names_the_field_and_the_place() -> None:
    for template in (
        "{{ author_id }}",
        "{{ author_id + 1 }}",
        "id={{ author_id }}",
        "{{ {'a': author_id} }}",
    ):
        with pytest.raises(RenderError) as info:
            render({"author": {"id": template}})
        message = str(info.value)
        assert "'author_id'" in message, message
        assert "body.author.id" in message, message


def test_runtime_sandbox_violation_is_a_render_error() -> None:
    with pytest.raises(RenderError, match="sandbox"):
        render({"k": "{{ xs.append(1) }}"}, xs=[])
    with pytest.raises(RenderError, match="sandbox"):
        render({"k": "{{ d.update({'a': 1}) }}"}, d={})


def test_values_that_are_not_data_are_refused() -> None:
    with pytest.raises(RenderError, match="cannot go into a payload"):
        render({"k": "{{ range }}"})
    with pytest.raises(RenderError, match="a value of type set cannot go into a payload"):
        render({"k": "{{ s }}"}, s={1})


class _Tagged(list[Any]):
    pass


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ({"a": [1, {"b": None}]}, {"a": [1, {"b": None}]}),
        ({"a": OMIT, "b": [OMIT, 2]}, {"b": [2]}),  # omit drops the key, and the item
        (OrderedDict(a=1), {"a": 1}),  # any mapping, as a plain dict
        ({1: "x", 2.5: "y"}, {"1": "x", "2.5": "y"}),  # keys become text
        ((1, "a"), [1, "a"]),  # tuples, list subclasses, iterators: lists
        (_Tagged([1, OMIT]), [1]),
        (iter([1, 2]), [1, 2]),
        (Markup("<b>"), "<b>"),  # a str subclass becomes a plain str
    ],
)
def test_containers_of_every_kind_become_plain_data(value: Any, expected: Any) -> None:
    out = render({"k": "{{ v }}"}, v=value)["k"]
    assert out == expected
    assert type(out) is type(expected)


@pytest.mark.parametrize(
    ("template", "reason"),
    [
        ("{{ x.__class__ }}", "'__class__'"),
        ("{{ x['__globals__'] }}", "'__globals__'"),
        ("{{ x._private }}", "'_private'"),
        ("{{ x | nosuchfilter }}", "No filter named 'nosuchfilter'"),
        ("{{ x ", "Jinja syntax error"),
        ("{% if x %}", "Jinja syntax error"),
    ],
)
def test_compile_problems_are_reported_at_the_leaf(template: str, reason: str) -> None:
    problems: Reported = []
    compile_template({"a": {"b": template}}, "/root", lambda *p: problems.append(p))
    ((where, message, _fix),) = problems
    assert where == "/root/a/b"
    assert reason in message


def test_path_mode_quotes_every_expression() -> None:
    node = build("/conversations/{{ thread_id }}/messages", mode="path")
    assert (
        render_text(node, {"thread_id": "../admin?x=1#f"})
        == "/conversations/..%2Fadmin%3Fx%3D1%23f/messages"
    )
    assert render_text(node, {"thread_id": 12}) == "/conversations/12/messages"
    with pytest.raises(RenderError, match="gave null"):
        render_text(node, {"thread_id": None})


def test_path_mode_unquoted_filter_is_explicit() -> None:
    node = build("{{ url | unquoted }}", mode="path")
    assert render_text(node, {"url": "https://x.test/a b"}) == "https://x.test/a b"


def test_text_mode_never_keeps_native_types() -> None:
    assert build("{{ n }}", mode="text").render({"n": 5}) == "5"


def test_user_text_is_never_evaluated() -> None:
    hostile = '{{ 7*7 }} {% raw %} ${HOME} "}'
    assert render({"t": "{{ text }}", "u": "x{{ text }}"}, text=hostile) == {
        "t": hostile,
        "u": "x" + hostile,
    }


def _outcome(node: Node, context: dict[str, Any]) -> tuple[str, Any]:
    """What a node gives: its value, or the message of its RenderError."""
    try:
        return "value", node.render(context)
    except RenderError as exc:
        return "error", str(exc)


def _jinja(expr: str) -> Node:
    """The expression as plain Jinja renders it, with no fast path."""
    from gateway.mapping.template_env import environment
    from gateway.mapping.template_nodes import Native

    return Native(environment("native").compile_expression(expr, undefined_to_none=False), "body")


@pytest.mark.parametrize(
    "expr",
    [
        "a | default('d')",
        "a | default(none)",
        "a | default(b)",
        "a | default(now_iso_ms())",
        "a | default(omit)",
    ],
)
@pytest.mark.parametrize(
    "context",
    [{}, {"a": 1}, {"a": None}, {"b": "x"}, {"a": {"k": [1, "é"]}, "b": 2}, {"a": "", "b": None}],
)
def test_default_fast_path_renders_what_jinja_renders(expr: str, context: dict[str, Any]) -> None:
    from gateway.mapping.template_nodes import DefaultName

    fast = build("{{ " + expr + " }}")
    assert isinstance(fast, DefaultName)
    with fixed_clock(lambda: 1_764_158_400.5):
        assert _outcome(fast, context) == _outcome(_jinja(expr), context)


@pytest.mark.parametrize(
    "expr",
    [
        "{'id': a} if a is defined else omit",
        "true if a is defined else omit",
        "a if a is defined and a else omit",
        "[{'id': a, 'n': b | default(none)}] if a is defined else []",
        "a if a is defined and b is defined else 'none of them'",
        "a.x if a is defined else none",
        "now_iso_ms if now_iso_ms is defined else omit",  # a global is defined
        # `x` built from fast nodes: names, constants, lists, dicts, default(constant)
        "{'x': [a, 1, 'two', none, true, 2.5], 'y': {'z': a} } if a is defined else omit",
        "[a | default(omit), b | default('d')] if a is defined else []",
        "b if a is defined else omit",  # `b` may be missing: the same error as Jinja's
        "{'o': omit, 'a': a} if a is defined else omit",
        "a if a is defined and a else 'empty'",
    ],
)
@pytest.mark.parametrize(
    "context",
    [{}, {"a": 1}, {"a": None}, {"a": ""}, {"b": "x"}, {"a": {"x": [1, "é"]}, "b": 2}],
)
def test_defined_guard_renders_what_jinja_renders(expr: str, context: dict[str, Any]) -> None:
    from gateway.mapping.template_nodes import IfDefined

    fast = build("{{ " + expr + " }}")
    assert isinstance(fast, IfDefined)
    assert _outcome(fast, context) == _outcome(_jinja(expr), context)


@pytest.mark.parametrize(
    ("expr", "then"),
    [
        ("{'id': a} if a is defined else omit", "DictNode"),
        ("a if a is defined and a else omit", "Name"),
        ("[{'id': a, 'n': b | default(none)}] if a is defined else []", "ListNode"),
        ("a.x if a is defined else none", "Native"),  # an attribute: Jinja's sandbox rules
        ("a if a is defined and b is defined else omit", "Native"),  # another test too
        ("[a | default(b)] if a is defined else []", "Native"),  # a field as the fallback
    ],
)
def test_a_guarded_value_needs_jinja_only_when_it_is_not_plain(expr: str, then: str) -> None:
    from gateway.mapping.template_nodes import IfDefined

    node = build("{{ " + expr + " }}")
    assert isinstance(node, IfDefined)
    assert type(node.then).__name__ == then


@pytest.mark.parametrize(
    "expr",
    [
        "a if a is undefined else omit",
        "a if b and a is defined else omit",  # the test does not start with the guard
        "a if a is defined else b",  # the fallback is not a constant
        "a if a is defined",
    ],
)
def test_other_conditionals_stay_with_jinja(expr: str) -> None:
    from gateway.mapping.template_nodes import Native

    assert type(build("{{ " + expr + " }}")) is Native


@pytest.mark.parametrize("mode", ["text", "path", "native"])
@pytest.mark.parametrize(
    "source",
    [
        "/conversations/{{ thread_id }}/messages",
        "{{ a }}{{ b }}",
        "x={{ a }}&y={{ b }}\n",
        "{{- a }} - {{ b -}}  ",
        "{{ omit }}!",
        "{{ now_iso_ms }}/x",
    ],
)
@pytest.mark.parametrize(
    "context",
    [
        {"thread_id": "cnv 1/é", "a": 1, "b": None},
        {"thread_id": True, "a": {"k": [1]}, "b": 1.5},
        {"a": "ok"},
        {"thread_id": "t", "a": "", "b": "<&>"},
    ],
)
def test_concat_fast_path_renders_what_jinja_renders(
    mode: str, source: str, context: dict[str, Any]
) -> None:
    from gateway.mapping.template_env import environment
    from gateway.mapping.template_nodes import Concat, Text

    fast = build(source, mode=mode)
    assert isinstance(fast, Concat)
    jinja = Text(environment(mode).from_string(source), "body")
    assert _outcome(fast, context) == _outcome(jinja, context)


@pytest.mark.parametrize(
    "context",
    [
        {"a": 1, "b": "x"},
        {"a": None, "b": OMIT},
        {"a": Markup("<i>"), "b": (1, OMIT)},
        {"a": {"k": OMIT, "j": [None]}},
        {"b": True},
        {},
    ],
)
def test_an_object_renders_what_its_leaves_render_one_by_one(context: dict[str, Any]) -> None:
    # DictNode looks `{{ a }}` and `{{ a | default(...) }}` leaves up itself
    from gateway.mapping.template_nodes import DictNode

    tree = {"n": "{{ a }}", "d": "{{ b | default('z') }}", "o": "{{ b | default(omit) }}"}
    node = build(tree)
    assert isinstance(node, DictNode)
    expected: dict[str, Any] = {}
    try:
        for key, leaf in node.items:
            value = leaf.render(context)
            if value is not OMIT:
                expected[key] = value
    except RenderError as exc:
        with pytest.raises(RenderError) as raised:
            node.render(context)
        assert str(raised.value) == str(exc)
        return
    assert node.render(context) == expected
