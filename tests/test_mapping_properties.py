"""Property tests: hostile text arrives byte-identical; a payload's shape never changes."""

from __future__ import annotations

from functools import cache
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

from hypothesis import example, given, settings
from hypothesis import strategies as st

from gateway import jsonutil
from gateway.mapping import CompiledMapping, InboundCall, OutboundContext, load_mapping

WH = Path(__file__).resolve().parents[1] / "mappings" / "watering-hole.yaml"
FRAGMENTS = [
    '"',
    "'",
    "\\",
    "\n",
    "\r\n",
    "\t",
    "{{ text }}",
    "{{",
    "}}",
    '"}',
    "{%",
    "%}",
    "{% raw %}",
    "{#",
    "${WH_SECRET}",
    "$${",
    "</script>",
    "\u202e",
    "مرحبا",
    "שלום",
    "🦒",
    "👩‍👩‍👧",
    "\x00",
    "&",
    "?",
    "#",
    "/",
    "..",
    "%2F",
    "omit",
    "none",
    "null",
]
hostile = (
    st.lists(st.one_of(st.sampled_from(FRAGMENTS), st.text(max_size=20)), max_size=60)
    .map("".join)
    .filter(lambda s: len(s) <= 1000)
)
ids = st.text(min_size=1, max_size=40).filter(lambda s: s.strip() != "")
LONGEST = ('"}{{ x }}{% if %}\\\n🦒\u202e' * 100)[:1000]  # exactly the chat limit


@cache
def wh() -> CompiledMapping:
    return load_mapping(
        WH,
        env={
            "WATERING_HOLE_API": "https://api.wh.example/v1",
            "WATERING_HOLE_TOKEN": "t",
            "WH_SECRET": "s",
            "WH_VERIFY_TOKEN": "v",
        },
    )


def shape(tree: Any, path: str = "") -> set[tuple[str, str]]:
    """The set of (path, type) pairs of a tree: its structure without its values."""
    out = {(path, type(tree).__name__)}
    if isinstance(tree, dict):
        for key, value in tree.items():
            out |= shape(value, f"{path}/{key}")
    elif isinstance(tree, list):
        for index, value in enumerate(tree):
            out |= shape(value, f"{path}/{index}")
    return out


def message_event(text: str, thread: str, name: str) -> dict[str, Any]:
    return {
        "events": [
            {
                "id": "evt_1",
                "type": "message.created",
                "data": {
                    "conversation": {"id": thread},
                    "message": {
                        "id": "msg_1",
                        "text": text,
                        "sent_at_ms": 1764158400123,
                        "attachments": [{"url": "https://f.example/a", "name": name}],
                    },
                    "sender": {"id": "usr_1", "handle": name, "display_name": name},
                },
            }
        ]
    }


def inbound_body(text: str, thread: str = "cnv_1", name: str = "Zed") -> dict[str, Any]:
    m = wh()
    (item,) = m.split(message_event(text, thread, name), headers={}, query={})
    call = m.route_inbound(item)
    assert isinstance(call, InboundCall)
    # what goes on the wire, read back
    body = jsonutil.loads(jsonutil.dumps(call.body))
    assert isinstance(body, dict)
    return body


@settings(max_examples=300, deadline=None)
@given(text=hostile, thread=ids, name=ids)
@example(text=LONGEST, thread="cnv_1", name="{{ name }}")
def test_inbound_text_arrives_unchanged(text: str, thread: str, name: str) -> None:
    body = inbound_body(text, thread, name)
    assert body["messageContent"]["payload"]["text"] == text
    assert body["thread"]["idOnExternalPlatform"] == thread
    assert body["authorEndUserIdentity"]["nickname"] == name
    assert body["attachments"][0]["friendlyName"] == name
    assert shape(body) == shape(inbound_body("x"))


def outbound(text: str, thread: str, channel: str, reply_to: str | None = None) -> Any:
    body: dict[str, Any] = {
        "thread": {"idOnExternalPlatform": thread},
        "messageContent": {"type": "TEXT", "payload": {"text": text}},
    }
    if reply_to is not None:
        body["replyToMessage"] = {"idOnExternalPlatform": reply_to}
    return wh().route_outbound(OutboundContext("reply", "outbound", channel, "cx-1", {}, body))


@settings(max_examples=300, deadline=None)
@given(text=hostile, thread=ids)
@example(text=LONGEST, thread="../x?y#z")
def test_outbound_chat_text_arrives_unchanged(text: str, thread: str) -> None:
    plan = outbound(text, "cnv_" + thread, "chat")
    (request,) = plan.requests
    body = jsonutil.loads(request.body or b"")
    assert body == {"text": text}
    path = urlsplit(request.url).path.split("/")
    assert path[:-2] == ["", "v1", "conversations"]
    assert unquote(path[-2]) == "cnv_" + thread
    assert path[-1] == "messages"
    assert urlsplit(request.url).query == ""


@settings(max_examples=200, deadline=None)
@given(text=hostile, reply_to=ids)
@example(text=LONGEST, reply_to='"}')
def test_outbound_comment_shape_never_changes(text: str, reply_to: str) -> None:
    (request,) = outbound(text, "pst_1", "board", "cmt_" + reply_to).requests
    body = jsonutil.loads(request.body or b"")
    assert body == {"text": text, "reply_to_comment_id": "cmt_" + reply_to}
    assert shape(body) == shape({"text": "", "reply_to_comment_id": ""})
