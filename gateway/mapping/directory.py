"""A directory of mapping files: load them all, reuse the unchanged, find duplicates."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

from gateway.errors import MappingError, Problem
from gateway.mapping.mapping import CompiledMapping, load_mapping


def mapping_files(directory: Path) -> list[Path]:
    """The mapping files of a directory (*.yaml, *.yml), sorted by name."""
    return sorted(
        p
        for p in directory.iterdir()
        if p.is_file() and p.suffix in (".yaml", ".yml") and not p.name.startswith(".")
    )


def duplicate_problems(mappings: Sequence[CompiledMapping]) -> list[Problem]:
    """Problems for mappings that share a name or a webhook path."""
    problems: list[Problem] = []
    names: dict[str, CompiledMapping] = {}
    paths: dict[str, CompiledMapping] = {}
    for m in mappings:
        first = names.setdefault(m.name, m)
        if first is not m:
            problems.append(
                Problem(
                    m.source,
                    "/name",
                    f"the name {m.name!r} is already used by {first.source}",
                    "give every mapping its own name",
                    m.lines.line("/name"),
                )
            )
        first = paths.setdefault(m.webhook.path, m)
        if first is not m:
            problems.append(
                Problem(
                    m.source,
                    "/webhook/path",
                    f"the webhook path {m.webhook.path!r} is already used by {first.source}",
                    "give every mapping its own webhook path",
                    m.lines.line("/webhook/path"),
                )
            )
    return problems


def load_mapping_dir(
    directory: Path,
    *,
    env: Mapping[str, str] | None = None,
    check_secrets: bool = True,
    previous: Mapping[str, CompiledMapping] | None = None,
    each: Callable[[CompiledMapping], CompiledMapping] | None = None,
) -> dict[str, CompiledMapping]:
    """Load every mapping of a directory; one MappingError collects all files' problems.

    A mapping of `previous` whose file and references are unchanged is reused as it is
    (a reload of many mappings then compiles only what changed). `each` is applied to
    every freshly compiled mapping as soon as it is compiled (the gateway runs its inline
    tests and keeps it for serving, so only one full mapping is in memory at a time).
    """
    if not directory.is_dir():
        raise MappingError(
            Problem(
                str(directory),
                "",
                "not a directory",
                "point mappings_dir at the folder holding the *.yaml files",
            )
        )
    problems: list[Problem] = []
    loaded: list[CompiledMapping] = []
    by_source = {m.source: m for m in (previous or {}).values()}
    for path in mapping_files(directory):
        old = by_source.get(str(path))
        if old is not None and check_secrets and old.built_from(path, env):
            loaded.append(old)
            continue
        try:
            compiled = load_mapping(path, env=env, check_secrets=check_secrets)
        except MappingError as exc:
            problems.extend(exc.problems)
            continue
        loaded.append(compiled if each is None else each(compiled))
    problems.extend(duplicate_problems(loaded))
    if problems:
        raise MappingError(problems)
    return {m.name: m for m in loaded}
