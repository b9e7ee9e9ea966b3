"""Issue 2: the token endpoint as CXone uses it (lazy fetch on 401) and its refusals."""

from __future__ import annotations

import base64

import aiohttp

from gateway.clock import FakeClock
from tests.harness import CHAT_CHANNEL, SECRETS, World


async def test_first_call_gets_401_then_a_token_then_the_retry_succeeds(world: World) -> None:
    conv, msg = await world.dm("usr_zebra", "hi")
    await world.delivered(CHAT_CHANNEL, msg)
    status, _ = await world.cxone.agent_reply(CHAT_CHANNEL, conv, "hello")
    assert status == 200
    calls = [c for c in world.cxone.gateway_calls if c.kind != "token"]
    assert [c.status for c in calls[:2]] == [401, 200]
    assert world.cxone.gateway_token_fetches == 1
    status, _ = await world.cxone.agent_reply(CHAT_CHANNEL, conv, "hello again")
    assert status == 200 and world.cxone.gateway_token_fetches == 1  # cached token reused


async def _token(world: World, **kw: object) -> tuple[int, dict[str, object], dict[str, str]]:
    async with aiohttp.ClientSession() as s, s.post(world.box_url + "/1.0/token", **kw) as r:  # type: ignore[arg-type]
        return r.status, await r.json(), dict(r.headers)


async def test_token_endpoint_accepts_json_form_and_basic(world: World) -> None:
    ok = {
        "grant_type": "client_credentials",
        "client_id": SECRETS.byoc_client_id,
        "client_secret": SECRETS.byoc_client_secret,
    }
    for kw in (
        {"json": ok},
        {"data": ok},
        {
            "data": {"grant_type": "client_credentials"},
            "headers": {
                "Authorization": "Basic "
                + base64.b64encode(
                    f"{SECRETS.byoc_client_id}:{SECRETS.byoc_client_secret}".encode()
                ).decode()
            },
        },
    ):
        status, body, headers = await _token(world, **kw)
        assert status == 200, body
        assert body["token_type"] == "Bearer" and body["expires_in"] == 3600
        assert headers["Cache-Control"] == "no-store"


async def test_wrong_client_secret_gets_invalid_client(world: World) -> None:
    status, body, headers = await _token(
        world,
        json={
            "grant_type": "client_credentials",
            "client_id": SECRETS.byoc_client_id,
            "client_secret": "nope",
        },
    )
    assert status == 401
    assert body["error"] == "invalid_client"
    assert "WWW-Authenticate" in headers
    status, body, _ = await _token(world, json={"grant_type": "authorization_code"})
    assert status == 400 and body["error"] == "unsupported_grant_type"


async def test_an_expired_token_gets_401_and_cxone_refreshes(
    world: World, clock: FakeClock
) -> None:
    conv, msg = await world.dm("usr_zebra", "expiry")
    await world.delivered(CHAT_CHANNEL, msg)
    assert (await world.cxone.agent_reply(CHAT_CHANNEL, conv, "before")).status == 200
    clock.advance(3601)
    status, _ = await world.cxone.agent_reply(CHAT_CHANNEL, conv, "after")
    assert status == 200
    assert world.cxone.gateway_token_fetches == 2
    replies = [c.status for c in world.cxone.gateway_calls if c.kind != "token"]
    assert replies[-2:] == [401, 200]


async def test_missing_or_garbage_bearer_is_401_never_403(world: World) -> None:
    url = f"{world.box_url}/2.0/channel/{CHAT_CHANNEL}/outbound"
    async with aiohttp.ClientSession() as s:
        for headers in ({}, {"Authorization": "Bearer junk"}, {"Authorization": "Basic eDp5"}):
            async with s.post(url, json={}, headers=headers) as r:
                assert r.status == 401
                assert r.headers["WWW-Authenticate"].startswith("Bearer")
                assert (await r.json())["error"] == "invalid_token"
