"""Cross-checks of gateway.yaml against the mappings, made before anything is served."""

from __future__ import annotations

from pathlib import Path

import pytest

from gateway.errors import ConfigError
from gateway.mapping import load_mapping
from gateway.routing import build_routing
from gateway.sandbox.wiring import sandbox_config, sandbox_env, write_settings
from gateway.settings import Settings

QUETZAL = Path(__file__).resolve().parent / "fixtures" / "platforms" / "quetzal.yaml"
ENV = {
    "QUETZAL_API": "http://127.0.0.1:9",
    "QUETZAL_CHANNEL_TOKEN": "t",
    "QUETZAL_CHANNEL_SECRET": "s",
}


def settings_with_lease(tmp_path: Path, lease: float) -> Settings:
    tree = sandbox_config(
        tmp_path,
        mappings_dir=QUETZAL.parent,
        channels=[{"id": "quetzal_chat", "mapping": "quetzal", "role": "chat"}],
        overrides={"delivery": {"lease_seconds": lease}},
    )
    return write_settings(tmp_path, tree, {**sandbox_env("http://unused", "http://unused"), **ENV})


def test_lookups_that_cannot_finish_within_the_lease_are_a_load_error(tmp_path: Path) -> None:
    mapping = load_mapping(QUETZAL, env=ENV)
    assert mapping.lookup_budgets  # the fixture has a route with lookups
    with pytest.raises(ConfigError) as caught:
        build_routing(settings_with_lease(tmp_path / "short", 5), {"quetzal": mapping}, 1)
    text = str(caught.value)
    assert "quetzal.yaml" in text and "/lookups" in text and "delivery.lease_seconds (5 s)" in text
    routing = build_routing(settings_with_lease(tmp_path / "long", 60), {"quetzal": mapping}, 1)
    assert routing.channel_id("quetzal", "chat") == "quetzal_chat"
