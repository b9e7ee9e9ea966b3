"""Issue 8: the engine's side of lookups, thread state, media URLs, uploads and composite ids.

No network: lookups and uploads go through small in-test IO objects (the engine's
InboundIO / UploadIO protocols), the way the queue worker and the reply endpoint give
them the store, the platform client and the media signer.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from gateway.clock import FakeClock
from gateway.delivery.memory import MemoryStore
from gateway.errors import MappingError, UnprocessableEntity, UpstreamUnavailable
from gateway.mapping import (
    CompiledMapping,
    FetchedFile,
    InboundCall,
    InboundItem,
    OutboundContext,
    PlatformRequest,
    PlatformResponse,
    StateValue,
    load_mapping,
)
from gateway.mapping.bridging import join_ids, split_ids
from gateway.mapping.offline import run_offline
from gateway.thread_state import GRACE, load, save

BASE = """\
name: bridge
platform: {base_url: "https://api.bridge.example", auth: {bearer: t0ken}}
webhook: {path: /webhooks/bridge, signature: {scheme: none, allow_unsigned: true}}
"""

ROUTE = """\
inbound:
  - name: message
    channel: chat
    action: create_message
    extract:
      thread_id: chat
      message_id: id
      text: text
      created_at: iso(ts)
      author_id: user
    lookups:
      who:
        when: author_id != 'bot'
        request: {method: GET, path: "/users/{{ author_id }}"}
        timeout: 1
        cache: {key: "{{ author_id }}", ttl: 60}
        success: body.ok == `true`
        result: {author_name: user.name}
        fallback: {author_name: "user {{ author_id }}"}
"""


def mapping(tmp_path: Path, text: str) -> CompiledMapping:
    path = tmp_path / "bridge.yaml"
    channels = "" if "\nchannels:" in "\n" + text else "channels: {chat: {name: Chat}}\n"
    path.write_text(BASE + channels + text, encoding="utf-8")
    return load_mapping(path)


def problems(tmp_path: Path, text: str) -> str:
    with pytest.raises(MappingError) as caught:
        mapping(tmp_path, text)
    return str(caught.value)


class IO:
    """An InboundIO with a dict for a cache and scripted platform answers."""

    def __init__(self, answers: list[PlatformResponse | Exception]) -> None:
        self.answers = answers
        self.cache: dict[str, Any] = {}
        self.sent: list[PlatformRequest] = []

    async def cached(self, key: str) -> Any | None:
        return self.cache.get(key)

    async def remember(self, key: str, value: Any, ttl: float) -> None:
        self.cache[key] = value

    async def send(self, lookup: str, request: PlatformRequest, within: float) -> PlatformResponse:
        self.sent.append(request)
        answer = self.answers.pop(0)
        if isinstance(answer, Exception):
            raise answer
        return answer

    def media_url(self, fields: Mapping[str, Any]) -> str:
        return "https://gw.example/media/" + "-".join(f"{k}={v}" for k, v in fields.items())


def item(user: str = "u1", n: int = 1) -> InboundItem:
    body = {"chat": "c1", "id": f"m{n}", "text": "hi", "ts": 1764158400, "user": user}
    return InboundItem(body, None, None, 0, {}, {})


def render(m: CompiledMapping, io: IO, it: InboundItem) -> InboundCall:
    call = run_offline(m.render_inbound(it, io))
    assert isinstance(call, InboundCall)
    return call


def test_a_lookup_is_deferred_at_intake_and_rendered_by_the_worker(tmp_path: Path) -> None:
    m = mapping(tmp_path, ROUTE)
    partial = m.route_inbound(item())
    assert isinstance(partial, InboundCall) and partial.deferred
    assert (partial.thread_id, partial.message_id, partial.body) == ("c1", "m1", {})
    io = IO([PlatformResponse(200, {}, {"ok": True, "user": {"name": "Una"}})])
    call = render(m, io, item())
    assert not call.deferred
    assert call.body["authorEndUserIdentity"]["firstName"] == "Una"
    (sent,) = io.sent
    assert (sent.url, sent.headers["Authorization"]) == (
        "https://api.bridge.example/users/u1",
        "Bearer t0ken",
    )
    ((key, cached),) = io.cache.items()
    name, lookup, _definition, rendered = key.split("\x1f")
    assert (name, lookup, rendered, cached) == ("bridge", "who", "u1", {"author_name": "Una"})
    again = render(m, io, item(n=2))  # the cache answers: nothing sent
    assert again.body["authorEndUserIdentity"]["firstName"] == "Una"
    assert [o.result for o in again.lookups] == ["cached"] and len(io.sent) == 1


@pytest.mark.parametrize(
    "answer",
    [
        UpstreamUnavailable("bridge", "no answer (TimeoutError)"),
        PlatformResponse(404, {}, {"error": "no such user"}),
        PlatformResponse(200, {}, {"ok": False}),
    ],
    ids=["timeout", "not found", "failure inside a 200"],
)
def test_a_failed_lookup_gives_the_fallback_and_is_not_cached(
    tmp_path: Path, answer: PlatformResponse | Exception
) -> None:
    m = mapping(tmp_path, ROUTE)
    io = IO([answer, answer])  # a retryable failure (no answer) gets one more try
    call = render(m, io, item())
    assert call.body["authorEndUserIdentity"]["firstName"] == "user u1"
    (outcome,) = call.lookups
    assert outcome.result == "failed" and outcome.reason
    assert io.cache == {}
    retryable = isinstance(answer, Exception)
    assert len(io.sent) == (2 if retryable else 1)
    assert ("retryable" if retryable else "final") in outcome.reason


FAILING_INSIDE_A_200 = ROUTE.replace(
    "        success: body.ok == `true`\n",
    "        success: body.ok == `true`\n"
    "        retryable: body.error == 'busy'\n"
    "        error: {code: error, message: detail}\n",
)


def test_a_failure_inside_a_200_is_classified_retryable_or_final(tmp_path: Path) -> None:
    m = mapping(tmp_path, FAILING_INSIDE_A_200)
    busy = PlatformResponse(200, {}, {"ok": False, "error": "busy", "detail": "try again"})
    found = PlatformResponse(200, {}, {"ok": True, "user": {"name": "Una"}})
    io = IO([busy, found])  # retryable: one more try, which succeeds
    call = render(m, io, item())
    assert call.body["authorEndUserIdentity"]["firstName"] == "Una"
    assert [o.result for o in call.lookups] == ["fetched"] and len(io.sent) == 2

    gone = PlatformResponse(200, {}, {"ok": False, "error": "user_gone", "detail": "deleted"})
    io = IO([gone, found])  # final: no second try, the fallback applies
    call = render(m, io, item(n=2))
    assert call.body["authorEndUserIdentity"]["firstName"] == "user u1"
    (outcome,) = call.lookups
    assert outcome.result == "failed" and len(io.sent) == 1
    assert "(user_gone): deleted" in outcome.reason and "final" in outcome.reason


def test_a_skipped_lookup_gives_the_fallback_without_a_request(tmp_path: Path) -> None:
    m = mapping(tmp_path, ROUTE)
    io = IO([])
    call = render(m, io, item(user="bot"))
    assert call.body["authorEndUserIdentity"]["firstName"] == "user bot"
    assert [o.result for o in call.lookups] == ["skipped"] and not io.sent


def test_lookup_mistakes_are_load_errors(tmp_path: Path) -> None:
    clash = ROUTE.replace("result: {author_name: user.name}", "result: {text: user.name}")
    assert "already given by the route's extract" in problems(tmp_path, clash)
    intake = ROUTE.replace("result: {author_name: user.name}", "result: {thread_id: user.id}")
    assert "the queue needs it before lookups run" in problems(tmp_path, intake)
    stray = ROUTE.replace('fallback: {author_name: "user {{ author_id }}"}', "fallback: {x: y}")
    assert "which the lookup's result does not" in problems(tmp_path, stray)
    untimed = ROUTE.replace("        timeout: 1\n", "")
    assert "'timeout' is missing" in problems(tmp_path, untimed)
    request = ROUTE.replace("thread_id: chat", "thread_id: headers().chat")
    assert "headers() and query() are empty" in problems(tmp_path, request)


def test_state_is_computed_by_the_worker_and_required_by_outbound_routes(tmp_path: Path) -> None:
    state = """\
    state:
      ttl: 600
      store:
        token: {value: token, ttl: 30, expires_at: token_until}
        place: chat
outbound:
  - name: reply
    require_state: [token]
    request: {path: /reply, body: {token: "{{ state.token }}", place: "{{ state.place }}"}}
"""
    m = mapping(tmp_path, ROUTE.split("    lookups:")[0] + state)
    it = item()
    it = InboundItem(
        {**it.item, "token": "tk", "token_until": "2025-11-26T12:00:10Z"}, None, None, 0, {}, {}
    )
    assert m.route_inbound(it).deferred  # type: ignore[union-attr]
    call = render(m, IO([]), it)
    assert call.state == (
        StateValue("token", "tk", 30.0, 1764158410.0),
        StateValue("place", "c1", 600.0),
    )
    assert m.stores_thread_state
    wrong = state.replace("require_state: [token]", "require_state: [tokne]")
    assert "no inbound route stores 'tokne'" in problems(
        tmp_path, ROUTE.split("    lookups:")[0] + wrong
    )


def test_media_url_needs_a_media_section(tmp_path: Path) -> None:
    route = ROUTE.split("    lookups:")[0] + '      attachments: "[{url: media_url({id: id})}]"\n'
    assert "uses media_url() but the mapping has no `media:`" in problems(tmp_path, route)
    media = "media: {request: {path: '/files/{{ id }}'}, ttl: 60}\n"
    m = mapping(tmp_path, media + route)
    call = render(m, IO([]), item())
    assert call.body["attachments"] == [{"url": "https://gw.example/media/id=m1"}]
    request = m.media_request({"id": "m1"})
    assert request.url == "https://api.bridge.example/files/m1"
    assert request.headers["Authorization"] == "Bearer t0ken"


@given(st.lists(st.one_of(st.text(), st.integers()), min_size=1, max_size=4))
def test_composite_ids_split_back_into_their_parts(parts: list[str | int]) -> None:
    assert split_ids(join_ids(parts)) == [str(p) for p in parts]


async def test_thread_state_expires_then_is_forgotten() -> None:
    clock = FakeClock(1_764_158_400.0)
    store = MemoryStore(clock=clock)
    await store.open()

    async def state() -> tuple[dict[str, Any], set[str]]:
        found = await load(store, "m", "chat", "t1", clock())
        return dict(found.values), set(found.expired)

    try:
        start = clock()
        values = [StateValue("token", "tk", 30.0), StateValue("place", "c1", 600.0, start + 300)]
        await save(store, "m", "chat", "t1", values, clock())
        clock.advance(10)
        assert await state() == ({"token": "tk", "place": "c1"}, set())
        clock.advance(21)
        assert await state() == ({"place": "c1"}, {"token"})
        await save(store, "m", "chat", "t1", [StateValue("token", "tk2", 30.0)], clock())
        assert await state() == ({"token": "tk2", "place": "c1"}, set())
        clock.advance(300 - 31)  # the time the message gave, before the 600 s ttl
        assert await state() == ({}, {"token", "place"})
        clock.advance(GRACE + 1)  # long expired: forgotten, so "missing" rather than "expired"
        assert await state() == ({}, set())
    finally:
        await store.close()


class Files:
    """An UploadIO: every attachment is the same small picture; uploads answer with ids."""

    def __init__(self) -> None:
        self.sent: list[PlatformRequest] = []

    async def fetch(self, url: str, max_bytes: int, within: float) -> FetchedFile:
        return FetchedFile(b"\x89PNG picture", "image/png", "from-cxone.png")

    async def send(self, request: PlatformRequest, index: int, within: float) -> PlatformResponse:
        self.sent.append(request)
        return PlatformResponse(201, {}, {"media": {"id": 9007199254740993 + index}})


def test_a_raw_upload_sends_the_file_itself_then_the_message_names_it(tmp_path: Path) -> None:
    m = mapping(
        tmp_path,
        """\
channels: {chat: {name: Chat, attachments: {content_types: [image/*]}}}
outbound:
  - name: reply
    upload:
      request: {path: "/media", body_format: raw, headers: {X-File-Name: "{{ attachment.filename }}"}}
      result: {media_id: media.id}
    request:
      path: /messages
      body: {text: "{{ text }}", media: "{{ uploads | map(attribute='media_id') | list }}"}
""",
    )
    attachments = [
        {"url": f"https://cxone.example/f{n}.png", "friendlyName": f"p{n}.png"} for n in (1, 2)
    ]
    ctx = OutboundContext(
        "reply",
        "outbound",
        "chat",
        "ch",
        {},
        {
            "thread": {"idOnExternalPlatform": "t1"},
            "messageContent": {"payload": {"text": "two"}},
            "attachments": attachments,
        },
    )
    plan = m.route_outbound(ctx)
    assert plan.requests == () and len(plan.pending_uploads) == 2
    files = Files()
    plan = run_offline(m.upload_attachments(plan, files))
    first, second = files.sent
    assert (first.url, first.body, first.headers["Content-Type"]) == (
        "https://api.bridge.example/media",
        b"\x89PNG picture",
        "image/png",
    )
    assert (first.headers["X-File-Name"], second.headers["X-File-Name"]) == ("p1.png", "p2.png")
    (message,) = plan.requests
    assert message.body == b'{"text":"two","media":["9007199254740993","9007199254740994"]}'


def test_a_file_that_is_not_what_its_name_says_is_refused(tmp_path: Path) -> None:
    m = mapping(
        tmp_path,
        """\
channels: {chat: {name: Chat, attachments: {content_types: [application/pdf]}}}
outbound:
  - name: reply
    upload: {request: {path: /media, body_format: raw}}
    request: {path: /messages}
""",
    )
    body = {
        "thread": {"idOnExternalPlatform": "t1"},
        "attachments": [{"url": "https://x/a.pdf", "friendlyName": "a.pdf"}],
    }
    plan = m.route_outbound(OutboundContext("reply", "outbound", "chat", "ch", {}, body))
    files = Files()
    with pytest.raises(UnprocessableEntity, match="attachment 1 is image/png"):
        run_offline(m.upload_attachments(plan, files))
    assert not files.sent
