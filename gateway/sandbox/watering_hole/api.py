"""The REST API under `/v1`, exactly as the spec's table: auth, limits, idempotency, errors."""

from __future__ import annotations

import hmac
from collections.abc import Callable
from typing import Any

from aiohttp import web

from gateway import jsonutil
from gateway.errors import BadRequest
from gateway.sandbox.watering_hole.config import WateringHoleConfig
from gateway.sandbox.watering_hole.guards import ApiCall, Faults, IdempotencyCache, TokenBucket
from gateway.sandbox.watering_hole.records import Attachment, Conversation, Message, SimError
from gateway.sandbox.watering_hole.state import World

Handler = Callable[[web.Request], Any]


def error_response(
    status: int, code: str, message: str, headers: dict[str, str] | None = None
) -> web.Response:
    """Answer with the platform's error body `{"error": {"code", "message"}}`."""
    body = jsonutil.dumps({"error": {"code": code, "message": message}})
    return web.Response(status=status, body=body, content_type="application/json", headers=headers)


def _created(payload: dict[str, Any]) -> web.Response:
    return web.Response(status=201, body=jsonutil.dumps(payload), content_type="application/json")


def _message_json(msg: Message) -> dict[str, Any]:
    return {"id": msg.id, "created_at_ms": msg.created_at_ms, "permalink": msg.permalink}


def _invalid(message: str) -> SimError:
    return SimError(400, "invalid_request", message)


class RestApi:
    """The brand-facing API; every request is recorded in `calls`."""

    def __init__(
        self, config: WateringHoleConfig, world: World, changed: Callable[[], None]
    ) -> None:
        self.config = config
        self.world = world
        self._changed = changed
        self.calls: list[ApiCall] = []
        self.faults = Faults()
        self.limiter = TokenBucket(config.rate_limit_per_second, config.clock)
        self.idempotency = IdempotencyCache(config.idempotency_ttl, config.clock)

    def app(self) -> web.Application:
        """Build the `/v1` sub-application."""
        app = web.Application(middlewares=[self._middleware])
        app.router.add_post("/conversations", self.start_conversation)
        app.router.add_post("/conversations/{conversation_id}/messages", self.post_message)
        app.router.add_post("/conversations/{conversation_id}/typing", self.typing)
        app.router.add_post("/posts/{post_id}/comments", self.post_comment)
        return app

    # -- the pipeline in front of every handler -------------------------------------------

    @web.middleware
    async def _middleware(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        raw = await request.read()
        try:
            parsed = jsonutil.loads(raw) if raw else None
        except BadRequest:
            parsed = None
        call = ApiCall(
            request.method,
            request.path,
            dict(request.query),
            dict(request.headers),
            raw,
            parsed,
            self.config.clock(),
        )
        self.calls.append(call)
        self._changed()
        response = await self._guarded(request, handler, call)
        if call.outcome == "pending":
            call.outcome = "answered"
        call.status = None if call.outcome == "reset" else response.status
        self._changed()
        return response

    async def _guarded(
        self, request: web.Request, handler: Handler, call: ApiCall
    ) -> web.StreamResponse:
        fault = self.faults.take(request.path)
        if fault is None:
            return await self._serve(request, handler, call)
        if fault.kind == "fail":
            call.outcome = "injected"
            retry_after = fault.retry_after
            headers = {"Retry-After": f"{retry_after:g}"} if retry_after is not None else {}
            return error_response(fault.status, fault.code, fault.message, headers)
        # `after`: the platform does the work first, then the client never hears back (reset)
        # or hears back late (hold)
        done = await self._serve(request, handler, call) if fault.after else None
        if fault.kind == "reset":
            call.outcome = "reset"
            if request.transport is not None:
                request.transport.abort()
            return web.Response(status=500)  # never written: the connection is gone
        assert fault.hold is not None
        fault.hold.call = call
        fault.hold.arrived.set()
        await fault.hold.released.wait()
        return done if done is not None else await self._serve(request, handler, call)

    async def _serve(
        self, request: web.Request, handler: Handler, call: ApiCall
    ) -> web.StreamResponse:
        token = self._token(request)
        if token is None:
            return error_response(
                401,
                "invalid_token",
                "missing or invalid bearer token",
                {"WWW-Authenticate": "Bearer"},
            )
        wait = self.limiter.take(token)
        if wait is not None:
            return error_response(
                429, "rate_limited", "too many requests", {"Retry-After": str(wait)}
            )
        key = call.idempotency_key if request.method == "POST" else None
        if key is not None and (seen := self.idempotency.get(token, key)) is not None:
            call.outcome = "replayed"
            return web.Response(status=seen.status, body=seen.body, content_type=seen.content_type)
        response = await self._handle(request, handler)
        if key is not None:
            body = response.body if isinstance(response.body, bytes) else b""
            self.idempotency.put(token, key, response.status, body, response.content_type)
        return response

    def _token(self, request: web.Request) -> str | None:
        scheme, _, token = request.headers.get("Authorization", "").partition(" ")
        expected = self.config.api_token.encode()
        if scheme.lower() != "bearer" or not hmac.compare_digest(token.strip().encode(), expected):
            return None
        return token.strip()

    async def _handle(self, request: web.Request, handler: Handler) -> web.Response:
        try:
            response = await handler(request)
        except SimError as exc:
            return error_response(exc.status, exc.code, exc.message, exc.headers)
        except web.HTTPException as exc:
            code = {404: "not_found", 405: "method_not_allowed"}.get(exc.status, "invalid_request")
            return error_response(exc.status, code, exc.reason)
        assert isinstance(response, web.Response)
        return response

    # -- validation helpers ----------------------------------------------------------------

    async def _json(self, request: web.Request) -> dict[str, Any]:
        try:
            body = jsonutil.loads(await request.read())
        except BadRequest:
            raise _invalid("the body is not valid JSON") from None
        if not isinstance(body, dict):
            raise _invalid("the body must be a JSON object")
        return body

    def _text(self, body: dict[str, Any], *, allow_empty: bool = False) -> str:
        text = body.get("text")
        if not isinstance(text, str):
            raise _invalid("text must be a string")
        if not text and not allow_empty:
            raise _invalid("text must not be empty")
        return text

    def _check_length(self, text: str) -> None:
        if len(text) > self.config.max_text:  # characters, not bytes
            raise SimError(
                422, "text_too_long", f"text is longer than {self.config.max_text} characters"
            )

    def _dm(self, body: dict[str, Any]) -> tuple[str, list[Attachment]]:
        """Read a DM's text and attachments (400 when malformed; empty text needs a file)."""
        raw = body.get("attachments")
        if raw is None:
            raw = []
        if not isinstance(raw, list) or not all(isinstance(a, dict) for a in raw):
            raise _invalid("attachments must be a list of objects")
        attachments = [Attachment.parse(a) for a in raw]
        return self._text(body, allow_empty=bool(attachments)), attachments

    def _check_dm(self, text: str, attachments: list[Attachment]) -> None:
        """Apply the 422 rules of a DM: text length, images and PDFs up to the size limit."""
        self._check_length(text)
        limit = self.config.max_attachment_bytes
        if not all(a.allowed_on_dm(limit) for a in attachments):
            raise SimError(
                422,
                "attachment_not_allowed",
                f"direct messages take images and PDFs up to {limit} bytes",
            )

    def _open(self, conversation_id: str) -> Conversation:
        conv = self.world.conversation(conversation_id)
        if conv.closed:
            raise SimError(409, "conversation_closed", "the conversation is closed")
        return conv

    # -- handlers ------------------------------------------------------------------------

    async def post_message(self, request: web.Request) -> web.Response:
        """POST /conversations/{id}/messages: the brand writes into a conversation."""
        text, attachments = self._dm(await self._json(request))
        conv = self._open(request.match_info["conversation_id"])
        self._check_dm(text, attachments)
        msg = self.world.add_message(conv, self.world.account.id, text, attachments)
        return _created({"message": {**_message_json(msg), "conversation_id": conv.id}})

    async def start_conversation(self, request: web.Request) -> web.Response:
        """POST /conversations: the brand starts (or resumes) a chat with a user."""
        body = await self._json(request)
        participant = body.get("participant_id")
        if not isinstance(participant, str):
            raise _invalid("participant_id must be a string")
        text, attachments = self._dm(body)
        self.world.user(participant)
        self._check_dm(text, attachments)
        conv = self.world.open_conversation(participant)
        msg = self.world.add_message(conv, self.world.account.id, text, attachments)
        return _created({"conversation": {"id": conv.id}, "message": _message_json(msg)})

    async def typing(self, request: web.Request) -> web.Response:
        """POST /conversations/{id}/typing: switch the brand's typing indicator."""
        body = await self._json(request)
        on = body.get("typing")
        if not isinstance(on, bool):
            raise _invalid("typing must be true or false")
        conv = self._open(request.match_info["conversation_id"])
        self.world.set_typing(conv, on)
        self._changed()
        return web.Response(status=204)

    async def post_comment(self, request: web.Request) -> web.Response:
        """POST /posts/{id}/comments: the brand comments on a post or replies to a comment."""
        body = await self._json(request)
        text = self._text(body)
        reply_to = body.get("reply_to_comment_id")
        if reply_to is not None and not isinstance(reply_to, str):
            raise _invalid("reply_to_comment_id must be a string or null")
        post = self.world.post(request.match_info["post_id"])
        self._check_length(text)
        if body.get("attachments"):
            raise SimError(422, "attachment_not_allowed", "comments take no attachments")
        comment = self.world.add_comment(post, self.world.account.id, text, reply_to)
        return _created(
            {
                "comment": {
                    "id": comment.id,
                    "post_id": post.id,
                    "created_at_ms": comment.created_at_ms,
                    "permalink": comment.permalink,
                }
            }
        )
