"""Operator YAML files other than mappings (gateway.yaml): the mapping engine's loader.

One loader for every file an operator writes: safe YAML with line numbers, duplicate keys
refused, and JSON Schema errors in the same words, each with file, line, JSON pointer and
a fix.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from jsonschema import Draft202012Validator

from gateway.errors import ConfigError, Problem
from gateway.mapping.loader import LineMap, Problems, load_yaml
from gateway.mapping.schema import validate_with


@dataclass(frozen=True)
class Document:
    """A parsed YAML file and where each of its nodes starts."""

    file: str
    tree: Any
    lines: LineMap = field(default_factory=LineMap)

    def line_of(self, pointer: str) -> int | None:
        """Return the line of the node at `pointer`, or of its closest ancestor."""
        return self.lines.line("" if pointer == "/" else pointer)


def parse_document(text: str, file: str) -> Document:
    """Parse YAML text (safe loader only); raise ConfigError with the line on bad YAML."""
    problems = Problems(file)
    tree, lines = load_yaml(text, problems)
    if problems:
        raise ConfigError(problems.items)
    return Document(file=file, tree=tree, lines=lines)


def load_document(path: Path) -> Document:
    """Read and parse a YAML file."""
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(
            Problem(str(path), "", f"cannot read the file ({exc.strerror})", "check the path")
        ) from None
    except UnicodeDecodeError:
        raise ConfigError(Problem(str(path), "", "the file is not UTF-8 text")) from None
    return parse_document(text, str(path))


def validate(doc: Document, schema: dict[str, Any], *, fix_hint: str = "") -> None:
    """Validate a document against a JSON Schema; raise ConfigError listing every problem."""
    problems = Problems(doc.file, doc.lines)
    if validate_with(Draft202012Validator(schema), doc.tree, problems, fix_hint):
        return
    for problem in problems.items:
        problem.fix = problem.fix or fix_hint
    raise ConfigError(problems.items)
