"""Run both listeners: start, reload on SIGHUP, shut down gracefully on SIGTERM/SIGINT.

Graceful shutdown, in steps: stop accepting on both listeners; let requests in flight
finish (up to `shutdown_timeout`); stop the queue workers after their current job (a
job in hand is completed or left leased, so another instance or the next start redoes
it); close clients; close the store (sqlite checkpoints its WAL on close).
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from aiohttp import web

from gateway.app import GatewayApps, create_apps
from gateway.clock import Clock, system_clock
from gateway.edge import harden_server, server_kwargs
from gateway.errors import GatewayError
from gateway.keys import GATEWAY, LISTENER
from gateway.runtime import settle_heap, young_collections_less_often
from gateway.settings import ListenerSettings, Settings
from gateway.tls import server_context

log = logging.getLogger("gateway.server")

LoopName = Literal["auto", "uvloop", "asyncio"]
LOOPS: tuple[LoopName, ...] = ("auto", "uvloop", "asyncio")


@dataclass
class RunningGateway:
    """Both listeners, started; `urls` are the bound addresses."""

    apps: GatewayApps
    runners: list[web.AppRunner] = field(default_factory=list)
    urls: dict[str, str] = field(default_factory=dict)

    async def stop(self, shutdown_timeout: float = 10.0) -> None:
        # platform first (it depends on resources owned by the CXone app), then CXone
        for runner in reversed(self.runners):
            await runner.cleanup()
        self.runners.clear()


def bound_port(site: web.TCPSite) -> int | None:
    """The port a site listens on (needed when port 0 was asked for)."""
    server = site._server
    sockets = getattr(server, "sockets", None)
    if not sockets:
        return None
    port: int = sockets[0].getsockname()[1]
    return port


async def _start_listener(
    app: web.Application, listener: ListenerSettings, shutdown_timeout: float
) -> tuple[web.AppRunner, str]:
    runner = web.AppRunner(
        app, shutdown_timeout=shutdown_timeout, access_log=None, **server_kwargs(listener)
    )
    await runner.setup()
    harden_server(runner.server)  # malformed requests: a JSON 400, never an echo
    ssl_ctx = server_context(listener.tls) if listener.tls else None
    if ssl_ctx is not None:
        # kept so that a reload loads new certificates into the context the socket uses
        app[GATEWAY].listener_tls[app[LISTENER]] = ssl_ctx
    site = web.TCPSite(
        runner, listener.host, listener.port, ssl_context=ssl_ctx, reuse_address=True
    )
    await site.start()
    port = bound_port(site) or listener.port
    scheme = "https" if ssl_ctx else "http"
    host = "127.0.0.1" if listener.host in ("0.0.0.0", "") else listener.host
    return runner, f"{scheme}://{host}:{port}"


async def start_gateway(
    settings: Settings, *, clock: Clock = system_clock, shutdown_timeout: float = 10.0
) -> RunningGateway:
    """Start the CXone listener (which opens the resources), then the platform listener."""
    apps = create_apps(settings, clock=clock)
    running = RunningGateway(apps)
    runner, url = await _start_listener(apps.cxone, settings.cxone_listener, shutdown_timeout)
    running.runners.append(runner)
    running.urls["cxone"] = url
    try:
        runner, url = await _start_listener(
            apps.platform, settings.platform_listener, shutdown_timeout
        )
    except BaseException:
        await running.stop()
        raise
    running.runners.append(runner)
    running.urls["platform"] = url
    return running


def _write_pid(path: Path) -> None:
    """Write the pid file atomically: a reader sees the whole pid or no file, never ''."""
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    partial.write_text(f"{os.getpid()}\n", encoding="utf-8")
    os.replace(partial, path)


async def serve(settings: Settings, *, pid_file: Path | None = None) -> None:
    """Run until SIGTERM/SIGINT; SIGHUP reloads."""
    running = await start_gateway(settings)
    running.apps.gateway.freeze_heap = True  # this process is the gateway's alone
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    reloads: set[asyncio.Task[object]] = set()

    def on_hup() -> None:
        task: asyncio.Task[object] = loop.create_task(running.apps.gateway.reload())
        reloads.add(task)
        task.add_done_callback(reloads.discard)

    loop.add_signal_handler(signal.SIGHUP, on_hup)
    loop.add_signal_handler(signal.SIGTERM, stop.set)
    loop.add_signal_handler(signal.SIGINT, stop.set)
    if pid_file is not None:
        # written once SIGHUP is handled: an early `reload` must not kill the process
        await asyncio.to_thread(_write_pid, pid_file)
    young_collections_less_often()
    settle_heap()
    log.info(
        "listening: CXone side %s, platform side %s",
        running.urls["cxone"],
        running.urls["platform"],
    )
    if settings.store.backend == "memory":
        log.warning(
            "store.backend is memory: accepted messages are lost on restart, and every "
            "dedupe key, reply key and answer is held in this process for its ttl; use "
            "sqlite or redis in production"
        )
    try:
        await stop.wait()
        log.info("shutting down")
    finally:
        for sig in (signal.SIGHUP, signal.SIGTERM, signal.SIGINT):
            loop.remove_signal_handler(sig)
        await running.stop()


def loop_factory(name: LoopName = "auto") -> Callable[[], asyncio.AbstractEventLoop] | None:
    """The event loop to serve on: uvloop when installed ("auto") or asked for; None: asyncio's.

    uvloop (the `speed` extra) makes the loop and the sockets' I/O cheaper; nothing in the
    gateway depends on it, and `--loop asyncio` keeps the standard loop.
    """
    if name == "asyncio":
        return None
    try:
        import uvloop
    except ImportError:
        if name == "uvloop":
            raise GatewayError(
                "--loop uvloop: uvloop is not installed (pip install 'byoc-gateway[speed]')"
            ) from None
        return None
    factory: Callable[[], asyncio.AbstractEventLoop] = uvloop.new_event_loop
    return factory


def run(settings: Settings, *, loop: LoopName = "auto", pid_file: Path | None = None) -> None:
    """Serve on the chosen event loop until SIGTERM/SIGINT (the CLI's `serve`)."""
    factory = loop_factory(loop)
    if factory is not None:
        log.info("event loop: uvloop")
    with asyncio.Runner(loop_factory=factory) as runner:
        runner.run(serve(settings, pid_file=pid_file))
