"""The CXone simulator, over real sockets: both roles, failure injection, control API."""

from __future__ import annotations

import asyncio
import base64
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import jwt
import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from gateway.clock import FakeClock
from gateway.sandbox.cxone import CxoneSim, CxoneSimConfig, run_standalone

CHANNEL = "chat-1"
CONFIG = CxoneSimConfig()  # the default credentials
GW_CLIENT_ID = "cxone-integration"
GW_CLIENT_SECRET = "s3cret-of-the-integration"
DROP = object()
APP_BASIC = (
    "Basic "
    + base64.b64encode(f"{CONFIG.app_client_id}:{CONFIG.app_client_secret}".encode()).decode()
)

ServerFactory = Callable[..., Awaitable[TestServer]]
ClientFactory = Callable[..., Awaitable[TestClient[Any, Any]]]


def message(**changes: Any) -> dict[str, Any]:
    """Return a valid create-message body with `changes` applied (DROP removes a field)."""
    body: dict[str, Any] = {
        "idOnExternalPlatform": "msg-1",
        "thread": {"idOnExternalPlatform": "thr-1"},
        "messageContent": {"type": "TEXT", "payload": {"text": "hello"}},
        "authorEndUserIdentity": {"idOnExternalPlatform": "usr-1", "firstName": "Zed"},
        "direction": "inbound",
        "createdAtWithMilliseconds": "2025-11-26T12:00:00.123Z",
    }
    for key, value in changes.items():
        if value is DROP:
            body.pop(key, None)
        else:
            body[key] = value
    return body


@dataclass
class Env:
    sim: CxoneSim
    client: TestClient[Any, Any]
    clock: FakeClock

    async def token(self) -> str:
        resp = await self.client.post(
            "/auth/token",
            data={
                "grant_type": "password",
                "username": CONFIG.access_key_id,
                "password": CONFIG.access_key_secret,
            },
            headers={"Authorization": APP_BASIC},
        )
        assert resp.status == 200, await resp.text()
        token: str = (await resp.json())["access_token"]
        return token

    async def call(
        self, method: str, path: str, body: Any = None, token: str | None = None
    ) -> tuple[int, Any]:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        resp = await self.client.request(method, path, json=body, headers=headers)
        data = await resp.json() if resp.content_type == "application/json" else None
        return resp.status, data

    async def create(self, body: Any, token: str, channel: str = CHANNEL) -> tuple[int, Any]:
        return await self.call("POST", f"/dfo/3.0/channels/{channel}/messages", body, token)


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
async def env(
    aiohttp_server: ServerFactory, aiohttp_client: ClientFactory, clock: FakeClock
) -> Env:
    sim = CxoneSim(CxoneSimConfig(clock=clock, channels=(CHANNEL,)))
    server = await aiohttp_server(sim.app)
    sim.base_url = str(server.make_url("")).rstrip("/")
    return Env(sim, await aiohttp_client(server), clock)


# -- the gateway-facing APIs ----------------------------------------------------------


async def test_discovery_token_and_create_message(env: Env) -> None:
    session = env.client.session
    async with session.get(f"{env.sim.base_url}/.well-known/openid-configuration") as resp:
        oidc = await resp.json()
    assert oidc["issuer"] == env.sim.base_url
    async with session.get(
        f"{oidc['issuer']}/.well-known/cxone-configuration", params={"tenantId": CONFIG.tenant_id}
    ) as resp:
        api = (await resp.json())["api_endpoint"]
    assert api == env.sim.base_url
    async with session.post(
        oidc["token_endpoint"],
        data={
            "grant_type": "password",
            "username": CONFIG.access_key_id,
            "password": CONFIG.access_key_secret,
        },
        headers={"Authorization": APP_BASIC},
    ) as resp:
        assert resp.status == 200
        assert resp.headers["Cache-Control"] == "no-store"
        grant = await resp.json()
    assert grant["token_type"] == "Bearer"
    assert grant["expires_in"] == CONFIG.token_ttl
    claims = jwt.decode(
        grant["id_token"],
        CONFIG.id_token_key,
        algorithms=["HS256"],
        audience=CONFIG.app_client_id,
        options={"verify_exp": False},  # the fake clock lives in 2025
    )
    assert claims["tenantId"] == CONFIG.tenant_id

    headers = {"Authorization": f"Bearer {grant['access_token']}"}
    url = f"{api}/dfo/3.0/channels/{CHANNEL}/messages"
    async with session.post(url, json=message(), headers=headers) as resp:
        assert resp.status == 200
        first = await resp.json()
    contact_id = first["consumerContact"]["id"]
    assert contact_id.isdigit()
    assert first["message"]["idOnExternalPlatform"] == "msg-1"
    second_body = message(idOnExternalPlatform="msg-2")
    async with session.post(url, json=second_body, headers=headers) as resp:
        second = await resp.json()
    assert second["consumerContact"]["id"] == contact_id  # same thread, same contact
    async with session.post(url, json=message(), headers=headers) as resp:
        assert resp.status == 200  # a duplicate is accepted, and stays visible

    assert env.sim.token_fetches == 1
    assert [m.message_id for m in env.sim.messages_in(CHANNEL, "thr-1")] == [
        "msg-1",
        "msg-2",
        "msg-1",
    ]
    assert [m.duplicate for m in env.sim.messages] == [False, False, True]
    assert env.sim.deliveries(CHANNEL, "msg-1") == 2
    assert env.sim.deliveries(CHANNEL, "msg-2") == 1
    assert env.sim.contact_id(CHANNEL, "thr-1") == contact_id
    assert env.sim.violations == []


async def test_unknown_tenant_and_missing_tenant(env: Env) -> None:
    assert (await env.call("GET", "/.well-known/cxone-configuration?tenantId=nope"))[0] == 404
    assert (await env.call("GET", "/.well-known/cxone-configuration"))[0] == 400


@pytest.mark.parametrize(
    ("changes", "expected"),
    [
        ({"idOnExternalPlatform": DROP}, "idOnExternalPlatform: required"),
        ({"thread": DROP}, "thread: required"),
        ({"messageContent": DROP}, "messageContent: required"),
        ({"authorEndUserIdentity": DROP}, "authorEndUserIdentity: required"),
        ({"direction": DROP}, "direction: required"),
        ({"createdAtWithMilliseconds": DROP}, "createdAtWithMilliseconds: required"),
        ({"thread": {}}, "thread.idOnExternalPlatform: required"),
        ({"thread": "thr-1"}, "thread: must be an object"),
        ({"idOnExternalPlatform": 42}, "idOnExternalPlatform: must be a string"),
        ({"idOnExternalPlatform": ""}, "idOnExternalPlatform: must not be empty"),
        ({"direction": "sideways"}, "direction: must be one of inbound | outbound"),
        (
            {"messageContent": {"type": "VIDEO", "payload": {}}},
            "messageContent.type: must be one of",
        ),
        (
            {"messageContent": {"type": "TEXT", "payload": {}}},
            "messageContent.payload.text: required",
        ),
        (
            {"messageContent": {"type": "TEXT", "payload": {"text": 7}}},
            "messageContent.payload.text: must be a string",
        ),
        (
            {"authorEndUserIdentity": {"idOnExternalPlatform": 5}},
            "authorEndUserIdentity.idOnExternalPlatform: must be a string",
        ),
        (
            {"createdAtWithMilliseconds": "2025-11-26T12:00:00Z"},
            "createdAtWithMilliseconds: must be ISO",
        ),
        (
            {"createdAtWithMilliseconds": "2025-11-26T12:00:00.12Z"},
            "createdAtWithMilliseconds: must be ISO",
        ),
        (
            {"createdAtWithMilliseconds": "2025-11-26T12:00:00.123456Z"},
            "createdAtWithMilliseconds: must be ISO",
        ),
        (
            {"createdAtWithMilliseconds": "2025-11-26T12:00:00.123"},
            "createdAtWithMilliseconds: must be ISO",
        ),
        (
            {"createdAtWithMilliseconds": "2025-13-26T12:00:00.123Z"},
            "createdAtWithMilliseconds: must be ISO",
        ),
        ({"createdAtWithMilliseconds": 1764158400123}, "createdAtWithMilliseconds: must be ISO"),
        (
            {"attachments": [{"url": "https://cdn.example/a.png"}]},
            "attachments[0].friendlyName: required",
        ),
        (
            {"attachments": [{"friendlyName": "a", "url": "ftp://x/a"}]},
            "attachments[0].url: must be",
        ),
        ({"attachments": {"friendlyName": "a"}}, "attachments: must be an array"),
        ({"replyToMessage": {"id": "m-0"}}, "replyToMessage.idOnExternalPlatform: required"),
        ({"isReplyToSpecificMessage": "yes"}, "isReplyToSpecificMessage: must be a boolean"),
        ({"isReplyToSpecificMessage": True}, "replyToMessage: required when"),
        ({"channel": "chat-1"}, "channel: unknown field"),
        ({"title": None}, "title: must be a string, got null"),
    ],
)
async def test_create_message_rejects_what_the_spec_forbids(
    env: Env, changes: dict[str, Any], expected: str
) -> None:
    status, body = await env.create(message(**changes), await env.token())
    assert status == 400
    assert body["error"] == "validation_failed"
    assert any(e.startswith(expected) for e in body["errors"]), body["errors"]
    assert env.sim.messages == []
    assert env.sim.violations[-1].source == "cxone-api"


async def test_create_message_lists_every_violation(env: Env) -> None:
    status, body = await env.create({"direction": "up", "extra": 1}, await env.token())
    assert status == 400
    fields = {e.split(":")[0] for e in body["errors"]}
    assert fields == {
        "idOnExternalPlatform",
        "thread",
        "messageContent",
        "authorEndUserIdentity",
        "direction",
        "createdAtWithMilliseconds",
        "extra",
    }


async def test_create_message_accepts_offsets_and_optional_fields(env: Env) -> None:
    token = await env.token()
    full = message(
        createdAtWithMilliseconds="2025-11-26T14:00:00.123+02:00",
        attachments=[{"friendlyName": "cat.png", "url": "https://cdn.example/cat.png"}],
        replyToMessage={"idOnExternalPlatform": "msg-0"},
        isReplyToSpecificMessage=True,
        title="A post",
        url="https://wh.example/p/1",
        externalAttributes=[{"key": "k", "value": "v"}],
        direction="outbound",
    )
    assert (await env.create(full, token))[0] == 200
    plain = message(
        idOnExternalPlatform="msg-2", createdAtWithMilliseconds="2025-11-26T12:00:00.123+00:00"
    )
    assert (await env.create(plain, token))[0] == 200
    assert len(env.sim.messages) == 2


async def test_create_message_rejects_junk_bodies_and_unknown_channels(env: Env) -> None:
    token = await env.token()
    assert (await env.create(message(), token, channel="nope"))[0] == 404
    assert (await env.create(["not", "an", "object"], token))[1]["errors"] == [
        "body: must be an object, got an array"
    ]
    resp = await env.client.post(
        f"/dfo/3.0/channels/{CHANNEL}/messages",
        data=b"{not json",
        headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"},
    )
    assert resp.status == 400
    assert (await resp.json())["error"] == "invalid_json"
    resp = await env.client.post(
        f"/dfo/3.0/channels/{CHANNEL}/messages",
        data=b"text=hi",
        headers={"Authorization": f"Bearer {token}", "Content-Type": "text/plain"},
    )
    assert resp.status == 415


async def test_tokens_expire_by_the_clock_and_on_demand(env: Env) -> None:
    token = await env.token()
    assert (await env.create(message(), token))[0] == 200
    env.clock.advance(CONFIG.token_ttl)
    status, body = await env.create(message(), token)
    assert status == 401
    assert body["error"] == "invalid_token"
    token = await env.token()
    assert (await env.create(message(), token))[0] == 200
    env.sim.expire_tokens()
    assert (await env.create(message(), token))[0] == 401
    resp = await env.client.post(f"/dfo/3.0/channels/{CHANNEL}/messages", json=message())
    assert resp.status == 401
    assert resp.headers["WWW-Authenticate"].startswith("Bearer")
    assert (await env.create(message(), "made-up"))[0] == 401
    assert env.sim.violations == []  # a 401 is CXone's normal "fetch a token" signal


@pytest.mark.parametrize(
    ("form", "auth", "status", "error"),
    [
        (
            {"grant_type": "password", "username": "sim-access-key-id", "password": "x"},
            True,
            400,
            "invalid_grant",
        ),
        ({"grant_type": "client_credentials"}, True, 400, "unsupported_grant_type"),
        ({"username": "sim-access-key-id"}, True, 400, "invalid_request"),
        (
            {
                "grant_type": "password",
                "username": "sim-access-key-id",
                "password": "sim-access-key-secret",
            },
            False,
            401,
            "invalid_client",
        ),
    ],
)
async def test_token_endpoint_refuses_wrong_credentials(
    env: Env, form: dict[str, str], auth: bool, status: int, error: str
) -> None:
    headers = {"Authorization": APP_BASIC} if auth else {}
    resp = await env.client.post("/auth/token", data=form, headers=headers)
    assert resp.status == status
    assert (await resp.json())["error"] == error
    assert env.sim.token_fetches == 1


async def test_scripted_answers_come_first_then_normal_behaviour(env: Env) -> None:
    token = await env.token()
    env.sim.script(
        "create_message",
        [(503, {}, {"error": "unavailable"}), (429, {"Retry-After": "7"}, None), (400, {}, "nope")],
    )
    first = await env.client.post(
        f"/dfo/3.0/channels/{CHANNEL}/messages",
        json=message(),
        headers={"Authorization": f"Bearer {token}"},
    )
    assert first.status == 503
    assert await first.json() == {"error": "unavailable"}
    second = await env.client.post(f"/dfo/3.0/channels/{CHANNEL}/messages", json=message())
    assert second.status == 429
    assert second.headers["Retry-After"] == "7"
    third = await env.client.post(f"/dfo/3.0/channels/{CHANNEL}/messages", json=message())
    assert (third.status, await third.text()) == (400, "nope")
    assert (await env.create(message(), token))[0] == 200
    assert env.sim.hits("create_message") == 4
    assert len(env.sim.messages) == 1

    env.sim.script("token", [(503, {}, None)])
    resp = await env.client.post("/auth/token", data={"grant_type": "password"})
    assert resp.status == 503
    assert env.sim.token_fetches == 2
    with pytest.raises(ValueError, match="unknown route"):
        env.sim.script("create_mesage", [(503, {}, None)])


async def test_reset_aborts_the_connection(env: Env) -> None:
    token = await env.token()
    env.sim.reset_next("create_message")
    with pytest.raises(aiohttp.ClientError):
        await env.create(message(), token)
    assert (await env.create(message(), token))[0] == 200
    assert env.sim.hits("create_message") == 2
    assert len(env.sim.messages) == 1


async def test_hold_makes_a_route_hang_until_released(env: Env) -> None:
    token = await env.token()
    env.sim.hold("create_message")
    pending = asyncio.create_task(env.create(message(), token))
    await env.sim.wait_for(lambda: env.sim.held("create_message") == 1)
    assert not pending.done()
    assert env.sim.messages == []
    env.sim.release("create_message")
    assert (await pending)[0] == 200
    assert len(env.sim.messages) == 1


async def test_message_status(env: Env) -> None:
    token = await env.token()
    await env.create(message(), token)
    path = f"/dfo/3.0/channels/{CHANNEL}/messages/msg-1/status"
    ok = {"status": "seen", "updatedAt": "2025-11-26T12:00:05Z"}
    status, body = await env.call("PUT", path, ok, token)
    assert (status, body["known"]) == (200, True)
    status, body = await env.call(
        "PUT", path.replace("msg-1", "ghost"), ok | {"reason": "x"}, token
    )
    assert (status, body["known"]) == (200, False)
    status, body = await env.call("PUT", path, {"status": "read", "when": 1}, token)
    assert status == 400
    assert {e.split(":")[0] for e in body["errors"]} == {"status", "updatedAt", "when"}
    assert (await env.call("PUT", path.replace(CHANNEL, "nope"), ok, token))[0] == 404
    assert (await env.call("PUT", path, ok))[0] == 401
    assert [s.status for s in env.sim.statuses] == ["seen", "seen"]
    entry = env.sim.thread(CHANNEL, "thr-1").entries[0]  # type: ignore[union-attr]
    assert entry.statuses == [
        {"status": "seen", "updatedAt": "2025-11-26T12:00:05Z", "reason": None}
    ]


async def test_contact_status_and_abandon(env: Env) -> None:
    token = await env.token()
    contact = (await env.create(message(), token))[1]["consumerContact"]["id"]
    status, body = await env.call(
        "PUT", f"/dfo/3.0/contacts/{contact}/status", {"status": "closed"}, token
    )
    assert (status, body["status"]) == (200, "closed")
    assert (
        await env.call("PUT", f"/dfo/3.0/contacts/{contact}/status", {"status": "gone"}, token)
    )[0] == 400
    assert (await env.call("PUT", "/dfo/3.0/contacts/999/status", {"status": "closed"}, token))[
        0
    ] == 404
    # a new message on a closed thread opens a new contact
    newer = (await env.create(message(idOnExternalPlatform="msg-2"), token))[1]["consumerContact"][
        "id"
    ]
    assert newer != contact
    assert (await env.call("POST", f"/dfo/3.0/contacts/{newer}/abandon", None, token))[0] == 200
    assert env.sim.contacts[newer].abandoned
    assert [(c.action, c.status) for c in env.sim.contact_changes] == [
        ("status", "closed"),
        ("abandon", None),
    ]


async def test_channels_upsert_list_delete(env: Env) -> None:
    token = await env.token()
    channel = {
        "id": "wh-posts",
        "idOnExternalPlatform": "acc_jungle",
        "channelIntegrationId": "integ-1",
        "realExternalPlatformId": "forum",
        "name": "Watering Hole posts",
        "isPrivate": False,
        "hasTreeStructure": True,
        "hasOutboundFlow": True,
    }
    status, body = await env.call(
        "POST", "/dfo/3.0/channels", {"id": "x", "isPrivate": "no"}, token
    )
    assert status == 400
    missing = {e.split(":")[0] for e in body["errors"]}
    assert {"idOnExternalPlatform", "channelIntegrationId", "name", "isPrivate"} <= missing
    assert (await env.call("POST", "/dfo/3.0/channels", channel, token))[0] == 200
    assert (await env.call("POST", "/dfo/3.0/channels", channel | {"name": "Posts"}, token))[
        0
    ] == 200
    status, listed = await env.call("GET", "/dfo/3.0/channels", None, token)
    assert status == 200
    assert {c["id"]: c["name"] for c in listed} == {CHANNEL: CHANNEL, "wh-posts": "Posts"}
    _, filtered = await env.call("GET", "/dfo/3.0/channels?hasTreeStructure=true", None, token)
    assert [c["id"] for c in filtered] == ["wh-posts"]
    assert (await env.call("DELETE", "/dfo/3.0/channels/wh-posts", None, token))[0] == 204
    assert (await env.call("DELETE", "/dfo/3.0/channels/wh-posts", None, token))[0] == 404
    assert (await env.create(message(), token, channel="wh-posts"))[0] == 404
    assert (await env.call("GET", "/dfo/3.0/channels"))[0] == 401


async def test_channel_upsert_checks_the_integration_when_configured(
    aiohttp_server: ServerFactory, aiohttp_client: ClientFactory
) -> None:
    sim = CxoneSim(CxoneSimConfig(integration_id="integ-1"))
    client = await aiohttp_client(await aiohttp_server(sim.app))
    headers = {"Authorization": f"Bearer {sim.issue_access_token()}"}
    body = {
        "id": "c",
        "idOnExternalPlatform": "c",
        "channelIntegrationId": "other",
        "realExternalPlatformId": "custom",
        "name": "c",
        "isPrivate": True,
        "hasTreeStructure": False,
    }
    resp = await client.post("/dfo/3.0/channels", json=body, headers=headers)
    assert resp.status == 400
    resp = await client.post(
        "/dfo/3.0/channels", json=body | {"channelIntegrationId": "integ-1"}, headers=headers
    )
    assert resp.status == 200


async def test_one_time_token_is_single_use_and_expires(env: Env) -> None:
    token = env.sim.issue_one_time_token(4599, 1201)
    verify = {"brandId": 4599, "userId": 1201, "token": token, "purpose": "channel-integration"}
    status, body = await env.call("POST", "/dfo/3.0/one-time-token/verification", verify)
    assert status == 200
    assert (body["brand"], body["user"]) == ({"id": 4599}, {"id": 1201})
    assert (await env.call("GET", "/dfo/3.0/channels", None, body["accessToken"]))[0] == 200
    assert (await env.call("POST", "/dfo/3.0/one-time-token/verification", verify))[0] == 401

    bad = verify | {"token": env.sim.issue_one_time_token(), "purpose": "login"}
    assert (await env.call("POST", "/dfo/3.0/one-time-token/verification", bad))[0] == 400
    other_user = verify | {"token": env.sim.issue_one_time_token(), "userId": "7"}
    assert (await env.call("POST", "/dfo/3.0/one-time-token/verification", other_user))[0] == 401
    late = verify | {"token": env.sim.issue_one_time_token(), "brandId": "4599"}
    env.clock.advance(CONFIG.one_time_token_ttl)
    assert (await env.call("POST", "/dfo/3.0/one-time-token/verification", late))[0] == 401


# -- the agent side ---------------------------------------------------------------------


@dataclass
class FakeGateway:
    """A tiny gateway: issues tokens (JSON, form or Basic), needs them, answers per spec."""

    tokens: set[str] = field(default_factory=set)
    received: list[tuple[str, dict[str, str], Any]] = field(default_factory=list)
    legacy_answer: Any = None
    deny_with: int = 401

    def app(self) -> web.Application:
        app = web.Application()
        box = "/integration/box"
        app.router.add_post(f"{box}/1.0/token", self.token)
        app.router.add_post(f"{box}/2.0/channel/{{channelId}}/outbound", self.outbound)
        app.router.add_post(f"{box}/1.0/posts/{{postId}}/messages", self.legacy)
        app.router.add_post(
            f"{box}/1.0/channel/{{channelId}}/thread/{{threadId}}/sender-action", self.typing
        )
        return app

    async def token(self, request: web.Request) -> web.Response:
        creds: dict[str, Any]
        if request.content_type == "application/json":
            creds = await request.json()
        else:
            creds = dict(await request.post())
            scheme, _, value = request.headers.get("Authorization", "").partition(" ")
            if scheme == "Basic":
                creds["client_id"], _, creds["client_secret"] = (
                    base64.b64decode(value).decode().partition(":")
                )
        if (creds.get("client_id"), creds.get("client_secret")) != (GW_CLIENT_ID, GW_CLIENT_SECRET):
            return web.json_response({"error": "invalid_client"}, status=401)
        token = f"gw-token-{len(self.tokens) + 1}"
        self.tokens.add(token)
        return web.json_response(
            {"access_token": token, "token_type": "Bearer", "expires_in": 3600},
            headers={"Cache-Control": "no-store"},
        )

    async def _admit(self, request: web.Request, kind: str) -> Any:
        if request.headers.get("Authorization", "").removeprefix("Bearer ") not in self.tokens:
            raise _deny(self.deny_with)
        body = await request.json()
        self.received.append((kind, dict(request.match_info), body))
        return body

    async def outbound(self, request: web.Request) -> web.Response:
        body = await self._admit(request, "outbound")
        recipient = body["endUserRecipients"][0]["idOnExternalPlatform"]
        return web.json_response(
            {
                "message": {
                    "idOnExternalPlatform": f"plat-{len(self.received)}",
                    "createdAtWithMilliseconds": "2025-11-26T12:00:01.000Z",
                    "url": None,
                },
                "thread": {"idOnExternalPlatform": body["thread"]["idOnExternalPlatform"]},
                "endUserIdentities": [{"idOnExternalPlatform": recipient}],
                "recipients": [{"idOnExternalPlatform": recipient}],
            }
        )

    async def legacy(self, request: web.Request) -> web.Response:
        await self._admit(request, "legacy")
        answer = self.legacy_answer or {"idOnExternalPlatform": f"plat-{len(self.received)}"}
        return web.json_response(answer)

    async def typing(self, request: web.Request) -> web.Response:
        await self._admit(request, "typing")
        return web.Response(status=204)


def _deny(status: int) -> web.HTTPException:
    error = web.HTTPUnauthorized if status == 401 else web.HTTPForbidden
    return error(text='{"error": "unauthorized"}', content_type="application/json")


@dataclass
class AgentEnv:
    env: Env
    gateway: FakeGateway

    @property
    def sim(self) -> CxoneSim:
        return self.env.sim


@pytest.fixture
async def agent(env: Env, aiohttp_server: ServerFactory) -> AgentEnv:
    gateway = FakeGateway()
    server = await aiohttp_server(gateway.app())
    env.sim.gateway_box_url = str(server.make_url("/integration/box"))
    env.sim.gateway_client_id = GW_CLIENT_ID
    env.sim.gateway_client_secret = GW_CLIENT_SECRET
    await env.create(message(), env.sim.issue_access_token())  # a customer opened thr-1
    return AgentEnv(env, gateway)


async def test_agent_reply_does_the_401_token_retry_dance(agent: AgentEnv) -> None:
    sim = agent.sim
    status, body = await sim.agent_reply(CHANNEL, "thr-1", "Hi Zed!")
    assert status == 200
    assert body["message"]["idOnExternalPlatform"] == "plat-1"
    assert [(c.kind, c.status, c.authorized) for c in sim.gateway_calls] == [
        ("reply", 401, False),
        ("token", 200, False),
        ("reply", 200, True),
    ]
    assert sim.gateway_calls[1].request_body["client_secret"] == "***"
    assert sim.gateway_token_fetches == 1
    kind, params, sent = agent.gateway.received[0]
    assert (kind, params) == ("outbound", {"channelId": CHANNEL})
    assert sent == {
        "brand": {"id": CONFIG.brand_id},
        "thread": {"idOnExternalPlatform": "thr-1"},
        "messageContent": {"type": "TEXT", "payload": {"text": "Hi Zed!"}},
        "endUserRecipients": [{"idOnExternalPlatform": "usr-1", "name": "Zed", "isPrimary": True}],
        "isReplyToSpecificMessage": False,
        "attachments": [],
    }

    await sim.agent_reply(CHANNEL, "thr-1", "Second", reply_to="msg-1")
    assert sim.gateway_token_fetches == 1  # the cached token was used
    assert agent.gateway.received[-1][2]["replyToMessage"] == {"idOnExternalPlatform": "msg-1"}

    agent.gateway.tokens.clear()  # the gateway restarted and forgot its tokens
    status, _ = await sim.agent_reply(CHANNEL, "thr-1", "Third")
    assert status == 200
    assert sim.gateway_token_fetches == 2
    thread = sim.thread(CHANNEL, "thr-1")
    assert thread is not None
    assert [(e.kind, e.message_id) for e in thread.entries] == [
        ("inbound", "msg-1"),
        ("agent", "plat-1"),
        ("agent", "plat-2"),
        ("agent", "plat-3"),
    ]
    assert sim.violations == []
    # a receipt for a reply is known to the sim
    token = sim.issue_access_token()
    path = f"/dfo/3.0/channels/{CHANNEL}/messages/plat-2/status"
    status, answer = await agent.env.call(
        "PUT", path, {"status": "delivered", "updatedAt": "2025-11-26T12:00:02.000Z"}, token
    )
    assert answer["known"] is True


@pytest.mark.parametrize("style", ["json", "form", "basic"])
async def test_agent_fetches_tokens_in_each_client_auth_style(agent: AgentEnv, style: str) -> None:
    agent.sim.gateway_client_auth = style  # type: ignore[assignment]
    assert (await agent.sim.agent_reply(CHANNEL, "thr-1", "hi"))[0] == 200
    assert agent.sim.gateway_token_fetches == 1


async def test_agent_reply_legacy_and_answer_violations(agent: AgentEnv) -> None:
    sim = agent.sim
    status, body = await sim.agent_reply(CHANNEL, "thr-1", "legacy hi", endpoint="legacy")
    assert (status, body) == (200, {"idOnExternalPlatform": "plat-1"})
    kind, params, sent = agent.gateway.received[0]
    assert (kind, params) == ("legacy", {"postId": "thr-1"})
    assert sent["recipients"][0]["idOnExternalPlatform"] == "usr-1"
    assert sent["authorUser"]["firstName"] == CONFIG.agent_first_name
    assert sim.violations == []

    agent.gateway.legacy_answer = {"id": "no"}
    await sim.agent_reply(CHANNEL, "thr-1", "again", endpoint="legacy")
    assert sim.violations[-1].source == "gateway"
    assert "idOnExternalPlatform: required" in sim.violations[-1].problems
    assert sim.gateway_calls[-1].violations == ("idOnExternalPlatform: required",)
    thread = sim.thread(CHANNEL, "thr-1")
    assert thread is not None
    assert thread.entries[-1].ok is False


async def test_a_403_for_a_missing_token_is_a_violation(agent: AgentEnv) -> None:
    agent.gateway.deny_with = 403
    status, _ = await agent.sim.agent_reply(CHANNEL, "thr-1", "hi")
    assert status == 403
    assert agent.sim.gateway_token_fetches == 0  # CXone only refetches on 401
    assert "CXone refetches tokens on 401 only" in agent.sim.violations[-1].problems[0]


async def test_agent_typing_and_proactive(agent: AgentEnv) -> None:
    sim = agent.sim
    assert (await sim.agent_typing(CHANNEL, "thr-1", True)).status == 204
    kind, params, sent = agent.gateway.received[0]
    assert (kind, params) == ("typing", {"channelId": CHANNEL, "threadId": "thr-1"})
    assert sent["senderAction"] == {"action": "isTypingOn"}
    thread = sim.thread(CHANNEL, "thr-1")
    assert thread is not None and thread.agent_typing
    assert (await sim.agent_typing(CHANNEL, "thr-1", False)).status == 204
    assert not thread.agent_typing

    status, body, thread_id = await sim.agent_proactive(CHANNEL, "usr-9", "Hello from us")
    assert status == 200
    assert thread_id.startswith("proactive-")
    assert body["thread"] == {"idOnExternalPlatform": thread_id}
    sent = agent.gateway.received[-1][2]
    assert sent["thread"] == {"idOnExternalPlatform": thread_id}
    assert sent["endUserRecipients"] == [
        {"idOnExternalPlatform": "usr-9", "name": "usr-9", "isPrimary": True}
    ]
    proactive = sim.thread(CHANNEL, thread_id)
    assert proactive is not None
    assert proactive.contact_ids and proactive.entries[0].kind == "agent"
    assert sim.violations == []


async def test_agent_without_gateway_settings_is_a_clear_error(env: Env) -> None:
    resp = await env.client.post(
        "/_sim/reply", json={"channel_id": CHANNEL, "thread_id": "t", "text": "x"}
    )
    assert resp.status == 400
    assert (await resp.json())["error"] == "gateway_not_configured"


# -- the control API --------------------------------------------------------------------


async def test_control_reply_state_and_bad_input(agent: AgentEnv) -> None:
    client = agent.env.client
    resp = await client.post(
        "/_sim/reply", json={"channel_id": CHANNEL, "thread_id": "thr-1", "text": "hey"}
    )
    assert resp.status == 200
    assert (await resp.json())["status"] == 200
    state = await (await client.get("/_sim/state")).json()
    [thread] = state["threads"]
    assert [(m["kind"], m["message_id"]) for m in thread["messages"]] == [
        ("inbound", "msg-1"),
        ("agent", "plat-1"),
    ]
    assert thread["contact_id"].isdigit()
    assert state["gateway"]["has_token"] is True

    for bad, field_name in [
        ({"thread_id": "t", "text": "x"}, "channel_id"),
        ({"channel_id": CHANNEL, "thread_id": "t", "text": 5}, "text"),
        ({"channel_id": CHANNEL, "thread_id": "t", "text": "x", "endpoint": "fax"}, "endpoint"),
    ]:
        resp = await client.post("/_sim/reply", json=bad)
        assert resp.status == 400
        assert (await resp.json())["message"].startswith(field_name)
    resp = await client.post(
        "/_sim/typing", json={"channel_id": CHANNEL, "thread_id": "thr-1", "on": "yes"}
    )
    assert resp.status == 400
    resp = await client.post("/_sim/reply", data=b"[", headers={"Content-Type": "application/json"})
    assert (resp.status, (await resp.json())["error"]) == (400, "invalid_json")
    resp = await client.post(
        "/_sim/proactive", json={"channel_id": CHANNEL, "recipient_id": "u", "text": "yo"}
    )
    assert (await resp.json())["thread_id"].startswith("proactive-")


async def test_control_changes_long_poll(env: Env) -> None:
    client = env.client
    now = (await (await client.get("/_sim/changes", params={"since": "-5"})).json())["seq"]
    assert now == env.sim.seq  # behind: immediate
    poll = asyncio.create_task(client.get("/_sim/changes", params={"since": str(now)}))
    await env.create(message(), env.sim.issue_access_token())
    resp = await poll
    assert (await resp.json())["seq"] > now
    resp = await client.get("/_sim/changes", params={"since": "x"})
    assert resp.status == 400


async def test_control_one_time_token_script_and_gateway(env: Env) -> None:
    client = env.client
    env.sim.gateway_box_url = "http://gw.example/integration/box"
    issued = await (
        await client.post("/_sim/one-time-token", json={"brand_id": 7, "user_id": "8"})
    ).json()
    assert issued["action_url"].startswith(
        "http://gw.example/integration/action?userId=8&brandId=7&token="
    )
    verify = {"brandId": 7, "userId": 8, "token": issued["token"], "purpose": "channel-integration"}
    assert (await env.call("POST", "/dfo/3.0/one-time-token/verification", verify))[0] == 200

    resp = await client.post(
        "/_sim/script", json={"route": "create_message", "responses": [{"status": 502}]}
    )
    assert (await resp.json())["pending"] == {"create_message": 1}
    assert (await env.create(message(), env.sim.issue_access_token()))[0] == 502
    resp = await client.post("/_sim/script", json={"route": "nope", "responses": []})
    assert resp.status == 400

    resp = await client.post(
        "/_sim/gateway", json={"box_url": "http://127.0.0.1:1/integration/box", "client_id": "a"}
    )
    assert (await resp.json())["token_url"] == "http://127.0.0.1:1/integration/box/1.0/token"
    resp = await client.post("/_sim/gateway", json={"box": "x"})
    assert resp.status == 400
    resp = await client.post("/_sim/channels", json={"id": "x"})
    assert resp.status == 400


async def test_run_standalone_serves_until_cancelled() -> None:
    ready: asyncio.Future[CxoneSim] = asyncio.get_running_loop().create_future()
    task = asyncio.create_task(
        run_standalone(
            "127.0.0.1", 0, CxoneSimConfig(channels=(CHANNEL,)), on_ready=ready.set_result
        )
    )
    sim = await asyncio.wait_for(ready, 5)
    async with (
        aiohttp.ClientSession() as session,
        session.get(f"{sim.base_url}/_sim/state") as resp,
    ):
        assert resp.status == 200
        assert [c["id"] for c in (await resp.json())["channels"]] == [CHANNEL]
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task


async def test_shutdown_releases_held_requests() -> None:
    sim = CxoneSim(CxoneSimConfig(channels=(CHANNEL,)))
    server = TestServer(sim.app)
    await server.start_server()
    headers = {"Authorization": f"Bearer {sim.issue_access_token()}"}
    url = server.make_url(f"/dfo/3.0/channels/{CHANNEL}/messages")
    async with aiohttp.ClientSession() as session:
        sim.hold("create_message")
        pending = asyncio.create_task(session.post(url, json=message(), headers=headers))
        await sim.wait_for(lambda: sim.held("create_message") == 1)
        await server.close()
        resp = await pending
        assert resp.status == 200


async def test_strict_status_ids_refuse_unknown_messages(
    aiohttp_server: ServerFactory, aiohttp_client: ClientFactory
) -> None:
    sim = CxoneSim(CxoneSimConfig(channels=(CHANNEL,), strict_status_ids=True))
    client = await aiohttp_client(await aiohttp_server(sim.app))
    headers = {"Authorization": f"Bearer {sim.issue_access_token()}"}
    body = {"status": "failed", "updatedAt": "2025-11-26T12:00:05.000Z", "reason": "blocked"}
    path = f"/dfo/3.0/channels/{CHANNEL}/messages/ghost/status"
    assert (await client.put(path, json=body, headers=headers)).status == 404
    assert sim.statuses == []


async def test_control_faults_tokens_and_back(env: Env) -> None:
    client = env.client
    token = env.sim.issue_access_token()
    resp = await client.post("/_sim/reset-next", json={"route": "create_message", "n": 1})
    assert (await resp.json())["pending"] == {"create_message": 1}
    with pytest.raises(aiohttp.ClientError):
        await env.create(message(), token)
    assert (
        await client.post("/_sim/reset-next", json={"route": "create_message", "n": 0})
    ).status == 400

    await client.post("/_sim/hold", json={"route": "channel_list", "on": True})
    pending = asyncio.create_task(env.call("GET", "/dfo/3.0/channels", None, token))
    await env.sim.wait_for(lambda: env.sim.held("channel_list") == 1)
    await client.post("/_sim/hold", json={"route": "channel_list", "on": False})
    assert (await pending)[0] == 200

    assert (await client.post("/_sim/expire-tokens")).status == 200
    assert (await env.create(message(), token))[0] == 401

    resp = await client.post("/_sim/channels", json={"id": "extra"} | _channel_fields("extra"))
    assert (await resp.json())["created"] is True
    assert "extra" in env.sim.channels

    assert (await client.get("/_sim/back", params={"status": "ok"})).status == 200
    state = await (await client.get("/_sim/state")).json()
    assert state["back_visits"] == [{"status": "ok"}]
    assert state["hits"]["create_message"] == 2
    assert (await client.get("/_sim/nope")).status == 404


def _channel_fields(channel_id: str) -> dict[str, Any]:
    return {
        "idOnExternalPlatform": channel_id,
        "channelIntegrationId": "integ-1",
        "realExternalPlatformId": "custom",
        "name": channel_id,
        "isPrivate": True,
        "hasTreeStructure": False,
    }


async def test_wait_for_times_out_with_a_clear_error(env: Env) -> None:
    with pytest.raises(TimeoutError, match="did not reach the condition"):
        await env.sim.wait_for(lambda: env.sim.messages, timeout=0)
