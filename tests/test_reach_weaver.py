"""Issue 9: Weaver (batched webhooks whose messages need their ancestors and siblings).

A message's author and files are siblings of the message list, matched by id; the
inbox and the app are further up. Expressions reach them with parent(), parents(),
delivery(), find_by() and filter_by(), at intake and again when a dead letter is routed
anew after a reload.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from gateway import jsonutil
from gateway.clock import FakeClock
from tests.reach_world import Reach, start_reach

ENV = {"WEAVER_WEBHOOK_SECRET": "weaver-webhook-secret", "WEAVER_TOKEN": "weaver-token"}
FILE = "https://files.weaver.example/f"


@pytest.fixture
async def weaver(tmp_path: Path, clock: FakeClock) -> AsyncIterator[Reach]:
    async with start_reach(tmp_path, "weaver", env=ENV, api_env="WEAVER_API", clock=clock) as r:
        yield r


def message(mid: str, author: str, body: str | None, at: int = 1764158400000) -> dict[str, Any]:
    out: dict[str, Any] = {"id": mid, "author": author, "created": at}
    if body is not None:
        out["body"] = body
    return out


def batch() -> dict[str, Any]:
    """Two inboxes, three conversations; each message's author is a sibling profile."""
    return {
        "app_id": "app_loom",
        "inboxes": [
            {
                "inbox": {"id": "ibx_1", "name": "Support"},
                "conversations": [
                    {
                        "conversation": {"id": "cv_1", "subject": "Order 1182"},
                        "messages": [
                            message("msg_1", "usr_9", "Where is my order?"),
                            message("msg_2", "usr_2", "It left this morning."),
                            message("msg_3", "usr_9", "And the invoice?", 1764158460000),
                        ],
                        "profiles": [
                            {"id": "usr_2", "name": "Sam", "role": "agent"},
                            {"id": "usr_9", "name": "Ada", "handle": "ada", "role": "customer"},
                        ],
                        "files": [
                            {"message": "msg_3", "url": f"{FILE}/1/a.png", "name": "a.png"},
                            {"message": "msg_1", "url": f"{FILE}/2/b.pdf", "name": "b.pdf"},
                            {"message": "msg_3", "url": f"{FILE}/3/c.png", "name": "c.png"},
                        ],
                    },
                    {
                        "conversation": {"id": "cv_2", "subject": "Refund"},
                        "messages": [message("msg_4", "usr_7", "I want a refund")],
                        "profiles": [{"id": "usr_7", "name": "Grace", "role": "customer"}],
                    },
                ],
            },
            {
                "inbox": {"id": "ibx_2", "name": "Sales"},
                "conversations": [
                    {
                        "conversation": {"id": "cv_3", "subject": "Quote"},
                        "messages": [
                            message("msg_5", "usr_8", "A quote for 40 seats?"),
                            message("msg_6", "usr_8", None),  # a reaction: no body
                        ],
                        "profiles": [{"id": "usr_8", "name": "Alan", "role": "customer"}],
                    }
                ],
            },
        ],
    }


def attributes(body: dict[str, Any]) -> dict[str, str]:
    return {a["key"]: a["value"] for a in body["externalAttributes"]}


async def test_each_message_takes_its_author_and_files_from_its_own_siblings(
    weaver: Reach,
) -> None:
    answer = await weaver.post(batch())
    assert answer.status == 200
    assert answer.json == {"accepted": 4, "duplicates": 0, "ignored": 2}
    expected = {
        # message: (thread, thread name, author name, inbox, attachment names)
        "msg_1": ("cv_1", "Order 1182", "Ada", "Support", ["b.pdf"]),
        "msg_3": ("cv_1", "Order 1182", "Ada", "Support", ["a.png", "c.png"]),
        "msg_4": ("cv_2", "Refund", "Grace", "Support", []),
        "msg_5": ("cv_3", "Quote", "Alan", "Sales", []),
    }
    for mid, (thread, subject, author, inbox, files) in expected.items():
        got = await weaver.delivered("inbox", mid)
        assert got.thread_id == thread
        assert got.body["thread"]["threadName"] == subject
        assert got.body["authorEndUserIdentity"]["firstName"] == author
        assert [a["friendlyName"] for a in got.body["attachments"]] == files
        assert attributes(got.body) == {"inbox": inbox, "app": "app_loom"}
    assert weaver.ignored("echo") == 1  # msg_2: written by an agent (its profile says so)
    assert weaver.ignored("anything-else") == 1
    assert not weaver.cxone.violations
    # the same batch again: every forwarded message is a duplicate (dedupe via delivery())
    again = await weaver.post(batch())
    assert again.json == {"accepted": 0, "duplicates": 4, "ignored": 2}


async def test_a_dead_letter_routed_again_still_reaches_its_ancestors(
    weaver: Reach, tmp_path: Path
) -> None:
    refused = {"error": "invalid_request", "message": "refused once"}
    weaver.cxone.script("create_message", [(400, {}, refused)])
    delivery = batch()
    conversation = delivery["inboxes"][1]["conversations"][0]
    conversation["messages"] = [
        message("msg_a", "usr_8", "first"),
        message("msg_b", "usr_8", "second"),
    ]
    assert (await weaver.post(delivery)).status == 200
    # msg_b is behind msg_a in the thread: once CXone has it, msg_a has been settled
    await weaver.delivered("inbox", "msg_b")
    (dead,) = await weaver.gateway.store.dead_letters()
    # the operator changes the mapping (a new version) and replays: the stored message
    # is routed again, and parent() / parents() / delivery() come from the queue
    source = tmp_path / "mappings" / "weaver.yaml"
    source.write_text(source.read_text(encoding="utf-8") + "# revised\n", encoding="utf-8")
    assert (await weaver.gateway.reload()).ok
    assert await weaver.gateway.store.replay_dead(dead.id)
    got = await weaver.delivered("inbox", "msg_a")
    assert got.thread_id == "cv_3"
    assert got.body["thread"]["threadName"] == "Quote"
    assert got.body["authorEndUserIdentity"]["firstName"] == "Alan"
    assert attributes(got.body) == {"inbox": "Sales", "app": "app_loom"}
    assert await weaver.gateway.store.dead_count() == 0


async def test_a_reply_goes_to_the_conversation(weaver: Reach) -> None:
    await weaver.post(batch())
    await weaver.delivered("inbox", "msg_4")
    weaver.api.on(
        "POST", "/conversations/cv_2/messages", status=201, json={"message": {"id": "w1"}}
    )
    result = await weaver.reply("inbox", "cv_2", "Refund on its way")
    assert result.status == 200, result.body
    assert result.body["message"]["idOnExternalPlatform"] == "w1"
    (sent,) = weaver.api.requests
    assert sent.json == {"body": "Refund on its way"}
    assert sent.headers["authorization"] == "Bearer weaver-token"


async def test_the_signature_is_base64_hmac_of_the_raw_body(weaver: Reach) -> None:
    raw = jsonutil.dumps(batch())
    mac = hmac.new(ENV["WEAVER_WEBHOOK_SECRET"].encode(), raw, hashlib.sha256).digest()
    good = {"X-Weaver-Hmac-Sha256": base64.b64encode(mac).decode()}
    assert weaver.sign(raw) == good
    tampered = raw.replace(b"Where is my order?", b"Where is my money?")
    assert (await weaver.post(tampered, signed=False, headers=good)).status == 401
    assert (await weaver.post(raw, signed=False, headers=good)).status == 200
