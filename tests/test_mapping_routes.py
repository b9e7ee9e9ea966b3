"""Inbound and outbound routing, webhooks, platform requests and CXone answers."""

from __future__ import annotations

import base64
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlsplit

import orjson
import pytest

from gateway.errors import (
    BadRequest,
    MappingRuntimeError,
    UnprocessableEntity,
    UpstreamRejected,
    UpstreamUnavailable,
)
from gateway.mapping import (
    CompiledMapping,
    Ignored,
    InboundCall,
    InboundItem,
    NoRoute,
    OutboundContext,
    PlatformResponse,
    load_mapping,
)

ROOT = Path(__file__).resolve().parents[1]
FIXTURES = ROOT / "tests" / "fixtures" / "mappings"


@pytest.fixture(scope="module")
def wh() -> CompiledMapping:
    return load_mapping(
        ROOT / "mappings" / "watering-hole.yaml",
        env={
            "WATERING_HOLE_API": "https://api.wateringhole.example/v1/",
            "WATERING_HOLE_TOKEN": "tok",
            "WH_SECRET": "sec",
            "WH_VERIFY_TOKEN": "vt",
        },
    )


@pytest.fixture(scope="module")
def nested() -> CompiledMapping:
    return load_mapping(FIXTURES / "nested.yaml", env={})


@pytest.fixture(scope="module")
def chatops() -> CompiledMapping:
    return load_mapping(FIXTURES / "chatops.yaml", env={})


@pytest.fixture(scope="module")
def minimal() -> CompiledMapping:
    return load_mapping(FIXTURES / "minimal.yaml", env={})


def reply(channel: str, text: str, **body: Any) -> OutboundContext:
    return OutboundContext(
        "reply",
        "outbound",
        channel,
        "cx-1",
        {},
        {
            "thread": {"idOnExternalPlatform": body.pop("thread", "cnv_1")},
            "messageContent": {"type": "TEXT", "payload": {"text": text}},
            **body,
        },
    )


def route_all(m: CompiledMapping, payload: Any, **headers: str) -> list[InboundCall | Ignored]:
    return [m.route_inbound(i) for i in m.split(payload, headers=headers, query={})]


# -- inbound ---------------------------------------------------------------------------
def test_no_matching_route_is_ignored(minimal: CompiledMapping) -> None:
    (result,) = route_all(minimal, {"kind": "other"})
    assert result == Ignored("minimal", "(no route)", None)


def test_whole_payload_is_one_item_without_foreach(minimal: CompiledMapping) -> None:
    (item,) = minimal.split({"a": 1}, headers={"X-A": "b"}, query={"q": "1"})
    assert item.item == {"a": 1}
    assert item.delivery == {"a": 1}
    assert item.parent is None
    assert item.headers == {"x-a": "b"}


def test_required_field_that_comes_out_null(minimal: CompiledMapping) -> None:
    with pytest.raises(MappingRuntimeError) as info:
        route_all(minimal, {"kind": "msg", "chat": "c", "id": "m", "text": "t", "ts": 1})
    assert info.value.mapping == "minimal"
    assert info.value.route == "message"
    assert "author_id" in info.value.reason and "`from`" in info.value.reason


def test_runtime_expression_error_names_route(minimal: CompiledMapping) -> None:
    payload = {"kind": "msg", "chat": "c", "id": "m", "text": "t", "ts": "later", "from": "u"}
    with pytest.raises(MappingRuntimeError, match=r"route 'message'.*iso"):
        route_all(minimal, payload)


def test_ids_become_exact_strings(minimal: CompiledMapping) -> None:
    (call,) = route_all(
        minimal,
        {
            "kind": "msg",
            "chat": 12345678901234567890123,
            "id": 7,
            "text": "t",
            "ts": 1,
            "from": "u",
        },
    )
    assert isinstance(call, InboundCall)
    assert call.thread_id == "12345678901234567890123"
    assert call.message_id == "7"


def test_nested_batches_reach_their_ancestors(nested: CompiledMapping) -> None:
    payload = {
        "object": "whatsapp_business_account",
        "entry": [
            {
                "id": "acct-1",
                "changes": [
                    {
                        "value": {
                            "contacts": [
                                {"wa_id": "u1", "profile": {"name": "Ann"}},
                                {"wa_id": "u2", "profile": {"name": "Bo"}},
                            ],
                            "messages": [
                                {
                                    "id": "w1",
                                    "from": "u1",
                                    "timestamp": "1764158400",
                                    "type": "text",
                                    "text": {"body": "one"},
                                },
                                {
                                    "id": "w2",
                                    "from": "u2",
                                    "timestamp": "1764158401",
                                    "type": "text",
                                    "text": {"body": "two"},
                                },
                            ],
                        }
                    },
                    {"value": {"statuses": [{"id": "s"}]}},
                ],
            },
            {
                "id": "acct-2",
                "changes": [
                    {
                        "value": {
                            "messages": [
                                {
                                    "id": "w3",
                                    "from": "u3",
                                    "timestamp": "1764158402",
                                    "type": "image",
                                }
                            ]
                        }
                    }
                ],
            },
        ],
    }
    items = nested.split(payload, headers={"X-Hub-Signature-256": "sha256=ab"}, query={})
    assert [i.position for i in items] == [0, 1, 2]
    assert items[0].parents[1]["id"] == "acct-1"
    assert items[0].parent is items[0].parents[0]
    results = [nested.route_inbound(i) for i in items]
    first, second, third = results
    assert isinstance(first, InboundCall) and isinstance(second, InboundCall)
    assert first.fields["author_name"] == "Ann"
    assert second.fields["author_name"] == "Bo"
    assert first.fields["account"] == "acct-1"
    assert first.fields["source"] == "whatsapp_business_account"
    assert first.body["externalAttributes"] == [
        {"key": "account", "value": "acct-1"},
        {"key": "source", "value": "whatsapp_business_account"},
    ]
    assert first.body["authorEndUserIdentity"]["customFields"] == [
        {"ident": "sig", "value": "sha256=ab"}
    ]
    assert first.body["authorEndUserIdentity"]["firstName"] == "Ann"
    assert first.dedupe_key == "nested:w1"
    assert third == Ignored("nested", "(no route)", "nested:w3")


def test_sync_response(nested: CompiledMapping, minimal: CompiledMapping) -> None:
    reply_ = nested.sync_response({"entry": [1, 2]})
    assert reply_ is not None
    assert (reply_.status, reply_.content_type) == (200, "application/json")
    assert orjson.loads(reply_.body) == {"received": 2}
    assert minimal.sync_response({}) is None


# -- webhook ---------------------------------------------------------------------------
def test_parse_json(wh: CompiledMapping) -> None:
    assert wh.parse_body(b'{"id": 123456789012345678901234}', "application/json") == {
        "id": 123456789012345678901234
    }
    for junk in (b"{nope", b'"a string"', b"12", b""):
        with pytest.raises(BadRequest):
            wh.parse_body(junk, "application/json")


def test_a_delivery_without_items_is_refused(wh: CompiledMapping, nested: CompiledMapping) -> None:
    payloads: list[Any] = [[], {"delivery": {"id": "x"}}]
    for payload in payloads:
        with pytest.raises(BadRequest) as info:
            wh.split(payload, headers={}, query={})
        assert info.value.code == "invalid_delivery"
    assert wh.split({"events": []}, headers={}, query={}) == []
    # deeper levels may be empty (a change that carries statuses, not messages)
    assert nested.split({"entry": [{"changes": [{"value": {}}]}]}, headers={}, query={}) == []


def test_parse_form(chatops: CompiledMapping) -> None:
    body = chatops.parse_body(b"text=a+b%26c&tag=x&tag=y&empty=", None)
    assert body == {"text": "a b&c", "tag": ["x", "y"], "empty": ""}
    with pytest.raises(BadRequest):
        chatops.parse_body(b"\xff\xfe", None)


def test_form_delivery_routes(chatops: CompiledMapping) -> None:
    payload = chatops.parse_body(
        b"command=%2Fhelp&channel_id=C1&trigger_id=T1&text=hi&ts=1764158400&user_id=U1", None
    )
    (call,) = route_all(chatops, payload)
    assert isinstance(call, InboundCall)
    assert call.body["createdAtWithMilliseconds"] == "2025-11-26T12:00:00.000Z"


def test_get_handshake(wh: CompiledMapping) -> None:
    query = {"wh.mode": "subscribe", "wh.challenge": "<script>", "wh.verify_token": "vt"}
    ok = wh.handshake("GET", query, {}, None)
    assert ok is not None and (ok.status, ok.body) == (200, b"<script>")
    bad = wh.handshake("GET", {**query, "wh.verify_token": "vx"}, {}, None)
    assert bad is not None and bad.status == 403
    missing = wh.handshake("GET", {"wh.mode": "subscribe"}, {}, None)
    assert missing is not None and missing.status == 403
    assert wh.handshake("POST", query, {}, {}) is None
    assert wh.handshake("GET", {}, {}, None) is None


def test_post_challenge(nested: CompiledMapping) -> None:
    body = {"type": "url_verification", "token": "nested-verify", "challenge": 'ch"al'}
    ok = nested.handshake("POST", {}, {}, body)
    assert ok is not None and ok.content_type == "application/json"
    assert orjson.loads(ok.body) == {"challenge": 'ch"al'}
    bad = nested.handshake("POST", {}, {}, {**body, "token": "x"})
    assert bad is not None and bad.status == 403
    assert nested.handshake("POST", {}, {}, {"type": "event"}) is None
    assert nested.handshake("POST", {}, {}, None) is None


# -- outbound --------------------------------------------------------------------------
def test_bearer_auth_and_url(wh: CompiledMapping) -> None:
    (request,) = wh.route_outbound(reply("chat", "hi", thread="cnv_a/b?c")).requests
    assert request.method == "POST"
    assert request.url == "https://api.wateringhole.example/v1/conversations/cnv_a%2Fb%3Fc/messages"
    assert request.headers["Authorization"] == "Bearer tok"
    assert request.headers["Content-Type"] == "application/json"
    assert orjson.loads(request.body or b"") == {"text": "hi"}


def test_header_auth(minimal: CompiledMapping) -> None:
    (request,) = minimal.route_outbound(reply("dm", "x")).requests
    assert request.headers["X-Api-Key"] == "test-key"
    assert "test-key" not in repr(request)


def test_query_auth_query_and_headers(nested: CompiledMapping) -> None:
    (request,) = nested.route_outbound(reply("dm", "x", thread="u 1")).requests
    parts = urlsplit(request.url)
    assert parts.path == "/v19.0/1555000/messages"
    assert parse_qsl(parts.query) == [
        ("fields", "id"),
        ("tags", "a"),
        ("tags", "b"),
        ("limit", "5"),
        ("access_token", "tok-query-secret"),
    ]
    assert request.headers["X-Trace"] == "t-u 1"
    assert request.headers["X-Client"] == "byoc-gateway"
    assert "tok-query-secret" not in repr(request)


def test_header_injection_is_refused(nested: CompiledMapping) -> None:
    with pytest.raises(MappingRuntimeError, match="line break"):
        nested.route_outbound(reply("dm", "x", thread="a\r\nX-Evil: 1"))


def test_basic_auth_form_body_and_success_condition(chatops: CompiledMapping) -> None:
    plan = chatops.route_outbound(
        OutboundContext(
            "reply",
            "legacy",
            "room",
            "cx",
            {},
            {
                "thread": {"idOnExternalPlatform": "C1"},
                "messageContent": {"payload": {"text": "a&b=c"}},
            },
        )
    )
    (request,) = plan.requests
    assert plan.route == "post"
    assert (
        request.headers["Authorization"]
        == "Basic " + base64.b64encode(b"bot:pa55word-secret").decode()
    )
    assert request.headers["Content-Type"] == "application/x-www-form-urlencoded"
    assert parse_qsl((request.body or b"").decode()) == [
        ("channel", "C1"),
        ("text", "a&b=c"),
        ("unfurl", "false"),
    ]
    answer = chatops.complete_outbound(plan, [PlatformResponse(200, {}, {"ok": True, "ts": 17.5})])
    assert answer == {"idOnExternalPlatform": "17.5", "extra": 0}  # ids become strings
    with pytest.raises(UpstreamRejected, match="channel_not_found"):
        chatops.complete_outbound(
            plan, [PlatformResponse(200, {}, {"ok": False, "error": "channel_not_found"})]
        )
    with pytest.raises(UpstreamUnavailable, match="ratelimited"):
        chatops.complete_outbound(
            plan, [PlatformResponse(200, {}, {"ok": False, "error": "ratelimited"})]
        )


def test_absolute_url_text_body_and_no_auth_to_other_hosts(chatops: CompiledMapping) -> None:
    plan = chatops.route_outbound(
        OutboundContext(
            "reply",
            "outbound",
            "room",
            "cx",
            {},
            {
                "thread": {"idOnExternalPlatform": "C1"},
                "response_url": "https://hooks.other.test/r/1",
                "messageContent": {"payload": {"text": "!deploy"}},
            },
        )
    )
    (request,) = plan.requests
    assert request.url == "https://hooks.other.test/r/1"
    assert request.body == b"notice: !deploy"
    assert request.headers["Content-Type"] == "text/plain; charset=utf-8"
    assert "Authorization" not in request.headers


def test_platform_errors(wh: CompiledMapping) -> None:
    plan = wh.route_outbound(reply("chat", "hi"))
    error = {"error": {"code": "rate_limited", "message": "slow down"}}
    with pytest.raises(UpstreamUnavailable) as info:
        wh.complete_outbound(plan, [PlatformResponse(429, {"Retry-After": "7"}, error)])
    assert info.value.retry_after == 7.0
    assert info.value.code == "rate_limited"
    assert "slow down" in str(info.value)
    with pytest.raises(UpstreamUnavailable):
        wh.complete_outbound(plan, [PlatformResponse(503, {}, None)])
    rejected = wh.platform_error(PlatformResponse(404, {}, {"error": {"code": "not_found"}}))
    assert isinstance(rejected, UpstreamRejected) and rejected.status == 404


def test_missing_result_field_is_a_runtime_error(wh: CompiledMapping) -> None:
    plan = wh.route_outbound(reply("chat", "hi"))
    with pytest.raises(MappingRuntimeError, match="message_id"):
        wh.complete_outbound(plan, [PlatformResponse(201, {}, {"unexpected": True})])


def test_no_route(wh: CompiledMapping) -> None:
    with pytest.raises(NoRoute) as info:
        wh.route_outbound(
            OutboundContext(
                "sender_action", "sender_action", "board", "cx", {"threadId": "pst_1"}, {}
            )
        )
    assert info.value.status == 422
    with pytest.raises(NoRoute):
        wh.route_outbound(reply("nope", "x"))


def test_attachments_limits(wh: CompiledMapping, nested: CompiledMapping) -> None:
    attachment = [{"url": "https://f/a.png", "friendlyName": "a.png"}]
    with pytest.raises(UnprocessableEntity) as info:
        wh.route_outbound(reply("board", "x", attachments=attachment))
    assert info.value.code == "attachment_not_allowed"
    with pytest.raises(UnprocessableEntity, match="at most 1"):
        nested.route_outbound(reply("dm", "x", attachments=attachment * 2))


def test_split_carries_attachments_on_the_first_part_only(wh: CompiledMapping) -> None:
    text = ("word " * 300).strip()
    attachment = [{"url": "https://f/a.png", "friendlyName": "a.png"}]
    plan = wh.route_outbound(reply("chat", text, attachments=attachment))
    bodies = [orjson.loads(r.body or b"") for r in plan.requests]
    assert len(bodies) == 2
    assert all(len(b["text"]) <= 1000 for b in bodies)
    assert " ".join(b["text"] for b in bodies) == text
    assert "attachments" in bodies[0] and "attachments" not in bodies[1]


def test_exactly_the_limit_is_not_split(wh: CompiledMapping) -> None:
    assert len(wh.route_outbound(reply("chat", "x" * 1000)).requests) == 1
    hard = wh.route_outbound(reply("chat", "x" * 2001)).requests
    assert [len(orjson.loads(r.body or b"")["text"]) for r in hard] == [1000, 1000, 1]


def test_sender_action_answer_is_empty(wh: CompiledMapping) -> None:
    plan = wh.route_outbound(
        OutboundContext(
            "sender_action",
            "sender_action",
            "chat",
            "cx",
            {"threadId": "cnv_1"},
            {"senderAction": {"action": "isTypingOn"}},
        )
    )
    assert wh.complete_outbound(plan, [PlatformResponse(204, {}, None)]) == {}


def test_needs_ancestors(wh: CompiledMapping, nested: CompiledMapping) -> None:
    assert (wh.webhook.needs_ancestors, wh.webhook.needs_request) == (False, False)
    assert (nested.webhook.needs_ancestors, nested.webhook.needs_request) == (True, True)


def test_reroute_from_a_stored_item(nested: CompiledMapping) -> None:
    # the queue keeps item, parent and delivery; routing again must give the same call
    payload = {
        "object": "o",
        "entry": [
            {
                "id": "a1",
                "changes": [
                    {
                        "value": {
                            "contacts": [{"wa_id": "u1", "profile": {"name": "Ann"}}],
                            "messages": [
                                {
                                    "id": "w1",
                                    "from": "u1",
                                    "timestamp": 1,
                                    "type": "text",
                                    "text": {"body": "x"},
                                }
                            ],
                        }
                    }
                ],
            }
        ],
    }
    (item,) = nested.split(payload, headers={}, query={})
    again = InboundItem(item.item, item.parent, item.delivery, item.position, {}, {})
    first, second = nested.route_inbound(item), nested.route_inbound(again)
    assert isinstance(first, InboundCall) and isinstance(second, InboundCall)
    assert first.fields["author_name"] == second.fields["author_name"] == "Ann"


def minimal_with(tmp_path: Path, old: str, new: str) -> CompiledMapping:
    """The minimal fixture mapping with `old` replaced by `new`, loaded."""
    text = (FIXTURES / "minimal.yaml").read_text()
    assert old in text
    path = tmp_path / "changed.yaml"
    path.write_text(text.replace(old, new), encoding="utf-8")
    return load_mapping(path, check_secrets=False)


def test_a_templated_method_must_give_an_http_method(tmp_path: Path) -> None:
    mapping = minimal_with(
        tmp_path,
        'path: "/chats/{{ thread_id }}/send"',
        "method: \"{{ 'PUT' if text == 'put' else text }}\"\n      path: /x",
    )
    assert mapping.route_outbound(reply("dm", "put")).requests[0].method == "PUT"
    assert mapping.route_outbound(reply("dm", "delete")).requests[0].method == "DELETE"
    with pytest.raises(MappingRuntimeError, match=r"request.method rendered to 'HEAD'"):
        mapping.route_outbound(reply("dm", "head"))


def test_inbound_numeric_ids_become_text_in_fields_and_body(minimal: CompiledMapping) -> None:
    payload = {"kind": "msg", "chat": 42, "id": 7, "text": "t", "ts": 1, "from": 5}
    (call,) = route_all(minimal, payload)
    assert isinstance(call, InboundCall)
    assert call.fields["thread_id"] == "42" and call.fields["author_id"] == "5"
    assert call.body["idOnExternalPlatform"] == "7"
    assert call.body["authorEndUserIdentity"] == {"idOnExternalPlatform": "5"}


@pytest.mark.parametrize(
    ("attachment", "reason"),
    [
        (
            {"url": "https://f/a.pdf?sig=1", "friendlyName": "a.pdf"},
            "does not take application/pdf",
        ),
        ({"url": "https://f/x/scan.pdf"}, "does not take application/pdf"),
        ({"url": "https://f/blob", "friendlyName": "blob"}, "type is unknown"),
    ],
)
def test_attachment_types_are_told_by_the_extension(
    nested: CompiledMapping, attachment: dict[str, Any], reason: str
) -> None:
    with pytest.raises(UnprocessableEntity, match=reason):
        nested.route_outbound(reply("dm", "x", attachments=[attachment]))
    ok = {"url": "https://f/photo.JPG", "friendlyName": "photo.JPG"}
    assert nested.route_outbound(reply("dm", "x", attachments=[ok])).requests


def test_a_foreach_that_calls_functions_sees_the_delivery(tmp_path: Path) -> None:
    # a plain `foreach` path is evaluated without the context functions' scope; one that
    # calls them (vars(), headers()) must still see the delivery it splits
    mapping = minimal_with(
        tmp_path,
        "webhook:\n  path: /webhooks/minimal\n",
        "vars: {wanted: dm}\n"
        "webhook:\n  path: /webhooks/minimal\n"
        '  foreach: "events[?box == vars().wanted || box == headers().\\"x-box\\"]"\n',
    )
    event = {"kind": "msg", "chat": "c1", "text": "hi", "ts": 1764158400, "from": "u1"}
    payload = {
        "events": [
            {**event, "id": "a", "box": "dm"},
            {**event, "id": "b", "box": "spam"},
            {**event, "id": "c", "box": "vip"},
        ]
    }
    items = mapping.split(payload, headers={"X-Box": "vip"}, query={})
    assert [i.item["id"] for i in items] == ["a", "c"]
    assert [i.position for i in items] == [0, 1]
