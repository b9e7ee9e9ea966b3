"""Broken mappings fail with a message naming the file, the line and the place."""

from __future__ import annotations

from pathlib import Path

import pytest

from gateway.errors import MappingError, Problem
from gateway.mapping import load_mapping
from gateway.mapping.check import check_paths

BROKEN = Path(__file__).resolve().parent / "fixtures" / "mappings" / "broken"


def problems_of(name: str, **kwargs: object) -> list[Problem]:
    with pytest.raises(MappingError) as info:
        load_mapping(BROKEN / name, env={}, **kwargs)  # type: ignore[arg-type]
    return info.value.problems


@pytest.mark.parametrize(
    ("name", "line", "where", "reason"),
    [
        ("bad-yaml.yaml", 6, "", "YAML syntax error"),
        ("unknown-key.yaml", 11, "/inbound/0/whne", "unknown key 'whne'"),
        ("bad-jmespath.yaml", 14, "/inbound/1/when", "JMESPath syntax error"),
        (
            "unknown-function.yaml",
            17,
            "/inbound/0/extract/created_at",
            "unknown function iso_msec()",
        ),
        ("bad-jinja.yaml", 14, "/outbound/0/request/body/text", "Jinja syntax error"),
        ("sandbox.yaml", 15, "/outbound/0/request/body/debug", "not allowed in templates"),
        (
            "missing-secret.yaml",
            5,
            "/platform/auth/bearer",
            "BYOC_TEST_SURELY_UNSET_TOKEN is not set",
        ),
    ],
)
def test_broken_mapping_names_file_line_and_place(
    name: str, line: int, where: str, reason: str
) -> None:
    problems = problems_of(name)
    problem = problems[0]
    assert problem.file == str(BROKEN / name)
    assert problem.line == line
    assert problem.where == where
    assert reason in problem.reason
    text = str(problem)
    assert text.startswith(f"{BROKEN / name}:{line}")
    assert (f" at {where}: " in text) if where else True
    assert "(fix: " in text


def test_unknown_key_suggests_the_closest_key() -> None:
    (problem,) = problems_of("unknown-key.yaml")
    assert "did you mean 'when'?" in problem.fix


def test_unknown_function_suggests_the_closest_function() -> None:
    (problem,) = problems_of("unknown-function.yaml")
    assert "did you mean iso_ms()?" in problem.fix


def test_missing_secret_is_only_a_reference_problem_without_check_secrets() -> None:
    m = load_mapping(BROKEN / "missing-secret.yaml", env={}, check_secrets=False)
    assert m.name == "missing-secret"


def test_failing_inline_test_reports_place_and_diff() -> None:
    report = check_paths([BROKEN / "failing-test.yaml"])
    (entry,) = report.files
    assert not entry.ok
    assert entry.problems == []
    (failure,) = entry.failures
    assert failure.file == str(BROKEN / "failing-test.yaml")
    assert failure.line == 20
    assert failure.where == "/tests/0"
    assert failure.test == "the text is upper-cased"
    assert "-        text: HELLO" in failure.diff
    assert "+        text: hello" in failure.diff
    assert str(failure).startswith(f"{BROKEN / 'failing-test.yaml'}:20 at /tests/0: test ")


def test_duplicate_webhook_path_names_the_second_file() -> None:
    report = check_paths([BROKEN / "duplicate-webhook-path"])
    first, second = report.files
    assert first.ok
    (problem,) = second.problems
    assert problem.file.endswith("b.yaml")
    assert problem.line == 7
    assert problem.where == "/webhook/path"
    assert "already used by" in problem.reason and "a.yaml" in problem.reason


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "m.yaml"
    path.write_text(text)
    return path


BASE = """\
name: t
platform: {base_url: "https://api.example.test"}
channels: {dm: {name: DMs}}
webhook: {path: /w, signature: {scheme: none, allow_unsigned: true}}
"""


@pytest.mark.parametrize(
    ("extra", "where", "reason"),
    [
        ("inbound:\n  - name: a\n    channel: dm\n", "/inbound/0", "the key 'action' is missing"),
        (
            "inbound:\n  - name: a\n    channel: nope\n    action: contact_status\n"
            "    extract: {thread_id: a, status: b}\n",
            "/inbound/0/channel",
            "unknown channel role 'nope'",
        ),
        (
            "inbound:\n  - name: a\n    channel: dm\n    action: create_message\n"
            "    extract: {thread_id: a}\n",
            "/inbound/0/extract",
            "needs the field(s)",
        ),
        (
            "inbound:\n  - {name: a, ignore: true}\n  - {name: a, ignore: true}\n",
            "/inbound/0",
            "no `when`",
        ),
        (
            "outbound:\n  - name: r\n    request: {method: POTS, path: /x}\n",
            "/outbound/0/request/method",
            "'POTS' is not an HTTP method",
        ),
        (
            "outbound:\n  - name: r\n    request: {path: /x, url: 'https://x'}\n",
            "/outbound/0/request",
            "exactly one of `path`",
        ),
        (
            "outbound:\n  - name: r\n    extract: {channel: x}\n    request: {path: /x}\n",
            "/outbound/0/extract/channel",
            "reserved name",
        ),
        ("tests:\n  - name: t\n    inbound: {body: {}}\n", "/tests/0", "exactly one of expect"),
        ("vars: {a: '${UNCLOSED'}\n", "/vars/a", "not closed"),
        ("", "/webhook/signature/allow_unsigned", "needs allow_unsigned: true"),
    ],
)
def test_compile_problems(tmp_path: Path, extra: str, where: str, reason: str) -> None:
    base = BASE if extra else BASE.replace(", allow_unsigned: true", "")
    with pytest.raises(MappingError) as info:
        load_mapping(write(tmp_path, base + extra), env={})
    found = [p for p in info.value.problems if p.where == where and reason in p.reason]
    assert found, [str(p) for p in info.value.problems]
    assert found[0].line is not None


def test_wrong_type_names_the_types(tmp_path: Path) -> None:
    path = write(tmp_path, BASE.replace("channels: {dm: {name: DMs}}", "channels: [dm]"))
    with pytest.raises(MappingError) as info:
        load_mapping(path, env={})
    (problem,) = info.value.problems
    assert problem.where == "/channels"
    assert problem.reason == "must be a mapping (key: value), not array"


def test_duplicate_yaml_keys_are_errors(tmp_path: Path) -> None:
    with pytest.raises(MappingError) as info:
        load_mapping(write(tmp_path, BASE + "name: again\n"), env={})
    (problem,) = info.value.problems
    assert problem.line == 5
    assert "appears twice" in problem.reason


def test_top_level_must_be_a_mapping(tmp_path: Path) -> None:
    with pytest.raises(MappingError, match="must be a mapping"):
        load_mapping(write(tmp_path, "- a\n- b\n"), env={})


def test_empty_file(tmp_path: Path) -> None:
    with pytest.raises(MappingError, match="the file is empty"):
        load_mapping(write(tmp_path, "# nothing\n"), env={})


def test_unquoted_flow_in_expression_gets_a_quoting_hint(tmp_path: Path) -> None:
    text = BASE + (
        "inbound:\n  - name: a\n    ignore: true\n    extract:\n      x: items[].{a: b}\n"
    )
    with pytest.raises(MappingError) as info:
        load_mapping(write(tmp_path, text), env={})
    assert "quote a value" in info.value.problems[0].fix


def test_recursive_alias_is_refused(tmp_path: Path) -> None:
    with pytest.raises(MappingError, match="refers to one of its own parents"):
        load_mapping(write(tmp_path, BASE + "vars: &v {a: *v}\n"), env={})
