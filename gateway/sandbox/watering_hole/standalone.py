"""Serve the simulator on its own: `byoc-gateway sim watering-hole --port N`."""

from __future__ import annotations

import asyncio
import dataclasses
import logging
from collections.abc import Mapping

from aiohttp import web

from gateway.sandbox.watering_hole.config import WateringHoleConfig
from gateway.sandbox.watering_hole.sim import WateringHoleSim

log = logging.getLogger(__name__)


def config_from_env(env: Mapping[str, str]) -> WateringHoleConfig:
    """Read the variables the Watering Hole mapping reads, so both sides agree by default."""
    base = WateringHoleConfig()
    secrets = tuple(s for s in (env.get("WH_SECRET", ""), env.get("WH_SECRET_PREVIOUS", "")) if s)
    return dataclasses.replace(
        base,
        api_token=env.get("WATERING_HOLE_TOKEN") or base.api_token,
        account_user_id=env.get("WATERING_HOLE_ACCOUNT_USER_ID") or base.account_user_id,
        webhook_secrets=secrets or base.webhook_secrets,
        verify_token=env.get("WH_VERIFY_TOKEN") or base.verify_token,
        webhook_url=env.get("WATERING_HOLE_WEBHOOK_URL") or None,
    )


async def run_standalone(
    host: str = "127.0.0.1",
    port: int = 8090,
    config: WateringHoleConfig | None = None,
    *,
    started: asyncio.Event | None = None,
) -> None:
    """Serve a simulator with automatic delivery until cancelled; set `started` once listening."""
    config = dataclasses.replace(config or WateringHoleConfig(), auto_deliver=True)
    sim = WateringHoleSim(config)
    runner = web.AppRunner(sim.app, access_log=None)
    await runner.setup()
    try:
        await web.TCPSite(runner, host, port).start()
        log.info(
            "Watering Hole simulator on http://%s:%d (API /v1, control /_sim/), webhooks to %s",
            host,
            port,
            sim.webhook_url or '(none yet: POST /_sim/subscribe {"url": ...})',
        )
        if started is not None:
            started.set()
        await asyncio.Event().wait()  # until cancelled (Ctrl-C in asyncio.run)
    finally:
        await runner.cleanup()
