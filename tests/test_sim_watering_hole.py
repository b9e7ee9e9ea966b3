"""The Watering Hole simulator does what shared/specs/watering-hole.md says, over real sockets."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import re
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer
from hypothesis import given, settings
from hypothesis import strategies as st

from gateway import jsonutil
from gateway.clock import FakeClock
from gateway.sandbox.watering_hole import WateringHoleConfig, WateringHoleSim, config_from_env

TOKEN = "test-token"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
SECRET = "test-secret"
VERIFY = "test-verify"
SIGNATURE = re.compile(r"^t=(\d+)((?:,v1=[0-9a-f]{64})+)$")

ServerFactory = Callable[..., Awaitable[TestServer]]
ClientFactory = Callable[..., Awaitable[TestClient[Any, Any]]]


# -- a tiny webhook receiver ---------------------------------------------------------------


@dataclass
class Received:
    headers: dict[str, str]
    raw: bytes

    @property
    def json(self) -> Any:
        return jsonutil.loads(self.raw)


@dataclass
class Receiver:
    """Records deliveries; answers with queued statuses (200 when none), or aborts."""

    posts: list[Received] = field(default_factory=list)
    handshakes: list[dict[str, str]] = field(default_factory=list)
    statuses: list[int] = field(default_factory=list)
    always: int | None = None
    abort_next: int = 0
    verify_token: str = VERIFY
    url: str = ""

    async def hook(self, request: web.Request) -> web.StreamResponse:
        self.posts.append(Received(dict(request.headers), await request.read()))
        if self.abort_next:
            self.abort_next -= 1
            assert request.transport is not None
            request.transport.abort()
            return web.Response()
        status = self.statuses.pop(0) if self.statuses else (self.always or 200)
        return web.Response(status=status)

    async def handshake(self, request: web.Request) -> web.StreamResponse:
        self.handshakes.append(dict(request.query))
        if request.query.get("wh.verify_token") != self.verify_token:
            return web.Response(status=403)
        return web.Response(text=request.query["wh.challenge"])


def verify(received: Received, secrets: list[str]) -> list[bool]:
    """Recompute every v1 of a delivery; return which secret matched each, in order."""
    match = SIGNATURE.match(received.headers["WH-Signature"])
    assert match, received.headers["WH-Signature"]
    t = match.group(1)
    v1s = re.findall(r"v1=([0-9a-f]{64})", match.group(2))
    signed = f"{t}.".encode() + received.raw
    expected = [hmac.new(s.encode(), signed, hashlib.sha256).hexdigest() for s in secrets]
    return [any(hmac.compare_digest(v, e) for e in expected) for v in v1s]


# -- fixtures --------------------------------------------------------------------------------


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
async def receiver(aiohttp_server: ServerFactory) -> Receiver:
    rec = Receiver()
    app = web.Application()
    app.router.add_post("/hook", rec.hook)
    app.router.add_get("/hook", rec.handshake)
    server = await aiohttp_server(app)
    rec.url = str(server.make_url("/hook"))
    return rec


@dataclass
class Harness:
    sim: WateringHoleSim
    client: TestClient[Any, Any]
    receiver: Receiver
    clock: FakeClock

    async def api(self, method: str, path: str, body: Any = None, **headers: str) -> Any:
        """Call the REST API; return (status, parsed body or None, response headers)."""
        hdrs = {**AUTH, **{k.replace("_", "-"): v for k, v in headers.items()}}
        async with self.client.request(method, "/v1" + path, json=body, headers=hdrs) as r:
            raw = await r.read()
            return r.status, (jsonutil.loads(raw) if raw else None), r.headers

    async def control(self, method: str, path: str, body: Any = None) -> tuple[int, Any]:
        async with self.client.request(method, "/_sim" + path, json=body) as r:
            return r.status, jsonutil.loads(await r.read())


@pytest.fixture
async def make(
    aiohttp_server: ServerFactory,
    aiohttp_client: ClientFactory,
    receiver: Receiver,
    clock: FakeClock,
) -> Callable[..., Awaitable[Harness]]:
    async def factory(**overrides: Any) -> Harness:
        defaults: dict[str, Any] = {
            "api_token": TOKEN,
            "webhook_url": receiver.url,
            "webhook_secrets": (SECRET,),
            "verify_token": VERIFY,
            "clock": clock,
        }
        config = WateringHoleConfig(**{**defaults, **overrides})
        sim = WateringHoleSim(config)
        client = await aiohttp_client(await aiohttp_server(sim.app))
        return Harness(sim, client, receiver, clock)

    return factory


@pytest.fixture
async def h(make: Callable[..., Awaitable[Harness]]) -> Harness:
    return await make()


async def open_conversation(h: Harness, user: str = "usr_zebra") -> str:
    conv_id, _ = await h.sim.user_sends_dm(user, "hello")
    return conv_id


# -- webhooks ------------------------------------------------------------------------------


async def test_dm_is_delivered_signed_with_the_spec_shape(h: Harness) -> None:
    attachment = {"url": "https://cdn.example/z.png", "name": "z.png", "size_bytes": 2048}
    conv_id, msg_id = await h.sim.user_sends_dm(
        "usr_zebra", 'hi "there" \\ 🦓\nמה', attachments=[attachment]
    )
    attempts = await h.sim.flush()

    assert [a.status for a in attempts] == [200]
    (received,) = h.receiver.posts
    assert received.headers["Content-Type"] == "application/json"
    assert verify(received, [SECRET]) == [True]
    assert received.headers["WH-Signature"].startswith(f"t={int(h.clock())},")
    payload = received.json
    assert payload["delivery"]["id"].startswith("dlv_")
    assert payload["delivery"]["attempt"] == 1
    assert payload["account_id"] == "acc_jungle"
    (event,) = payload["events"]
    assert re.fullmatch(r"evt_[0-9A-Za-z]{10}", event["id"])
    assert event["type"] == "message.created"
    assert event["occurred_at_ms"] == int(h.clock() * 1000)
    assert "echo" not in event
    assert event["data"] == {
        "conversation": {"id": conv_id},
        "message": {
            "id": msg_id,
            "text": 'hi "there" \\ 🦓\nמה',
            "sent_at_ms": int(h.clock() * 1000),
            "attachments": [{"kind": "image", **attachment}],
        },
        "sender": {
            "id": "usr_zebra",
            "handle": "zara",
            "display_name": "Zara Zebra",
            "avatar_url": "https://wateringhole.example/avatars/zara.png",
        },
    }
    assert h.sim.queued_events == []


async def test_rotation_signs_with_every_active_secret(
    make: Callable[..., Awaitable[Harness]],
) -> None:
    h = await make(webhook_secrets=("new-secret", "old-secret"))
    await open_conversation(h)
    await h.sim.flush()
    (received,) = h.receiver.posts
    assert verify(received, ["new-secret"]) == [True, False]
    assert verify(received, ["old-secret"]) == [False, True]


async def test_batches_split_at_batch_max(h: Harness) -> None:
    for i in range(250):
        await h.sim.user_posts("usr_lion", f"post {i}", "roar")
    attempts = await h.sim.flush()

    assert [len(p.json["events"]) for p in h.receiver.posts] == [100, 100, 50]
    assert len({a.delivery_id for a in attempts}) == 3
    titles = [e["data"]["post"]["title"] for p in h.receiver.posts for e in p.json["events"]]
    assert titles == [f"post {i}" for i in range(250)]


async def test_failed_delivery_is_retried_with_the_same_ids(h: Harness) -> None:
    h.receiver.statuses = [500]
    await open_conversation(h)
    (first,) = await h.sim.flush()
    assert first.status == 500 and first.outcome == "retrying"
    assert [d.id for d in h.sim.pending_deliveries] == [first.delivery_id]

    h.clock.advance(9)
    assert await h.sim.run_due_retries() == []
    h.clock.advance(1)
    (second,) = await h.sim.run_due_retries()

    assert second.ok and second.outcome == "delivered"
    one, two = (p.json for p in h.receiver.posts)
    assert two["delivery"] == {"id": one["delivery"]["id"], "attempt": 2}
    assert [e["id"] for e in two["events"]] == [e["id"] for e in one["events"]]
    assert verify(h.receiver.posts[1], [SECRET]) == [True]
    assert h.receiver.posts[1].headers["WH-Signature"].startswith(f"t={int(h.clock())},")
    assert h.sim.pending_deliveries == []


async def test_delivery_is_dropped_after_the_schedule(h: Harness) -> None:
    h.receiver.always = 503
    await open_conversation(h)
    await h.sim.flush()
    for delay in (10, 60, 600, 3600, 21600):
        h.clock.advance(delay)
        assert len(await h.sim.run_due_retries()) == 1
    h.clock.advance(10 * 86400)
    assert await h.sim.run_due_retries() == []

    assert [a.attempt for a in h.sim.deliveries] == [1, 2, 3, 4, 5, 6]
    assert h.sim.deliveries[-1].outcome == "dropped"
    assert len(h.sim.dropped_deliveries) == 1 and h.sim.pending_deliveries == []


async def test_no_answer_counts_as_a_failure(h: Harness) -> None:
    h.receiver.abort_next = 1
    await open_conversation(h)
    (attempt,) = await h.sim.flush()
    assert attempt.status is None and attempt.error and attempt.outcome == "retrying"


async def test_events_wait_for_a_webhook_url(h: Harness) -> None:
    h.sim.webhook_url = None
    await open_conversation(h)
    assert await h.sim.flush() == []
    assert len(h.sim.queued_events) == 1
    h.sim.webhook_url = h.receiver.url
    assert len(await h.sim.flush()) == 1


async def test_auto_mode_delivers_without_being_asked(h: Harness) -> None:
    await h.sim.set_auto(True)
    await open_conversation(h)
    await h.sim.wait_for(lambda: any(a.ok for a in h.sim.deliveries))
    assert len(h.receiver.posts) == 1


async def test_handshake_echoes_the_challenge(h: Harness) -> None:
    assert await h.sim.subscribe() is True
    (query,) = h.receiver.handshakes
    assert query["wh.mode"] == "subscribe" and query["wh.verify_token"] == VERIFY
    assert query["wh.challenge"]

    h.receiver.verify_token = "something-else"
    assert await h.sim.subscribe() is False


async def test_build_delivery_signs_without_sending(h: Harness) -> None:
    raw, headers = h.sim.build_delivery([{"id": "evt_1", "type": "x"}], t=123)
    assert headers["WH-Signature"].startswith("t=123,v1=")
    assert verify(Received(headers, raw), [SECRET]) == [True]
    assert h.receiver.posts == []


@settings(max_examples=50, deadline=None)
@given(text=st.text())
def test_any_text_survives_the_delivery_body(text: str) -> None:
    sim = WateringHoleSim(WateringHoleConfig(clock=FakeClock(), webhook_secrets=(SECRET,)))
    raw, headers = sim.build_delivery([{"id": "evt_1", "data": {"text": text}}])
    assert jsonutil.loads(raw)["events"][0]["data"]["text"] == text
    assert verify(Received(headers, raw), [SECRET]) == [True]


# -- customers' other actions --------------------------------------------------------------


async def test_receipts_closing_and_unknown_events(h: Harness) -> None:
    conv_id = await open_conversation(h)
    status, body, _ = await h.api("POST", f"/conversations/{conv_id}/messages", {"text": "hi"})
    assert status == 201
    brand_msg = body["message"]["id"]
    await h.sim.message_delivered(brand_msg)
    await h.sim.message_read(brand_msg)
    await h.sim.message_failed(brand_msg, "blocked")
    await h.sim.close_conversation(conv_id)
    await h.sim.emit_unknown("reaction.added", {"emoji": "🦒"})
    await h.sim.flush()

    events = h.receiver.posts[0].json["events"]
    assert [e["type"] for e in events] == [
        "message.created",
        "message.created",
        "message.delivered",
        "message.read",
        "message.failed",
        "conversation.closed",
        "reaction.added",
    ]
    now_ms = int(h.clock() * 1000)
    receipt = {"conversation": {"id": conv_id}, "message_id": brand_msg, "at_ms": now_ms}
    assert events[2]["data"] == receipt
    assert events[4]["data"] == {**receipt, "reason": "blocked"}
    assert events[5]["data"] == {
        "conversation": {"id": conv_id},
        "closed_by": "user",
        "at_ms": now_ms,
    }
    assert events[6]["data"] == {"emoji": "🦒"}
    assert h.sim.world.messages[brand_msg].status == "failed"


async def test_comments_nest_and_carry_their_parent(h: Harness) -> None:
    post_id = await h.sim.user_posts("usr_giraffe", "Tall tales", "Leaves?")
    top = await h.sim.user_comments("usr_hippo", post_id, "Mud!")
    reply = await h.sim.user_comments("usr_lion", post_id, "No", parent_comment_id=top)
    await h.sim.flush()

    post_event, top_event, reply_event = h.receiver.posts[0].json["events"]
    assert post_event["data"]["post"]["permalink"] == f"https://wateringhole.example/p/{post_id}"
    assert post_event["data"]["post"]["title"] == "Tall tales"
    assert top_event["data"]["comment"]["parent_comment_id"] is None
    assert reply_event["data"]["comment"] == {
        "id": reply,
        "post_id": post_id,
        "parent_comment_id": top,
        "body": "No",
        "permalink": f"https://wateringhole.example/p/{post_id}#{reply}",
        "created_at_ms": int(h.clock() * 1000),
    }
    assert reply_event["data"]["author"]["id"] == "usr_lion"
    (tree,) = h.sim.world.posts[post_id].as_json()["comments"]
    assert tree["id"] == top and [r["id"] for r in tree["replies"]] == [reply]


# -- REST API ------------------------------------------------------------------------------


async def test_api_messages_come_back_as_echoes(h: Harness) -> None:
    conv_id = await open_conversation(h)
    status, body, _ = await h.api("POST", f"/conversations/{conv_id}/messages", {"text": "Hi!"})
    assert status == 201
    message = body["message"]
    assert set(message) == {"id", "conversation_id", "created_at_ms", "permalink"}
    assert message["conversation_id"] == conv_id
    assert message["permalink"] == f"https://wateringhole.example/c/{conv_id}/{message['id']}"

    post_id = await h.sim.user_posts("usr_lion", "Roar", "?")
    status, body, _ = await h.api(
        "POST", f"/posts/{post_id}/comments", {"text": "Hello", "reply_to_comment_id": None}
    )
    assert status == 201
    assert set(body["comment"]) == {"id", "post_id", "created_at_ms", "permalink"}

    status, started, _ = await h.api(
        "POST", "/conversations", {"participant_id": "usr_hippo", "text": "Offer!"}
    )
    assert status == 201
    assert set(started) == {"conversation", "message"}
    assert set(started["message"]) == {"id", "created_at_ms", "permalink"}

    await h.sim.flush()
    echoes = [e for e in h.receiver.posts[0].json["events"] if e.get("echo")]
    assert [e["type"] for e in echoes] == ["message.created", "comment.created", "message.created"]
    assert echoes[0]["data"]["message"]["id"] == message["id"]
    assert echoes[0]["data"]["sender"]["id"] == "usr_jungle"
    assert echoes[1]["data"]["author"]["id"] == "usr_jungle"
    assert echoes[1]["data"]["comment"]["id"] == body["comment"]["id"]
    assert echoes[2]["data"]["conversation"]["id"] == started["conversation"]["id"]


async def test_idempotency_key_replays_the_original_response(h: Harness) -> None:
    conv_id = await open_conversation(h)
    path = f"/conversations/{conv_id}/messages"
    first = await h.api("POST", path, {"text": "once"}, Idempotency_Key="k1")
    again = await h.api("POST", path, {"text": "once"}, Idempotency_Key="k1")
    assert first[0] == again[0] == 201
    assert first[1] == again[1]
    assert len(h.sim.world.conversations[conv_id].messages) == 2  # the customer's + one
    assert h.sim.api_calls[-1].idempotency_key == "k1"
    assert h.sim.api_calls[-1].outcome == "replayed"

    h.clock.advance(24 * 3600 + 1)
    later = await h.api("POST", path, {"text": "once"}, Idempotency_Key="k1")
    assert later[1]["message"]["id"] != first[1]["message"]["id"]


async def test_text_limit_counts_characters(h: Harness) -> None:
    conv_id = await open_conversation(h)
    path = f"/conversations/{conv_id}/messages"
    status, _, _ = await h.api("POST", path, {"text": "🦓" * 1000})
    assert status == 201
    status, body, _ = await h.api("POST", path, {"text": "a" * 1001})
    assert status == 422 and body["error"]["code"] == "text_too_long"
    assert set(body["error"]) == {"code", "message"}


async def test_closed_conversation_refuses_messages(h: Harness) -> None:
    conv_id = await open_conversation(h)
    await h.sim.close_conversation(conv_id, by="account")
    status, body, _ = await h.api("POST", f"/conversations/{conv_id}/messages", {"text": "hi"})
    assert status == 409 and body["error"]["code"] == "conversation_closed"


@pytest.mark.parametrize(
    "path",
    [
        "/conversations/cnv_nope/messages",
        "/conversations/cnv_nope/typing",
        "/posts/pst_no/comments",
    ],
)
async def test_unknown_targets_are_404(h: Harness, path: str) -> None:
    status, body, _ = await h.api("POST", path, {"text": "hi", "typing": True})
    assert status == 404 and body["error"]["code"] == "not_found"


async def test_bad_requests_are_400(h: Harness) -> None:
    conv_id = await open_conversation(h)
    path = f"/conversations/{conv_id}/messages"
    for body in ({}, {"text": 5}, [1], {"text": "x", "attachments": "nope"}):
        status, answer, _ = await h.api("POST", path, body)
        assert status == 400 and answer["error"]["code"] == "invalid_request"
    async with h.client.post("/v1" + path, data=b"{not json", headers=AUTH) as r:
        assert r.status == 400
        assert (await r.json())["error"]["code"] == "invalid_request"


async def test_a_wrong_token_is_401(h: Harness) -> None:
    conv_id = await open_conversation(h)
    for auth in ({"Authorization": "Bearer wrong"}, {}):
        async with h.client.post(
            f"/v1/conversations/{conv_id}/messages", json={"text": "x"}, headers=auth
        ) as r:
            assert r.status == 401
            assert (await r.json())["error"]["code"] == "invalid_token"


async def test_rate_limit_is_20_per_second_per_token(h: Harness) -> None:
    conv_id = await open_conversation(h)
    path = f"/conversations/{conv_id}/typing"
    for _ in range(20):
        assert (await h.api("POST", path, {"typing": True}))[0] == 204
    status, body, headers = await h.api("POST", path, {"typing": True})
    assert status == 429 and body["error"]["code"] == "rate_limited"
    assert headers["Retry-After"] == "1"
    h.clock.advance(1)
    assert (await h.api("POST", path, {"typing": False}))[0] == 204
    conv = h.sim.world.conversations[conv_id]
    assert conv.typing is False and conv.typing_at_ms == int(h.clock() * 1000)


@pytest.mark.parametrize(
    ("attachment", "status"),
    [
        ({"url": "https://cdn.example/a.png", "name": "a.png"}, 201),
        ({"url": "https://cdn.example/a.JPEG"}, 201),
        ({"url": "https://cdn.example/file", "name": "report.pdf", "size_bytes": 5242880}, 201),
        ({"url": "https://cdn.example/a.pdf", "name": "a.pdf", "size_bytes": 5242881}, 422),
        ({"url": "https://cdn.example/a.exe", "name": "a.exe"}, 422),
        ({"url": "https://cdn.example/movie.mp4"}, 422),
    ],
)
async def test_dm_attachment_rules(h: Harness, attachment: dict[str, Any], status: int) -> None:
    conv_id = await open_conversation(h)
    got, body, _ = await h.api(
        "POST", f"/conversations/{conv_id}/messages", {"text": "", "attachments": [attachment]}
    )
    assert got == status
    if status == 422:
        assert body["error"]["code"] == "attachment_not_allowed"


async def test_comments_take_no_attachments(h: Harness) -> None:
    post_id = await h.sim.user_posts("usr_lion", "Roar", "?")
    body = {"text": "see", "attachments": [{"url": "https://cdn.example/a.png"}]}
    status, answer, _ = await h.api("POST", f"/posts/{post_id}/comments", body)
    assert status == 422 and answer["error"]["code"] == "attachment_not_allowed"


async def test_injected_failures_resets_and_holds(h: Harness) -> None:
    conv_id = await open_conversation(h)
    path = f"/conversations/{conv_id}/messages"
    h.sim.fail_next(1, 503, path_contains="/messages", retry_after=2)
    status, body, headers = await h.api("POST", path, {"text": "a"}, Idempotency_Key="k")
    assert status == 503 and body["error"]["code"] == "unavailable"
    assert headers["Retry-After"] == "2"
    assert (await h.api("POST", path, {"text": "a"}, Idempotency_Key="k"))[0] == 201

    h.sim.reset_next(1)
    with pytest.raises(aiohttp.ServerDisconnectedError):
        await h.api("POST", path, {"text": "b"})
    assert h.sim.api_calls[-1].outcome == "reset"

    hold = h.sim.hold_next(path_contains="/messages")
    pending = asyncio.create_task(h.api("POST", path, {"text": "c"}))
    await hold.arrived.wait()
    assert not pending.done()
    hold.release()
    assert (await pending)[0] == 201
    texts = [m.text for m in h.sim.world.conversations[conv_id].messages]
    assert texts == ["hello", "a", "c"]


async def test_faults_after_the_work_keep_what_was_done(h: Harness) -> None:
    conv_id = await open_conversation(h)
    path = f"/conversations/{conv_id}/messages"
    h.sim.reset_next(1, after=True)
    with pytest.raises(aiohttp.ServerDisconnectedError):
        await h.api("POST", path, {"text": "lost answer"}, Idempotency_Key="k")
    status, body, _ = await h.api("POST", path, {"text": "lost answer"}, Idempotency_Key="k")
    assert status == 201
    msgs = h.sim.world.conversations[conv_id].messages
    assert [m.text for m in msgs] == ["hello", "lost answer"]
    assert body["message"]["id"] == msgs[-1].id

    hold = h.sim.hold_next(after=True)
    pending = asyncio.create_task(h.api("POST", path, {"text": "slow"}))
    await hold.arrived.wait()
    assert msgs[-1].text == "slow" and not pending.done()
    hold.release()
    assert (await pending)[0] == 201


async def test_an_unanswered_hold_is_released_on_shutdown(
    aiohttp_server: ServerFactory, aiohttp_client: ClientFactory
) -> None:
    sim = WateringHoleSim(WateringHoleConfig(api_token=TOKEN, clock=FakeClock()))
    server = await aiohttp_server(sim.app)
    client = await aiohttp_client(server)
    hold = sim.hold_next()
    pending = asyncio.create_task(client.post("/v1/conversations", json={}, headers=AUTH))
    await hold.arrived.wait()
    await server.close()
    assert hold.released.is_set()
    response = await pending  # the held request finished during the graceful shutdown
    assert response.status == 400
    response.release()


def test_config_from_env_reads_the_mapping_variables() -> None:
    config = config_from_env(
        {
            "WATERING_HOLE_TOKEN": "t",
            "WH_SECRET": "a",
            "WH_SECRET_PREVIOUS": "b",
            "WH_VERIFY_TOKEN": "v",
        }
    )
    assert (config.api_token, config.webhook_secrets, config.verify_token) == ("t", ("a", "b"), "v")
    assert config_from_env({}).webhook_secrets == WateringHoleConfig().webhook_secrets


# -- control API ---------------------------------------------------------------------------


async def test_control_api_drives_customers(h: Harness) -> None:
    status, dm = await h.control("POST", "/dm", {"user_id": "usr_zebra", "text": "hi"})
    assert status == 201
    status, post = await h.control(
        "POST", "/post", {"user_id": "usr_lion", "title": "T", "body": "B"}
    )
    assert status == 201
    status, top = await h.control(
        "POST", "/comment", {"user_id": "usr_hippo", "post_id": post["post_id"], "body": "c"}
    )
    assert status == 201
    status, _ = await h.control(
        "POST",
        "/comment",
        {
            "user_id": "usr_zebra",
            "post_id": post["post_id"],
            "body": "r",
            "parent_comment_id": top["comment_id"],
        },
    )
    assert status == 201
    _, answer, _ = await h.api(
        "POST", f"/conversations/{dm['conversation_id']}/messages", {"text": "yo"}
    )
    receipt = {"message_id": answer["message"]["id"], "kind": "read"}
    assert (await h.control("POST", "/receipt", receipt))[0] == 200
    close = {"conversation_id": dm["conversation_id"]}
    assert (await h.control("POST", "/close", close))[0] == 200

    status, state = await h.control("GET", "/state")
    assert status == 200
    (conv,) = state["conversations"]
    assert conv["closed"] is True and conv["closed_by"] == "user"
    assert [m["text"] for m in conv["messages"]] == ["hi", "yo"]
    assert conv["messages"][1]["status"] == "read"
    (board,) = state["posts"]
    assert board["comments"][0]["replies"][0]["body"] == "r"
    assert {u["id"] for u in state["users"]} >= {"usr_zebra", "usr_jungle"}
    assert state["stats"]["queued_events"] == 7

    status, flushed = await h.control("POST", "/flush")
    assert status == 200 and flushed["attempts"][0]["status"] == 200
    assert (await h.control("POST", "/subscribe"))[1]["ok"] is True


async def test_control_api_refuses_bad_input_with_json(h: Harness) -> None:
    cases: list[tuple[str, Any]] = [
        ("/dm", {"user_id": "usr_zebra"}),
        ("/dm", {"user_id": "usr_nobody", "text": "x"}),
        ("/post", ["not", "an", "object"]),
        ("/receipt", {"message_id": "msg_x", "kind": "eaten"}),
        ("/close", {"conversation_id": 3}),
    ]
    for path, body in cases:
        status, answer = await h.control("POST", path, body)
        assert 400 <= status < 500 and "code" in answer["error"], (path, answer)
    async with h.client.post("/_sim/dm", data=b"{oops") as r:
        assert r.status == 400 and "error" in await r.json()
    async with h.client.get("/_sim/changes?since=abc") as r:
        assert r.status == 400


async def test_changes_long_poll(h: Harness) -> None:
    status, now = await h.control("GET", "/changes?since=-5")
    assert status == 200 and now["changed"] is True  # behind: answered at once
    seq = now["seq"]

    waiting = asyncio.create_task(h.control("GET", f"/changes?since={seq}"))
    await h.sim.long_poll_parked.wait()
    assert not waiting.done()
    await h.sim.user_posts("usr_lion", "news", "!")
    status, moved = await waiting
    assert status == 200 and moved["seq"] > seq
