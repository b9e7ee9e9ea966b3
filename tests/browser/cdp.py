"""A small Chrome DevTools Protocol driver over aiohttp's websocket client.

Enough to drive Debian's headless chromium through the gateway's pages like an admin:
open a URL, wait for the page to load, click with real mouse events, type, read the
DOM and take screenshots. No selenium, no driver binary.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import itertools
import re
import shutil
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import aiohttp

TIMEOUT = 15.0
FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-dev-shm-usage",
    "--no-first-run",
    "--no-default-browser-check",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-extensions",
    "--password-store=basic",
    "--disable-crash-reporter",
    "--disable-breakpad",
    "--no-zygote",  # with --no-sandbox: no helper processes left behind for init to reap
    "--window-size=1200,900",
    "--remote-debugging-port=0",
)
_LISTENING = re.compile(rb"DevTools listening on (ws://\S+)")


def find_chromium() -> str | None:
    """Debian's chromium, if installed."""
    for name in ("chromium", "chromium-browser"):
        path = shutil.which(name)
        if path:
            return path
    return None


class CdpError(RuntimeError):
    """The browser answered a command with an error, or a page script threw."""


class Connection:
    """One websocket to the browser: commands by id, events by (method, session)."""

    def __init__(self, http: aiohttp.ClientSession, ws: aiohttp.ClientWebSocketResponse) -> None:
        self._http = http
        self._ws = ws
        self._ids = itertools.count(1)
        self._pending: dict[int, asyncio.Future[dict[str, Any]]] = {}
        self._waiters: list[tuple[str, str | None, asyncio.Future[dict[str, Any]]]] = []
        self._reader = asyncio.create_task(self._read(), name="cdp-reader")

    async def _read(self) -> None:
        async for msg in self._ws:
            if msg.type != aiohttp.WSMsgType.TEXT:
                continue
            data = msg.json()
            if "id" in data:
                future = self._pending.pop(data["id"], None)
                if future is not None and not future.done():
                    future.set_result(data)
                continue
            for waiter in list(self._waiters):
                method, session, future = waiter
                if data.get("method") == method and session in (None, data.get("sessionId")):
                    self._waiters.remove(waiter)
                    if not future.done():
                        future.set_result(data.get("params", {}))
        for future in self._pending.values():
            if not future.done():
                future.set_exception(CdpError("the browser closed the connection"))

    async def send(
        self, method: str, params: dict[str, Any] | None = None, session: str | None = None
    ) -> dict[str, Any]:
        """Send one command and return its result."""
        ident = next(self._ids)
        future: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        self._pending[ident] = future
        message: dict[str, Any] = {"id": ident, "method": method, "params": params or {}}
        if session is not None:
            message["sessionId"] = session
        await self._ws.send_json(message)
        async with asyncio.timeout(TIMEOUT):
            answer = await future
        if "error" in answer:
            raise CdpError(f"{method}: {answer['error']}")
        result: dict[str, Any] = answer.get("result", {})
        return result

    def expect(self, method: str, session: str | None = None) -> asyncio.Future[dict[str, Any]]:
        """A future for the next `method` event (register it before causing the event)."""
        future: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        self._waiters.append((method, session, future))
        return future

    async def close(self) -> None:
        await self._ws.close()
        self._reader.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._reader
        await self._http.close()


class Page:
    """One tab."""

    def __init__(self, conn: Connection, session: str) -> None:
        self._conn = conn
        self._session = session

    async def send(self, method: str, params: dict[str, Any] | None = None) -> dict[str, Any]:
        return await self._conn.send(method, params, self._session)

    async def _loaded(self, future: asyncio.Future[dict[str, Any]]) -> None:
        async with asyncio.timeout(TIMEOUT):
            await future

    async def goto(self, url: str) -> None:
        """Open a URL and wait for the page (after any redirects) to load."""
        loaded = self._conn.expect("Page.loadEventFired", self._session)
        answer = await self.send("Page.navigate", {"url": url})
        if answer.get("errorText"):
            raise CdpError(f"cannot open {url}: {answer['errorText']}")
        await self._loaded(loaded)

    async def evaluate(self, expression: str) -> Any:
        """Evaluate JavaScript in the page (DevTools, not the page's own scripts)."""
        answer = await self.send(
            "Runtime.evaluate", {"expression": expression, "returnByValue": True}
        )
        if "exceptionDetails" in answer:
            raise CdpError(f"{expression}: {answer['exceptionDetails'].get('text')}")
        return answer.get("result", {}).get("value")

    @property
    async def url(self) -> str:
        return str(await self.evaluate("location.href"))

    async def text(self, selector: str) -> str:
        value = await self.evaluate(
            f"(e => e ? e.innerText : null)(document.querySelector({_js(selector)}))"
        )
        if value is None:
            raise CdpError(f"no element {selector!r} on {await self.url}")
        return str(value)

    async def exists(self, selector: str) -> bool:
        return bool(await self.evaluate(f"!!document.querySelector({_js(selector)})"))

    async def click(self, selector: str, *, navigates: bool = True) -> None:
        """Click the element's centre with real mouse events; wait for a navigation."""
        box = await self.evaluate(
            f"""(e => {{
                if (!e) return null;
                e.scrollIntoView({{block: 'center'}});
                const r = e.getBoundingClientRect();
                return [r.left + r.width / 2, r.top + r.height / 2];
            }})(document.querySelector({_js(selector)}))"""
        )
        if box is None:
            raise CdpError(f"no element {selector!r} to click on {await self.url}")
        x, y = box
        loaded = self._conn.expect("Page.loadEventFired", self._session) if navigates else None
        for kind in ("mousePressed", "mouseReleased"):
            await self.send(
                "Input.dispatchMouseEvent",
                {"type": kind, "x": x, "y": y, "button": "left", "clickCount": 1},
            )
        if loaded is not None:
            await self._loaded(loaded)

    async def type(self, selector: str, text: str) -> None:
        """Focus a field by clicking it, then type."""
        await self.click(selector, navigates=False)
        await self.send("Input.insertText", {"text": text})

    async def screenshot(self, path: Path) -> Path:
        """Save a PNG of the whole page."""
        answer = await self.send(
            "Page.captureScreenshot", {"format": "png", "captureBeyondViewport": True}
        )
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(base64.b64decode(answer["data"]))
        return path


def _js(value: str) -> str:
    import json

    return json.dumps(value)


class Browser:
    """A headless chromium process and its DevTools connection."""

    def __init__(
        self, proc: asyncio.subprocess.Process, conn: Connection, drain: asyncio.Task[None]
    ) -> None:
        self._proc = proc
        self._conn = conn
        self._drain = drain
        self.log: list[bytes] = []

    @classmethod
    async def launch(cls, binary: str, profile: Path, extra: Sequence[str] = ()) -> Browser:
        """Start chromium and connect to it."""
        proc = await asyncio.create_subprocess_exec(
            binary,
            *FLAGS,
            f"--user-data-dir={profile}",
            *extra,
            "about:blank",
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.PIPE,
        )
        assert proc.stderr is not None
        seen: list[bytes] = []
        try:
            async with asyncio.timeout(30):
                while True:
                    line = await proc.stderr.readline()
                    if not line:
                        raise CdpError(
                            "chromium exited: " + b"".join(seen).decode(errors="replace")
                        )
                    seen.append(line)
                    found = _LISTENING.search(line)
                    if found:
                        url = found[1].decode()
                        break
            http = aiohttp.ClientSession()
            ws = await http.ws_connect(url, max_msg_size=0)
        except BaseException:
            if proc.returncode is None:
                proc.kill()
            await proc.wait()
            raise
        browser = cls(proc, Connection(http, ws), asyncio.create_task(_drain(proc, seen)))
        browser.log = seen
        return browser

    async def new_page(self) -> Page:
        target = await self._conn.send("Target.createTarget", {"url": "about:blank"})
        attached = await self._conn.send(
            "Target.attachToTarget", {"targetId": target["targetId"], "flatten": True}
        )
        page = Page(self._conn, attached["sessionId"])
        await page.send("Page.enable")
        await page.send("Runtime.enable")
        await page.send(
            "Emulation.setDeviceMetricsOverride",
            {"width": 1200, "height": 900, "deviceScaleFactor": 1, "mobile": False},
        )
        return page

    async def close(self) -> None:
        with contextlib.suppress(CdpError, TimeoutError, aiohttp.ClientError):
            await self._conn.send("Browser.close")
        await self._conn.close()
        try:
            async with asyncio.timeout(10):
                await self._proc.wait()
        except TimeoutError:
            self._proc.kill()
            await self._proc.wait()
        self._drain.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._drain


async def _drain(proc: asyncio.subprocess.Process, into: list[bytes]) -> None:
    """Keep reading chromium's stderr so the pipe never fills (kept for failures)."""
    assert proc.stderr is not None
    while line := await proc.stderr.readline():
        if len(into) < 500:
            into.append(line)
