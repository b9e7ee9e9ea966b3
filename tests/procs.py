"""Run real `byoc-gateway serve` child processes for crash and scale-out tests.

The simulators stay in the test process (`tests.harness.serve_app`); each gateway is a
child started with `python -m gateway.cli serve --config gateway.yaml` and the sandbox
environment, exactly as an operator runs it. Readiness is I/O: poll `/healthz` on both
listeners over HTTP until they answer, within a bounded time. Children are stopped with
SIGKILL (a crash) or SIGTERM (a graceful shutdown) by their own pid only.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp

from gateway.clock import FakeClock
from gateway.sandbox.cxone import CxoneSim
from gateway.sandbox.watering_hole import UserSeed, WateringHoleSim
from gateway.sandbox.wiring import (
    sandbox_env,
    write_sandbox_settings,
)
from gateway.settings import Settings
from tests.harness import cxone_config, serve_app, wh_config
from tests.ports import free_port

ROOT = Path(__file__).resolve().parents[1]
READY_TIMEOUT = 30.0


@dataclass(frozen=True)
class NodeConfig:
    """A gateway.yaml written for one child process, and the environment it needs."""

    path: Path
    env: Mapping[str, str]
    settings: Settings
    platform_url: str
    cxone_url: str


def write_node_config(
    directory: Path,
    *,
    wh_url: str,
    cxone_url: str,
    backend: str = "sqlite",
    redis_url: str | None = None,
    lease_seconds: float | None = None,
    api_base: bool = False,
    cxone_timeouts: dict[str, float] | None = None,
    **settings_kw: Any,
) -> NodeConfig:
    """Write gateway.yaml for a child on fixed free ports; return where it will listen.

    The Redis key prefix is derived from `directory.name`: nodes meant to share one
    queue get directories with the same name (under different parents).
    """
    env = sandbox_env(f"{wh_url}/v1", cxone_url)
    platform_port, cxone_port = free_port(), free_port()
    overrides: dict[str, Any] = {}
    if lease_seconds is not None:
        overrides["delivery"] = {"lease_seconds": lease_seconds}
    if api_base:
        overrides["cxone"] = {"api_base": f"{cxone_url}/dfo/3.0"}
    if cxone_timeouts is not None:
        overrides.setdefault("cxone", {})["timeouts"] = cxone_timeouts
    settings = write_sandbox_settings(
        directory,
        wh_api=f"{wh_url}/v1",
        cxone_issuer=cxone_url,
        backend=backend,
        redis_url=redis_url,
        platform_port=platform_port,
        cxone_port=cxone_port,
        overrides=overrides,
        **settings_kw,
    )
    path = directory / "gateway.yaml"
    return NodeConfig(
        path,
        env,
        settings,
        f"http://127.0.0.1:{platform_port}",
        f"http://127.0.0.1:{cxone_port}",
    )


@dataclass
class GatewayProcess:
    """One `byoc-gateway serve` child; its output goes to `log_path`."""

    node: NodeConfig
    name: str = "gateway"
    proc: subprocess.Popen[bytes] | None = None
    log_path: Path = field(init=False)

    def __post_init__(self) -> None:
        self.log_path = self.node.path.parent / f"{self.name}.log"

    @property
    def platform_url(self) -> str:
        return self.node.platform_url

    @property
    def cxone_url(self) -> str:
        return self.node.cxone_url

    @property
    def webhook_url(self) -> str:
        return self.node.platform_url + "/webhooks/watering-hole"

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def start(self) -> None:
        """Spawn the child (again, after a kill: same config, same ports, same store)."""
        assert self.proc is None or self.proc.poll() is not None, "already running"
        env = {**os.environ, **self.node.env, "PYTHONUNBUFFERED": "1"}
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
        with self.log_path.open("ab") as log:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "gateway.cli", "serve", "--config", str(self.node.path)],
                cwd=ROOT,
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
            )

    async def wait_ready(self, timeout: float = READY_TIMEOUT) -> None:
        """Poll both listeners' /healthz until they answer 200; fail if the child exits."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        urls = [self.node.platform_url + "/healthz", self.node.cxone_url + "/healthz"]
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=2)) as session:
            while True:
                if self.proc is None or self.proc.poll() is not None:
                    raise AssertionError(f"{self.name} exited early:\n{self.log_tail()}")
                if await _all_ok(session, urls):
                    return
                if loop.time() > deadline:
                    raise AssertionError(
                        f"{self.name} not ready in {timeout} s:\n{self.log_tail()}"
                    )
                await asyncio.sleep(0.05)  # I/O readiness poll, bounded by the deadline

    async def start_ready(self) -> None:
        self.start()
        await self.wait_ready()

    def kill(self) -> None:
        """SIGKILL: the process dies at once, mid-work, without any cleanup."""
        if self.proc is not None and self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGKILL)
            self.proc.wait()

    async def terminate(self, timeout: float = 30.0, sig: int = signal.SIGTERM) -> int:
        """Send SIGTERM (or `sig`) and wait for a graceful exit; return the exit code."""
        assert self.proc is not None
        if self.proc.poll() is None:
            os.kill(self.proc.pid, sig)
        proc = self.proc
        try:
            return await asyncio.to_thread(proc.wait, timeout)
        except subprocess.TimeoutExpired:
            self.kill()
            raise AssertionError(f"{self.name} ignored SIGTERM:\n{self.log_tail()}") from None

    def stop(self) -> None:
        """Teardown: make sure the child is gone."""
        self.kill()

    def log_tail(self, lines: int = 40) -> str:
        with contextlib.suppress(OSError):
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        return "(no output)"

    def log_text(self) -> str:
        with contextlib.suppress(OSError):
            return self.log_path.read_text(errors="replace")
        return ""


async def _all_ok(session: aiohttp.ClientSession, urls: list[str]) -> bool:
    for url in urls:
        try:
            async with session.get(url) as resp:
                if resp.status != 200:
                    return False
        except (aiohttp.ClientError, TimeoutError):
            return False
    return True


async def metric(base_url: str, name: str, **labels: str) -> float:
    """Sum the samples of a Prometheus metric whose labels include `labels`."""
    timeout = aiohttp.ClientTimeout(total=5)
    async with (
        aiohttp.ClientSession(timeout=timeout) as session,
        session.get(base_url + "/metrics") as resp,
    ):
        text = await resp.text()
    wanted = [f'{k}="{v}"' for k, v in labels.items()]
    total = 0.0
    for line in text.splitlines():
        if (line.startswith(name + "{") or line.startswith(name + " ")) and all(
            w in line for w in wanted
        ):
            total += float(line.rsplit(" ", 1)[1])
    return total


# ------------------------------------------------------------ simulators and a load


@dataclass
class Sims:
    """Both simulators, served on localhost in the test process."""

    wh: WateringHoleSim
    cxone: CxoneSim
    wh_url: str
    cxone_url: str
    wh_clock: FakeClock  # drives the platform's webhook retry schedule
    users: tuple[str, ...]


@contextlib.asynccontextmanager
async def start_sims(users: int = 30) -> AsyncIterator[Sims]:
    """Start the Watering Hole (with `users` customers) and CXone simulators."""
    wh_clock = FakeClock(time.time())
    seeds = tuple(
        UserSeed(f"usr_load{i:03d}", f"load{i:03d}", f"Load Tester {i}", "https://x.example/a.png")
        for i in range(users)
    )
    wh = WateringHoleSim(
        wh_config(
            users=seeds,
            retry_schedule=(1.0,) * 30,  # plenty of retries, one (fake) second apart
            clock=wh_clock,
        )
    )
    cxone = CxoneSim(cxone_config())
    wh_runner, wh_url = await serve_app(wh.app)
    cx_runner, cx_url = await serve_app(cxone.app)
    try:
        yield Sims(wh, cxone, wh_url, cx_url, wh_clock, tuple(s.id for s in seeds))
    finally:
        await cx_runner.cleanup()
        await wh_runner.cleanup()


@dataclass
class Report:
    """What CXone received, compared with what the customers sent."""

    sent: int
    lost: list[str]
    duplicates: list[str]
    out_of_order: list[str]  # threads whose first arrivals differ from the accepted order


class Load:
    """Customers writing DMs in round robin over many conversations, and the checks."""

    def __init__(self, sims: Sims) -> None:
        self.sims = sims
        self.sent: dict[str, list[str]] = {}  # conversation -> message ids in send order
        self.ids: set[str] = set()
        self._cursor = 0
        self._seen: set[str] = set()

    async def send(self, count: int, *, webhook_urls: Sequence[str] | None = None) -> None:
        """Send `count` messages; each 100 go out as one signed delivery (a batch).

        With several `webhook_urls`, deliveries alternate between them (a load balancer).
        """
        wh, users = self.sims.wh, self.sims.users
        batch = wh.config.batch_max
        for n, start in enumerate(range(0, count, batch)):
            for i in range(start, min(count, start + batch)):
                conv, msg = await wh.user_sends_dm(users[i % len(users)], f"load message {i}")
                self.sent.setdefault(conv, []).append(msg)
                self.ids.add(msg)
            if webhook_urls:
                wh.webhook_url = webhook_urls[n % len(webhook_urls)]
            await wh.flush()

    async def redeliver(self, webhook_url: str, rounds: int = 30) -> None:
        """Let the platform retry every failed delivery (moving its clock), to `webhook_url`."""
        wh = self.sims.wh
        wh.webhook_url = webhook_url
        for _ in range(rounds):
            pending = wh.pending_deliveries
            if not pending:
                return
            due = min(d.next_at or 0.0 for d in pending)
            self.sims.wh_clock.now = max(self.sims.wh_clock.now, due)
            await wh.run_due_retries()
        raise AssertionError(f"deliveries still failing: {[d.id for d in wh.pending_deliveries]}")

    def delivered_count(self) -> int:
        """Distinct sent messages CXone has (incremental: cheap to call on every change)."""
        messages = self.sims.cxone.messages
        for m in messages[self._cursor :]:
            if m.message_id in self.ids:
                self._seen.add(m.message_id)
        self._cursor = len(messages)
        return len(self._seen)

    async def wait_delivered(self, count: int | None = None, timeout: float = 60.0) -> None:
        target = len(self.ids) if count is None else count
        try:
            await self.sims.cxone.wait_for(lambda: self.delivered_count() >= target, timeout)
        except TimeoutError:
            raise AssertionError(
                f"CXone has {self.delivered_count()} of {target} messages after {timeout} s"
            ) from None

    def accepted_order(self) -> tuple[dict[str, list[str]], set[str]]:
        """Per conversation, the order the gateway acknowledged the messages in.

        The platform sends deliveries one at a time, so the acknowledged (2xx) attempts,
        in order, give the acceptance order. A delivery cut off mid-request (its
        gateway died) may or may not have been persisted before the cut: its messages
        not placed earlier are returned as ambiguous (their position is not fixed).
        """
        order: dict[str, list[str]] = {}
        placed: set[str] = set()
        ambiguous: set[str] = set()
        for attempt in self.sims.wh.deliveries:
            msgs = [
                (e["data"]["conversation"]["id"], e["data"]["message"]["id"])
                for e in attempt.events
                if e.get("type") == "message.created"
            ]
            if attempt.ok:
                for conv, msg in msgs:
                    if msg not in placed:
                        placed.add(msg)
                        order.setdefault(conv, []).append(msg)
            elif attempt.error != "ClientConnectorError":  # refused: surely not persisted
                ambiguous.update(msg for _, msg in msgs if msg not in placed)
        return order, ambiguous

    def report(self) -> Report:
        """Compare CXone's records with what was sent and the order it was accepted in."""
        received: dict[str, list[str]] = {}
        counts: dict[str, int] = {}
        for m in self.sims.cxone.messages:
            if m.message_id not in self.ids:
                continue
            counts[m.message_id] = counts.get(m.message_id, 0) + 1
            if counts[m.message_id] == 1:
                received.setdefault(m.thread_id, []).append(m.message_id)
        lost = sorted(self.ids - counts.keys())
        duplicates = sorted(k for k, n in counts.items() if n > 1)
        accepted, ambiguous = self.accepted_order()
        disorder = sorted(
            conv
            for conv, ids in accepted.items()
            if [i for i in received.get(conv, []) if i not in ambiguous]
            != [i for i in ids if i not in ambiguous]
        )
        return Report(len(self.ids), lost, duplicates, disorder)

    def accepted_as_sent(self) -> bool:
        """Tell whether the gateway acknowledged every message in the order it was written."""
        accepted, ambiguous = self.accepted_order()
        return not ambiguous and accepted == self.sent
