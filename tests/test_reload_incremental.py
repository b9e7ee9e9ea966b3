"""A reload compiles only what changed: unchanged mappings are reused as they are."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

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


async def test_a_serving_gateway_keeps_only_what_serving_needs(tmp_path: Path) -> None:
    mappings = tmp_path / "mappings"
    mappings.mkdir()
    shutil.copy(REPO_MAPPINGS / "watering-hole.yaml", mappings / "watering-hole.yaml")
    async with start_world(tmp_path / "world", mappings_dir=mappings) as world:
        serving = world.gateway.routing.mappings["watering-hole"]
        assert serving.tests == () and not serving._tree  # the tests ran at load
        assert serving.lines.line("/name") == 5  # duplicate names are still located
        with pytest.raises(RuntimeError, match="no test twin"):
            serving.test_twin()
        # a changed copy under another name is compiled, tested and kept the same way
        text = (mappings / "watering-hole.yaml").read_text()
        text = text.replace("name: watering-hole\n", "name: watering-hole-2\n", 1)
        text = text.replace("path: /webhooks/watering-hole", "path: /webhooks/wh2")
        text = text.replace("watering-hole:evt_", "watering-hole-2:evt_")  # tests' dedupe keys
        (mappings / "copy.yaml").write_text(text)
        result = await world.gateway.reload()
        assert result.ok, result
        assert world.gateway.routing.mappings["watering-hole-2"].tests == ()
        # a copy whose own inline test fails is refused, with its place
        broken = text.replace("name: watering-hole-2\n", "name: watering-hole-3\n", 1)
        broken = broken.replace("path: /webhooks/wh2", "path: /webhooks/wh3")
        # (its tests still expect dedupe keys under the old name)
        (mappings / "broken.yaml").write_text(broken)
        result = await world.gateway.reload()
        assert not result.ok
        assert "inline test" in str(result) and "broken.yaml" in str(result)
        assert "watering-hole-3" not in world.gateway.routing.mappings


def test_settle_heap_freezes_what_lives_and_collects_what_does_not() -> None:
    import gc
    import weakref

    from gateway.runtime import settle_heap

    class Node:
        pass

    garbage = Node()
    garbage.self = garbage  # type: ignore[attr-defined]  # a cycle: only gc frees it
    gone = weakref.ref(garbage)
    gc.freeze()  # as after the previous configuration was installed
    del garbage
    try:
        settle_heap()
        assert gone() is None  # the old frozen cycle was unfrozen and collected
        assert gc.get_freeze_count() > 0
    finally:
        gc.unfreeze()


def test_the_young_generation_is_collected_only_when_garbage_accumulates() -> None:
    """A burst of objects alive together, freed later (a SQLite batch's operations), no
    longer starts a collection of the young generation; CPython's default 700 did."""
    import gc

    from gateway.runtime import YOUNG_GENERATION, young_collections_less_often

    def young_collections_during_a_burst() -> int:
        seen: list[int] = []

        def count(phase: str, info: dict[str, int]) -> None:
            if phase == "start" and info["generation"] == 0:
                seen.append(1)

        gc.collect()  # the young generation starts empty
        gc.callbacks.append(count)
        try:
            burst = [[i] for i in range(3_000)]  # alive together, like a batch's objects
            del burst
        finally:
            gc.callbacks.remove(count)
        return len(seen)

    saved = gc.get_threshold()
    try:
        gc.set_threshold(700, *saved[1:])
        assert young_collections_during_a_burst() >= 1
        young_collections_less_often()
        assert gc.get_threshold() == (YOUNG_GENERATION, *saved[1:])
        assert young_collections_during_a_burst() == 0
    finally:
        gc.set_threshold(*saved)
