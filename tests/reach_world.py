"""A world for one fixture platform: the CXone simulator + a fake platform API + the real gateway.

Like tests/harness.py, everything talks over real sockets and the gateway is configured
through a real gateway.yaml and environment. The gateway loads exactly one mapping, a
file of tests/fixtures/platforms/, and every channel role of that mapping is bound to a
CXone channel named `<mapping>_<role>`. The platform side is a `FakePlatform` the test
scripts; webhooks are signed with `gateway.platform.signatures.sign`, from the spec the
gateway itself loaded.
"""

from __future__ import annotations

import contextlib
import shutil
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import aiohttp

from gateway import jsonutil
from gateway.clock import Clock, system_clock
from gateway.mapping import CompiledMapping, load_mapping
from gateway.platform.signing import sign
from gateway.runtime import Gateway
from gateway.sandbox.cxone import AgentResult, CxoneSim, CxoneSimConfig, ReceivedMessage
from gateway.sandbox.wiring import SandboxSecrets, sandbox_config, sandbox_env, write_settings
from gateway.server import RunningGateway, start_gateway
from gateway.settings import Settings
from tests.fakeplatform import FakePlatform
from tests.harness import serve_app

PLATFORMS = Path(__file__).resolve().parent / "fixtures" / "platforms"
SECRETS = SandboxSecrets()


@dataclass(frozen=True)
class Reply:
    """What the gateway answered on its webhook."""

    status: int
    content_type: str
    raw: bytes

    @property
    def json(self) -> Any:
        return jsonutil.loads(self.raw) if self.raw else None

    @property
    def text(self) -> str:
        return self.raw.decode()


@dataclass
class Reach:
    """The running world of one fixture platform."""

    name: str
    cxone: CxoneSim
    api: FakePlatform
    running: RunningGateway
    settings: Settings
    channels: Mapping[str, str]  # role -> CXone channel id
    clock: Clock

    @property
    def gateway(self) -> Gateway:
        return self.running.apps.gateway

    @property
    def mapping(self) -> CompiledMapping:
        """The mapping exactly as the running gateway loaded it (secrets resolved)."""
        return self.gateway.routing.mappings[self.name]

    @property
    def webhook_url(self) -> str:
        return self.running.urls["platform"] + self.mapping.webhook.path

    def sign(
        self,
        raw: bytes,
        *,
        url: str | None = None,
        timestamp: float | None = None,
        key: Any = None,
    ) -> dict[str, str]:
        """The signature headers the platform would send with `raw` (now, first secret)."""
        return sign(
            self.mapping.webhook.signature,
            raw,
            url=self.webhook_url if url is None else url,
            timestamp=self.clock() if timestamp is None else timestamp,
            secret_or_private_key=key,
        )

    async def post(
        self,
        body: bytes | Mapping[str, Any] | list[Any],
        *,
        form: bool = False,
        headers: Mapping[str, str] | None = None,
        signed: bool = True,
        **sign_kw: Any,
    ) -> Reply:
        """POST a webhook delivery (JSON, or a form when `form`), signed unless told not to."""
        if isinstance(body, bytes):
            raw = body
        elif form:
            raw = urlencode(list(dict(body).items()), doseq=True).encode()
        else:
            raw = jsonutil.dumps(body)
        kind = "application/x-www-form-urlencoded" if form else "application/json"
        sent = {"Content-Type": kind, **(self.sign(raw, **sign_kw) if signed else {})}
        sent.update(headers or {})
        async with (
            aiohttp.ClientSession() as s,
            s.post(self.webhook_url, data=raw, headers=sent) as r,
        ):
            return Reply(r.status, r.content_type, await r.read())

    async def get(self, query: Mapping[str, str]) -> Reply:
        """GET the webhook URL (a subscription handshake)."""
        async with aiohttp.ClientSession() as s, s.get(self.webhook_url, params=query) as r:
            return Reply(r.status, r.content_type, await r.read())

    async def delivered(self, role: str, message_id: str, timeout: float = 5.0) -> ReceivedMessage:
        """Wait until CXone has the message on the role's channel; return it."""
        channel = self.channels[role]

        def find() -> ReceivedMessage | None:
            for m in self.cxone.messages:
                if m.channel_id == channel and m.message_id == message_id:
                    return m
            return None

        found = await self.cxone.wait_for(find, timeout=timeout)
        assert found is not None  # wait_for returns a truthy result or raises
        return found

    def ignored(self, route: str) -> float:
        """How many events the gateway acknowledged and ignored by this route."""
        value = self.gateway.metrics.registry.get_sample_value(
            "byoc_events_ignored_total", {"mapping": self.name, "route": route}
        )
        return value or 0.0

    async def reply(self, role: str, thread_id: str, text: str, **kw: Any) -> AgentResult:
        """An agent replies in CXone on the role's channel."""
        return await self.cxone.agent_reply(self.channels[role], thread_id, text, **kw)


@contextlib.asynccontextmanager
async def start_reach(
    directory: Path,
    platform: str,
    *,
    env: Mapping[str, str],
    api_env: str,
    api_suffix: str = "",
    clock: Clock = system_clock,
    overrides: Mapping[str, Any] | None = None,
) -> AsyncIterator[Reach]:
    """Run the gateway with only tests/fixtures/platforms/<platform>.yaml loaded.

    `env` holds the mapping's secrets; `api_env` names the variable its `base_url` reads,
    which is set to the fake platform's URL (plus `api_suffix`). `overrides` is merged
    into gateway.yaml (e.g. `{"listeners": {"platform": {"public_url": ...}}}`).
    """
    source = PLATFORMS / f"{platform}.yaml"
    mappings_dir = directory / "mappings"
    mappings_dir.mkdir(parents=True, exist_ok=True)
    shutil.copy(source, mappings_dir / source.name)
    shape = load_mapping(source, check_secrets=False)
    channels = {role: f"{shape.name}_{role}" for role in shape.channels}
    api = FakePlatform()
    cxone = CxoneSim(
        CxoneSimConfig(
            access_key_id=SECRETS.access_key_id,
            access_key_secret=SECRETS.access_key_secret,
            app_client_id=SECRETS.app_client_id,
            app_client_secret=SECRETS.app_client_secret,
            channels=tuple(channels.values()),
            clock=clock,
            gateway_client_id=SECRETS.byoc_client_id,
            gateway_client_secret=SECRETS.byoc_client_secret,
        )
    )
    api_runner, api_url = await serve_app(api.app)
    cx_runner, cx_url = await serve_app(cxone.app)
    running: RunningGateway | None = None
    try:
        tree = sandbox_config(
            directory,
            mappings_dir=mappings_dir,
            channels=[
                {"id": cid, "mapping": shape.name, "role": role} for role, cid in channels.items()
            ],
            integration="reach",
            backend="memory",
            workers=2,
            max_attempts=3,
            max_delay=0.2,
            deadline=3,
            overrides={"logging": {"level": "WARNING"}, **(overrides or {})},
        )
        full_env = sandbox_env("http://unused.invalid", cx_url, SECRETS)
        full_env.update(env)
        full_env[api_env] = api_url + api_suffix
        settings = write_settings(directory, tree, full_env)
        running = await start_gateway(settings, clock=clock, shutdown_timeout=2.0)
        cxone.gateway_box_url = running.urls["cxone"] + "/integration/box"
        yield Reach(shape.name, cxone, api, running, settings, channels, clock)
    finally:
        if running is not None:
            await running.stop()
        await cx_runner.cleanup()
        await api_runner.cleanup()
