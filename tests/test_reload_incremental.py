"""A reload compiles only what changed: unchanged mappings are reused as they are."""

from __future__ import annotations

import shutil
from pathlib import Path

from gateway.sandbox.wiring import REPO_MAPPINGS
from tests.harness import start_world


async def test_unchanged_mappings_are_reused_and_changed_ones_recompiled(tmp_path: Path) -> None:
    mappings = tmp_path / "mappings"
    mappings.mkdir()
    shutil.copy(REPO_MAPPINGS / "watering-hole.yaml", mappings / "watering-hole.yaml")
    async with start_world(tmp_path / "world", mappings_dir=mappings) as world:
        first = world.gateway.routing.mappings["watering-hole"]
        result = await world.gateway.reload()
        assert result.ok
        assert world.gateway.routing.mappings["watering-hole"] is first  # nothing to compile

        path = mappings / "watering-hole.yaml"
        path.write_text(path.read_text().replace("Watering Hole DMs", "Watering Hole chats"))
        result = await world.gateway.reload()
        assert result.ok
        second = world.gateway.routing.mappings["watering-hole"]
        assert second is not first and second.version != first.version
        assert second.channels["chat"].cxone["name"] == "Watering Hole chats"

        path.write_text(path.read_text() + "\nnot: [valid")  # broken: the running one stays
        result = await world.gateway.reload()
        assert not result.ok
        assert world.gateway.routing.mappings["watering-hole"] is second
