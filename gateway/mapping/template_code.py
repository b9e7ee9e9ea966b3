"""An object template rendered by one generated function instead of one call per node.

A CXone body is an object of a dozen leaves in four or five nested objects
(`thread`, `messageContent.payload`, `authorEndUserIdentity` ...). `DictNode.render`
walks it node by node: per object a method call, a loop, a bound `get`; per leaf a
tuple unpacked and a branch. `generate` writes, once per template (at its first
render), one Python function doing the same steps in the same order, with the objects
and lists built in place and the `{{ field }}` / `{{ field | default(x) }}` leaves of
objects inlined as `DictNode` inlines them; every other leaf (and every leaf of a list)
is called as it is (`node.render`), so values, `omit` and error messages are exactly
the interpreted tree's. tests/test_mapping_template_code.py checks the generated function
against `DictNode.interpret` on every template of the shipped mappings and on contexts
built to hit each branch.

The generated source holds no text from the mapping file: keys and field names enter
it as `repr()` string literals, nodes, constants and labels as names bound in the
function's namespace (as in `gateway.mapping.extraction`).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from gateway.mapping import template_nodes as nodes
from gateway.mapping.template_env import OMIT

Render = Callable[[Mapping[str, Any]], Any]


def generate(root: nodes.DictNode) -> Render:
    """The function rendering `root` as `root.interpret` does (module docstring)."""
    namespace: dict[str, Any] = {
        "MISSING": nodes.MISSING,
        "OMIT": OMIT,
        "PLAIN": nodes.PLAIN_SCALARS,
        "finalize": nodes.finalize,
    }
    lines = ["def render(context):", "    get = context.get"]
    counter = [0]

    def bind(value: Any, prefix: str) -> str:
        counter[0] += 1
        name = f"{prefix}{counter[0]}"
        namespace[name] = value
        return name

    def value_of(node: nodes.Node, target: str, indent: str) -> None:
        """Emit the lines leaving `node`'s rendered value in the variable `target`."""
        kind = type(node)
        if kind is nodes.DictNode:
            assert isinstance(node, nodes.DictNode)
            emit_dict(node, target, indent)
        elif kind is nodes.ListNode:
            assert isinstance(node, nodes.ListNode)
            lines.append(f"{indent}{target} = []")
            for item in node.items:
                value = bind(item, "n")
                lines.append(f"{indent}v = {value}.render(context)")
                lines.append(f"{indent}if v is not OMIT:")
                lines.append(f"{indent}    {target}.append(v)")
        elif kind is nodes.Const:
            assert isinstance(node, nodes.Const)
            lines.append(f"{indent}{target} = {bind(node.value, 'c')}")
        else:
            lines.append(f"{indent}{target} = {bind(node, 'n')}.render(context)")

    def emit_dict(node: nodes.DictNode, target: str, indent: str) -> None:
        lines.append(f"{indent}{target} = {{}}")
        for key, item in node.items:
            kind = type(item)
            if kind is nodes.Name or kind is nodes.DefaultName:
                # DictNode's inlined lookup: a present field is finalised here, a missing
                # one goes to the leaf (its fallback, the globals, or the error)
                leaf = bind(item, "n")
                field = item.name  # type: ignore[attr-defined]
                lines.append(f"{indent}v = get({field!r}, MISSING)")
                lines.append(f"{indent}if v is MISSING:")
                lines.append(f"{indent}    v = {leaf}.render(context)")
                lines.append(f"{indent}elif v is not None and type(v) not in PLAIN:")
                lines.append(f"{indent}    v = finalize(v, {leaf}.label)")
                lines.append(f"{indent}if v is not OMIT:")
                lines.append(f"{indent}    {target}[{key!r}] = v")
            elif kind is nodes.DictNode or kind is nodes.ListNode:
                # never omitted: an object or a list renders to an object or a list
                child = f"d{len(lines)}"
                value_of(item, child, indent)
                lines.append(f"{indent}{target}[{key!r}] = {child}")
            elif kind is nodes.Const and item.value is not OMIT:  # type: ignore[attr-defined]
                lines.append(f"{indent}{target}[{key!r}] = {bind(item.value, 'c')}")  # type: ignore[attr-defined]
            else:
                value_of(item, "v", indent)
                lines.append(f"{indent}if v is not OMIT:")
                lines.append(f"{indent}    {target}[{key!r}] = v")

    emit_dict(root, "out", "    ")
    lines.append("    return out")
    # the source holds literals made by repr() and names of ours only (module docstring)
    exec(compile("\n".join(lines), "<template>", "exec"), namespace)  # noqa: S102
    render: Render = namespace["render"]
    return render
