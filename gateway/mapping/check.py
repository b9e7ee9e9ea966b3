"""`byoc-gateway check`: load mappings, run their inline tests, report for people or machines."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from gateway import jsonutil
from gateway.errors import MappingError, Problem
from gateway.mapping.directory import duplicate_problems, mapping_files
from gateway.mapping.inline_tests import run_inline_tests
from gateway.mapping.mapping import CompiledMapping, load_mapping
from gateway.mapping.model import TestFailure


@dataclass
class FileReport:
    """The result of checking one mapping file."""

    path: str
    mapping: str | None = None
    problems: list[Problem] = field(default_factory=list)
    tests_run: int = 0
    failures: list[TestFailure] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems and not self.failures

    @property
    def tests_failed(self) -> int:
        return len(self.failures)


@dataclass
class CheckReport:
    """The result of checking every file given to `check`."""

    files: list[FileReport] = field(default_factory=list)
    problems: list[Problem] = field(default_factory=list)  # not tied to one file

    @property
    def ok(self) -> bool:
        return not self.problems and all(f.ok for f in self.files)


def check_paths(
    paths: Sequence[Path], *, check_secrets: bool = True, env: Mapping[str, str] | None = None
) -> CheckReport:
    """Check mapping files and directories of mapping files (not recursive)."""
    report = CheckReport()
    files: list[Path] = []
    for path in paths:
        if path.is_dir():
            found = mapping_files(path)
            if not found:
                report.problems.append(
                    Problem(
                        str(path),
                        "",
                        "no *.yaml or *.yml files here",
                        "point check at a mapping or a folder of them",
                    )
                )
            files.extend(found)
        elif path.is_file():
            files.append(path)
        else:
            report.problems.append(
                Problem(str(path), "", "no such file or directory", "check the path")
            )
    seen: set[Path] = set()
    loaded: list[CompiledMapping] = []
    by_source: dict[str, FileReport] = {}
    for path in files:
        if path.resolve() in seen:
            continue
        seen.add(path.resolve())
        entry = FileReport(str(path))
        report.files.append(entry)
        by_source[entry.path] = entry
        try:
            mapping = load_mapping(path, env=env, check_secrets=check_secrets)
        except MappingError as exc:
            entry.problems.extend(exc.problems)
            continue
        entry.mapping = mapping.name
        loaded.append(mapping)
        entry.tests_run = len(mapping.tests)
        try:
            entry.failures = run_inline_tests(mapping)
        except MappingError as exc:  # the placeholder twin did not compile
            entry.problems.extend(exc.problems)
    for problem in duplicate_problems(loaded):
        by_source[problem.file].problems.append(problem)
    return report


def format_report(report: CheckReport, fmt: Literal["text", "json"] = "text") -> str:
    """Render a report as text for a terminal or as JSON for tools."""
    if fmt == "json":
        return jsonutil.dumps_str(_as_dict(report))
    lines: list[str] = [str(p) for p in report.problems]
    for entry in report.files:
        name = f" ({entry.mapping})" if entry.mapping else ""
        if entry.ok:
            lines.append(f"ok      {entry.path}{name}: {entry.tests_run} test(s) passed")
            continue
        lines.append(f"FAILED  {entry.path}{name}")
        lines.extend(f"  {p}" for p in entry.problems)
        for failure in entry.failures:
            lines.append(
                f"  {failure.file}:{failure.line} at {failure.where}: test "
                f"{failure.test!r} failed: {failure.reason}"
            )
            lines.extend(f"      {d}" for d in failure.diff.splitlines())
        if entry.mapping is not None:
            lines.append(
                f"  {entry.tests_run - entry.tests_failed} of {entry.tests_run} test(s) passed"
            )
    failed = sum(1 for f in report.files if not f.ok)
    lines.append(
        f"{len(report.files)} file(s) checked: {len(report.files) - failed} ok, {failed} failed"
    )
    return "\n".join(lines) + "\n"


def _as_dict(report: CheckReport) -> dict[str, Any]:
    return {
        "ok": report.ok,
        "problems": [p.as_dict() for p in report.problems],
        "files": [
            {
                "path": f.path,
                "mapping": f.mapping,
                "ok": f.ok,
                "problems": [p.as_dict() for p in f.problems],
                "tests": {
                    "run": f.tests_run,
                    "failed": f.tests_failed,
                    "failures": [x.as_dict() for x in f.failures],
                },
            }
            for f in report.files
        ],
    }
