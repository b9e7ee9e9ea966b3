"""The CXone simulator: one object, one aiohttp app, both of CXone's roles."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from typing import Any, TypeVar
from urllib.parse import urlencode

from aiohttp import web

from gateway.sandbox.cxone import control
from gateway.sandbox.cxone.agent import Agent, AgentResult, Endpoint, ProactiveResult
from gateway.sandbox.cxone.auth import AuthApi, TokenStore
from gateway.sandbox.cxone.config import ClientAuth, CxoneSimConfig
from gateway.sandbox.cxone.dfo import DfoApi, preregistered
from gateway.sandbox.cxone.faults import Faults
from gateway.sandbox.cxone.records import (
    Contact,
    ContactChange,
    GatewayCall,
    ReceivedMessage,
    StatusUpdate,
    Thread,
    Violation,
)
from gateway.sandbox.cxone.responses import error_middleware, guarded
from gateway.sandbox.cxone.state import SimState

T = TypeVar("T")
log = logging.getLogger("gateway.sandbox.cxone")


class CxoneSim:
    """A simulated NICE CXone tenant: the APIs the gateway calls, and the agent calling it."""

    def __init__(self, config: CxoneSimConfig | None = None) -> None:
        self.config = config or CxoneSimConfig()
        self.base_url: str | None = self.config.base_url  # None: taken from each request
        self.state = SimState(self.config.clock, self.config.max_log)
        self.faults = Faults(self.state.tick)
        self.tokens = TokenStore(self.config.clock)
        self.agent = Agent(self.config, self.state)
        for channel in preregistered(self.config):
            self.state.channels[channel["id"]] = channel
        self.dfo = DfoApi(self.config, self.state, self.tokens)
        self.app = self._build_app()

    def _build_app(self) -> web.Application:
        auth = AuthApi(self.config, self.tokens, self.base_of)
        dfo = self.dfo
        endpoints = [
            ("GET", "/.well-known/openid-configuration", "discovery", auth.openid_configuration),
            (
                "GET",
                "/.well-known/cxone-configuration",
                "cxone_configuration",
                auth.cxone_configuration,
            ),
            ("POST", "/auth/token", "token", auth.token),
            (
                "POST",
                "/dfo/3.0/channels/{channelId}/messages",
                "create_message",
                dfo.create_message,
            ),
            (
                "PUT",
                "/dfo/3.0/channels/{channelId}/messages/{messageId}/status",
                "message_status",
                dfo.message_status,
            ),
            (
                "PUT",
                "/dfo/3.0/contacts/{contactNumber}/status",
                "contact_status",
                dfo.contact_status,
            ),
            (
                "POST",
                "/dfo/3.0/contacts/{contactNumber}/abandon",
                "contact_abandon",
                dfo.contact_abandon,
            ),
            ("POST", "/dfo/3.0/channels", "channel_upsert", dfo.channel_upsert),
            ("GET", "/dfo/3.0/channels", "channel_list", dfo.channel_list),
            ("DELETE", "/dfo/3.0/channels/{channelId}", "channel_delete", dfo.channel_delete),
            (
                "POST",
                "/dfo/3.0/one-time-token/verification",
                "one_time_token",
                auth.verify_one_time_token,
            ),
        ]
        app = web.Application(middlewares=[error_middleware])
        for method, path, route, handler in endpoints:
            app.router.add_route(method, path, guarded(route, handler, self.faults, self.state))
        control.add_routes(app, self)
        app.cleanup_ctx.append(self._session_ctx)
        app.on_shutdown.append(self._on_shutdown)
        return app

    # -- lifecycle -----------------------------------------------------------------

    async def start(self) -> None:
        """Open the agent side's HTTP session (done by the app's startup too)."""
        await self.agent.start()

    async def close(self) -> None:
        """Release held requests, wake long polls and close the HTTP session."""
        self.faults.release()
        await self.agent.close()

    async def _session_ctx(self, app: web.Application) -> AsyncIterator[None]:
        await self.start()
        yield
        await self.close()

    async def _on_shutdown(self, app: web.Application) -> None:
        # before the server waits for handlers: nothing may stay held or long-polling
        self.faults.release()
        self.state.close()

    def base_of(self, request: web.Request) -> str:
        """Return the sim's base URL: the configured one, or the request's origin."""
        if self.base_url:
            return self.base_url.rstrip("/")
        return f"{request.scheme}://{request.host}"

    # -- the gateway as CXone knows it ---------------------------------------------

    @property
    def gateway_box_url(self) -> str | None:
        """The gateway's Integration box URL, e.g. http://127.0.0.1:8081/integration/box."""
        return self.agent.box_url

    @gateway_box_url.setter
    def gateway_box_url(self, value: str | None) -> None:
        self.agent.box_url = value

    @property
    def gateway_token_url(self) -> str | None:
        """The gateway's Authorization URL (default <box>/1.0/token)."""
        return self.agent.token_url

    @gateway_token_url.setter
    def gateway_token_url(self, value: str | None) -> None:
        self.agent.explicit_token_url = value

    @property
    def gateway_client_id(self) -> str | None:
        """The OAuth client id the gateway issued to this integration."""
        return self.agent.client_id

    @gateway_client_id.setter
    def gateway_client_id(self, value: str | None) -> None:
        self.agent.client_id = value

    @property
    def gateway_client_secret(self) -> str | None:
        """The OAuth client secret the gateway issued to this integration."""
        return self.agent.client_secret

    @gateway_client_secret.setter
    def gateway_client_secret(self, value: str | None) -> None:
        self.agent.client_secret = value

    @property
    def gateway_client_auth(self) -> ClientAuth:
        """How the token request carries the client credentials: json, form or basic."""
        return self.agent.client_auth

    @gateway_client_auth.setter
    def gateway_client_auth(self, value: ClientAuth) -> None:
        self.agent.client_auth = value

    def forget_gateway_token(self) -> None:
        """Drop the cached gateway token, so the next call starts with the 401 dance."""
        self.agent.token = None

    # -- agent side ----------------------------------------------------------------

    async def agent_reply(
        self,
        channel_id: str,
        thread_id: str,
        text: str,
        *,
        endpoint: Endpoint = "outbound",
        reply_to: str | None = None,
        recipients: Sequence[Mapping[str, Any]] | None = None,
        attachments: Sequence[Mapping[str, Any]] | None = None,
        brand_id: int | str | None = None,
    ) -> AgentResult:
        """Reply as an agent through the gateway; return (status, body)."""
        return await self.agent.reply(
            channel_id,
            thread_id,
            text,
            endpoint=endpoint,
            reply_to=reply_to,
            recipients=recipients,
            attachments=attachments,
            brand_id=brand_id,
        )

    async def agent_typing(self, channel_id: str, thread_id: str, on: bool) -> AgentResult:
        """Switch the agent's typing indicator on or off; the gateway must answer 204."""
        return await self.agent.typing(channel_id, thread_id, on)

    async def agent_proactive(
        self,
        channel_id: str,
        recipient_id: str,
        text: str,
        *,
        endpoint: Endpoint = "outbound",
        recipient_name: str | None = None,
    ) -> ProactiveResult:
        """Send an agent-initiated message on a new thread; return (status, body, thread_id)."""
        return await self.agent.proactive(
            channel_id, recipient_id, text, endpoint=endpoint, recipient_name=recipient_name
        )

    # -- failure injection and tokens ----------------------------------------------

    def script(self, route: str, responses: Sequence[tuple[int, Mapping[str, str], Any]]) -> None:
        """Answer the next requests of `route` with (status, headers, body), in order."""
        self.faults.script(route, responses)

    def reset_next(self, route: str, n: int = 1) -> None:
        """Abort the connection of the next `n` requests of `route` without an answer."""
        self.faults.reset_next(route, n)

    def hold(self, route: str) -> asyncio.Event:
        """Make requests of `route` hang until the returned event is set or `release`d."""
        return self.faults.hold(route)

    def release(self, route: str | None = None) -> None:
        """Let held requests of `route` (None: all routes) proceed."""
        self.faults.release(route)

    def held(self, route: str) -> int:
        """Return how many requests of `route` are waiting on a hold right now."""
        return self.faults.held[route]

    def hits(self, route: str) -> int:
        """Return how many requests `route` received (scripted and reset ones included)."""
        return self.state.hit_counts[route]

    def expire_tokens(self) -> None:
        """Invalidate every access token issued so far."""
        self.tokens.expire_all()
        self.state.tick()

    def issue_access_token(self) -> str:
        """Issue a bearer token directly (for tests that skip the token endpoint)."""
        return self.tokens.issue(self.config.token_ttl)

    def issue_one_time_token(
        self, brand_id: int | str | None = None, user_id: int | str | None = None
    ) -> str:
        """Issue a single-use token for the Action URL (defaults: the configured brand/agent)."""
        brand = self.config.brand_id if brand_id is None else brand_id
        user = self.config.agent_user_id if user_id is None else user_id
        return self.tokens.issue_one_time(str(brand), str(user), self.config.one_time_token_ttl)

    # -- what happened -------------------------------------------------------------

    @property
    def seq(self) -> int:
        """The number of changes so far."""
        return self.state.seq

    @property
    def messages(self) -> list[ReceivedMessage]:
        """Every accepted create-message POST, duplicates included (flagged)."""
        return self.state.messages

    @property
    def statuses(self) -> list[StatusUpdate]:
        """Every accepted message-status PUT."""
        return self.state.statuses

    @property
    def contact_changes(self) -> list[ContactChange]:
        """Every accepted contact status PUT and abandon POST."""
        return self.state.contact_changes

    @property
    def contacts(self) -> dict[str, Contact]:
        """Contacts by number."""
        return self.state.contacts

    @property
    def channels(self) -> dict[str, dict[str, Any]]:
        """Channel bodies by id."""
        return self.state.channels

    @property
    def threads(self) -> dict[tuple[str, str], Thread]:
        """Threads by (channel id, thread id)."""
        return self.state.threads

    @property
    def violations(self) -> list[Violation]:
        """Recent refused requests and contract-breaking gateway answers."""
        return list(self.state.violations)

    @property
    def gateway_calls(self) -> list[GatewayCall]:
        """Every call made to the gateway: replies, typing and token fetches."""
        return self.state.gateway_calls

    @property
    def token_fetches(self) -> int:
        """How many requests reached the access-key token endpoint."""
        return self.state.hit_counts["token"]

    @property
    def gateway_token_fetches(self) -> int:
        """How many tokens the agent side fetched from the gateway."""
        return self.agent.token_fetches

    def messages_in(self, channel_id: str, thread_id: str | None = None) -> list[ReceivedMessage]:
        """Return accepted create-message POSTs of a channel (and thread), in order."""
        return self.state.messages_in(channel_id, thread_id)

    def deliveries(self, channel_id: str, message_id: str) -> int:
        """Return how many times a message id was POSTed to a channel (1: exactly once)."""
        return sum(
            1
            for m in self.state.messages
            if m.channel_id == channel_id and m.message_id == message_id
        )

    def thread(self, channel_id: str, thread_id: str) -> Thread | None:
        """Return a thread, or None."""
        return self.state.threads.get((channel_id, thread_id))

    def contact_id(self, channel_id: str, thread_id: str) -> str | None:
        """Return the current contact number of a thread, or None."""
        thread = self.thread(channel_id, thread_id)
        return thread.contact_id if thread is not None and thread.contact_ids else None

    async def wait_for(self, predicate: Callable[[], T | None], timeout: float = 5.0) -> T:  # noqa: ASYNC109
        """Wait, without sleeping, until `predicate()` is truthy; return its value."""
        return await self.state.wait_for(predicate, timeout)

    def snapshot(self) -> dict[str, Any]:
        """Return the whole state as JSON-ready data (what GET /_sim/state answers)."""
        data = self.state.snapshot()
        data["tenant_id"] = self.config.tenant_id
        data["base_url"] = self.base_url
        data["gateway"] = {
            "box_url": self.gateway_box_url,
            "token_url": self.gateway_token_url,
            "client_id": self.gateway_client_id,
            "has_token": self.agent.token is not None,
            "token_fetches": self.gateway_token_fetches,
        }
        data["faults"] = {"pending": self.faults.pending(), "held": dict(self.faults.held)}
        return data

    def action_url(
        self, token: str, brand_id: int | str, user_id: int | str, back_url: str
    ) -> str | None:
        """Return the gateway's Action URL as CXone opens it, when the box URL ends in /box."""
        box = (self.gateway_box_url or "").rstrip("/")
        if not box.endswith("/box"):
            return None
        query = urlencode(
            {"userId": user_id, "brandId": brand_id, "token": token, "backUrl": back_url}
        )
        return f"{box[: -len('/box')]}/action?{query}"


async def run_standalone(
    host: str,
    port: int,
    config: CxoneSimConfig | None = None,
    *,
    on_ready: Callable[[CxoneSim], object] | None = None,
) -> None:
    """Serve a CXone simulator on host:port until cancelled (`byoc-gateway sim cxone`)."""
    sim = CxoneSim(config)
    runner = web.AppRunner(sim.app, access_log=None)
    await runner.setup()
    try:
        site = web.TCPSite(runner, host, port)
        await site.start()
        if sim.base_url is None and host not in ("0.0.0.0", "::", ""):
            bound = runner.addresses[0][1] if runner.addresses else port
            shown = f"[{host}]" if ":" in host else host
            sim.base_url = f"http://{shown}:{bound}"
        log.info("CXone simulator listening on %s", sim.base_url or f"http://{host}:{port}")
        if on_ready is not None:
            on_ready(sim)
        await asyncio.Event().wait()
    finally:
        await runner.cleanup()
