"""`check_paths` / `format_report` and the inline test runner's verdicts and diffs."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from gateway.mapping import load_mapping, run_inline_tests
from gateway.mapping.check import check_paths, format_report

ROOT = Path(__file__).resolve().parents[1]
FIXTURES = ROOT / "tests" / "fixtures" / "mappings"
WH = ROOT / "mappings" / "watering-hole.yaml"


def test_check_the_shipped_mappings_without_secrets() -> None:
    report = check_paths([ROOT / "mappings"], check_secrets=False, env={})
    assert report.ok, format_report(report)
    text = format_report(report)
    assert "ok      " in text and "watering-hole" in text
    assert text.endswith("1 file(s) checked: 1 ok, 0 failed\n")


def test_check_reports_missing_secrets() -> None:
    report = check_paths([WH], env={})
    assert not report.ok
    (entry,) = report.files
    assert any("WATERING_HOLE_TOKEN" in p.reason for p in entry.problems)


def test_text_report_of_broken_files() -> None:
    report = check_paths([FIXTURES / "broken", FIXTURES / "minimal.yaml"], env={})
    assert not report.ok
    text = format_report(report, "text")
    assert f"FAILED  {FIXTURES / 'broken' / 'unknown-key.yaml'}" in text
    assert f"{FIXTURES / 'broken' / 'unknown-key.yaml'}:11 at /inbound/0/whne: unknown key" in text
    assert "      +        text: hello" in text  # the failing test's diff, indented
    assert f"ok      {FIXTURES / 'minimal.yaml'} (minimal): 1 test(s) passed" in text


def test_json_report() -> None:
    report = check_paths(
        [FIXTURES / "broken" / "failing-test.yaml", FIXTURES / "broken" / "bad-jmespath.yaml"],
        env={},
    )
    data = json.loads(format_report(report, "json"))
    assert data["ok"] is False
    failing, bad = data["files"]
    assert failing["mapping"] == "failing-test"
    assert failing["tests"]["run"] == 1 and failing["tests"]["failed"] == 1
    assert failing["tests"]["failures"][0]["line"] == 20
    assert "HELLO" in failing["tests"]["failures"][0]["diff"]
    assert bad["mapping"] is None
    assert bad["problems"][0] == {
        "file": str(FIXTURES / "broken" / "bad-jmespath.yaml"),
        "line": 14,
        "where": "/inbound/1/when",
        "reason": bad["problems"][0]["reason"],
        "fix": bad["problems"][0]["fix"],
    }


def test_missing_path_and_empty_directory(tmp_path: Path) -> None:
    report = check_paths([tmp_path / "nope.yaml", tmp_path])
    assert not report.ok
    reasons = [p.reason for p in report.problems]
    assert reasons == ["no such file or directory", "no *.yaml or *.yml files here"]
    assert "no such file" in format_report(report)


def test_the_same_file_twice_is_checked_once() -> None:
    report = check_paths([FIXTURES / "minimal.yaml", FIXTURES / "minimal.yaml"], env={})
    assert report.ok and len(report.files) == 1


BASE = (FIXTURES / "minimal.yaml").read_text().split("tests:")[0]


def failures_for(tmp_path: Path, tests: str) -> list[str]:
    path = tmp_path / "m.yaml"
    path.write_text(BASE + "tests:\n" + tests)
    return [str(f) for f in run_inline_tests(load_mapping(path, env={}))]


MSG = "{kind: msg, chat: c1, id: m1, text: hi, ts: 1764158400, from: u1}"
REPLY = "{thread: {idOnExternalPlatform: c1}, messageContent: {payload: {text: hi}}}"


@pytest.mark.parametrize(
    ("tests", "needle"),
    [
        (
            f"  - name: t\n    inbound: {{body: {MSG}}}\n    expect: [{{route: other}}]\n",
            "+- route: message",
        ),
        (
            f"  - name: t\n    inbound: {{body: {MSG}}}\n    expect: []\n",
            "+- action: create_message",
        ),
        (
            f"  - name: t\n    inbound: {{body: {MSG}}}\n    expect_error: {{code: x}}\n",
            "but the run succeeded",
        ),
        (
            "  - name: t\n    inbound: {body: {kind: msg}}\n    expect: []\n",
            "unexpected error (mapping_error)",
        ),
        (
            "  - name: t\n    inbound: {body: {kind: msg}}\n"
            "    expect_error: {code: mapping_error, contains: nothing-like-this}\n",
            "does not contain 'nothing-like-this'",
        ),
        (
            f"  - name: t\n    outbound: {{kind: reply, channel: dm, body: {REPLY}}}\n"
            "    expect: {requests: [{path: /chats/c2/send}]}\n",
            "+- path: /chats/c1/send",
        ),
        (
            f"  - name: t\n    outbound: {{kind: reply, channel: dm, body: {REPLY}}}\n"
            "    expect: {response: {}}\n",
            "needs `platform_response`",
        ),
        (
            f"  - name: t\n    outbound: {{kind: reply, channel: dm, body: {REPLY},"
            " platform_response: {status: 200, body: {id: 5}}}\n"
            "    expect: {response: {message: {idOnExternalPlatform: '6'}}, match: subset}\n",
            "+    idOnExternalPlatform: '5'",
        ),
        ("  - name: t\n    handshake: {query: {a: b}}\n    expect: {status: 200}\n", "+null"),
    ],
)
def test_inline_test_failures_are_readable(tmp_path: Path, tests: str, needle: str) -> None:
    (failure,) = failures_for(tmp_path, tests)
    assert failure.startswith(f"{tmp_path / 'm.yaml'}:")
    assert " at /tests/0: test 't' failed: " in failure
    assert needle in failure, failure


def test_headers_in_expectations_are_masked_and_case_insensitive(tmp_path: Path) -> None:
    tests = (
        f"  - name: t\n    outbound: {{kind: reply, channel: dm, body: {REPLY}}}\n"
        "    expect: {requests: [{headers: {x-api-key: '***', content-type: "
        "application/json}}]}\n"
    )
    assert failures_for(tmp_path, tests) == []
    wrong = tests.replace("'***'", "test-key")
    (failure,) = failures_for(tmp_path, wrong)
    assert "test-key" in failure.split("---")[1]  # only on the expected side
    assert "+    x-api-key: '***'" in failure


def test_payload_keys_named_match_are_data(tmp_path: Path) -> None:
    tests = (
        f"  - name: t\n    outbound: {{kind: reply, channel: dm, body: {REPLY}}}\n"
        "    expect: {requests: [{body: {text: hi, match: x}}]}\n"
    )
    (failure,) = failures_for(tmp_path, tests)
    assert "-    match: x" in failure
