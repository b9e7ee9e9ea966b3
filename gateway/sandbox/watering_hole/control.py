"""The control API under `/_sim/`: act as customers and watch the platform (JSON only)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from aiohttp import web

from gateway import jsonutil
from gateway.errors import BadRequest, RequestError
from gateway.sandbox.watering_hole.api import Handler, error_response

if TYPE_CHECKING:
    from gateway.sandbox.watering_hole.sim import WateringHoleSim


def _json(payload: Any, status: int = 200) -> web.Response:
    return web.Response(
        status=status, body=jsonutil.dumps(payload), content_type="application/json"
    )


def _field(body: dict[str, Any], key: str, *, required: bool = True) -> str | None:
    value = body.get(key)
    if value is None and not required:
        return None
    if not isinstance(value, str) or (required and not value):
        raise BadRequest(f"{key} must be a non-empty string")
    return value


def _required(body: dict[str, Any], key: str) -> str:
    value = _field(body, key)
    assert value is not None
    return value


class ControlApi:
    """Handlers of `/_sim/`; bad input answers 400 JSON, never a traceback."""

    def __init__(self, sim: WateringHoleSim) -> None:
        self.sim = sim

    def app(self) -> web.Application:
        """Build the `/_sim` sub-application."""
        app = web.Application(middlewares=[self._errors])
        r = app.router
        r.add_get("/state", self.state)
        r.add_get("/changes", self.changes)
        r.add_post("/dm", self.dm)
        r.add_post("/post", self.post)
        r.add_post("/comment", self.comment)
        r.add_post("/receipt", self.receipt)
        r.add_post("/close", self.close)
        r.add_post("/event", self.event)
        r.add_post("/subscribe", self.subscribe)
        r.add_post("/webhook", self.webhook)
        r.add_post("/flush", self.flush)
        r.add_post("/retry", self.retry)
        r.add_post("/auto", self.auto)
        return app

    @web.middleware
    async def _errors(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        try:
            response: web.StreamResponse = await handler(request)
        except RequestError as exc:
            return error_response(exc.status, exc.code, exc.message)
        except web.HTTPException as exc:
            return error_response(
                exc.status, "not_found" if exc.status == 404 else "invalid_request", exc.reason
            )
        return response

    async def _body(self, request: web.Request) -> dict[str, Any]:
        raw = await request.read()
        body = jsonutil.loads(raw) if raw.strip() else {}
        if not isinstance(body, dict):
            raise BadRequest("the body must be a JSON object")
        return body

    async def state(self, request: web.Request) -> web.Response:
        """GET /_sim/state: users, conversations, posts, deliveries, stats."""
        return _json(self.sim.snapshot())

    async def changes(self, request: web.Request) -> web.Response:
        """GET /_sim/changes?since=N: long-poll until the seq moves past N (or 25 s)."""
        try:
            since = int(request.query.get("since", "-1"))
        except ValueError:
            raise BadRequest("since must be an integer") from None
        seq = await self.sim.wait_changed(since, self.sim.config.long_poll_seconds)
        return _json({"seq": seq, "changed": seq != since})

    async def dm(self, request: web.Request) -> web.Response:
        """POST /_sim/dm {user_id, text, conversation_id?, attachments?}."""
        body = await self._body(request)
        text = body.get("text")
        if not isinstance(text, str):
            raise BadRequest("text must be a string")
        attachments = body.get("attachments") or []
        if not isinstance(attachments, list) or not all(isinstance(a, dict) for a in attachments):
            raise BadRequest("attachments must be a list of objects")
        conv_id, msg_id = await self.sim.user_sends_dm(
            _required(body, "user_id"),
            text,
            _field(body, "conversation_id", required=False),
            attachments,
        )
        return _json({"conversation_id": conv_id, "message_id": msg_id}, 201)

    async def post(self, request: web.Request) -> web.Response:
        """POST /_sim/post {user_id, title, body}."""
        body = await self._body(request)
        post_id = await self.sim.user_posts(
            _required(body, "user_id"), _required(body, "title"), _required(body, "body")
        )
        return _json({"post_id": post_id}, 201)

    async def comment(self, request: web.Request) -> web.Response:
        """POST /_sim/comment {user_id, post_id, body, parent_comment_id?}."""
        body = await self._body(request)
        comment_id = await self.sim.user_comments(
            _required(body, "user_id"),
            _required(body, "post_id"),
            _required(body, "body"),
            _field(body, "parent_comment_id", required=False),
        )
        return _json({"comment_id": comment_id}, 201)

    async def receipt(self, request: web.Request) -> web.Response:
        """POST /_sim/receipt {message_id, kind: delivered|read|failed, reason?}."""
        body = await self._body(request)
        message_id, kind = _required(body, "message_id"), body.get("kind")
        if kind == "delivered":
            await self.sim.message_delivered(message_id)
        elif kind == "read":
            await self.sim.message_read(message_id)
        elif kind == "failed":
            reason = _field(body, "reason", required=False)
            await self.sim.message_failed(message_id, reason or "undeliverable")
        else:
            raise BadRequest("kind must be delivered, read or failed")
        return _json({"message_id": message_id, "status": kind})

    async def close(self, request: web.Request) -> web.Response:
        """POST /_sim/close {conversation_id, by?: user|account}."""
        body = await self._body(request)
        by = body.get("by", "user")
        if by not in ("user", "account"):
            raise BadRequest("by must be user or account")
        conversation_id = _required(body, "conversation_id")
        await self.sim.close_conversation(conversation_id, "user" if by == "user" else "account")
        return _json({"conversation_id": conversation_id, "closed": True})

    async def event(self, request: web.Request) -> web.Response:
        """POST /_sim/event {type, data?}: emit an event of any (e.g. unknown) type."""
        body = await self._body(request)
        data = body.get("data") or {}
        if not isinstance(data, dict):
            raise BadRequest("data must be an object")
        event_id = await self.sim.emit_unknown(_required(body, "type"), data)
        return _json({"event_id": event_id}, 201)

    async def subscribe(self, request: web.Request) -> web.Response:
        """POST /_sim/subscribe {url?}: run the handshake (default: the current URL)."""
        body = await self._body(request)
        url = _field(body, "url", required=False) or self.sim.webhook_url
        if not url:
            raise BadRequest("no webhook url: give one")
        ok = await self.sim.subscribe(url)
        return _json({"ok": ok, "url": self.sim.webhook_url})

    async def webhook(self, request: web.Request) -> web.Response:
        """POST /_sim/webhook {url?, secrets?}: set the URL and secrets without a handshake."""
        body = await self._body(request)
        if "url" in body:
            self.sim.webhook_url = _field(body, "url", required=False)
        if "secrets" in body:
            secrets = body["secrets"]
            if not isinstance(secrets, list) or not all(isinstance(s, str) and s for s in secrets):
                raise BadRequest("secrets must be a list of non-empty strings")
            self.sim.webhook_secrets = secrets
        return _json({"url": self.sim.webhook_url, "secrets": len(self.sim.webhook_secrets)})

    async def flush(self, request: web.Request) -> web.Response:
        """POST /_sim/flush: send every queued event now."""
        attempts = await self.sim.flush()
        return _json({"attempts": [a.as_json() for a in attempts]})

    async def retry(self, request: web.Request) -> web.Response:
        """POST /_sim/retry: send the deliveries whose retry is due."""
        attempts = await self.sim.run_due_retries()
        return _json({"attempts": [a.as_json() for a in attempts]})

    async def auto(self, request: web.Request) -> web.Response:
        """POST /_sim/auto {on: bool}: switch automatic delivery."""
        body = await self._body(request)
        on = body.get("on")
        if not isinstance(on, bool):
            raise BadRequest("on must be true or false")
        await self.sim.set_auto(on)
        return _json({"auto": self.sim.auto})
