"""Issue 6.2 and 6.4 in a real browser: the Action/Reconnect/Remove URLs and the status
page, driven through Debian's headless chromium against the sandbox.

Screenshots of every step land in tests/artifacts/browser/<test>/.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import aiohttp

from gateway.sandbox.run import Sandbox
from gateway.sandbox.wiring import BOARD_CHANNEL, CHAT_CHANNEL
from tests.browser.cdp import Browser, Page

STATES = (
    "Object.fromEntries([...document.querySelectorAll('tr[data-state]')]"
    ".map(r => [r.dataset.channel, r.dataset.state]))"
)


async def cxone_link(sandbox: Sandbox, page: str = "action") -> dict[str, Any]:
    """What CXone's admin UI does: mint a one-time token and open the integration's URL."""
    async with (
        aiohttp.ClientSession() as http,
        http.post(sandbox.urls["cxone_sim"] + "/_sim/one-time-token", json={}) as resp,
    ):
        info: dict[str, Any] = await resp.json()
    info["url"] = info["action_url"].replace("/integration/action?", f"/integration/{page}?")
    return info


async def states(page: Page) -> dict[str, str]:
    found: dict[str, str] = await page.evaluate(STATES)
    return found


async def test_the_action_url_creates_and_removes_channels(
    browser: Browser, sandbox: Sandbox, shots: Path
) -> None:
    cx = sandbox.cxone
    cx.channels.clear()  # a tenant that has none of the integration's channels yet
    link = await cxone_link(sandbox)
    page = await browser.new_page()

    await page.goto(link["url"])
    assert (await page.url).endswith("/integration/action/channels")  # the token left the URL
    assert await states(page) == {CHAT_CHANNEL: "missing", BOARD_CHANNEL: "missing"}
    await page.screenshot(shots / "1-channels-missing.png")

    await page.click(f'tr[data-channel="{CHAT_CHANNEL}"] button[value="create"]')
    assert await page.text("#flash") == f"Channel {CHAT_CHANNEL} created."
    assert cx.channels[CHAT_CHANNEL]["isPrivate"] is True
    assert cx.channels[CHAT_CHANNEL]["hasOutboundFlow"] is True
    await page.click(f'tr[data-channel="{BOARD_CHANNEL}"] button[value="create"]')
    assert cx.channels[BOARD_CHANNEL]["hasTreeStructure"] is True
    assert await states(page) == {CHAT_CHANNEL: "in_sync", BOARD_CHANNEL: "in_sync"}
    await page.screenshot(shots / "2-channels-created.png")

    await page.click(f'tr[data-channel="{BOARD_CHANNEL}"] button[value="remove"]')
    assert await page.text("#flash") == f"Channel {BOARD_CHANNEL} removed."
    assert set(cx.channels) == {CHAT_CHANNEL}
    assert await states(page) == {CHAT_CHANNEL: "in_sync", BOARD_CHANNEL: "missing"}
    await page.screenshot(shots / "3-board-removed.png")

    await page.click("#back")
    assert await page.url == link["back_url"]
    assert cx.state.back_visits == [{}]
    await page.screenshot(shots / "4-back-in-cxone.png")


async def test_reconnect_and_remove_urls_act_and_return_to_cxone(
    browser: Browser, sandbox: Sandbox, shots: Path
) -> None:
    cx = sandbox.cxone
    cx.channels.clear()
    page = await browser.new_page()

    reconnect = await cxone_link(sandbox, "reconnect")
    await page.goto(reconnect["url"])
    assert await page.url == reconnect["back_url"]
    assert set(cx.channels) == {CHAT_CHANNEL, BOARD_CHANNEL}
    await page.screenshot(shots / "1-after-reconnect.png")

    remove = await cxone_link(sandbox, "remove")
    await page.goto(remove["url"])
    assert await page.url == remove["back_url"]
    assert cx.channels == {}
    assert len(cx.state.back_visits) == 2

    await page.goto(remove["url"])  # the same link again: the token is spent
    assert "Link expired" in await page.text("h1")
    assert "already used" in await page.text("#message")
    await page.screenshot(shots / "2-link-used-twice.png")


async def test_the_status_page_behind_the_login_form(
    browser: Browser, sandbox: Sandbox, shots: Path
) -> None:
    wh, cx = sandbox.watering_hole, sandbox.cxone
    conv, msg = await wh.user_sends_dm("usr_zebra", "Is the water clean?")
    await cx.wait_for(lambda: cx.deliveries(CHAT_CHANNEL, msg))
    assert (await cx.agent_reply(CHAT_CHANNEL, conv, "Crystal clear.")).status == 200
    page = await browser.new_page()
    status_url = sandbox.urls["gateway_cxone"] + "/status"

    await page.goto(status_url)
    assert (await page.url).endswith("/status/login")
    await page.screenshot(shots / "1-login.png")

    await page.type("#token", "not-the-token")
    await page.click("button[type=submit]")
    assert await page.text("#error") == "That is not the admin token."

    await page.type("#token", sandbox.secrets.admin_token)
    await page.click("button[type=submit]")
    assert await page.url == status_url
    cells = await page.evaluate(
        f"""Object.fromEntries([...document.querySelectorAll(
            'tr[data-channel="{CHAT_CHANNEL}"] td[data-field]')]
            .map(td => [td.dataset.field, td.innerText]))"""
    )
    assert cells == {"in": "1", "out": "1", "errors": "0", "dead": "0"}
    assert await page.exists("#routes") and await page.exists("#certificates")
    assert "ok" in await page.text("#reload-state")
    await page.screenshot(shots / "2-status.png")

    # the session cookie is HttpOnly: page scripts cannot read it
    assert "byoc_admin" not in await page.evaluate("document.cookie")

    await page.click("#logout")
    assert (await page.url).endswith("/status/login")
    await page.goto(status_url)
    assert (await page.url).endswith("/status/login")
