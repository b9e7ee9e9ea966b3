"""Resolve `${VAR}` references in a mapping tree (or substitute placeholders for `check`)."""

from __future__ import annotations

import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from gateway.errors import Problem
from gateway.mapping.loader import Problems
from gateway.mapping.values import escape_pointer
from gateway.secrets import REFERENCE, resolve_tree

_REF = REFERENCE  # the reference grammar of gateway.secrets
# Samples are literal: `${...}` inside tests is data, not a reference.
LITERAL_SECTIONS = frozenset({"tests"})


def resolve(
    tree: dict[str, Any],
    problems: Problems,
    *,
    env: Mapping[str, str] | None,
    base_dir: Path,
    check_secrets: bool,
) -> tuple[dict[str, Any], frozenset[str]]:
    """Return the resolved tree and the pointers whose values hold placeholders.

    With `check_secrets` false nothing is looked up: `${NAME:-default}` becomes its default
    and `${NAME}` stays as written (in inline tests a reference stands for itself).
    """
    _check_syntax(tree, "", problems)
    placeholders: set[str] = set()
    out: dict[str, Any] = {}
    for key, value in tree.items():
        pointer = f"/{escape_pointer(key)}"
        if key in LITERAL_SECTIONS:
            out[key] = value
        elif check_secrets:
            found: list[Problem] = []
            out[key] = resolve_tree(
                value,
                file=problems.file,
                env=env,
                base_dir=base_dir,
                problems=found,
                pointer=pointer,
            )
            problems.extend(found)
        else:
            out[key] = _placeholders(value, pointer, placeholders)
    return out, frozenset(placeholders)


def _placeholders(tree: Any, pointer: str, marks: set[str]) -> Any:
    if isinstance(tree, str):
        if "$" not in tree:
            return tree

        def substitute(match: re.Match[str]) -> str:
            if match.group(0) == "$${":
                return "${"
            if match.group(2) is not None:
                return match.group(2)
            marks.add(pointer)
            return match.group(0)

        return _REF.sub(substitute, tree)
    if isinstance(tree, dict):
        return {
            k: _placeholders(v, f"{pointer}/{escape_pointer(k)}", marks) for k, v in tree.items()
        }
    if isinstance(tree, list):
        return [_placeholders(v, f"{pointer}/{i}", marks) for i, v in enumerate(tree)]
    return tree


def _check_syntax(tree: Any, pointer: str, problems: Problems) -> None:
    if isinstance(tree, str):
        if "${" in _REF.sub("", tree):
            problems.add(
                pointer,
                "a ${...} reference is not closed or has no name",
                "write ${NAME} or ${NAME:-default}; write $${ for a literal ${",
            )
    elif isinstance(tree, dict):
        for key, value in tree.items():
            if pointer == "" and key in LITERAL_SECTIONS:
                continue
            _check_syntax(value, f"{pointer}/{escape_pointer(key)}", problems)
    elif isinstance(tree, list):
        for index, value in enumerate(tree):
            _check_syntax(value, f"{pointer}/{index}", problems)
