"""Secret values and `${VAR}` references in operator files.

A string in gateway.yaml or a mapping may hold references:

- `${NAME}`          the environment variable NAME (missing -> SecretError, fail closed)
- `${NAME:-default}` NAME, or `default` when NAME is unset or empty
- `${file:/path}`    the content of a file, trailing newline stripped (for mounted secrets)
- `$${`              a literal `${`

Resolved values are registered with `REDACTOR` so log lines never show them.
"""

from __future__ import annotations

import hmac
import os
import re
import threading
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from gateway.errors import Problem, SecretError

# ${NAME}, ${NAME:-default}, ${file:/path}, and $${ for a literal ${
REFERENCE = re.compile(r"\$\$\{|\$\{(file:[^}]+|[^}:]+)(?::-([^}]*))?\}")
_REF = REFERENCE


class Secret:
    """A string that never shows itself in repr, str or logs."""

    __slots__ = ("_name", "_value")

    def __init__(self, value: str, name: str = "") -> None:
        self._value = value
        self._name = name

    def reveal(self) -> str:
        return self._value

    @property
    def name(self) -> str:
        return self._name

    def matches(self, candidate: str | bytes) -> bool:
        """Compare in constant time."""
        other = candidate.encode() if isinstance(candidate, str) else candidate
        return hmac.compare_digest(self._value.encode(), other)

    def __repr__(self) -> str:
        return f"Secret({self._name or '***'}=***)"

    __str__ = __repr__

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Secret) and hmac.compare_digest(
            self._value.encode(), other._value.encode()
        )

    def __hash__(self) -> int:
        return hash(("Secret", self._name))

    def __bool__(self) -> bool:
        return bool(self._value)


class Redactor:
    """Remembers secret values so that log output can mask them."""

    def __init__(self) -> None:
        self._values: set[str] = set()
        self._lock = threading.Lock()
        self._pattern: re.Pattern[str] | None = None

    def add(self, value: str) -> None:
        if len(value) < 4:  # too short to mask without destroying every log line
            return
        with self._lock:
            if value not in self._values:
                self._values.add(value)
                self._pattern = None

    def redact(self, text: str) -> str:
        with self._lock:
            if not self._values:
                return text
            if self._pattern is None:
                alts = sorted(self._values, key=len, reverse=True)
                self._pattern = re.compile("|".join(re.escape(v) for v in alts))
            pattern = self._pattern
        return pattern.sub("***", text)


REDACTOR = Redactor()

EnvLookup = Callable[[str], str | None]


def resolve_string(
    text: str,
    *,
    file: str,
    where: str,
    env: Mapping[str, str] | None = None,
    base_dir: Path | None = None,
    problems: list[Problem] | None = None,
) -> str:
    """Replace every reference in `text`; record or raise a located problem when one is missing."""
    environ = os.environ if env is None else env

    def substitute(match: re.Match[str]) -> str:
        if match.group(0) == "$${":
            return "${"
        name, default = match.group(1), match.group(2)
        if name.startswith("file:"):
            path = Path(name[5:])
            if base_dir is not None and not path.is_absolute():
                path = base_dir / path
            try:
                value = path.read_text(encoding="utf-8").rstrip("\n")
            except OSError as exc:
                _report(
                    problems,
                    Problem(
                        file,
                        where,
                        f"secret file {str(path)!r} cannot be read ({exc.strerror})",
                        "create the file or fix the path",
                    ),
                )
                return ""
        else:
            raw = environ.get(name)
            if raw is None or raw == "":
                if default is not None:
                    return default
                _report(
                    problems,
                    Problem(
                        file,
                        where,
                        f"environment variable {name} is not set",
                        f"export {name}=... before starting, or write ${{{name}:-default}}",
                    ),
                )
                return ""
            value = raw
        REDACTOR.add(value)
        return value

    return _REF.sub(substitute, text)


def _report(problems: list[Problem] | None, problem: Problem) -> None:
    if problems is None:
        raise SecretError(problem)
    problems.append(problem)


def references(text: str) -> list[str]:
    """Names referenced by `text` (for `check --no-secrets`)."""
    return [m.group(1) for m in _REF.finditer(text) if m.group(0) != "$${"]


def resolve_tree(
    tree: Any,
    *,
    file: str,
    env: Mapping[str, str] | None = None,
    base_dir: Path | None = None,
    problems: list[Problem] | None = None,
    pointer: str = "",
) -> Any:
    """Resolve references in every string of a YAML tree (keys are left alone)."""
    if isinstance(tree, str):
        if "$" not in tree:
            return tree
        return resolve_string(
            tree, file=file, where=pointer or "/", env=env, base_dir=base_dir, problems=problems
        )
    if isinstance(tree, dict):
        return {
            k: resolve_tree(
                v,
                file=file,
                env=env,
                base_dir=base_dir,
                problems=problems,
                pointer=f"{pointer}/{_escape(str(k))}",
            )
            for k, v in tree.items()
        }
    if isinstance(tree, list):
        return [
            resolve_tree(
                v,
                file=file,
                env=env,
                base_dir=base_dir,
                problems=problems,
                pointer=f"{pointer}/{i}",
            )
            for i, v in enumerate(tree)
        ]
    return tree


def _escape(token: str) -> str:
    return token.replace("~", "~0").replace("/", "~1")
