"""`WateringHoleSim`: the simulated platform, its customers' actions and its lifecycle."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from typing import Any, Literal

import aiohttp
from aiohttp import web

from gateway.sandbox.watering_hole.api import RestApi
from gateway.sandbox.watering_hole.config import WateringHoleConfig
from gateway.sandbox.watering_hole.control import ControlApi
from gateway.sandbox.watering_hole.guards import ApiCall, Fault, Hold, default_code
from gateway.sandbox.watering_hole.records import Attachment, SimError, User
from gateway.sandbox.watering_hole.state import Event, World
from gateway.sandbox.watering_hole.webhooks import Delivery, DeliveryAttempt, Dispatcher

log = logging.getLogger(__name__)

_AUTO_RECHECK_SECONDS = 1.0  # the auto loop re-reads the clock this often while retries wait


class WateringHoleSim:
    """A faithful Watering Hole: REST API under `/v1`, control API under `/_sim/`, webhooks."""

    def __init__(self, config: WateringHoleConfig | None = None) -> None:
        self.config = config or WateringHoleConfig()
        self.clock = self.config.clock
        self.seq = 0  # bumped on every state change; the long-poll of /_sim/changes reads it
        self._change = asyncio.Event()
        self._wake = asyncio.Event()
        self.long_poll_parked = asyncio.Event()  # set whenever a long-poll starts waiting
        self._auto_task: asyncio.Task[None] | None = None
        self._closing = False
        self.dispatcher = Dispatcher(self.config, self._touch)
        self.world = World(self.config, self.dispatcher.enqueue)
        self.rest = RestApi(self.config, self.world, self._touch)
        self.app = web.Application()
        self.app.add_subapp("/v1", self.rest.app())
        self.app.add_subapp("/_sim", ControlApi(self).app())
        self.app.cleanup_ctx.append(self._lifecycle)
        self.app.on_shutdown.append(self._on_shutdown)

    # -- lifecycle -----------------------------------------------------------------------

    async def start(self) -> None:
        """Open the webhook client session (and the auto loop when configured); idempotent."""
        self._closing = False
        if self.dispatcher.session is None:
            self.dispatcher.session = aiohttp.ClientSession()
        if self.config.auto_deliver:
            await self.set_auto(True)

    async def close(self) -> None:
        """Stop the auto loop, release held requests, wake waiters, close the session."""
        self._closing = True
        await self.set_auto(False)
        self.rest.faults.release_all()
        self._touch()
        if self.dispatcher.session is not None:
            await self.dispatcher.session.close()
            self.dispatcher.session = None

    async def __aenter__(self) -> WateringHoleSim:
        await self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    async def _lifecycle(self, app: web.Application) -> AsyncIterator[None]:
        await self.start()
        yield
        await self.close()

    async def _on_shutdown(self, app: web.Application) -> None:
        # before the server waits for handlers: end long-polls and held requests now
        self._closing = True
        self.rest.faults.release_all()
        self._touch()

    # -- change notification -------------------------------------------------------------

    def _touch(self) -> None:
        # An Event swapped on every change rather than a Condition: state changes happen in
        # plain (sync) code, where a Condition's lock cannot be taken.
        self.seq += 1
        fired, self._change = self._change, asyncio.Event()
        fired.set()
        if self.dispatcher.queue:
            self._wake.set()

    async def wait_for(
        self,
        predicate: Callable[[], bool],
        timeout: float = 5.0,  # noqa: ASYNC109 (a safety net for tests, not a sync tool)
    ) -> None:
        """Return once `predicate()` holds, re-checking on every change; TimeoutError after."""
        async with asyncio.timeout(timeout):
            while not predicate():
                await self._change.wait()

    async def wait_changed(self, since: int, timeout: float) -> int:  # noqa: ASYNC109
        """Return the current seq once it differs from `since` (or after `timeout`)."""
        if since == self.seq and not self._closing:
            self.long_poll_parked.set()
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(timeout):
                    await self._change.wait()
        return self.seq

    # -- customers' actions --------------------------------------------------------------

    def add_user(
        self,
        user_id: str,
        display_name: str,
        handle: str | None = None,
        avatar_url: str | None = None,
    ) -> User:
        """Register a customer."""
        handle = handle or user_id.removeprefix("usr_")
        avatar = avatar_url or f"{self.config.public_base}/avatars/{handle}.png"
        user = self.world.add_user(user_id, handle, display_name, avatar)
        self._touch()
        return user

    async def user_sends_dm(
        self,
        user_id: str,
        text: str,
        conversation_id: str | None = None,
        attachments: Sequence[Mapping[str, Any]] = (),
    ) -> tuple[str, str]:
        """A customer writes to the brand; return (conversation_id, message_id)."""
        files = [Attachment.parse(a) for a in attachments]
        if conversation_id is None:
            conv = self.world.open_conversation(user_id)
        else:
            conv = self.world.conversation(conversation_id)
            if conv.user_id != user_id:
                raise SimError(400, "invalid_request", "the user is not in that conversation")
        msg = self.world.add_message(conv, user_id, text, files)
        return conv.id, msg.id

    async def user_posts(self, user_id: str, title: str, body: str) -> str:
        """A customer publishes a post on the board; return its id."""
        return self.world.add_post(user_id, title, body).id

    async def user_comments(
        self, user_id: str, post_id: str, body: str, parent_comment_id: str | None = None
    ) -> str:
        """A customer comments on a post (or replies to a comment); return the comment id."""
        post = self.world.post(post_id)
        return self.world.add_comment(post, user_id, body, parent_comment_id).id

    async def message_delivered(self, message_id: str) -> None:
        """The customer's app received a message the brand sent."""
        self.world.receipt(message_id, "delivered")

    async def message_read(self, message_id: str) -> None:
        """The customer read a message the brand sent."""
        self.world.receipt(message_id, "read")

    async def message_failed(self, message_id: str, reason: str = "undeliverable") -> None:
        """A message the brand sent could not be delivered."""
        self.world.receipt(message_id, "failed", reason)

    async def close_conversation(
        self, conversation_id: str, by: Literal["user", "account"] = "user"
    ) -> None:
        """End a conversation (the customer left, or the brand closed it in the app)."""
        self.world.close(self.world.conversation(conversation_id), by)

    async def emit_unknown(self, type_: str, data: dict[str, Any] | None = None) -> str:
        """Emit an event of a type the gateway does not know; return its id."""
        return str(self.world.emit(type_, data or {})["id"])

    # -- webhooks ------------------------------------------------------------------------

    @property
    def webhook_url(self) -> str | None:
        return self.dispatcher.webhook_url

    @webhook_url.setter
    def webhook_url(self, url: str | None) -> None:
        self.dispatcher.webhook_url = url
        self._touch()
        self._wake.set()

    @property
    def webhook_secrets(self) -> tuple[str, ...]:
        return self.dispatcher.webhook_secrets

    @webhook_secrets.setter
    def webhook_secrets(self, value: Sequence[str]) -> None:
        self.dispatcher.webhook_secrets = tuple(value)
        self._touch()

    @property
    def queued_events(self) -> list[Event]:
        return self.dispatcher.queue

    @property
    def deliveries(self) -> list[DeliveryAttempt]:
        """Every delivery attempt made, in order."""
        return self.dispatcher.attempts

    @property
    def pending_deliveries(self) -> list[Delivery]:
        return [d for d in self.dispatcher.deliveries.values() if d.state == "retrying"]

    @property
    def dropped_deliveries(self) -> list[Delivery]:
        return [d for d in self.dispatcher.deliveries.values() if d.state == "dropped"]

    async def flush(self) -> list[DeliveryAttempt]:
        """Send every queued event now; return the attempts made."""
        return await self.dispatcher.flush()

    async def run_due_retries(self) -> list[DeliveryAttempt]:
        """Send every delivery whose retry time has come by the clock."""
        return await self.dispatcher.run_due_retries()

    def build_delivery(
        self,
        events: Sequence[Event],
        *,
        delivery_id: str | None = None,
        attempt: int = 1,
        t: int | None = None,
    ) -> tuple[bytes, dict[str, str]]:
        """Return the raw body and headers of a signed delivery, without sending it."""
        return self.dispatcher.build(events, delivery_id=delivery_id, attempt=attempt, t=t)

    async def subscribe(self, url: str | None = None) -> bool:
        """Run the subscription handshake; on success `url` becomes the webhook URL."""
        ok = await self.dispatcher.subscribe(url)
        self._wake.set()
        return ok

    async def set_auto(self, on: bool) -> None:
        """Switch automatic delivery: flush as events come, retry when due."""
        if on and self._auto_task is None:
            self._auto_task = asyncio.create_task(self._auto_loop(), name="watering-hole-auto")
        elif not on and self._auto_task is not None:
            task, self._auto_task = self._auto_task, None
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
            self._touch()

    @property
    def auto(self) -> bool:
        return self._auto_task is not None

    def wake(self) -> None:
        """Make the auto loop look at the queue and the clock now (after advancing a clock)."""
        self._wake.set()

    async def _auto_loop(self) -> None:
        while True:
            self._wake.clear()
            timeout: float | None = None
            try:
                await self.dispatcher.flush()
                await self.dispatcher.run_due_retries()
                next_at = self.dispatcher.next_retry_at()
                if next_at is not None and self.webhook_url:
                    timeout = min(max(0.0, next_at - self.clock()), _AUTO_RECHECK_SECONDS)
            except Exception:  # keep delivering whatever one attempt did
                log.exception("watering hole: automatic delivery failed")
                timeout = _AUTO_RECHECK_SECONDS
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(timeout):
                    await self._wake.wait()

    # -- failure injection ---------------------------------------------------------------

    @property
    def api_calls(self) -> list[ApiCall]:
        """Every REST API request received, in order."""
        return self.rest.calls

    def fail_next(
        self,
        n: int,
        status: int,
        code: str | None = None,
        retry_after: float | None = None,
        path_contains: str | None = None,
        message: str = "injected failure",
    ) -> None:
        """Answer the next `n` matching API calls with this error (before auth and limits)."""
        code = code or default_code(status)
        self.rest.faults.add(Fault("fail", n, path_contains, status, code, message, retry_after))

    def reset_next(
        self, n: int = 1, path_contains: str | None = None, *, after: bool = False
    ) -> None:
        """Drop the connection of the next `n` matching calls unanswered (`after`: once done)."""
        self.rest.faults.add(Fault("reset", n, path_contains, after=after))

    def hold_next(self, path_contains: str | None = None, *, after: bool = False) -> Hold:
        """Park the next matching call until `hold.release()`, before (or `after`) doing it."""
        hold = Hold()
        self.rest.faults.add(Fault("hold", 1, path_contains, hold=hold, after=after))
        return hold

    # -- views ---------------------------------------------------------------------------

    def stats(self) -> dict[str, int]:
        return {**self.dispatcher.stats(), "api_calls": len(self.rest.calls)}

    def snapshot(self) -> dict[str, Any]:
        """Return the whole visible state as JSON-ready data (GET /_sim/state)."""
        return {
            "seq": self.seq,
            **self.world.as_json(),
            "webhook": {
                "url": self.webhook_url,
                "secrets": len(self.webhook_secrets),
                "auto": self.auto,
                "handshakes": [
                    {"url": h.url, "ok": h.ok, "status": h.status, "error": h.error, "at": h.at}
                    for h in self.dispatcher.handshakes[-10:]
                ],
            },
            "queued_events": self.dispatcher.queue,
            "pending_deliveries": [d.as_json() for d in self.pending_deliveries],
            "recent_deliveries": [a.as_json() for a in self.deliveries[-50:]],
            "recent_api_calls": [c.as_json() for c in self.api_calls[-50:]],
            "stats": self.stats(),
        }
