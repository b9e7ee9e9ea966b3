"""Issue 5: operator files cannot run code, and secrets never show in reprs or errors."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from gateway.cxone.tokens import TokenGrant
from gateway.errors import ConfigError
from gateway.sandbox.wiring import sandbox_config, sandbox_env
from gateway.secrets import Secret
from gateway.settings_loader import load_settings


def _yaml(tmp_path: Path) -> str:
    tree = sandbox_config(
        tmp_path,
        mappings_dir=tmp_path,
        channels=[
            {"id": "chat", "mapping": "watering-hole", "role": "chat"},
            {"id": "board", "mapping": "watering-hole", "role": "board"},
        ],
        backend="memory",
        workers=1,
        max_attempts=1,
        deadline=1,
    )
    return yaml.safe_dump(tree, sort_keys=False)


def test_yaml_tags_that_build_python_objects_are_refused(tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    text = _yaml(tmp_path).replace(
        "admin_token: ${ADMIN_TOKEN}",
        f"admin_token: !!python/object/apply:os.system ['touch {marker}']",
    )
    path = tmp_path / "gateway.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError, match="YAML"):
        load_settings(path, env=sandbox_env("http://x/v1", "http://x"))
    assert not marker.exists()


def test_reprs_and_errors_show_no_secret(tmp_path: Path) -> None:
    path = tmp_path / "gateway.yaml"
    path.write_text(_yaml(tmp_path))
    env = sandbox_env("http://x/v1", "http://x")
    settings = load_settings(path, env=env)
    shown = repr(settings) + str(settings.integrations) + repr(settings.cxone)
    for name in ("BYOC_CLIENT_SECRET", "BYOC_TOKEN_SIGNING_KEY", "CXONE_ACCESS_KEY_SECRET"):
        assert env[name] not in shown, name
    assert "***" in shown
    assert "s3cr3t-value" not in repr(Secret("s3cr3t-value", "x")) + str(Secret("s3cr3t-value"))
    assert "eyJtoken" not in repr(TokenGrant("eyJtoken", 60))
    # a missing secret is named, never guessed at or echoed
    del env["BYOC_CLIENT_SECRET"]
    with pytest.raises(ConfigError, match="BYOC_CLIENT_SECRET") as exc:
        load_settings(path, env=env)
    assert env["BYOC_TOKEN_SIGNING_KEY"] not in str(exc.value)
