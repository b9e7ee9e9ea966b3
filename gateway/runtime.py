"""The running gateway's shared services, and hot reload."""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from gateway.clock import Clock
from gateway.errors import ConfigError, GatewayError
from gateway.metrics import Metrics
from gateway.routing import Routing, load_routing
from gateway.settings import Settings

if TYPE_CHECKING:
    from gateway.cxone.client import CxoneClient
    from gateway.cxone.tokens import FailureThrottle, TokenIssuer
    from gateway.delivery.store import Store
    from gateway.delivery.worker import Workers
    from gateway.platform.client import PlatformClient

log = logging.getLogger("gateway.reload")


@dataclass
class ReloadResult:
    """The outcome of the last reload, for logs, metrics and the status page."""

    generation: int
    ok: bool
    at: float
    files: tuple[str, ...] = ()
    errors: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return {
            "generation": self.generation,
            "ok": self.ok,
            "at": self.at,
            "files": list(self.files),
            "errors": self.errors,
        }


class Gateway:
    """Services shared by both listeners; resources are opened by the app's cleanup contexts."""

    def __init__(self, settings: Settings, *, clock: Clock, metrics: Metrics) -> None:
        self.settings = settings
        self.clock = clock
        self.metrics = metrics
        self._routing: Routing | None = None
        self.last_reload: ReloadResult | None = None
        self._reload_lock = asyncio.Lock()
        # set by cleanup contexts
        self.store: Store
        self.cxone: CxoneClient
        self.platform: PlatformClient
        self.issuer: TokenIssuer
        self.throttle: FailureThrottle
        self.workers: Workers | None = None

    @property
    def routing(self) -> Routing:
        if self._routing is None:
            raise GatewayError("the gateway has not loaded its configuration yet")
        return self._routing

    def install(self, routing: Routing) -> None:
        """Swap the routing object (one assignment) and the token issuer that goes with it."""
        from gateway.cxone.tokens import TokenIssuer

        self.issuer = TokenIssuer(routing.settings.integrations, clock=self.clock)
        self.settings = routing.settings
        self._routing = routing
        self.metrics.mapping_info.clear()
        for m in routing.mappings.values():
            self.metrics.mapping_info.labels(m.name, m.version).set(1)

    async def load_initial(self) -> None:
        routing = await asyncio.to_thread(
            load_routing, self.settings, 1, reread_settings=False, clock=self.clock
        )
        self.install(routing)
        self.last_reload = ReloadResult(1, True, time.time(), routing.files)
        log.info("configuration loaded", extra={"outcome": "ok"})

    async def reload(self) -> ReloadResult:
        """Re-read everything off the event loop; swap on success, keep the old on any error."""
        async with self._reload_lock:
            generation = (self._routing.generation if self._routing else 0) + 1
            try:
                routing = await asyncio.to_thread(
                    load_routing, self.settings, generation, reread_settings=True, clock=self.clock
                )
            except ConfigError as exc:
                result = ReloadResult(
                    generation, False, time.time(), errors=[str(p) for p in exc.problems]
                )
                self.metrics.reloads.labels("error").inc()
                for line in result.errors:
                    log.error("reload failed, keeping the running configuration: %s", line)
            except Exception as exc:  # an unexpected failure must not take the gateway down
                log.exception("reload failed unexpectedly")
                result = ReloadResult(generation, False, time.time(), errors=[f"unexpected: {exc}"])
                self.metrics.reloads.labels("error").inc()
            else:
                self.install(routing)
                result = ReloadResult(generation, True, time.time(), routing.files)
                self.metrics.reloads.labels("ok").inc()
                log.info(
                    "reloaded generation %d: %s",
                    generation,
                    ", ".join(f"{m.name}@{m.version}" for m in routing.mappings.values()),
                )
            self.last_reload = result
            return result
