"""Shared fixtures: a whole world (simulators + real gateway) per test."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from gateway.clock import FakeClock
from tests.harness import World, start_world


@pytest.fixture
def clock() -> FakeClock:
    import time

    return FakeClock(time.time())


@pytest.fixture
async def world(tmp_path: Path, clock: FakeClock) -> AsyncIterator[World]:
    async with start_world(tmp_path, clock=clock) as w:
        yield w
