"""Issue 6.2: the Action, Reconnect and Remove URLs, over HTTP (tests/browser/ drives a real
browser through the same pages)."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from dataclasses import dataclass
from html import unescape
from urllib.parse import urlencode

import aiohttp
import pytest

from gateway.clock import FakeClock
from gateway.html import external_url
from tests.harness import BOARD_CHANNEL, CHAT_CHANNEL, World

CSRF = re.compile(r'name="csrf" value="([^"]+)"')


@dataclass
class Admin:
    """An admin's browser: a session with cookies, not following redirects by itself."""

    world: World
    http: aiohttp.ClientSession

    @property
    def gateway(self) -> str:
        return self.world.running.urls["cxone"]

    @property
    def back_url(self) -> str:
        return f"{self.world.cxone_url}/_sim/back"

    def link(self, page: str = "action", back: str | None = None, **over: str) -> str:
        """The URL CXone opens, with a fresh one-time token."""
        token = self.world.cxone.issue_one_time_token()
        query = {
            "userId": "1201",
            "brandId": "4599",
            "token": token,
            "backUrl": self.back_url if back is None else back,
            **over,
        }
        return f"{self.gateway}/integration/{page}?{urlencode(query)}"

    async def get(self, url: str) -> tuple[int, str, aiohttp.ClientResponse]:
        async with self.http.get(url, allow_redirects=False) as resp:
            return resp.status, await resp.text(), resp

    async def open_page(self) -> str:
        status, _, resp = await self.get(self.link())
        assert status == 303, status
        assert resp.headers["Location"] == "/integration/action/channels"
        status, html, _ = await self.get(self.gateway + "/integration/action/channels")
        assert status == 200, html
        return html

    async def post(self, html: str, op: str, channel: str, csrf: str | None = None) -> int:
        found = CSRF.search(html)
        assert found is not None, "the page has no form"
        data = {"op": op, "channel": channel, "csrf": found[1] if csrf is None else csrf}
        async with self.http.post(
            self.gateway + "/integration/action/channels", data=data, allow_redirects=False
        ) as resp:
            return resp.status


@pytest.fixture
async def admin(world: World) -> AsyncIterator[Admin]:
    world.cxone.channels.clear()  # start with a tenant that has none of the channels
    jar = aiohttp.CookieJar(unsafe=True)  # cookies on 127.0.0.1
    async with aiohttp.ClientSession(cookie_jar=jar) as http:
        yield Admin(world, http)


def rows(html: str) -> dict[str, str]:
    return dict(re.findall(r'data-channel="([^"]+)" data-state="([^"]+)"', html))


async def test_the_action_url_verifies_the_token_and_lists_the_channels(admin: Admin) -> None:
    status, _, resp = await admin.get(admin.link())
    assert status == 303
    cookie = resp.cookies["byoc_action"]
    assert cookie["httponly"] and cookie["samesite"] == "Lax"
    assert cookie["path"] == "/integration/action"
    assert admin.world.cxone.hits("one_time_token") == 1

    status, html, resp = await admin.get(admin.gateway + "/integration/action/channels")
    assert status == 200
    assert rows(html) == {CHAT_CHANNEL: "missing", BOARD_CHANNEL: "missing"}
    assert "CXone brand 4599, user 1201" in html
    assert f'href="{admin.back_url}"' in html
    assert "frame-ancestors 'none'" in resp.headers["Content-Security-Policy"]
    assert resp.headers["Cache-Control"] == "no-store"


async def test_create_and_remove_change_the_tenants_channels(admin: Admin) -> None:
    cx = admin.world.cxone
    html = await admin.open_page()
    assert await admin.post(html, "create", CHAT_CHANNEL) == 303
    assert cx.channels[CHAT_CHANNEL]["isPrivate"] is True
    assert cx.channels[CHAT_CHANNEL]["hasOutboundFlow"] is True

    _, html, _ = await admin.get(
        admin.gateway + f"/integration/action/channels?done=created&channel={CHAT_CHANNEL}"
    )
    assert f"Channel {CHAT_CHANNEL} created." in html
    assert rows(html) == {CHAT_CHANNEL: "in_sync", BOARD_CHANNEL: "missing"}

    cx.channels[CHAT_CHANNEL]["name"] = "changed in CXone"
    _, html, _ = await admin.get(admin.gateway + "/integration/action/channels")
    assert rows(html)[CHAT_CHANNEL] == "differs"
    assert await admin.post(html, "update", CHAT_CHANNEL) == 303
    assert cx.channels[CHAT_CHANNEL]["name"] == "Watering Hole DMs"

    assert await admin.post(html, "remove", CHAT_CHANNEL) == 303
    assert CHAT_CHANNEL not in cx.channels
    assert await admin.post(html, "remove", CHAT_CHANNEL) == 404  # already gone


async def test_forms_need_the_sessions_csrf_token(admin: Admin) -> None:
    html = await admin.open_page()
    assert await admin.post(html, "create", CHAT_CHANNEL, csrf="forged") == 403
    assert await admin.post(html, "create", CHAT_CHANNEL, csrf="") == 403
    assert admin.world.cxone.channels == {}
    assert await admin.post(html, "create", "not-declared") == 404
    assert await admin.post(html, "explode", CHAT_CHANNEL) == 400
    assert admin.world.cxone.channels == {}


async def test_without_a_valid_session_nothing_happens(admin: Admin, clock: FakeClock) -> None:
    html = await admin.open_page()
    good = next(c for c in admin.http.cookie_jar if c.key == "byoc_action").value
    page = admin.gateway + "/integration/action/channels"

    async def status_with(cookie: str) -> int:
        headers = {"Cookie": f"byoc_action={cookie}"}
        async with (
            aiohttp.ClientSession(cookie_jar=aiohttp.DummyCookieJar()) as other,
            other.get(page, headers=headers) as resp,
        ):
            return resp.status

    # a forged or altered cookie is refused; the real one works from anywhere it is sent
    assert await status_with(good) == 200
    for forged in (good[:-2] + "xx", good.replace("v1.", "v2."), "v1.e30.AAAA", ""):
        assert await status_with(forged) == 401
    # sessions end after 15 minutes
    clock.advance(901)
    assert (await admin.get(admin.gateway + "/integration/action/channels"))[0] == 401
    assert await admin.post(html, "create", CHAT_CHANNEL) == 401
    assert admin.world.cxone.channels == {}


async def test_a_used_wrong_or_incomplete_link_is_refused(admin: Admin) -> None:
    link = admin.link()
    assert (await admin.get(link))[0] == 303
    status, html, resp = await admin.get(link)  # one-time: the second visit fails
    assert status == 403 and "expired or was already used" in html
    assert "Back to CXone" not in html  # unverified: no link to wherever backUrl points
    assert "Set-Cookie" not in resp.headers
    status, html, resp = await admin.get(admin.link(token="guessed"))
    assert status == 403 and "Set-Cookie" not in resp.headers
    status, html, _ = await admin.get(f"{admin.gateway}/integration/action?userId=1")
    assert status == 400
    # a refused one-time token is not the gateway's token: it keeps the one it has
    assert admin.world.cxone.token_fetches == 1


async def test_repeated_failures_are_throttled(admin: Admin) -> None:
    statuses = [(await admin.get(admin.link(token=f"bad{i}")))[0] for i in range(10)]
    assert statuses[0] == 403 and statuses[-1] == 429
    calls = admin.world.cxone.hits("one_time_token")
    assert calls < 10  # throttled links never reach CXone


async def test_cxone_unavailable_gives_a_page_not_a_traceback(admin: Admin) -> None:
    admin.world.cxone.script("one_time_token", [(503, {}, {"error": "down"})])
    status, html, resp = await admin.get(admin.link())
    assert status == 502 and resp.content_type == "text/html"
    assert "could not reach CXone" in html


async def test_reconnect_creates_every_channel_and_returns_to_cxone(admin: Admin) -> None:
    cx = admin.world.cxone
    status, _, resp = await admin.get(admin.link("reconnect"))
    assert status == 303 and resp.headers["Location"] == admin.back_url
    assert set(cx.channels) == {CHAT_CHANNEL, BOARD_CHANNEL}
    status, _, resp = await admin.get(admin.link("remove"))
    assert status == 303 and resp.headers["Location"] == admin.back_url
    assert cx.channels == {}


@pytest.mark.parametrize(
    "back",
    [
        "javascript:alert(1)",
        "//evil.example/x",
        "/relative",
        "data:text/html,hi",
        "https://user:pw@evil.example/",
        "https://ok.example/\nx",
        "",
    ],
)
async def test_a_back_url_that_is_not_absolute_http_is_never_followed(
    admin: Admin, back: str
) -> None:
    status, html, resp = await admin.get(admin.link("reconnect", back=back))
    assert status == 200 and "Location" not in resp.headers
    assert "Back to CXone" not in html
    assert set(admin.world.cxone.channels) == {CHAT_CHANNEL, BOARD_CHANNEL}


def test_external_url() -> None:
    assert external_url("https://cxone.example/back?x=1") == "https://cxone.example/back?x=1"
    assert external_url("http://127.0.0.1:9/_sim/back") == "http://127.0.0.1:9/_sim/back"
    for bad in ("javascript:x", "https://", "https://h:99999/", "ftp://h/", None, "x" * 3000):
        assert external_url(bad) is None


async def test_names_from_cxone_are_escaped(admin: Admin) -> None:
    admin.world.cxone.dfo.upsert_channel(
        {
            "id": "evil<b>",
            "idOnExternalPlatform": "x",
            "channelIntegrationId": "jungle",  # this integration's (no integration_id set)
            "realExternalPlatformId": "chat",
            "name": "<script>alert(1)</script>",
            "isPrivate": True,
            "hasTreeStructure": False,
        }
    )
    html = await admin.open_page()
    assert "<script>alert" not in html
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in html
    assert rows(html)["evil&lt;b&gt;"] == "not_declared"
    assert unescape("evil&lt;b&gt;") == "evil<b>"
    # a left-over channel of the integration can be removed from the page
    assert await admin.post(html, "remove", "evil<b>") == 303
    assert "evil<b>" not in admin.world.cxone.channels


async def test_the_back_url_cannot_be_swapped_after_verification(admin: Admin) -> None:
    await admin.open_page()
    _, html, _ = await admin.get(
        admin.gateway + "/integration/action/channels?backUrl=https://evil.example/"
    )
    assert "evil.example" not in html
    assert f'href="{admin.back_url}"' in html


@pytest.mark.parametrize(
    ("content_type", "body"),
    [
        ("multipart/form-data", b"x"),
        ("multipart/form-data; boundary=zz", b"--zz\r\njunk"),
        ("application/x-www-form-urlencoded", b"\xff\xfe=%%%"),
        ("application/x-www-form-urlencoded", b"&".join([b"a=1"] * 50)),
        ("text/plain", b"op=create"),
    ],
)
async def test_a_body_that_is_not_a_small_form_is_refused_cleanly(
    admin: Admin, content_type: str, body: bytes
) -> None:
    await admin.open_page()
    base = admin.gateway
    for path in ("/integration/action/channels", "/status/login", "/status/logout"):
        async with admin.http.post(
            base + path, data=body, headers={"Content-Type": content_type}, allow_redirects=False
        ) as resp:
            assert resp.status in (303, 400, 403), (path, resp.status, await resp.text())
    assert admin.world.cxone.channels == {}
