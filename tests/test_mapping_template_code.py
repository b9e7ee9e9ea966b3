"""An object template's generated function renders what its nodes render one by one.

The reference is `DictNode.interpret`: the same walk node by node, no generated code
anywhere in it. They must agree on the value (keys in the same order) or on the error
message, for every object template of the shipped mappings and the fictional platforms,
over contexts that give each field a plain value, null, nothing, `omit` and containers
holding `omit`; and for hand-made trees that hit each branch: nested objects and lists,
constants, keys no Python name could be, fallbacks of every kind, Jinja leaves.
"""

from __future__ import annotations

import gc
import itertools
from pathlib import Path
from typing import Any

import pytest
from markupsafe import Markup

from gateway.mapping import load_mapping
from gateway.mapping.template_nodes import DefaultName, DictNode, Name, Node
from gateway.mapping.templates import OMIT, RenderError, compile_template, fixed_clock
from tests.test_mapping_expr_closures import MAPPING_FILES

VALUES: list[Any] = [
    "text",
    7,
    2.5,
    True,
    None,
    OMIT,
    Markup("<b>"),  # a str subclass: finalised to str
    {"k": OMIT, "j": [1, OMIT, None]},
    [OMIT, {"a": 1}],
    ("t", 1),
]


def _outcome(render: Any, context: dict[str, Any]) -> tuple[str, Any]:
    try:
        with fixed_clock(lambda: 1_764_158_410.042):
            value = render(context)
    except RenderError as exc:
        return "error", str(exc)
    return "value", (value, _order(value))


def _order(value: Any) -> Any:
    """The keys of every object in order, and each value's type (== ignores both)."""
    if isinstance(value, dict):
        return [(k, _order(v)) for k, v in value.items()]
    if isinstance(value, list):
        return [_order(v) for v in value]
    return type(value).__name__


def _agree(node: DictNode, context: dict[str, Any]) -> None:
    expected = _outcome(node.interpret, context)
    assert _outcome(node.render, context) == expected, context


def _fields(node: Node) -> set[str]:
    """The names of the `{{ field }}` and `{{ field | default(x) }}` leaves under `node`."""
    if type(node) in (Name, DefaultName):
        return {node.name}  # type: ignore[attr-defined]
    children = getattr(node, "items", ())
    found: set[str] = set()
    for child in children:
        found |= _fields(child[1] if isinstance(child, tuple) else child)
    return found


def _contexts(names: set[str]) -> list[dict[str, Any]]:
    ordered = sorted(names)
    out: list[dict[str, Any]] = [{}]
    for value in VALUES:
        out.append(dict.fromkeys(ordered, value))
    for i, name in enumerate(ordered):  # each field missing alone, the others varied
        out.append({n: VALUES[(i + j) % len(VALUES)] for j, n in enumerate(ordered) if n != name})
    return out


def _templates(path: Path) -> list[DictNode]:
    before = {id(o) for o in gc.get_objects() if type(o) is DictNode}
    mapping = load_mapping(path, env=None, check_secrets=False)
    found = [o for o in gc.get_objects() if type(o) is DictNode and id(o) not in before]
    assert mapping is not None
    return found


@pytest.mark.parametrize("path", MAPPING_FILES, ids=lambda p: p.stem)
def test_every_shipped_object_template_renders_as_its_nodes_do(path: Path) -> None:
    templates = _templates(path)
    assert templates
    for node in templates:
        for context in _contexts(_fields(node)):
            _agree(node, context)


def _build(tree: Any) -> DictNode:
    problems: list[str] = []
    node = compile_template(tree, "/t", lambda p, r, f: problems.append(r))
    assert not problems and isinstance(node, DictNode)
    return node


TREE = {
    "plain": "{{ a }}",
    "with default": "{{ b | default('z') }}",
    "or omit": "{{ b | default(omit) }}",
    "or a field": "{{ b | default(a) }}",
    "or now": "{{ b | default(now_iso_ms()) }}",
    "constant": 3,
    "null": None,
    "text": "id-{{ a }}",
    "native": "{{ a ~ '!' if a is string else a }}",
    "guarded": "{{ {'x': a} if b is defined else omit }}",
    'it\'s "quoted"\n': "{{ a }}",
    "nested": {
        "deeper": {"a": "{{ a }}", "list": ["{{ b | default(omit) }}", 1, {"c": "{{ a }}"}]}
    },
    "empty": {},
    "list": [],
    "a global": "{{ vars }}",
}


@pytest.mark.parametrize(
    "context",
    [
        {},
        {"vars": {"v": 1}},
        *({"a": a, "b": b, "vars": {}} for a, b in itertools.product(VALUES, VALUES[:6])),
    ],
)
def test_each_branch_renders_as_the_nodes_do(context: dict[str, Any]) -> None:
    _agree(_build(TREE), context)


def test_a_missing_field_fails_with_the_nodes_message() -> None:
    node = _build({"x": {"y": "{{ nowhere }}"}})
    with pytest.raises(RenderError, match="'nowhere' is missing"):
        node.render({})
    _agree(node, {})
