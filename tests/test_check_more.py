"""Issue 3: the published schemas, editors' references to them, and check's exit codes."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest
import yaml
from jsonschema import Draft202012Validator

from tests.test_cli_check import ENV, check

ROOT = Path(__file__).resolve().parent.parent
SCHEMAS = ("mapping.schema.json", "gateway.schema.json")
MODELINE = re.compile(r"^# yaml-language-server: \$schema=(\S+)$")


def schema(name: str) -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads((ROOT / "schemas" / name).read_text(encoding="utf-8"))
    return loaded


def referenced_schema(path: Path) -> Path:
    """The schema a YAML language server uses for `path` (its first-line modeline)."""
    first = path.read_text(encoding="utf-8").splitlines()[0]
    found = MODELINE.match(first)
    assert found, f"{path} does not start with a yaml-language-server $schema modeline"
    return (path.parent / found.group(1)).resolve()


@pytest.mark.parametrize("name", SCHEMAS)
def test_published_schemas_are_valid_draft_2020_12(name: str) -> None:
    doc = schema(name)
    assert doc["$schema"] == "https://json-schema.org/draft/2020-12/schema"
    Draft202012Validator.check_schema(doc)  # raises SchemaError on an invalid schema
    assert doc.get("title") and doc.get("$id")


@pytest.mark.parametrize("name", SCHEMAS)
def test_the_schemas_for_editors_are_the_ones_the_gateway_uses(name: str) -> None:
    published = ROOT / "schemas" / name
    used = ROOT / "gateway" / "schemas" / name  # packaged with the code
    assert published.read_bytes() == used.read_bytes()


def test_gateway_yaml_and_every_mapping_reference_their_schema() -> None:
    assert (
        referenced_schema(ROOT / "gateway.yaml")
        == (ROOT / "schemas" / "gateway.schema.json").resolve()
    )
    mappings = sorted((ROOT / "mappings").glob("*.yaml"))
    assert mappings
    for path in mappings:
        assert referenced_schema(path) == (ROOT / "schemas" / "mapping.schema.json").resolve()


@pytest.mark.parametrize(
    ("document", "name"),
    [
        ("gateway.yaml", "gateway.schema.json"),
        ("mappings/watering-hole.yaml", "mapping.schema.json"),
    ],
)
def test_an_editor_finds_no_schema_error_in_the_shipped_files(document: str, name: str) -> None:
    # what a YAML language server does: plain YAML data against the referenced schema
    data = yaml.safe_load((ROOT / document).read_text(encoding="utf-8"))
    errors = list(Draft202012Validator(schema(name)).iter_errors(data))
    assert errors == [], [e.message for e in errors]


def test_an_editor_sees_a_typo_the_schema_refuses() -> None:
    data = yaml.safe_load((ROOT / "mappings" / "watering-hole.yaml").read_text(encoding="utf-8"))
    data["inbound"][1]["whne"] = data["inbound"][1].pop("when")
    errors = list(Draft202012Validator(schema("mapping.schema.json")).iter_errors(data))
    assert errors and any("whne" in e.message for e in errors)


# ----------------------------------------------------------------------- exit codes


def test_exit_codes_are_0_ok_1_problems_2_usage(tmp_path: Path) -> None:
    assert check("mappings/watering-hole.yaml", env=ENV).returncode == 0
    assert check("tests/fixtures/mappings/broken/bad-jinja.yaml").returncode == 1
    assert check(str(tmp_path / "nothing-here")).returncode == 1
    usage = check("--format", "yaml", "mappings/")
    assert usage.returncode == 2 and "invalid choice" in usage.stderr
    assert check("--no-such-flag").returncode == 2


def test_check_accepts_files_and_directories_together_in_json(tmp_path: Path) -> None:
    broken = ROOT / "tests" / "fixtures" / "mappings" / "broken"
    done = check(
        "--format", "json", "--no-secrets", "mappings/", str(broken / "bad-jmespath.yaml"),
        "--config", "gateway.yaml",
    )  # fmt: skip
    assert done.returncode == 1
    report = json.loads(done.stdout)
    by_name = {Path(f["path"]).name: f for f in report["files"]}
    assert by_name["watering-hole.yaml"]["ok"] is True
    assert by_name["watering-hole.yaml"]["tests"]["run"] > 20
    assert by_name["gateway.yaml"]["ok"] is True
    (problem,) = by_name["bad-jmespath.yaml"]["problems"]
    assert problem["where"] == "/inbound/1/when" and isinstance(problem["line"], int)
    assert problem["file"].endswith("bad-jmespath.yaml") and problem["fix"]


def test_a_failing_inline_test_shows_a_diff_of_expected_and_actual(tmp_path: Path) -> None:
    text = (ROOT / "mappings" / "watering-hole.yaml").read_text(encoding="utf-8")
    right = "- {method: POST, path: /conversations/cnv_42/typing, body: {typing: true}}"
    assert text.count(right) == 1
    wrong = text.replace(right, right.replace("typing: true", "typing: false"))
    path = tmp_path / "watering-hole.yaml"
    path.write_text(wrong, encoding="utf-8")
    done = check(str(path), "--no-secrets")
    assert done.returncode == 1
    assert "test 'typing on' failed: the result differs from `expect`" in done.stdout
    assert "--- expected" in done.stdout and "+++ actual" in done.stdout
    assert "-    typing: false" in done.stdout and "+    typing: true" in done.stdout


@pytest.mark.parametrize("command", ["check", "try", "reload"])
def test_the_operators_guide_names_every_option(command: str) -> None:
    import argparse

    from gateway.cli import _parser

    guide = (ROOT / "docs" / "operators.md").read_text(encoding="utf-8")
    sub = next(a for a in _parser()._actions if isinstance(a, argparse._SubParsersAction)).choices[
        command
    ]
    for action in sub._actions:
        long = [o for o in action.option_strings if o.startswith("--") and o != "--help"]
        for option in long:
            assert option in guide, f"docs/operators.md does not mention `{command} {option}`"
