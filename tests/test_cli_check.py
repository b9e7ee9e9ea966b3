"""Issue 2: `byoc-gateway check`, run as operators run it (a real process)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
BROKEN = ROOT / "tests" / "fixtures" / "mappings" / "broken"
ENV = {
    "WATERING_HOLE_API": "https://api.wateringhole.example/v1",
    "WATERING_HOLE_TOKEN": "token-for-check",
    "WH_SECRET": "secret-for-check",
    "WH_VERIFY_TOKEN": "verify-for-check",
}


def check(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    base = {k: v for k, v in os.environ.items() if k not in ENV}
    return subprocess.run(
        [sys.executable, "-m", "gateway.cli", "check", *args],
        cwd=ROOT,
        env={**base, **(env or {})},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_the_shipped_mappings_pass() -> None:
    done = check("mappings/", env=ENV)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "watering-hole.yaml" in done.stdout


def test_without_secrets_the_references_alone_can_be_checked() -> None:
    assert check("mappings/").returncode == 1
    done = check("--no-secrets", "mappings/")
    assert done.returncode == 0, done.stdout + done.stderr


@pytest.mark.parametrize(
    ("name", "place", "words"),
    [
        ("bad-yaml.yaml", "bad-yaml.yaml:6", "YAML"),
        ("unknown-key.yaml", "bad-key", "did you mean 'when'"),
        ("bad-jmespath.yaml", "at /inbound/1/when", "JMESPath"),
        ("bad-jinja.yaml", "at /outbound/0/request/body/text", "Jinja"),
        ("missing-secret.yaml", "at /platform/auth/bearer", "BYOC_TEST_SURELY_UNSET_TOKEN"),
        ("failing-test.yaml", "at /tests/0", "+        text: hello"),
        ("sandbox.yaml", "at /outbound/0/request/body/debug", "sandbox"),
    ],
)
def test_each_broken_mapping_fails_naming_file_and_place(name: str, place: str, words: str) -> None:
    done = check(str(BROKEN / name))
    assert done.returncode == 1
    out = done.stdout + done.stderr
    assert name in out
    if place != "bad-key":
        assert place in out
    else:
        assert f"{name}:11 at /inbound/0/whne" in out
    assert words in out
    assert "Traceback" not in out


def test_json_format_for_pipelines() -> None:
    done = check("--format", "json", str(BROKEN / "unknown-key.yaml"), "mappings/", env=ENV)
    assert done.returncode == 1
    report = json.loads(done.stdout)
    assert report["ok"] is False
    by_file = {Path(f["path"]).name: f for f in report["files"]}
    assert by_file["watering-hole.yaml"]["ok"] is True
    problem = by_file["unknown-key.yaml"]["problems"][0]
    assert problem["line"] == 11 and problem["where"] == "/inbound/0/whne"


def test_gateway_yaml_is_checked_too(tmp_path: Path) -> None:
    bad = tmp_path / "gateway.yaml"
    bad.write_text((ROOT / "gateway.yaml").read_text().replace("mappings_dir:", "mapping_dir:"))
    done = check("--no-secrets", "mappings/", "--config", str(bad))
    assert done.returncode == 1
    assert (
        "unknown key 'mapping_dir'" in done.stdout and "did you mean 'mappings_dir'" in done.stdout
    )


def test_a_duplicate_key_in_gateway_yaml_is_refused_with_its_line(tmp_path: Path) -> None:
    text = (ROOT / "gateway.yaml").read_text()
    bad = tmp_path / "gateway.yaml"
    bad.write_text(text + "\ndata_dir: elsewhere\n")  # YAML alone would keep the last one
    done = check("--no-secrets", "mappings/", "--config", str(bad))
    assert done.returncode == 1
    line = len(text.splitlines()) + 2
    assert f"gateway.yaml:{line} at /data_dir: the key 'data_dir' appears twice" in done.stdout
