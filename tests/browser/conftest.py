"""Fixtures for the headless-browser tests: Debian's chromium and a running sandbox.

The tests skip (with the reason) only when chromium is not installed:
    apt-get install -y chromium
Screenshots go to tests/artifacts/ (git-ignored), one PNG per step.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from gateway.sandbox.run import Sandbox, start_sandbox
from tests.browser.cdp import Browser, find_chromium

ARTIFACTS = Path(__file__).resolve().parent.parent / "artifacts"


@pytest.fixture
def chromium() -> str:
    binary = find_chromium()
    if binary is None:
        pytest.skip("Debian's chromium is not installed (apt-get install -y chromium)")
    return binary


@pytest.fixture
async def browser(chromium: str, tmp_path: Path) -> AsyncIterator[Browser]:
    b = await Browser.launch(chromium, tmp_path / "profile")
    try:
        yield b
    finally:
        await b.close()


@pytest.fixture
async def sandbox(tmp_path: Path) -> AsyncIterator[Sandbox]:
    sb = await start_sandbox(data_dir=tmp_path / "sandbox")
    try:
        yield sb
    finally:
        await sb.stop()


@pytest.fixture
def shots(request: pytest.FixtureRequest) -> Path:
    """The directory this test's screenshots go to."""
    path = ARTIFACTS / "browser" / str(request.node.name)
    path.mkdir(parents=True, exist_ok=True)
    for old in path.glob("*.png"):
        old.unlink()
    return path
