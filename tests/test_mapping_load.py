"""The Watering Hole mapping loads, compiles, passes its inline tests and hides its secrets."""

from __future__ import annotations

import hashlib
import json
import re
import shutil
from pathlib import Path

import jmespath.functions
import jsonschema
import pytest

from gateway.errors import MappingError
from gateway.mapping import (
    CompiledMapping,
    PlatformResponse,
    load_mapping,
    load_mapping_dir,
    run_inline_tests,
)
from gateway.mapping.expressions import FUNCTION_TABLE
from gateway.mapping.model import OutboundContext
from gateway.secrets import Secret

ROOT = Path(__file__).resolve().parents[1]
WH = ROOT / "mappings" / "watering-hole.yaml"
FIXTURES = ROOT / "tests" / "fixtures" / "mappings"
ENV = {
    "WATERING_HOLE_API": "https://api.wateringhole.example/v1",
    "WATERING_HOLE_TOKEN": "wh-token-do-not-leak",
    "WH_SECRET": "whsec-do-not-leak",
    "WH_VERIFY_TOKEN": "verify-do-not-leak",
    "WATERING_HOLE_ACCOUNT_USER_ID": "usr_brand_real",
}
SECRETS = ("wh-token-do-not-leak", "whsec-do-not-leak", "verify-do-not-leak")


@pytest.fixture(scope="module")
def wh() -> CompiledMapping:
    return load_mapping(WH, env=ENV)


def test_watering_hole_loads_with_its_secrets(wh: CompiledMapping) -> None:
    assert wh.name == "watering-hole"
    assert wh.source == str(WH)
    assert wh.version == hashlib.sha256(WH.read_bytes()).hexdigest()[:12]
    assert wh.vars["account_user_id"] == "usr_brand_real"
    assert wh.platform.base_url == "https://api.wateringhole.example/v1"
    assert wh.platform.idempotency_header == "Idempotency-Key"
    assert wh.platform.timeouts.connect == 3
    assert wh.platform.timeouts.total == 10
    assert wh.platform.auth is not None
    assert wh.platform.auth.kind == "bearer"
    assert isinstance(wh.platform.auth.value, Secret)
    assert set(wh.channels) == {"chat", "board"}
    assert wh.channels["chat"].cxone["isPrivate"] is True
    assert wh.channels["chat"].attachments is not None
    assert wh.channels["chat"].attachments.max_bytes == 5_242_880
    assert wh.channels["board"].attachments is None
    assert wh.webhook.path == "/webhooks/watering-hole"
    assert wh.webhook.format == "json"
    assert wh.webhook.signature["scheme"] == "hmac-sha256"
    assert wh.webhook.signature["secrets"] == ["whsec-do-not-leak", ""]
    assert wh.inbound_routes[0] == "echo"
    assert "chat-reply" in wh.outbound_routes


def test_watering_hole_inline_tests_pass(wh: CompiledMapping) -> None:
    failures = run_inline_tests(wh)
    assert failures == [], "\n\n".join(str(f) for f in failures)
    assert len(wh.tests) >= 20


def test_inline_tests_do_not_depend_on_the_environment() -> None:
    # the echo test uses usr_jungle, the default of ${WATERING_HOLE_ACCOUNT_USER_ID:-usr_jungle}
    placeholder = load_mapping(WH, check_secrets=False)
    assert placeholder.test_twin() is placeholder
    assert run_inline_tests(placeholder) == []


def test_inline_tests_cover_every_route(wh: CompiledMapping) -> None:
    routes: set[str] = set()
    for test in wh.tests:
        expect = test.get("expect")
        if isinstance(expect, list):
            routes.update(e["route"] for e in expect if "route" in e)
        elif isinstance(expect, dict) and "route" in expect:
            routes.add(expect["route"])
    assert set(wh.inbound_routes) <= routes
    assert set(wh.outbound_routes) <= routes


def test_secrets_never_show_in_reprs(wh: CompiledMapping) -> None:
    plan = wh.route_outbound(
        OutboundContext(
            "reply",
            "outbound",
            "chat",
            "c1",
            {},
            {
                "thread": {"idOnExternalPlatform": "cnv_1"},
                "messageContent": {"type": "TEXT", "payload": {"text": "hi"}},
            },
        )
    )
    request = plan.requests[0]
    assert request.headers["Authorization"] == "Bearer wh-token-do-not-leak"
    texts = [
        repr(wh),
        repr(wh.platform),
        repr(wh.webhook),
        repr(wh.webhook.signature),
        repr(wh.channels),
        repr(plan),
        str(request),
        repr(wh.test_twin()),
    ]
    for text in texts:
        for secret in SECRETS:
            assert secret not in text


def test_missing_secret_fails_closed() -> None:
    env = {k: v for k, v in ENV.items() if k != "WH_SECRET"}
    with pytest.raises(MappingError) as info:
        load_mapping(WH, env=env)
    text = str(info.value)
    assert "WH_SECRET is not set" in text
    assert "watering-hole.yaml:" in text
    assert "/webhook/signature/secrets/0" in text
    for secret in SECRETS:
        assert secret not in text


def test_check_secrets_false_keeps_references() -> None:
    m = load_mapping(WH, env={}, check_secrets=False)
    assert m.platform.base_url == "${WATERING_HOLE_API}"
    assert m.vars["account_user_id"] == "usr_jungle"


def test_complete_outbound_gives_exact_big_ids(wh: CompiledMapping) -> None:
    plan = wh.route_outbound(
        OutboundContext(
            "reply",
            "legacy",
            "chat",
            "c1",
            {"postId": "cnv_1"},
            {"messageContent": {"payload": {"text": "hi"}}},
        )
    )
    answer = wh.complete_outbound(
        plan,
        [
            PlatformResponse(
                201, {}, {"message": {"id": 1_000_000_000_000_000_000, "created_at_ms": 1}}
            )
        ],
    )
    assert answer == {"idOnExternalPlatform": "1000000000000000000"}


def test_load_mapping_dir(tmp_path: Path) -> None:
    shutil.copy(FIXTURES / "minimal.yaml", tmp_path / "minimal.yaml")
    shutil.copy(FIXTURES / "nested.yaml", tmp_path / "nested.yml")
    (tmp_path / "notes.txt").write_text("not a mapping")
    loaded = load_mapping_dir(tmp_path, env={})
    assert set(loaded) == {"minimal", "nested"}


def test_load_mapping_dir_collects_problems_of_all_files(tmp_path: Path) -> None:
    shutil.copy(FIXTURES / "broken" / "unknown-key.yaml", tmp_path / "a.yaml")
    shutil.copy(FIXTURES / "broken" / "bad-jinja.yaml", tmp_path / "b.yaml")
    with pytest.raises(MappingError) as info:
        load_mapping_dir(tmp_path, env={})
    files = {Path(p.file).name for p in info.value.problems}
    assert files == {"a.yaml", "b.yaml"}


def test_load_mapping_dir_rejects_duplicate_names(tmp_path: Path) -> None:
    text = (FIXTURES / "minimal.yaml").read_text()
    (tmp_path / "a.yaml").write_text(text)
    (tmp_path / "b.yaml").write_text(text.replace("/webhooks/minimal", "/webhooks/other"))
    with pytest.raises(MappingError) as info:
        load_mapping_dir(tmp_path, env={})
    (problem,) = info.value.problems
    assert problem.file.endswith("b.yaml")
    assert problem.where == "/name"
    assert problem.line == 2
    assert "already used" in problem.reason


def test_unreadable_file_is_a_mapping_error(tmp_path: Path) -> None:
    with pytest.raises(MappingError, match="cannot read the file"):
        load_mapping(tmp_path / "absent.yaml")


def test_compiled_mapping_is_immutable(wh: CompiledMapping) -> None:
    with pytest.raises(AttributeError):
        wh.name = "other"  # type: ignore[misc]


def _schema_nodes(node: object, path: str = "") -> list[tuple[str, dict[str, object]]]:
    found: list[tuple[str, dict[str, object]]] = []
    if isinstance(node, dict):
        found.append((path, node))
        for key, value in node.items():
            found.extend(_schema_nodes(value, f"{path}/{key}"))
    elif isinstance(node, list):
        for index, value in enumerate(node):
            found.extend(_schema_nodes(value, f"{path}/{index}"))
    return found


def test_schema_refuses_unknown_keys_everywhere() -> None:
    schema = json.loads((ROOT / "schemas" / "mapping.schema.json").read_text())
    jsonschema.Draft202012Validator.check_schema(schema)
    for path, node in _schema_nodes(schema):
        conditional = any(part in ("if", "then", "else") for part in path.split("/"))
        if "properties" in node and not conditional:
            assert node.get("additionalProperties") is False, path


def test_every_key_is_documented() -> None:
    schema = json.loads((ROOT / "schemas" / "mapping.schema.json").read_text())
    docs = (ROOT / "docs" / "mappings.md").read_text()
    keys = {key for _, node in _schema_nodes(schema) for key in node.get("properties", {})}  # type: ignore[attr-defined]
    missing = [k for k in sorted(keys) if not re.search(rf"[`{{ ]{re.escape(k)}[`:}} ,]", docs)]
    assert missing == []


def test_every_custom_function_is_documented() -> None:
    docs = (ROOT / "docs" / "mappings.md").read_text()
    custom = set(FUNCTION_TABLE) - set(jmespath.functions.Functions.FUNCTION_TABLE)
    assert custom
    assert [f for f in sorted(custom) if f"`{f}(" not in docs] == []
