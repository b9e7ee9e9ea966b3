"""The baseline: a hand-written Watering Hole <-> CXone bridge, with no mapping engine.

This is what a competent team writes when it does not adopt the gateway: one aiohttp
app, the Watering Hole's signature checked on the raw bytes (constant time, 300 s
window, several `v1` during a rotation), one JSON parse per request with orjson, the
same CXone and platform payloads as `mappings/watering-hole.yaml` produces, pooled
keep-alive connections, an access-key token cached and shared, bearer tokens (HS256
JWT) for CXone's calls, an Idempotency-Key on replies and an in-memory dedupe of event
ids. What it does *not* have is what the gateway adds: a durable queue (an event is
forwarded inside the webhook request; a failure answers 503 and the platform retries),
per-thread ordering across deliveries, retries over time, dead letters, hot reload,
metrics, several platforms. Everything the benchmark drives is implemented; receipts,
posts and comments are too, so the comparison is about the same product surface.

    python -m bench.bridge --platform-port 8080 --cxone-port 8443   # env: see bench_env()
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import hashlib
import hmac
import os
import secrets
import time
from collections import OrderedDict
from typing import Any
from urllib.parse import parse_qsl, quote

import aiohttp
import jwt
import orjson
from aiohttp import web

TOLERANCE = 300
MAX_BODY = 1_048_576
ACCOUNT_USER = "usr_jungle"
CHAT, BOARD = "chat_watering_hole", "board_watering_hole"
TIMEOUT = aiohttp.ClientTimeout(total=8, connect=2, sock_read=5)
JSON = "application/json"


def iso_ms(ms: int) -> str:
    """Epoch milliseconds -> ISO-8601 UTC with milliseconds."""
    seconds, millis = divmod(int(ms), 1000)
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(seconds)) + f".{millis:03d}Z"


def json_response(data: Any, status: int = 200) -> web.Response:
    return web.Response(body=orjson.dumps(data), status=status, content_type=JSON)


def error(status: int, code: str) -> web.Response:
    return json_response({"error": code}, status)


class Upstream(Exception):
    """A failed call to CXone or the platform."""

    def __init__(self, status: int | None, detail: str = "") -> None:
        super().__init__(f"{status}: {detail}")
        self.status = status


class Bridge:
    def __init__(self, env: dict[str, str]) -> None:
        self.wh_secrets = [
            s.encode() for s in (env["WH_SECRET"], env.get("WH_SECRET_PREVIOUS")) if s
        ]
        self.wh_api = env["WATERING_HOLE_API"].rstrip("/")
        self.wh_auth = f"Bearer {env['WATERING_HOLE_TOKEN']}"
        self.cxone_base = env["CXONE_BASE"].rstrip("/")
        self.dfo = self.cxone_base + "/dfo/3.0"
        self.access = (env["CXONE_ACCESS_KEY_ID"], env["CXONE_ACCESS_KEY_SECRET"])
        pair = f"{env['CXONE_APP_CLIENT_ID']}:{env['CXONE_APP_CLIENT_SECRET']}".encode()
        self.app_basic = "Basic " + base64.b64encode(pair).decode()
        self.client_id = env["BYOC_CLIENT_ID"]
        self.client_secret = env["BYOC_CLIENT_SECRET"].encode()
        self.signing_key = env["BYOC_TOKEN_SIGNING_KEY"]
        self.session: aiohttp.ClientSession | None = None
        self.token: str | None = None
        self.token_expires = 0.0
        self.token_lock = asyncio.Lock()
        self.seen: OrderedDict[str, None] = OrderedDict()  # delivered event ids
        self.contacts: dict[str, str] = {}  # thread -> CXone contact id

    async def open(self, app: web.Application) -> Any:
        self.session = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(limit=100, ttl_dns_cache=60),
            timeout=TIMEOUT,
            headers={"User-Agent": "bench-bridge/1"},
        )
        yield
        await self.session.close()

    # ------------------------------------------------------------------ inbound

    def verify(self, raw: bytes, header: str | None) -> bool:
        if not header or len(header) > 4096:
            return False
        stamp, candidates = None, []
        for part in header.split(","):
            key, _, value = part.strip().partition("=")
            if key == "t":
                stamp = value
            elif key == "v1":
                candidates.append(value.lower())
        if stamp is None or not stamp.isdigit() or abs(time.time() - int(stamp)) > TOLERANCE:
            return False
        signed = stamp.encode() + b"." + raw
        ok = False
        for secret in self.wh_secrets:
            expected = hmac.new(secret, signed, hashlib.sha256).hexdigest()
            for candidate in candidates:
                ok |= hmac.compare_digest(expected, candidate)
        return ok

    async def webhook(self, request: web.Request) -> web.StreamResponse:
        if request.method == "GET":  # subscription handshake
            q = request.query
            if q.get("wh.mode") != "subscribe":
                return error(405, "method_not_allowed")
            if not hmac.compare_digest(q.get("wh.verify_token", ""), os.environ["WH_VERIFY_TOKEN"]):
                return web.Response(status=403, text="forbidden")
            return web.Response(text=q.get("wh.challenge", ""))
        if request.content_length is not None and request.content_length > MAX_BODY:
            return error(413, "too_large")
        raw = await request.read()
        if not self.verify(raw, request.headers.get("WH-Signature")):
            return error(401, "invalid_signature")
        try:
            payload = orjson.loads(raw)
            events = payload["events"]
        except (orjson.JSONDecodeError, KeyError, TypeError):
            return error(400, "invalid_json")
        by_thread: dict[str, list[tuple[str, str, str, dict[str, Any]]]] = {}
        for ev in events:
            if not isinstance(ev, dict) or ev.get("id") in self.seen:
                continue
            call = self.translate(ev)
            if call is not None:
                by_thread.setdefault(call[0], []).append((ev["id"], *call[1:]))
        # threads in parallel, each thread's events in order
        results = await asyncio.gather(
            *(self.send_thread(thread, calls) for thread, calls in by_thread.items()),
            return_exceptions=True,
        )
        if any(isinstance(r, BaseException) for r in results):
            return error(503, "cxone_unavailable")  # the platform delivers again
        return json_response({"accepted": sum(len(c) for c in by_thread.values())})

    async def send_thread(self, thread: str, calls: list[tuple[str, str, str, Any]]) -> None:
        for event_id, method, path, body in calls:
            result = await self.cxone(method, path, body, thread)
            if isinstance(result, dict) and isinstance(result.get("consumerContact"), dict):
                self.contacts[thread] = str(result["consumerContact"]["id"])
            self.seen[event_id] = None
            if len(self.seen) > 200_000:
                self.seen.popitem(last=False)

    def translate(self, ev: dict[str, Any]) -> tuple[str, str, str, Any] | None:
        """(thread, method, DFO path, body) for one event, or None to ignore it."""
        data = ev.get("data") or {}
        kind = ev.get("type")
        who = (data.get("sender") or data.get("author") or {}).get("id")
        if ev.get("echo") is True or who == ACCOUNT_USER:
            return None
        if kind == "message.created":
            msg, conv = data["message"], data["conversation"]["id"]
            body = self.message(msg["id"], conv, msg["text"], msg["sent_at_ms"], data["sender"])
            files = msg.get("attachments") or ()
            body["attachments"] = [{"url": a["url"], "friendlyName": a.get("name")} for a in files]
            return conv, "POST", f"/channels/{CHAT}/messages", body
        if kind == "post.created":
            post = data["post"]
            body = self.message(
                post["id"], post["id"], post["body"], post["created_at_ms"], data["author"]
            )
            body.update(title=post.get("title"), url=post.get("permalink"))
            return post["id"], "POST", f"/channels/{BOARD}/messages", body
        if kind == "comment.created":
            c = data["comment"]
            body = self.message(
                c["id"], c["post_id"], c["body"], c["created_at_ms"], data["author"]
            )
            body.update(
                url=c.get("permalink"),
                isReplyToSpecificMessage=True,
                replyToMessage={"idOnExternalPlatform": c.get("parent_comment_id") or c["post_id"]},
            )
            return c["post_id"], "POST", f"/channels/{BOARD}/messages", body
        if kind in ("message.delivered", "message.read", "message.failed"):
            status = {"message.delivered": "delivered", "message.read": "seen"}.get(kind, "failed")
            body = {"status": status, "updatedAt": iso_ms(data["at_ms"])}
            if kind == "message.failed" and data.get("reason"):
                body["reason"] = data["reason"]
            path = f"/channels/{CHAT}/messages/{quote(data['message_id'], safe='')}/status"
            return data["conversation"]["id"], "PUT", path, body
        if kind == "conversation.closed":
            conv = data["conversation"]["id"]
            contact = self.contacts.get(conv)
            if contact is None:
                return None
            return conv, "PUT", f"/contacts/{quote(contact, safe='')}/status", {"status": "closed"}
        return None  # unknown event types are acknowledged and ignored

    @staticmethod
    def message(
        mid: str, thread: str, text: str, at_ms: int, who: dict[str, Any]
    ) -> dict[str, Any]:
        author = {"idOnExternalPlatform": who["id"]}
        for src, dst in (
            ("display_name", "firstName"),
            ("handle", "nickname"),
            ("avatar_url", "image"),
        ):
            if who.get(src) is not None:
                author[dst] = who[src]
        return {
            "idOnExternalPlatform": mid,
            "thread": {"idOnExternalPlatform": thread},
            "messageContent": {"type": "TEXT", "payload": {"text": text}},
            "authorEndUserIdentity": author,
            "direction": "inbound",
            "createdAtWithMilliseconds": iso_ms(at_ms),
            "attachments": [],
        }

    async def cxone_token(self, force: bool = False) -> str:
        if not force and self.token and time.monotonic() < self.token_expires:
            return self.token
        async with self.token_lock:  # concurrent senders share one refresh
            if not force and self.token and time.monotonic() < self.token_expires:
                return self.token
            assert self.session is not None
            form = {
                "grant_type": "password",
                "username": self.access[0],
                "password": self.access[1],
            }
            async with self.session.post(
                self.cxone_base + "/token", data=form, headers={"Authorization": self.app_basic}
            ) as resp:
                doc = orjson.loads(await resp.read())
                if resp.status != 200:
                    raise Upstream(resp.status, "token")
            self.token = doc["access_token"]
            self.token_expires = time.monotonic() + float(doc.get("expires_in", 300)) - 60
            return self.token

    async def cxone(self, method: str, path: str, body: Any, thread: str) -> Any:
        assert self.session is not None
        data = orjson.dumps(body)
        for attempt in (0, 1):
            token = await self.cxone_token(force=attempt == 1)
            headers = {"Authorization": f"Bearer {token}", "Content-Type": JSON}
            async with self.session.request(
                method, self.dfo + path, data=data, headers=headers
            ) as resp:
                raw = await resp.read()
                if resp.status == 401 and attempt == 0:
                    continue
                if not 200 <= resp.status < 300:
                    raise Upstream(resp.status, raw[:200].decode(errors="replace"))
                return orjson.loads(raw) if raw else None
        raise Upstream(401, "token refused twice")

    # ------------------------------------------------------------------ outbound

    async def token_endpoint(self, request: web.Request) -> web.Response:
        raw = await request.read()
        if "json" in request.content_type:
            params = orjson.loads(raw) if raw else {}
        else:
            params = dict(parse_qsl(raw.decode()))
        auth = request.headers.get("Authorization", "")
        if auth[:6].lower() == "basic ":
            user, _, password = base64.b64decode(auth[6:]).decode().partition(":")
            params.update(client_id=user, client_secret=password)
        if params.get("grant_type") != "client_credentials":
            return json_response({"error": "unsupported_grant_type"}, 400)
        ok = hmac.compare_digest(str(params.get("client_id", "")), self.client_id)
        ok &= hmac.compare_digest(str(params.get("client_secret", "")).encode(), self.client_secret)
        if not ok:
            return json_response({"error": "invalid_client"}, 401)
        now = int(time.time())
        token = jwt.encode(
            {
                "iss": "bridge",
                "sub": self.client_id,
                "iat": now,
                "exp": now + 3600,
                "jti": secrets.token_urlsafe(12),
            },
            self.signing_key,
            algorithm="HS256",
        )
        return web.Response(
            body=orjson.dumps({"access_token": token, "token_type": "Bearer", "expires_in": 3600}),
            content_type=JSON,
            headers={"Cache-Control": "no-store"},
        )

    def authorised(self, request: web.Request) -> bool:
        auth = request.headers.get("Authorization", "")
        if auth[:7].lower() != "bearer ":
            return False
        try:
            claims = jwt.decode(
                auth[7:],
                self.signing_key,
                algorithms=["HS256"],
                issuer="bridge",
                options={"require": ["exp", "sub"]},
            )
        except jwt.InvalidTokenError:
            return False
        return bool(claims["sub"] == self.client_id)

    async def outbound(self, request: web.Request) -> web.Response:
        if not self.authorised(request):
            return error(401, "invalid_token")
        channel = request.match_info["channelId"]
        raw = await request.read()
        try:
            body = orjson.loads(raw)
            text = body["messageContent"]["payload"]["text"]
        except (orjson.JSONDecodeError, KeyError, TypeError):
            return error(400, "invalid_request")
        thread = (body.get("thread") or {}).get("idOnExternalPlatform")
        if not isinstance(thread, str) or not thread:
            return error(400, "invalid_request")
        people = body.get("endUserRecipients") or body.get("recipients") or [{}]
        recipient, name = people[0].get("idOnExternalPlatform"), people[0].get("name")
        if len(text) > 1000:
            return error(422, "text_too_long")
        out: dict[str, Any] = {"text": text}
        if channel == BOARD:
            reply_to = (body.get("replyToMessage") or {}).get("idOnExternalPlatform")
            is_comment = isinstance(reply_to, str) and reply_to.startswith("cmt_")
            out["reply_to_comment_id"] = reply_to if is_comment else None
            path = f"/posts/{quote(thread, safe='')}/comments"
        elif thread and thread.startswith("cnv_"):
            attachments = [
                {"url": a["url"], "name": a.get("friendlyName")}
                for a in body.get("attachments") or ()
            ]
            if attachments:
                out["attachments"] = attachments
            path = f"/conversations/{quote(thread, safe='')}/messages"
        else:  # proactive: start a conversation with the recipient
            out = {"participant_id": recipient, "text": text}
            path = "/conversations"
        key = hashlib.sha256(channel.encode() + b"\0" + raw).hexdigest()[:40]
        headers = {"Authorization": self.wh_auth, "Content-Type": JSON, "Idempotency-Key": key}
        assert self.session is not None
        try:
            async with self.session.post(
                self.wh_api + path, data=orjson.dumps(out), headers=headers
            ) as resp:
                answer = await resp.read()
                status = resp.status
        except (aiohttp.ClientError, TimeoutError):
            return error(503, "platform_unavailable")
        if not 200 <= status < 300:
            return error(503 if status == 429 or status >= 500 else 502, "platform_refused")
        doc = orjson.loads(answer)
        made = doc.get("message") or doc.get("comment") or {}
        return json_response(
            {
                "message": {
                    "idOnExternalPlatform": str(made.get("id")),
                    "createdAtWithMilliseconds": iso_ms(made["created_at_ms"]),
                    "url": made.get("permalink"),
                },
                "thread": {
                    "idOnExternalPlatform": (doc.get("conversation") or {}).get("id", thread)
                },
                "endUserIdentities": [{"idOnExternalPlatform": recipient}] if recipient else [],
                "recipients": [{"idOnExternalPlatform": recipient, "name": name}]
                if recipient
                else [],
            }
        )


async def healthz(request: web.Request) -> web.Response:
    return json_response({"status": "ok"})


def create_app(env: dict[str, str]) -> web.Application:
    bridge = Bridge(env)
    app = web.Application(client_max_size=MAX_BODY)
    app.cleanup_ctx.append(bridge.open)
    app.router.add_get("/healthz", healthz)
    app.router.add_route("*", "/webhooks/watering-hole", bridge.webhook)
    app.router.add_post("/integration/box/1.0/token", bridge.token_endpoint)
    app.router.add_post("/integration/box/2.0/channel/{channelId}/outbound", bridge.outbound)
    return app


async def serve(platform_port: int, cxone_port: int) -> None:
    runner = web.AppRunner(create_app(dict(os.environ)), access_log=None)
    await runner.setup()
    for port in (platform_port, cxone_port):
        await web.TCPSite(runner, "127.0.0.1", port, reuse_address=True).start()
    print(f"bridge: platform side :{platform_port}, CXone side :{cxone_port}", flush=True)
    try:
        await asyncio.Event().wait()
    finally:
        await runner.cleanup()


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    p.add_argument("--platform-port", type=int, required=True)
    p.add_argument("--cxone-port", type=int, required=True)
    p.add_argument("--loop", choices=["auto", "uvloop", "asyncio"], default="auto")
    args = p.parse_args()
    factory = None
    if args.loop in ("auto", "uvloop"):
        try:
            import uvloop

            factory = uvloop.new_event_loop
        except ImportError:
            if args.loop == "uvloop":
                raise
    with asyncio.Runner(loop_factory=factory) as runner, contextlib.suppress(KeyboardInterrupt):
        runner.run(serve(args.platform_port, args.cxone_port))


if __name__ == "__main__":
    main()
