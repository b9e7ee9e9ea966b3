"""`byoc-gateway sandbox`: the gateway, both simulators and the sandbox page on localhost.

Start order (stop runs it backwards): the Watering Hole simulator, the CXone simulator,
the gateway (from a gateway.yaml written by `gateway.sandbox.wiring`, loaded by the real
settings loader, as an operator would), the wiring between them (the webhook
subscription handshake, CXone's integration settings), and last the page.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from aiohttp import web

from gateway.channels import declared_channels
from gateway.errors import ConfigError, GatewayError
from gateway.logs import configure_logging
from gateway.sandbox.cxone import CxoneSim, CxoneSimConfig
from gateway.sandbox.page import PageConfig, base_url, serve_page
from gateway.sandbox.watering_hole import WateringHoleConfig, WateringHoleSim
from gateway.sandbox.wiring import (
    BOARD_CHANNEL,
    CHAT_CHANNEL,
    REPO_MAPPINGS,
    SandboxSecrets,
    write_sandbox_settings,
)
from gateway.server import RunningGateway, start_gateway
from gateway.settings import Settings

log = logging.getLogger("gateway.sandbox")

WEBHOOK_PATH = "/webhooks/watering-hole"  # webhook.path of mappings/watering-hole.yaml
POLL_SECONDS = 20.0  # the longest a long poll of the page (and the sims) waits
SHUTDOWN_SECONDS = 5.0


@dataclass
class Sandbox:
    """A running sandbox: `urls` names every address; `stop()` ends everything."""

    urls: dict[str, str]
    watering_hole: WateringHoleSim
    cxone: CxoneSim
    gateway: RunningGateway
    settings: Settings
    secrets: SandboxSecrets
    data_dir: Path
    subscribed: bool  # the webhook subscription handshake succeeded
    _stack: contextlib.AsyncExitStack = field(repr=False)

    async def stop(self) -> None:
        """Stop the page, the gateway and both simulators, in that order."""
        await self._stack.aclose()

    def banner(self) -> str:
        """Return the short block of URLs printed when the sandbox is up."""
        u = self.urls
        token = self.secrets.admin_token
        lines = [
            "byoc-gateway sandbox is up.",
            "",
            f"  Sandbox page             {u['page']}/",
            f"  Gateway, CXone side      {u['gateway_cxone']}"
            "  (integration box /integration/box, status /status.json)",
            f"  Gateway, webhook URL     {u['webhook']}",
            f"  CXone simulator          {u['cxone_sim']}  (control API /_sim/state)",
            f"  Watering Hole simulator  {u['watering_hole_sim']}"
            "  (REST API /v1, control API /_sim/state)",
            f"  Admin token              {token}",
            f"                           curl -H 'Authorization: Bearer {token}' {u['status']}",
            f"  Files                    {self.data_dir}  (gateway.yaml, data/)",
        ]
        if not self.subscribed:
            lines.append(
                "  ! the webhook subscription handshake failed; the Watering Hole"
                " sends anyway (see its deliveries)"
            )
        lines += ["", "Open the page, pick an animal and say hello. Press Ctrl-C to stop."]
        return "\n".join(lines)


def _watering_hole_config(secrets: SandboxSecrets) -> WateringHoleConfig:
    return WateringHoleConfig(
        api_token=secrets.wh_api_token,
        webhook_secrets=(secrets.wh_secret,),
        verify_token=secrets.wh_verify_token,
        auto_deliver=True,
        retry_schedule=(1, 5, 30, 120, 600),  # a sandbox recovers in seconds, not hours
        long_poll_seconds=POLL_SECONDS,
    )


def _cxone_config(secrets: SandboxSecrets) -> CxoneSimConfig:
    return CxoneSimConfig(
        access_key_id=secrets.access_key_id,
        access_key_secret=secrets.access_key_secret,
        app_client_id=secrets.app_client_id,
        app_client_secret=secrets.app_client_secret,
        gateway_client_id=secrets.byoc_client_id,
        gateway_client_secret=secrets.byoc_client_secret,
        gateway_timeout=15.0,
        long_poll_seconds=POLL_SECONDS,
    )


async def _serve(stack: contextlib.AsyncExitStack, app: web.Application) -> str:
    """Serve `app` on a free localhost port; return its base URL."""
    runner = web.AppRunner(app, access_log=None, shutdown_timeout=SHUTDOWN_SECONDS)
    await runner.setup()
    stack.push_async_callback(runner.cleanup)
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    return base_url(runner, "127.0.0.1", 0)


async def start_sandbox(
    host: str = "127.0.0.1",
    port: int = 0,
    *,
    mappings: Path | None = None,
    data_dir: Path | None = None,
    secrets: SandboxSecrets | None = None,
) -> Sandbox:
    """Start both simulators, the gateway and the page (port 0: any free port)."""
    secrets = secrets or SandboxSecrets()
    mappings_dir = mappings or REPO_MAPPINGS
    if not mappings_dir.is_dir():
        raise ConfigError(f"{mappings_dir}: not a directory of mapping files")
    stack = contextlib.AsyncExitStack()
    try:
        if data_dir is None:
            data_dir = Path(
                stack.enter_context(tempfile.TemporaryDirectory(prefix="byoc-sandbox-"))
            )
        wh = WateringHoleSim(_watering_hole_config(secrets))
        wh_url = await _serve(stack, wh.app)
        cx = CxoneSim(_cxone_config(secrets))
        cx_url = await _serve(stack, cx.app)
        cx.base_url = cx_url  # what its discovery document names as issuer

        settings = await asyncio.to_thread(
            write_sandbox_settings,
            data_dir,
            wh_api=f"{wh_url}/v1",
            cxone_issuer=cx_url,
            secrets=secrets,
            mappings_dir=mappings_dir,
            log_format="text",
        )
        gw = await start_gateway(settings, shutdown_timeout=SHUTDOWN_SECONDS)
        stack.push_async_callback(gw.stop)
        # the CXone channels exist as the gateway declares them (as `channels create` would)
        for declared in declared_channels(gw.apps.gateway.routing):
            cx.dfo.upsert_channel(declared.body)

        webhook = f"{gw.urls['platform']}{WEBHOOK_PATH}"
        subscribed = await wh.subscribe(webhook)
        if not subscribed:
            log.warning("the webhook subscription handshake with %s failed", webhook)
            wh.webhook_url = webhook  # deliveries then fail visibly and are retried
        box = f"{gw.urls['cxone']}/integration/box"
        cx.gateway_box_url = box

        urls = {
            "gateway_cxone": gw.urls["cxone"],
            "gateway_platform": gw.urls["platform"],
            "webhook": webhook,
            "integration_box": box,
            "token_url": f"{box}/1.0/token",
            "status": f"{gw.urls['cxone']}/status.json",
            "cxone_sim": cx_url,
            "watering_hole_sim": wh_url,
            "watering_hole_api": f"{wh_url}/v1",
        }
        page = PageConfig(
            watering_hole_url=wh_url,
            cxone_url=cx_url,
            channels={"chat": CHAT_CHANNEL, "board": BOARD_CHANNEL},
            info={
                "urls": dict(urls),
                "admin_token": secrets.admin_token,
                "agent": f"{cx.config.agent_first_name} {cx.config.agent_surname}",
            },
            bind_host=host,
            poll_seconds=POLL_SECONDS,
        )
        try:
            page_runner, page_url = await serve_page(page, host, port)
        except OSError as exc:
            reason = exc.strerror or str(exc)
            raise GatewayError(
                f"cannot serve the sandbox page on {host}:{port}: {reason} (choose --port)"
            ) from None
        stack.push_async_callback(page_runner.cleanup)
        urls["page"] = page_url
    except BaseException:
        await stack.aclose()
        raise
    return Sandbox(urls, wh, cx, gw, settings, secrets, data_dir, subscribed, stack)


async def run_sandbox(
    host: str = "127.0.0.1",
    port: int = 8000,
    *,
    mappings: Path | None = None,
    ready: asyncio.Event | None = None,
    data_dir: Path | None = None,
    on_ready: Callable[[Sandbox], object] | None = None,
    log_level: str | None = "WARNING",
) -> None:
    """Run the sandbox until Ctrl-C or SIGTERM (or cancellation), then stop it cleanly.

    `ready` is set and `on_ready(sandbox)` called once everything listens. `log_level`
    configures console logging (None: leave logging as it is).
    """
    if log_level is not None:
        configure_logging(log_level, "text")
    sandbox = await start_sandbox(host, port, mappings=mappings, data_dir=data_dir)
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    installed: list[signal.Signals] = []
    for sig in (signal.SIGINT, signal.SIGTERM):
        # not in the main thread (or not on Unix): cancellation still stops the sandbox
        with contextlib.suppress(NotImplementedError, RuntimeError, ValueError):
            loop.add_signal_handler(sig, stop.set)
            installed.append(sig)
    try:
        print(sandbox.banner(), flush=True)
        if ready is not None:
            ready.set()
        if on_ready is not None:
            on_ready(sandbox)
        await stop.wait()
        print("\nstopping the sandbox ...", flush=True)
    finally:
        # handlers stay installed until the end, so a second Ctrl-C cannot cut the stop short
        await sandbox.stop()
        for sig in installed:
            loop.remove_signal_handler(sig)
    print("sandbox stopped", flush=True)
