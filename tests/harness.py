"""A whole world on localhost: simulated Watering Hole + simulated CXone + the real gateway.

Everything talks over real sockets; the gateway is configured through a real gateway.yaml
and environment (gateway.sandbox.wiring). Tests wait on the simulators' conditions,
never on sleeps.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import os
import threading
from collections.abc import AsyncIterator, Callable, Coroutine
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Generic, TypeVar

from aiohttp import web

from gateway.clock import Clock, system_clock
from gateway.runtime import Gateway
from gateway.sandbox.cxone import CxoneSim, CxoneSimConfig
from gateway.sandbox.watering_hole import WateringHoleConfig, WateringHoleSim
from gateway.sandbox.wiring import (
    BOARD_CHANNEL,
    CHAT_CHANNEL,
    SandboxSecrets,
    write_sandbox_settings,
)
from gateway.server import RunningGateway, bound_port, start_gateway
from gateway.settings import Settings

SECRETS = SandboxSecrets()
WEBHOOK_PATH = "/webhooks/watering-hole"
REDIS_URL = os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/0")

__all__ = ["BOARD_CHANNEL", "CHAT_CHANNEL", "SECRETS", "World", "serve_app", "start_world"]


def wh_config(**changes: Any) -> WateringHoleConfig:
    """A simulated Watering Hole that shares the sandbox secrets with the gateway."""
    return dataclasses.replace(
        WateringHoleConfig(),
        api_token=SECRETS.wh_api_token,
        webhook_secrets=(SECRETS.wh_secret,),
        verify_token=SECRETS.wh_verify_token,
        **changes,
    )


def cxone_config(**changes: Any) -> CxoneSimConfig:
    """A simulated CXone with the sandbox access key, both channels and the BYOC client."""
    return dataclasses.replace(
        CxoneSimConfig(),
        access_key_id=SECRETS.access_key_id,
        access_key_secret=SECRETS.access_key_secret,
        app_client_id=SECRETS.app_client_id,
        app_client_secret=SECRETS.app_client_secret,
        channels=(CHAT_CHANNEL, BOARD_CHANNEL),
        gateway_client_id=SECRETS.byoc_client_id,
        gateway_client_secret=SECRETS.byoc_client_secret,
        **changes,
    )


async def serve_app(app: web.Application) -> tuple[web.AppRunner, str]:
    """Serve an app on a free localhost port; return the runner and its base URL."""
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    return runner, f"http://127.0.0.1:{bound_port(site)}"


@dataclass
class World:
    """The simulators, the running gateway and the settings it was started with."""

    wh: WateringHoleSim
    cxone: CxoneSim
    running: RunningGateway
    settings: Settings
    wh_url: str
    cxone_url: str
    directory: Path

    @property
    def gateway(self) -> Gateway:
        return self.running.apps.gateway

    @property
    def webhook_url(self) -> str:
        return self.running.urls["platform"] + WEBHOOK_PATH

    @property
    def box_url(self) -> str:
        return self.running.urls["cxone"] + "/integration/box"

    async def dm(self, user: str, text: str, **kw: Any) -> tuple[str, str]:
        """An animal sends a DM and the platform delivers it now."""
        conv, msg = await self.wh.user_sends_dm(user, text, **kw)
        await self.wh.flush()
        return conv, msg

    async def delivered(self, channel: str, message_id: str, timeout: float = 10.0) -> Any:
        """Wait until CXone has the message; return the recorded message."""

        def find() -> Any:
            for m in self.cxone.messages:
                if m.channel_id == channel and m.message_id == message_id:
                    return m
            return None

        return await self.cxone.wait_for(find, timeout=timeout)


@contextlib.asynccontextmanager
async def start_world(
    directory: Path,
    *,
    backend: str = "memory",
    clock: Clock = system_clock,
    redis_url: str | None = None,
    **settings_kw: Any,
) -> AsyncIterator[World]:
    """Start both simulators and the gateway, wired to each other; stop all on exit."""
    wh = WateringHoleSim(wh_config(clock=clock))
    cxone = CxoneSim(cxone_config(clock=clock))
    wh_runner, wh_url = await serve_app(wh.app)
    cx_runner, cx_url = await serve_app(cxone.app)
    running: RunningGateway | None = None
    try:
        settings = write_sandbox_settings(
            directory,
            wh_api=f"{wh_url}/v1",
            cxone_issuer=cx_url,
            backend=backend,
            redis_url=redis_url or (REDIS_URL if backend == "redis" else None),
            **settings_kw,
        )
        running = await start_gateway(settings, clock=clock, shutdown_timeout=2.0)
        wh.webhook_url = running.urls["platform"] + WEBHOOK_PATH
        cxone.gateway_box_url = running.urls["cxone"] + "/integration/box"
        yield World(wh, cxone, running, settings, wh_url, cx_url, directory)
    finally:
        if running is not None:
            await running.stop()
        await cx_runner.cleanup()
        await wh_runner.cleanup()


W = TypeVar("W")
T = TypeVar("T")


class InThread(Generic[W]):
    """Run an async context manager's value on its own event loop in a thread.

    For hypothesis' synchronous tests: `run(coro)` executes a coroutine on that loop and
    waits for its result; `close()` leaves the context and joins the thread.
    """

    def __init__(self, enter: Callable[[], contextlib.AbstractAsyncContextManager[W]]) -> None:
        self._loop = asyncio.new_event_loop()
        self._ready = threading.Event()
        self._stop: asyncio.Event | None = None
        self._error: BaseException | None = None
        self._value: W | None = None
        self._thread = threading.Thread(target=self._main, args=(enter,), daemon=True)
        self._thread.start()
        if not self._ready.wait(30):
            raise RuntimeError("the world did not start")
        if self._error is not None:
            raise self._error

    @property
    def world(self) -> W:
        assert self._value is not None
        return self._value

    def _main(self, enter: Callable[[], contextlib.AbstractAsyncContextManager[W]]) -> None:
        asyncio.set_event_loop(self._loop)
        self._loop.run_until_complete(self._serve(enter))
        self._loop.close()

    async def _serve(self, enter: Callable[[], contextlib.AbstractAsyncContextManager[W]]) -> None:
        self._stop = asyncio.Event()
        try:
            async with enter() as value:
                self._value = value
                self._ready.set()
                await self._stop.wait()
        except BaseException as exc:
            self._error = exc
            self._ready.set()

    def run(self, coro: Coroutine[Any, Any, T], timeout: float = 30) -> T:
        """Run `coro` on the world's loop and wait for its result."""
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result(timeout)

    def close(self) -> None:
        if self._stop is not None:
            self._loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(30)


def replace_settings(settings: Settings, **changes: Any) -> Settings:
    return dataclasses.replace(settings, **changes)
