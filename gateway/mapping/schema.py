"""Validate a mapping tree against schemas/mapping.schema.json with operator-friendly messages."""

from __future__ import annotations

import difflib
import json
import re
from functools import cache
from pathlib import Path
from typing import Any

import jsonschema
from jsonschema.exceptions import ValidationError

from gateway.mapping.loader import Problems
from gateway.mapping.values import escape_pointer, type_name

SCHEMA_PATH = Path(__file__).resolve().parents[1] / "schemas" / "mapping.schema.json"

_TYPE_WORDS = {
    "object": "a mapping (key: value)",
    "array": "a list",
    "string": "a text (string)",
    "integer": "a whole number",
    "number": "a number",
    "boolean": "true or false",
    "null": "null",
}
_FIXES = {
    "channel": "add `channel:` (a role under channels:) and `action:`, or `ignore: true`",
    "action": "add `action:` (create_message, message_status or contact_status), or `ignore: true`",
}


@cache
def _validator() -> jsonschema.Draft202012Validator:
    schema = json.loads(SCHEMA_PATH.read_text(encoding="utf-8"))
    return jsonschema.Draft202012Validator(schema)


def validate(tree: Any, problems: Problems) -> bool:
    """Record one problem per schema violation; return True when the tree is valid."""
    return validate_with(_validator(), tree, problems, "start with `name: my-platform`")


def validate_with(
    validator: jsonschema.Draft202012Validator, tree: Any, problems: Problems, start: str
) -> bool:
    """Validate any operator file against `validator`, in the same words (`start`: top fix)."""
    if not isinstance(tree, dict):
        problems.add(
            "",
            f"the file must be a mapping (key: value) at the top, not {type_name(tree)}",
            start,
        )
        return False
    before = len(problems.items)
    seen: set[tuple[str, str]] = set()
    for error in sorted(validator.iter_errors(tree), key=lambda e: list(map(str, e.path))):
        for where, reason, fix in _describe(error):
            if (where, reason) not in seen:
                seen.add((where, reason))
                problems.add(where, reason, fix)
    return len(problems.items) == before


def _pointer(error: ValidationError) -> str:
    return "".join(f"/{escape_pointer(str(p))}" for p in error.absolute_path)


def _describe(error: ValidationError) -> list[tuple[str, str, str]]:
    where = _pointer(error)
    kind = str(error.validator)
    value: Any = error.validator_value
    schema = error.schema if isinstance(error.schema, dict) else {}
    instance: Any = error.instance
    if kind == "additionalProperties" and isinstance(instance, dict):
        known = list(schema.get("properties", {}))
        out = []
        for key in instance:
            if key in known:
                continue
            close = difflib.get_close_matches(key, known, n=1, cutoff=0.6)
            hint = f"did you mean {close[0]!r}? " if close else ""
            out.append(
                (
                    f"{where}/{escape_pointer(key)}",
                    f"unknown key {key!r}",
                    f"{hint}valid keys here: {', '.join(known)}",
                )
            )
        return out
    if kind == "required" and isinstance(instance, dict):
        return [
            (where, f"the key {key!r} is missing", _FIXES.get(key, f"add `{key}:`"))
            for key in value
            if key not in instance
        ]
    if kind == "type":
        wanted = [str(w) for w in (value if isinstance(value, list) else [value])]
        words = " or ".join(_TYPE_WORDS.get(w, w) for w in wanted)
        return [(where, f"must be {words}, not {type_name(instance)}", "")]
    if kind == "enum":
        choices = [str(c) for c in value]
        close = difflib.get_close_matches(str(instance), choices, n=1, cutoff=0.5)
        hint = f"did you mean {close[0]!r}? " if close else ""
        return [
            (where, f"{instance!r} is not allowed here", f"{hint}use one of: {', '.join(choices)}")
        ]
    if kind == "propertyNames":
        return [
            (
                f"{where}/{escape_pointer(str(instance))}",
                f"the name {instance!r} is not allowed here",
                "use letters, digits and _ only, not starting with a digit",
            )
        ]
    if kind == "pattern":
        what = (
            "is not an HTTP method"
            if str(value).startswith("^(GET|POST")
            else "does not have the expected form"
        )
        return [(where, f"{instance!r} {what}", _pattern_fix(value))]
    if kind in ("minProperties", "maxProperties"):
        hint = str(schema.get("description", "")) or "see docs/mappings.md"
        if "verify_token" in where:
            hint = "give `value` and exactly one of param, header, field"
        return [(where, f"has the wrong number of keys ({len(instance)})", hint)]
    if kind in ("minLength", "minItems"):
        return [(where, "must not be empty", "")]
    if kind in ("minimum", "maximum", "exclusiveMinimum"):
        bound = {"minimum": "at least", "maximum": "at most", "exclusiveMinimum": "more than"}
        return [(where, f"must be {bound[kind]} {value}, not {instance}", "")]
    if kind == "const":
        return [(where, f"must be {value!r}", "")]
    return [(where, error.message, "")]


def _pattern_fix(pattern: str) -> str:
    if pattern.startswith("^[a-z0-9][a-z0-9-]"):
        return "use lower-case letters, digits and dashes, e.g. my-platform"
    if pattern.startswith("^(GET|POST"):
        return "use GET, POST, PUT, PATCH or DELETE, or a template giving one of them"
    if pattern == "^/":
        return "start the path with /"
    if pattern.startswith("^/["):
        return "write a URL path starting with /, without query or spaces"
    if re.search(r"\[A-Za-z0-9\]\[A-Za-z0-9_\.-\]", pattern):
        return "use letters, digits, '.', '_' and '-'"
    return f"it must match {pattern}"
