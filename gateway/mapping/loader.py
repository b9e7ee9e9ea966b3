"""Read a mapping's YAML, remembering the line of every value so problems can name it."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import yaml

from gateway.errors import Problem
from gateway.mapping.values import escape_pointer

# libyaml's parser (when PyYAML was built with it) composes the node tree in C, about ten
# times faster than the pure-Python one; marks (line numbers) and errors are the same.
_BaseLoader: type[yaml.SafeLoader] = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


class LineLoader(_BaseLoader):  # type: ignore[valid-type,misc]
    """A SafeLoader that records where each node starts and refuses duplicate keys.

    Dates stay strings (a test payload's `2025-11-26` must not become a `date`).
    """

    yaml_implicit_resolvers = {
        first: [(tag, regexp) for tag, regexp in resolvers if tag != "tag:yaml.org,2002:timestamp"]
        for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
    }

    def __init__(self, stream: str) -> None:
        super().__init__(stream)
        self.lines: dict[str, int] = {"": 1}
        self.duplicates: list[tuple[str, int]] = []
        self.recursive: list[tuple[str, int]] = []

    def record(self, node: yaml.Node, pointer: str, _stack: frozenset[int] = frozenset()) -> None:
        """Walk a composed node tree and note the line of every pointer."""
        if id(node) in _stack:  # a recursive alias: the data would be infinite
            self.recursive.append((pointer, node.start_mark.line + 1))
            return
        _stack = _stack | {id(node)}
        line = node.start_mark.line + 1
        self.lines.setdefault(pointer, line)
        if isinstance(node, yaml.MappingNode):
            seen: set[str] = set()
            for key_node, value_node in node.value:
                if not isinstance(key_node, yaml.ScalarNode):
                    continue
                key = str(key_node.value)
                if key == "<<":
                    self.record(value_node, pointer, _stack)
                    continue
                child = f"{pointer}/{escape_pointer(key)}"
                if key in seen:
                    self.duplicates.append((child, key_node.start_mark.line + 1))
                seen.add(key)
                self.lines[child] = key_node.start_mark.line + 1
                self.record(value_node, child, _stack)
        elif isinstance(node, yaml.SequenceNode):
            for index, item in enumerate(node.value):
                self.record(item, f"{pointer}/{index}", _stack)


@dataclass(frozen=True)
class LineMap:
    """JSON pointer -> line number (1-based) of a loaded file."""

    lines: Mapping[str, int] = field(default_factory=dict)

    def line(self, pointer: str) -> int | None:
        """Return the line of `pointer`, or of its nearest recorded ancestor."""
        current = pointer
        while True:
            found = self.lines.get(current)
            if found is not None:
                return found
            if not current:
                return None
            current = current.rsplit("/", 1)[0]


class Problems:
    """Collect located problems for one file."""

    def __init__(self, file: str, lines: LineMap | None = None) -> None:
        self.file = file
        self.lines = lines or LineMap()
        self.items: list[Problem] = []

    def add(self, where: str, reason: str, fix: str = "", *, line: int | None = None) -> None:
        """Record a problem at a JSON pointer."""
        if line is None:
            line = self.lines.line(where)
        self.items.append(Problem(self.file, where, reason, fix, line))

    def extend(self, problems: list[Problem]) -> None:
        """Adopt problems found elsewhere, filling in their lines."""
        for problem in problems:
            if problem.where == "/":
                problem.where = ""
            if problem.line is None:
                problem.line = self.lines.line(problem.where)
            self.items.append(problem)

    def __bool__(self) -> bool:
        return bool(self.items)


def load_yaml(text: str, problems: Problems) -> tuple[Any, LineMap]:
    """Parse YAML text into plain data and a line map; record problems instead of raising."""
    loader = LineLoader(text)
    try:
        node = loader.get_single_node()
        if node is None:
            problems.add(
                "", "the file is empty", "write a mapping: name, platform, channels, ...", line=1
            )
            return None, LineMap()
        loader.record(node, "")
        if loader.recursive:
            where, line = loader.recursive[0]
            problems.add(
                where,
                "a YAML alias refers to one of its own parents",
                "copy the values instead of using a recursive alias",
                line=line,
            )
            return None, LineMap(loader.lines)
        data = loader.construct_document(node)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        reason = f"YAML syntax error: {exc.problem or exc.context}"
        if exc.context and exc.problem:
            reason = f"YAML syntax error: {exc.problem} ({exc.context})"
        fix = "check the indentation and quoting on this line and the one before it"
        if "mapping values are not allowed" in reason or "found character" in reason:
            fix = (
                "quote a value that holds ': ' or starts with {, [, `, *, &, ! or % "
                "(e.g. 'a.b[].{x: y}'), or fix the indentation"
            )
        problems.add("", reason, fix, line=mark.line + 1 if mark else None)
        return None, LineMap()
    except yaml.YAMLError as exc:
        problems.add("", f"YAML error: {exc}", "fix the YAML syntax")
        return None, LineMap()
    finally:
        loader.dispose()
    lines = LineMap(loader.lines)
    problems.lines = lines
    for pointer, line in loader.duplicates:
        problems.add(
            pointer,
            f"the key {pointer.rsplit('/', 1)[1]!r} appears twice",
            "keep one of them (YAML would silently use the last one)",
            line=line,
        )
    bad_key = _non_string_key(data, "")
    if bad_key is not None:
        problems.add(
            bad_key[0],
            f"the key {bad_key[1]!r} is not a string",
            'quote the key, e.g. "on": or "404":',
        )
    return data, lines


def _non_string_key(tree: Any, pointer: str) -> tuple[str, Any] | None:
    if isinstance(tree, dict):
        for key, value in tree.items():
            if not isinstance(key, str):
                return pointer, key
            found = _non_string_key(value, f"{pointer}/{escape_pointer(key)}")
            if found:
                return found
    elif isinstance(tree, list):
        for index, value in enumerate(tree):
            found = _non_string_key(value, f"{pointer}/{index}")
            if found:
                return found
    return None
