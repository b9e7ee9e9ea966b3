"""The sandbox: both simulators, the real gateway and the page, over real HTTP.

Everything goes through the page's own JSON API, as the browser does; waiting is done
with the page's long poll (/api/changes), never with sleeps.
"""

from __future__ import annotations

import asyncio
import os
import re
import signal
import socket
import sys
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any, TypeVar

import aiohttp
import pytest

from gateway.errors import ConfigError, GatewayError
from gateway.sandbox.run import Sandbox, run_sandbox, start_sandbox
from gateway.sandbox.wiring import BOARD_CHANNEL, CHAT_CHANNEL

T = TypeVar("T")
STATIC = Path(__file__).resolve().parent.parent / "gateway" / "sandbox" / "static"
HTML_SINKS = (
    "innerHTML",
    "outerHTML",
    "insertAdjacentHTML",
    "document.write",
    "eval(",
    "Function(",
)
HOSTILE = '<img src=x onerror=alert(1)> "quotes" & </script><script>alert(2)</script> \u202e'


class Page:
    """The browser's view of the sandbox page: its JSON API, nothing else."""

    def __init__(self, session: aiohttp.ClientSession, base: str) -> None:
        self.session = session
        self.base = base

    async def get(self, path: str) -> tuple[int, Any]:
        async with self.session.get(self.base + path) as resp:
            return resp.status, await resp.json()

    async def post(self, path: str, body: Any) -> tuple[int, Any]:
        async with self.session.post(self.base + path, json=body) as resp:
            return resp.status, await resp.json()

    async def act(self, path: str, body: dict[str, Any]) -> Any:
        status, answer = await self.post(path, body)
        assert 200 <= status < 300, answer
        return answer

    async def state(self) -> dict[str, Any]:
        status, state = await self.get("/api/state")
        assert status == 200, state
        return state  # type: ignore[no-any-return]

    async def until(
        self, predicate: Callable[[dict[str, Any]], T | None], seconds: float = 10
    ) -> T:
        """Re-read the state after every change the long poll reports until `predicate` holds."""
        async with asyncio.timeout(seconds):
            while True:
                state = await self.state()
                found = predicate(state)
                if found:
                    return found
                wh, cx = state["watering_hole"]["seq"], state["cxone"]["seq"]
                status, _ = await self.get(f"/api/changes?wh={wh}&cx={cx}")
                assert status == 200


def cx_thread(state: dict[str, Any], channel_id: str, thread_id: str) -> dict[str, Any] | None:
    for thread in state["cxone"]["threads"]:
        if thread["channel_id"] == channel_id and thread["thread_id"] == thread_id:
            return thread  # type: ignore[no-any-return]
    return None


def wh_conversation(state: dict[str, Any], conversation_id: str) -> dict[str, Any]:
    for conv in state["watering_hole"]["conversations"]:
        if conv["id"] == conversation_id:
            return conv  # type: ignore[no-any-return]
    raise AssertionError(f"no conversation {conversation_id}")


def wh_post(state: dict[str, Any], post_id: str) -> dict[str, Any]:
    for post in state["watering_hole"]["posts"]:
        if post["id"] == post_id:
            return post  # type: ignore[no-any-return]
    raise AssertionError(f"no post {post_id}")


@pytest.fixture
async def sandbox(tmp_path: Path) -> AsyncIterator[Sandbox]:
    running = await start_sandbox("127.0.0.1", 0, data_dir=tmp_path)
    try:
        yield running
    finally:
        await running.stop()


@pytest.fixture
async def page(sandbox: Sandbox) -> AsyncIterator[Page]:
    timeout = aiohttp.ClientTimeout(total=30)
    async with aiohttp.ClientSession(timeout=timeout) as session:
        yield Page(session, sandbox.urls["page"])


# -- the page itself ------------------------------------------------------------------


async def test_the_page_and_its_assets_load_from_the_one_origin(page: Page) -> None:
    async with page.session.get(page.base + "/") as resp:
        html = await resp.text()
        assert resp.status == 200 and resp.content_type == "text/html"
        csp = resp.headers["Content-Security-Policy"]
        assert "script-src 'self'" in csp and "default-src 'none'" in csp
        assert resp.headers["X-Content-Type-Options"] == "nosniff"
    assert "The Watering Hole" in html and "CXone agent desktop" in html
    for name, ctype in (("sandbox.js", "text/javascript"), ("sandbox.css", "text/css")):
        async with page.session.get(f"{page.base}/static/{name}") as resp:
            assert resp.status == 200 and resp.content_type == ctype
    for path in ("/static/nope.js", "/static/%2e%2e%2fpage.py", "/static/sandbox.html"):
        async with page.session.get(page.base + path) as resp:
            assert resp.status == 404
            assert (await resp.json())["error"] == "not_found"


def test_the_page_never_turns_data_into_html_and_loads_nothing_from_elsewhere() -> None:
    js = (STATIC / "sandbox.js").read_text()
    for sink in HTML_SINKS:
        assert sink not in js, sink
    html = (STATIC / "sandbox.html").read_text()
    assert not re.search(r"<script(?![^>]*\bsrc=)", html), "no inline script (the CSP forbids it)"
    assert not re.search(r"\son[a-z]+\s*=", html), "no inline event handlers"
    for name in ("sandbox.html", "sandbox.js", "sandbox.css"):
        assert not re.search(r"https?://", (STATIC / name).read_text()), f"{name}: no CDN"


async def test_info_names_the_channels_and_the_addresses(page: Page, sandbox: Sandbox) -> None:
    status, info = await page.get("/api/info")
    assert status == 200
    assert info["channels"] == {"chat": CHAT_CHANNEL, "board": BOARD_CHANNEL}
    assert info["urls"]["webhook"] == sandbox.urls["webhook"]
    assert info["urls"]["webhook"].endswith("/webhooks/watering-hole")
    assert info["admin_token"] == sandbox.secrets.admin_token
    assert sandbox.subscribed, "the webhook subscription handshake succeeded"
    banner = sandbox.banner()
    for key in ("page", "gateway_cxone", "webhook", "cxone_sim", "watering_hole_sim"):
        assert sandbox.urls[key] in banner
    assert sandbox.secrets.admin_token in banner


async def test_the_cxone_simulator_has_both_channels_and_knows_the_gateway(
    page: Page, sandbox: Sandbox
) -> None:
    state = await page.state()
    channels = {c["id"]: c for c in state["cxone"]["channels"]}
    assert channels[CHAT_CHANNEL]["isPrivate"] is True
    assert channels[BOARD_CHANNEL]["hasTreeStructure"] is True
    assert state["cxone"]["gateway"]["box_url"] == sandbox.urls["integration_box"]
    assert state["watering_hole"]["webhook"]["url"] == sandbox.urls["webhook"]
    assert state["watering_hole"]["webhook"]["auto"] is True


# -- end to end: chat -----------------------------------------------------------------


async def test_a_dm_reaches_the_agent_and_the_reply_reaches_the_animal(page: Page) -> None:
    sent = await page.act("/api/wh/dm", {"user_id": "usr_zebra", "text": HOSTILE})
    conv, msg = sent["conversation_id"], sent["message_id"]

    def dm_arrived(state: dict[str, Any]) -> dict[str, Any] | None:
        thread = cx_thread(state, CHAT_CHANNEL, conv)
        return thread if thread and thread["messages"] else None

    thread = await page.until(dm_arrived)
    first = thread["messages"][0]
    assert first["kind"] == "inbound" and first["message_id"] == msg
    assert first["text"] == HOSTILE  # carried verbatim; the page escapes it on display
    assert thread["end_user"]["idOnExternalPlatform"] == "usr_zebra"

    answer = await page.act(
        "/api/cx/reply", {"channel_id": CHAT_CHANNEL, "thread_id": conv, "text": "Hello Zara!"}
    )
    assert answer["status"] == 200, answer
    platform_id = answer["body"]["message"]["idOnExternalPlatform"]

    state = await page.state()
    reply = wh_conversation(state, conv)["messages"][-1]
    assert reply["author_id"] == "usr_jungle" and reply["text"] == "Hello Zara!"
    assert reply["id"] == platform_id
    agent_entry = cx_thread(state, CHAT_CHANNEL, conv)["messages"][-1]  # type: ignore[index]
    assert agent_entry["kind"] == "agent" and agent_entry["message_id"] == platform_id


async def test_typing_and_receipts_flow_through_the_gateway(page: Page) -> None:
    sent = await page.act("/api/wh/dm", {"user_id": "usr_hippo", "text": "anyone there?"})
    conv = sent["conversation_id"]
    await page.until(lambda s: cx_thread(s, CHAT_CHANNEL, conv))

    typing = await page.act(
        "/api/cx/typing", {"channel_id": CHAT_CHANNEL, "thread_id": conv, "on": True}
    )
    assert typing["status"] == 204, typing
    state = await page.state()
    assert wh_conversation(state, conv)["typing"]["on"] is True

    answer = await page.act(
        "/api/cx/reply", {"channel_id": CHAT_CHANNEL, "thread_id": conv, "text": "Yes!"}
    )
    platform_id = answer["body"]["message"]["idOnExternalPlatform"]
    await page.act("/api/wh/receipt", {"message_id": platform_id, "kind": "read"})

    def seen(state: dict[str, Any]) -> list[str] | None:
        thread = cx_thread(state, CHAT_CHANNEL, conv) or {"messages": []}
        for entry in thread["messages"]:
            if entry["message_id"] == platform_id and entry["statuses"]:
                return [s["status"] for s in entry["statuses"]]
        return None

    assert await page.until(seen) == ["seen"]


async def test_a_proactive_message_opens_a_conversation_with_the_animal(page: Page) -> None:
    answer = await page.act(
        "/api/cx/proactive",
        {"channel_id": CHAT_CHANNEL, "recipient_id": "usr_meerkat", "text": "Psst, Milo"},
    )
    assert answer["status"] == 200, answer
    state = await page.state()
    conversations = state["watering_hole"]["conversations"]
    (conv,) = [c for c in conversations if "usr_meerkat" in c["participants"]]
    assert [m["text"] for m in conv["messages"]] == ["Psst, Milo"]


# -- end to end: the board ------------------------------------------------------------


async def test_a_post_and_its_comment_become_one_board_thread_and_the_agent_answers_the_comment(
    page: Page,
) -> None:
    post_id = (
        await page.act(
            "/api/wh/post", {"user_id": "usr_lion", "title": "Dry season", "body": "Water?"}
        )
    )["post_id"]
    comment_id = (
        await page.act(
            "/api/wh/comment", {"user_id": "usr_giraffe", "post_id": post_id, "body": "Same q"}
        )
    )["comment_id"]

    def both_arrived(state: dict[str, Any]) -> dict[str, Any] | None:
        thread = cx_thread(state, BOARD_CHANNEL, post_id)
        return thread if thread and len(thread["messages"]) >= 2 else None

    thread = await page.until(both_arrived)
    post_entry, comment_entry = thread["messages"][:2]
    assert post_entry["message_id"] == post_id and post_entry["text"] == "Water?"
    assert post_entry["body"]["title"] == "Dry season"
    assert comment_entry["message_id"] == comment_id and comment_entry["text"] == "Same q"
    assert comment_entry["body"]["authorEndUserIdentity"]["idOnExternalPlatform"] == "usr_giraffe"

    answer = await page.act(
        "/api/cx/reply",
        {
            "channel_id": BOARD_CHANNEL,
            "thread_id": post_id,
            "text": "The river is full.",
            "reply_to": comment_id,
        },
    )
    assert answer["status"] == 200, answer
    post = wh_post(await page.state(), post_id)
    (top,) = post["comments"]
    assert top["id"] == comment_id
    (nested,) = top["replies"]
    assert nested["author_id"] == "usr_jungle" and nested["body"] == "The river is full."
    assert nested["id"] == answer["body"]["message"]["idOnExternalPlatform"]


# -- the proxy refuses what it should -------------------------------------------------


async def test_the_long_poll_returns_once_either_side_changes(page: Page) -> None:
    state = await page.state()
    wh, cx = state["watering_hole"]["seq"], state["cxone"]["seq"]
    poll = asyncio.create_task(page.get(f"/api/changes?wh={wh}&cx={cx}"))
    await page.act("/api/wh/dm", {"user_id": "usr_lion", "text": "wake up"})
    async with asyncio.timeout(10):
        status, changes = await poll
    assert status == 200 and changes["changed"] is True and changes["wh"] > wh


async def test_bad_input_gets_a_json_error_never_a_traceback(page: Page) -> None:
    cases: list[tuple[str, str, dict[str, Any], int, str | None]] = [
        ("POST", "/api/wh/reply", {"json": {}}, 404, "unknown_action"),
        ("POST", "/api/cx/dm", {"json": {}}, 404, "unknown_action"),
        ("POST", "/api/cx/script", {"json": {}}, 404, "unknown_action"),
        ("POST", "/api/wh/dm", {"data": b"{not json", "headers": _JSON}, 400, "invalid_json"),
        ("POST", "/api/wh/dm", {"json": ["a", "list"]}, 400, "invalid_body"),
        ("POST", "/api/wh/dm", {"data": b"user_id=x", "headers": _FORM}, 400, None),
        ("POST", "/api/wh/dm", {"json": {"text": "no user"}}, 400, None),
        ("POST", "/api/wh/dm", {"json": {"user_id": "usr_nobody", "text": "hi"}}, 404, None),
        ("POST", "/api/cx/typing", {"json": {"channel_id": CHAT_CHANNEL}}, 400, None),
        ("POST", "/api/wh/dm", {"data": b"x" * 70_000, "headers": _JSON}, 413, None),
        ("GET", "/api/wh/dm", {}, 405, None),
        ("GET", "/api/changes?wh=soon", {}, 400, "invalid_query"),
        ("GET", "/api/nothing", {}, 404, None),
        ("POST", "/api/wh/dm", {"json": {}, "headers": _EVIL_ORIGIN}, 403, "forbidden_origin"),
        ("GET", "/api/state", {"headers": {"Host": "evil.example:8000"}}, 403, "forbidden_host"),
    ]
    for method, path, kwargs, status, code in cases:
        async with page.session.request(method, page.base + path, **kwargs) as resp:
            text = await resp.text()
            assert resp.status == status, (path, kwargs, text)
            assert resp.content_type == "application/json", (path, text)
            assert "Traceback" not in text
            body = await resp.json()
            assert isinstance(body["error"], str) and isinstance(body["message"], str)
            if code is not None:
                assert body["error"] == code, (path, body)


_JSON = {"Content-Type": "application/json"}
_FORM = {"Content-Type": "application/x-www-form-urlencoded"}
_EVIL_ORIGIN = {"Origin": "http://evil.example"}


# -- starting and stopping ------------------------------------------------------------


async def test_run_sandbox_serves_until_cancelled_and_cleans_up(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    ready = asyncio.Event()
    started: list[Sandbox] = []
    task = asyncio.create_task(
        run_sandbox(
            "127.0.0.1", 0, ready=ready, data_dir=tmp_path, on_ready=started.append, log_level=None
        )
    )
    async with asyncio.timeout(20):
        await ready.wait()
    (sandbox,) = started
    async with aiohttp.ClientSession() as session:
        async with session.get(sandbox.urls["page"] + "/") as resp:
            assert resp.status == 200
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        with pytest.raises(aiohttp.ClientConnectionError):
            async with session.get(sandbox.urls["page"] + "/"):
                pass
    out = capsys.readouterr()
    assert sandbox.urls["page"] in out.out and "Ctrl-C" in out.out
    assert "Traceback" not in out.err


async def test_a_busy_page_port_is_a_clear_error(tmp_path: Path) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        with pytest.raises(GatewayError, match="cannot serve the sandbox page"):
            await start_sandbox("127.0.0.1", port, data_dir=tmp_path)


async def test_a_missing_mappings_directory_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="not a directory"):
        await start_sandbox("127.0.0.1", 0, mappings=tmp_path / "nope", data_dir=tmp_path)


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
async def test_the_command_stops_cleanly_on_a_signal(sig: signal.Signals) -> None:
    root = Path(__file__).resolve().parent.parent
    env = {**os.environ, "PYTHONPATH": str(root)}
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "gateway.cli", "sandbox", "--port", "0",
        cwd=root, env=env, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    assert proc.stdout is not None
    lines: list[str] = []
    try:
        async with asyncio.timeout(30):
            while not lines or "Ctrl-C" not in lines[-1]:
                line = await proc.stdout.readline()
                assert line, "the sandbox ended before it was up"
                lines.append(line.decode())
        page_url = next(line.split()[-1] for line in lines if "Sandbox page" in line)
        async with aiohttp.ClientSession() as session, session.get(page_url) as resp:
            assert resp.status == 200
        proc.send_signal(sig)
        async with asyncio.timeout(30):
            rest, err = await proc.communicate()
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
    assert proc.returncode == 0, err.decode()
    assert "sandbox stopped" in rest.decode()
    assert "Traceback" not in err.decode(), err.decode()
    files = next(line.split()[1] for line in lines if line.strip().startswith("Files"))
    assert not Path(files).exists(), "the temporary directory is removed"
