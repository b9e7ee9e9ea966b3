"""The operator's dead-letter story, end to end, with the real command on the live store.

A mapping with a bug is deployed; CXone refuses what it renders (400); the message goes
to the dead letters at once and its thread carries on; the operator lists and inspects
it (text redacted), fixes the mapping, reloads, replays; CXone gets the message.
"""

from __future__ import annotations

import argparse
import asyncio
from pathlib import Path

import pytest

from gateway.deadletters import add_dead_letter_commands, run_dead_letter_command
from gateway.sandbox.wiring import REPO_MAPPINGS, sandbox_env
from tests.harness import CHAT_CHANNEL, World, start_world

GOOD = (REPO_MAPPINGS / "watering-hole.yaml").read_text(encoding="utf-8")
LINE = "      created_at: iso_ms(data.message.sent_at_ms)\n"
# the bug: a message saying exactly "boom" gets a created time CXone refuses
BUGGY = GOOD.replace(
    LINE,
    "      created_at: \"data.message.text == 'boom' && 'yesterday'"
    ' || iso_ms(data.message.sent_at_ms)"\n',
)


def parse(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="byoc-gateway")
    add_dead_letter_commands(parser.add_subparsers(dest="command", required=True))
    return parser.parse_args(argv)


async def cli(world: World, *argv: str) -> int:
    """Run `byoc-gateway dead-letters ...` against the world's gateway.yaml (own loop)."""
    args = parse(["dead-letters", *argv, "--config", str(world.directory / "gateway.yaml")])
    return await asyncio.to_thread(run_dead_letter_command, args)


async def test_refused_message_is_dead_lettered_inspected_fixed_and_replayed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    assert LINE in GOOD and BUGGY != GOOD
    mappings = tmp_path / "mappings"
    mappings.mkdir()
    (mappings / "watering-hole.yaml").write_text(BUGGY, encoding="utf-8")
    async with start_world(tmp_path / "world", backend="sqlite", mappings_dir=mappings) as world:
        for name, value in sandbox_env(f"{world.wh_url}/v1", world.cxone_url).items():
            monkeypatch.setenv(name, value)
        conv, hello = await world.dm("usr_zebra", "hello")
        await world.delivered(CHAT_CHANNEL, hello)
        _, boom = await world.dm("usr_zebra", "boom", conversation_id=conv)
        _, after = await world.dm("usr_zebra", "after", conversation_id=conv)
        # "after" is behind "boom" in the thread: once CXone has it, boom was settled
        await world.delivered(CHAT_CHANNEL, after)
        assert world.cxone.deliveries(CHAT_CHANNEL, boom) == 0
        assert world.cxone.hits("create_message") == 3  # refused once, not retried

        capsys.readouterr()
        assert await cli(world, "list") == 0
        listing = capsys.readouterr().out
        assert conv in listing and "HTTP 400" in listing and "1 dead letter" in listing
        (dead,) = await world.gateway.store.dead_letters()

        assert await cli(world, "show", dead.id) == 0
        shown = capsys.readouterr().out
        assert boom in shown and "createdAtWithMilliseconds" in shown
        assert '"boom"' not in shown and "<4 chars redacted>" in shown

        (mappings / "watering-hole.yaml").write_text(GOOD, encoding="utf-8")
        assert (await world.gateway.reload()).ok
        assert await cli(world, "replay", dead.id) == 0
        assert f"replayed {dead.id}" in capsys.readouterr().out

        replayed = await world.delivered(CHAT_CHANNEL, boom)
        assert replayed.body["createdAtWithMilliseconds"].endswith("Z")
        assert replayed.body["messageContent"]["payload"]["text"] == "boom"
        assert await cli(world, "list") == 0
        assert "no dead letters" in capsys.readouterr().out
        # replay appends to the thread: the operator's replay comes after "after"
        order = [m.message_id for m in world.cxone.messages_in(CHAT_CHANNEL, conv)]
        assert order == [hello, after, boom]
