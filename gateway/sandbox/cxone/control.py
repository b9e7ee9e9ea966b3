"""The simulator's control API under /_sim/, for the sandbox page and standalone use.

    GET  /_sim/state                         everything, as JSON
    GET  /_sim/changes?since=N[&timeout=S]   long poll: {"seq"} once it differs from N
    POST /_sim/reply       {channel_id, thread_id, text, endpoint?, reply_to?, attachments?}
    POST /_sim/typing      {channel_id, thread_id, on}
    POST /_sim/proactive   {channel_id, recipient_id, text, recipient_name?, endpoint?}
    POST /_sim/one-time-token {brand_id?, user_id?}  -> {token, brand_id, user_id, action_url}
    POST /_sim/gateway     {box_url?, token_url?, client_id?, client_secret?, client_auth?}
    POST /_sim/channels    a channel body (registered without a token)
    POST /_sim/script      {route, responses: [{status, headers?, body?}]}
    POST /_sim/reset-next  {route, n?}
    POST /_sim/hold        {route, on}
    POST /_sim/expire-tokens
    GET  /_sim/back        where the Action page returns the admin (recorded)

Bad input gets a 400 JSON body naming the field.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, cast

from aiohttp import web

from gateway.errors import BadRequest
from gateway.sandbox.cxone.agent import Endpoint
from gateway.sandbox.cxone.config import ROUTES, ClientAuth
from gateway.sandbox.cxone.responses import json_response, read_object

if TYPE_CHECKING:
    from gateway.sandbox.cxone.sim import CxoneSim


def _text(body: dict[str, Any], key: str, *, empty: bool = False) -> str:
    value = body.get(key)
    if not isinstance(value, str) or (not empty and not value):
        raise BadRequest(f"{key}: a non-empty string is required", code="invalid_field")
    return value


def _optional_text(body: dict[str, Any], key: str) -> str | None:
    return None if body.get(key) is None else _text(body, key)


def _flag(body: dict[str, Any], key: str) -> bool:
    value = body.get(key)
    if not isinstance(value, bool):
        raise BadRequest(f"{key}: true or false is required", code="invalid_field")
    return value


def _choice(body: dict[str, Any], key: str, choices: tuple[str, ...], default: str) -> str:
    value = body.get(key, default)
    if value not in choices:
        raise BadRequest(f"{key}: one of {', '.join(choices)}", code="invalid_field")
    return str(value)


def _numeric_id(body: dict[str, Any], key: str) -> int | str | None:
    value = body.get(key)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | str) or not str(value).isdigit():
        raise BadRequest(f"{key}: a number is required", code="invalid_field")
    return value


def _objects(body: dict[str, Any], key: str) -> list[dict[str, Any]] | None:
    value = body.get(key)
    if value is None:
        return None
    if not isinstance(value, list) or not all(isinstance(v, dict) for v in value):
        raise BadRequest(f"{key}: a list of objects is required", code="invalid_field")
    return value


def _route(body: dict[str, Any]) -> str:
    route = _text(body, "route")
    if route not in ROUTES:
        raise BadRequest(f"route: one of {', '.join(ROUTES)}", code="invalid_field")
    return route


class _Control:
    def __init__(self, sim: CxoneSim) -> None:
        self.sim = sim

    async def state(self, request: web.Request) -> web.StreamResponse:
        return json_response(self.sim.snapshot())

    async def changes(self, request: web.Request) -> web.StreamResponse:
        limit = self.sim.config.long_poll_seconds
        try:
            since = int(request.query.get("since", "-1"))
            timeout = min(float(request.query.get("timeout", limit)), limit)
        except ValueError:
            raise BadRequest("since and timeout must be numbers", code="invalid_query") from None
        seq = await self.sim.state.wait_changed(since, max(timeout, 0.0))
        return json_response({"seq": seq})

    async def reply(self, request: web.Request) -> web.StreamResponse:
        body = await read_object(request)
        endpoint = _choice(body, "endpoint", ("outbound", "legacy"), "outbound")
        result = await self.sim.agent_reply(
            _text(body, "channel_id"),
            _text(body, "thread_id"),
            _text(body, "text", empty=True),
            endpoint=cast(Endpoint, endpoint),
            reply_to=_optional_text(body, "reply_to"),
            attachments=_objects(body, "attachments"),
            recipients=_objects(body, "recipients"),
        )
        return json_response({"status": result.status, "body": result.body})

    async def typing(self, request: web.Request) -> web.StreamResponse:
        body = await read_object(request)
        result = await self.sim.agent_typing(
            _text(body, "channel_id"), _text(body, "thread_id"), _flag(body, "on")
        )
        return json_response({"status": result.status, "body": result.body})

    async def proactive(self, request: web.Request) -> web.StreamResponse:
        body = await read_object(request)
        endpoint = _choice(body, "endpoint", ("outbound", "legacy"), "outbound")
        result = await self.sim.agent_proactive(
            _text(body, "channel_id"),
            _text(body, "recipient_id"),
            _text(body, "text", empty=True),
            endpoint=cast(Endpoint, endpoint),
            recipient_name=_optional_text(body, "recipient_name"),
        )
        return json_response(
            {"status": result.status, "body": result.body, "thread_id": result.thread_id}
        )

    async def one_time_token(self, request: web.Request) -> web.StreamResponse:
        body = await read_object(request) if request.can_read_body else {}
        config = self.sim.config
        brand = _numeric_id(body, "brand_id")
        user = _numeric_id(body, "user_id")
        brand = config.brand_id if brand is None else brand
        user = config.agent_user_id if user is None else user
        token = self.sim.issue_one_time_token(brand, user)
        back = f"{self.sim.base_of(request)}/_sim/back"
        return json_response(
            {
                "token": token,
                "brand_id": brand,
                "user_id": user,
                "back_url": back,
                "action_url": self.sim.action_url(token, brand, user, back),
            }
        )

    async def gateway(self, request: web.Request) -> web.StreamResponse:
        body = await read_object(request)
        known = {"box_url", "token_url", "client_id", "client_secret", "client_auth"}
        unknown = sorted(set(body) - known)
        if unknown:
            raise BadRequest(f"{unknown[0]}: unknown field", code="invalid_field")
        if "box_url" in body:
            self.sim.gateway_box_url = _optional_text(body, "box_url")
        if "token_url" in body:
            self.sim.gateway_token_url = _optional_text(body, "token_url")
        if "client_id" in body:
            self.sim.gateway_client_id = _optional_text(body, "client_id")
        if "client_secret" in body:
            self.sim.gateway_client_secret = _optional_text(body, "client_secret")
        if "client_auth" in body:
            style = _choice(body, "client_auth", ("json", "form", "basic"), "json")
            self.sim.gateway_client_auth = cast(ClientAuth, style)
        self.sim.forget_gateway_token()
        self.sim.state.tick()
        return json_response(self.sim.snapshot()["gateway"])

    async def channels(self, request: web.Request) -> web.StreamResponse:
        channel, created = self.sim.dfo.upsert_channel(await read_object(request))
        return json_response({"channel": channel, "created": created})

    async def script(self, request: web.Request) -> web.StreamResponse:
        body = await read_object(request)
        route = _route(body)
        items = _objects(body, "responses") or []
        responses = []
        for index, item in enumerate(items):
            status, headers = item.get("status"), item.get("headers", {})
            if isinstance(status, bool) or not isinstance(status, int) or not 100 <= status <= 599:
                raise BadRequest(f"responses[{index}].status: an HTTP status", code="invalid_field")
            if not isinstance(headers, dict) or not all(
                isinstance(v, str) for v in headers.values()
            ):
                raise BadRequest(f"responses[{index}].headers: strings", code="invalid_field")
            responses.append((status, headers, item.get("body")))
        self.sim.script(route, responses)
        return json_response({"pending": self.sim.faults.pending()})

    async def reset_next(self, request: web.Request) -> web.StreamResponse:
        body = await read_object(request)
        route = _route(body)
        n = body.get("n", 1)
        if isinstance(n, bool) or not isinstance(n, int) or n < 1:
            raise BadRequest("n: a positive integer", code="invalid_field")
        self.sim.reset_next(route, n)
        return json_response({"pending": self.sim.faults.pending()})

    async def hold(self, request: web.Request) -> web.StreamResponse:
        body = await read_object(request)
        route = _route(body)
        if _flag(body, "on"):
            self.sim.hold(route)
        else:
            self.sim.release(route)
        return json_response({"held": dict(self.sim.faults.held)})

    async def expire_tokens(self, request: web.Request) -> web.StreamResponse:
        self.sim.expire_tokens()
        return json_response({"expired": True})

    async def back(self, request: web.Request) -> web.StreamResponse:
        self.sim.state.back_visits.append(dict(request.query))
        self.sim.state.tick()
        return json_response({"returned": True})


def add_routes(app: web.Application, sim: CxoneSim) -> None:
    """Register the control API on the simulator's app."""
    c = _Control(sim)
    app.router.add_get("/_sim/state", c.state)
    app.router.add_get("/_sim/changes", c.changes)
    app.router.add_get("/_sim/back", c.back)
    for path, handler in (
        ("/_sim/reply", c.reply),
        ("/_sim/typing", c.typing),
        ("/_sim/proactive", c.proactive),
        ("/_sim/one-time-token", c.one_time_token),
        ("/_sim/gateway", c.gateway),
        ("/_sim/channels", c.channels),
        ("/_sim/script", c.script),
        ("/_sim/reset-next", c.reset_next),
        ("/_sim/hold", c.hold),
        ("/_sim/expire-tokens", c.expire_tokens),
    ):
        app.router.add_post(path, handler)
