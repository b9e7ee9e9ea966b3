"""Agent replies when the platform misbehaves: timeouts, resets, long outages.

Replies are synchronous (CXone needs the platform's message id back), so retries happen
inside the reply's deadline, with the same Idempotency-Key on every attempt. The mapping
here has short platform timeouts (0.5 s) and the gateway a 2 s reply deadline, so every
case ends quickly: in a reply that posted once, or in a clear error for CXone.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from gateway.clock import system_clock
from gateway.sandbox.wiring import REPO_MAPPINGS
from tests.harness import CHAT_CHANNEL, World, start_world

DEADLINE = 2.0
TIMEOUTS = "  timeouts: {connect: 3, total: 10}\n"


@pytest.fixture
async def world(tmp_path: Path) -> AsyncIterator[World]:
    text = (REPO_MAPPINGS / "watering-hole.yaml").read_text(encoding="utf-8")
    assert TIMEOUTS in text
    mappings = tmp_path / "mappings"
    mappings.mkdir()
    (mappings / "watering-hole.yaml").write_text(
        text.replace(TIMEOUTS, "  timeouts: {connect: 1, total: 0.5}\n"), encoding="utf-8"
    )
    async with start_world(
        tmp_path / "world", clock=system_clock, mappings_dir=mappings, deadline=DEADLINE
    ) as w:
        yield w


async def _thread(world: World) -> str:
    conv, msg = await world.dm("usr_zebra", "hello")
    await world.delivered(CHAT_CHANNEL, msg)
    return conv


def _posts(world: World, conv: str) -> list[str | None]:
    """The Idempotency-Key of every reply POST the platform received on `conv`."""
    return [
        c.headers.get("Idempotency-Key")
        for c in world.wh.api_calls
        if c.method == "POST" and c.path.endswith(f"/conversations/{conv}/messages")
    ]


def _texts(world: World, conv: str) -> list[str]:
    return [m.text for m in world.wh.world.conversations[conv].messages]


async def test_a_platform_timeout_after_posting_is_retried_and_posts_once(world: World) -> None:
    conv = await _thread(world)
    hold = world.wh.hold_next(f"/conversations/{conv}/messages", after=True)
    try:
        status, body = await world.cxone.agent_reply(CHAT_CHANNEL, conv, "slow but sure")
    finally:
        hold.release()
    assert status == 200, body
    keys = _posts(world, conv)
    assert len(keys) >= 2 and len(set(keys)) == 1 and None not in keys
    assert _texts(world, conv).count("slow but sure") == 1
    posted = world.wh.world.conversations[conv].messages[-1].id
    assert body["message"]["idOnExternalPlatform"] == posted


@pytest.mark.parametrize("fault", ["fail", "reset", "hold"])
async def test_a_platform_down_longer_than_the_deadline_gives_cxone_a_clear_error(
    world: World, fault: str
) -> None:
    conv = await _thread(world)
    path = f"/conversations/{conv}/messages"
    holds = []
    if fault == "fail":
        world.wh.fail_next(100, 503, path_contains=path)
    elif fault == "reset":
        world.wh.reset_next(100, path_contains=path)
    else:
        holds = [world.wh.hold_next(path) for _ in range(100)]
    started = time.monotonic()
    try:
        status, body = await world.cxone.agent_reply(CHAT_CHANNEL, conv, "anyone there?")
    finally:
        for hold in holds:
            hold.release()
    elapsed = time.monotonic() - started
    assert elapsed < DEADLINE + 2.0  # bounded by the deadline: never a hang
    assert status == 503, (status, body)
    assert isinstance(body, dict) and body.get("error") == "platform_unavailable"
    assert body.get("message")
    assert "Traceback" not in str(body)
    keys = _posts(world, conv)
    assert len(keys) >= 2 and len(set(keys)) == 1  # retried, with one Idempotency-Key
    if fault != "hold":  # a held request may still be carried out once released
        assert "anyone there?" not in _texts(world, conv)
