"""Operator YAML files: safe loading with line numbers, and JSON Schema validation.

Errors carry the file, the line, the JSON pointer inside the document and a fix.
"""

from __future__ import annotations

import difflib
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from jsonschema import Draft202012Validator
from jsonschema.exceptions import ValidationError

from gateway.errors import ConfigError, Problem


@dataclass(frozen=True)
class Document:
    """A parsed YAML file and where each of its nodes starts."""

    file: str
    tree: Any
    lines: dict[str, int] = field(default_factory=dict)

    def line_of(self, pointer: str) -> int | None:
        """Return the line of the node at `pointer`, or of its closest ancestor."""
        p = pointer
        while True:
            if p in self.lines:
                return self.lines[p]
            if not p or p == "/":
                return self.lines.get("")
            p = p.rsplit("/", 1)[0]


def _escape(token: str) -> str:
    return token.replace("~", "~0").replace("/", "~1")


def _walk(node: yaml.Node, pointer: str, lines: dict[str, int]) -> None:
    lines[pointer] = node.start_mark.line + 1
    if isinstance(node, yaml.MappingNode):
        for key, value in node.value:
            child = f"{pointer}/{_escape(str(key.value))}"
            lines[child] = key.start_mark.line + 1
            _walk(value, child, lines)
            lines[child] = key.start_mark.line + 1
    elif isinstance(node, yaml.SequenceNode):
        for i, item in enumerate(node.value):
            _walk(item, f"{pointer}/{i}", lines)


def parse_document(text: str, file: str) -> Document:
    """Parse YAML text (safe loader only); raise ConfigError with the line on bad YAML."""
    try:
        node = yaml.compose(text, Loader=yaml.SafeLoader)
        tree = yaml.safe_load(text)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line = mark.line + 1 if mark is not None else None
        reason = f"not valid YAML: {exc.problem or exc.context}"
        raise ConfigError(
            Problem(file, "", reason, "check indentation and quoting near this line", line=line)
        ) from None
    except yaml.YAMLError as exc:
        raise ConfigError(Problem(file, "", f"not valid YAML: {exc}")) from None
    lines: dict[str, int] = {}
    if node is not None:
        _walk(node, "", lines)
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


def _pointer(parts: Any) -> str:
    return "".join(f"/{_escape(str(p))}" for p in parts)


def _describe(err: ValidationError) -> tuple[str, str, str]:
    """Return (pointer, reason, fix) for one schema error, in an operator's words."""
    pointer = _pointer(err.absolute_path)
    if err.validator == "additionalProperties":
        schema = err.schema if isinstance(err.schema, dict) else {}
        allowed = sorted((schema.get("properties") or {}).keys())
        extra = (
            [k for k in err.instance if k not in allowed] if isinstance(err.instance, dict) else []
        )
        key = extra[0] if extra else "?"
        close = difflib.get_close_matches(str(key), allowed, n=1)
        fix = f"did you mean {close[0]!r}?" if close else f"allowed keys: {', '.join(allowed)}"
        return f"{pointer}/{_escape(str(key))}", f"unknown key {key!r}", fix
    if err.validator == "required":
        return pointer, err.message.replace("'", '"', 2), "add the missing key"
    if err.validator == "enum":
        values = err.validator_value if isinstance(err.validator_value, list) else []
        opts = ", ".join(repr(v) for v in values)
        return pointer, f"{err.instance!r} is not one of {opts}", "use one of the listed values"
    if err.validator == "type":
        return pointer, f"expected {err.validator_value}, got {type(err.instance).__name__}", ""
    message = err.message if len(err.message) < 300 else err.message[:300] + "..."
    return pointer, message, ""


def validate(doc: Document, schema: dict[str, Any], *, fix_hint: str = "") -> None:
    """Validate a document against a JSON Schema; raise ConfigError listing every problem."""
    validator = Draft202012Validator(schema)
    errors = sorted(validator.iter_errors(doc.tree), key=lambda e: list(map(str, e.absolute_path)))
    if not errors:
        return
    problems = []
    for err in _leaves(errors):
        pointer, reason, fix = _describe(err)
        problems.append(
            Problem(doc.file, pointer or "/", reason, fix or fix_hint, line=doc.line_of(pointer))
        )
    raise ConfigError(problems)


def _leaves(errors: list[ValidationError]) -> list[ValidationError]:
    """Prefer the most specific sub-error of anyOf/oneOf failures."""
    out: list[ValidationError] = []
    for err in errors:
        if err.context:
            best = max(err.context, key=lambda e: len(list(e.absolute_path)))
            out.append(best)
        else:
            out.append(err)
    return out


ProblemSink = Callable[[Problem], None]
