"""Issue 3: `byoc-gateway try`, run as operators run it (a real process), sending nothing."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parent.parent
MAPPING = "mappings/watering-hole.yaml"
PAYLOADS = ROOT / "tests" / "fixtures" / "payloads" / "watering-hole"
SECRET_NAMES = ("WATERING_HOLE_API", "WATERING_HOLE_TOKEN", "WH_SECRET", "WH_VERIFY_TOKEN")
TOKEN = "wh-token-that-must-never-be-printed"


def run_try(
    *args: str, env: dict[str, str] | None = None, stdin: str | None = None
) -> subprocess.CompletedProcess[str]:
    base = {k: v for k, v in os.environ.items() if k not in SECRET_NAMES}
    return subprocess.run(
        [sys.executable, "-m", "gateway.cli", "try", *args],
        cwd=ROOT,
        env={**base, **(env or {})},
        input=stdin if stdin is not None else "",
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def as_json(done: subprocess.CompletedProcess[str]) -> dict[str, Any]:
    report: dict[str, Any] = json.loads(done.stdout)
    return report


@pytest.fixture
def silent_api() -> Iterator[tuple[str, socket.socket]]:
    """A listening socket posing as the platform API: it must never see a connection."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen(8)
        sock.setblocking(False)
        yield f"http://127.0.0.1:{sock.getsockname()[1]}/v1", sock


def assert_nobody_called(sock: socket.socket) -> None:
    with pytest.raises(BlockingIOError):
        sock.accept()


def env_file(tmp_path: Path, api: str) -> Path:
    path = tmp_path / "wh.env"
    path.write_text(
        "# the environment of the gateway\n"
        f"export WATERING_HOLE_API={api}\n"
        f'WATERING_HOLE_TOKEN="{TOKEN}"\n'
        "WH_SECRET=webhook-secret-for-try\n"
        "WH_VERIFY_TOKEN='verify-for-try'\n",
        encoding="utf-8",
    )
    return path


# ---------------------------------------------------------------------------- inbound


def test_a_dm_shows_its_route_and_the_exact_cxone_request() -> None:
    done = run_try(MAPPING, "--inbound", "--file", str(PAYLOADS / "dm.json"))
    assert done.returncode == 0, done.stdout + done.stderr
    out = done.stdout
    assert "item 0: route direct-message -> CXone create_message (channel chat)" in out
    assert "matched: when type == 'message.created' -> true (after echo did not match)" in out
    assert "POST /channels/{channel_id}/messages" in out
    assert "{channel_id} is the CXone channel bound to watering-hole/chat" in out
    assert '"text": "Hello! My order #12 hasn\'t arrived."' in out
    assert '"createdAtWithMilliseconds": "2025-11-26T12:00:00.123Z"' in out
    assert "dedupe key: watering-hole:evt_9xK1" in out
    # no environment: placeholders, and it says which secrets are missing
    assert "environment variable WATERING_HOLE_TOKEN is not set" in out
    assert "signature is not checked" in out


def test_a_mixed_batch_routes_every_item_in_order_as_json() -> None:
    done = run_try(
        MAPPING, "--inbound", "-f", str(PAYLOADS / "mixed-batch.json"), "--format", "json"
    )
    assert done.returncode == 0, done.stderr
    report = as_json(done)
    assert report["ok"] is True and report["direction"] == "inbound"
    assert report["mapping"]["name"] == "watering-hole"
    assert report["secrets"]["mode"] == "partial"  # nothing set: every reference stands in
    assert any("WATERING_HOLE_TOKEN is not set" in m for m in report["secrets"]["missing"])
    got = [(i["outcome"], i["route"]) for i in report["items"]]
    assert got == [
        ("routed", "post"),
        ("routed", "comment"),
        ("ignored", "echo"),
        ("routed", "delivered"),
        ("ignored", "unknown-event"),
        ("routed", "conversation-closed"),
    ]
    comment = report["items"][1]
    assert comment["cxone_request"]["body"]["replyToMessage"] == {"idOnExternalPlatform": "cmt_8"}
    assert [t["route"] for t in comment["tried"]] == ["echo", "direct-message", "post", "comment"]
    assert report["items"][3]["cxone_request"]["path"] == (
        "/channels/{channel_id}/messages/msg_out_1/status"
    )
    assert report["items"][5]["cxone_request"] == {
        "method": "PUT",
        "path": "/contacts/{contact_id}/status",
        "body": {"status": "closed"},
    }


def test_no_route_says_which_whens_were_tried_and_what_they_gave() -> None:
    done = run_try(
        "tests/fixtures/mappings/minimal.yaml", "--inbound", stdin='{"kind": "typing", "id": 1}'
    )
    assert done.returncode == 1
    assert "item 0: no route: no `when` matched" in done.stdout
    assert "message  no     when kind == 'msg' -> false" in done.stdout


def test_an_item_the_mapping_cannot_render_fails_with_the_reason() -> None:
    done = run_try(MAPPING, "--inbound", "-f", str(PAYLOADS / "dm-without-conversation.json"))
    assert done.returncode == 1
    assert "route 'direct-message': required field(s) thread_id came out empty" in done.stdout
    assert "`data.conversation.id`" in done.stdout
    assert "dead letter" in done.stdout


# --------------------------------------------------------------------------- outbound


def test_a_reply_shows_the_exact_platform_request_and_cxone_response(
    tmp_path: Path, silent_api: tuple[str, socket.socket]
) -> None:
    api, sock = silent_api
    done = run_try(
        MAPPING,
        "--outbound",
        "--channel",
        "chat",
        "-f",
        str(PAYLOADS / "reply.json"),
        "--platform-response",
        str(PAYLOADS / "platform-message-created.json"),
        "--env-file",
        str(env_file(tmp_path, api)),
    )
    assert done.returncode == 0, done.stdout + done.stderr
    out = done.stdout
    assert "secrets  from the environment" in out
    assert "route chat-reply" in out
    assert f"POST {api}/conversations/cnv_42/messages" in out
    assert "Authorization: ***" in out
    assert "Idempotency-Key: <one key per reply, the same on retries>" in out
    assert '"name": "label.pdf"' in out
    assert "CXone gets: HTTP 200" in out
    assert '"idOnExternalPlatform": "msg_out_1"' in out
    assert TOKEN not in out + done.stderr
    assert_nobody_called(sock)


def test_json_output_of_a_reply_for_tools(tmp_path: Path, silent_api: tuple[str, Any]) -> None:
    api, sock = silent_api
    done = run_try(
        MAPPING,
        "--outbound",
        "--channel",
        "chat",
        "--endpoint",
        "legacy",
        "-f",
        str(PAYLOADS / "reply.json"),
        "--platform-response",
        str(PAYLOADS / "platform-message-created.json"),
        "--format",
        "json",
        env={
            "WATERING_HOLE_API": api,
            "WATERING_HOLE_TOKEN": TOKEN,
            "WH_SECRET": "webhook-secret-for-try",
            "WH_VERIFY_TOKEN": "verify-for-try",
        },
    )
    assert done.returncode == 0, done.stderr
    item = as_json(done)["items"][0]
    assert item["params"] == {"postId": "cnv_42"}
    assert item["route"] == "chat-reply"
    (request,) = item["platform_requests"]
    assert request["method"] == "POST" and request["url"] == f"{api}/conversations/cnv_42/messages"
    assert request["headers"]["Authorization"] == "***"
    assert request["body"]["text"] == "Here is your label."
    assert item["cxone_response"] == {"status": 200, "body": {"idOnExternalPlatform": "msg_out_1"}}
    assert TOKEN not in done.stdout
    assert_nobody_called(sock)


def test_a_platform_refusal_shows_the_error_cxone_would_get() -> None:
    done = run_try(
        MAPPING,
        "--outbound",
        "--channel",
        "chat",
        "-f",
        str(PAYLOADS / "reply.json"),
        "--platform-response",
        str(PAYLOADS / "platform-conversation-closed.json"),
    )
    assert done.returncode == 1
    # WATERING_HOLE_API is not set: a URL that says so stands in for it
    assert "POST https://watering-hole-api.invalid/conversations/cnv_42/messages" in done.stdout
    assert "CXone gets: HTTP 422" in done.stdout
    assert '"error": "platform_rejected"' in done.stdout
    assert "conversation_closed" in done.stdout


def test_a_sender_action_renders_typing_on_the_chat() -> None:
    done = run_try(
        MAPPING,
        "--outbound",
        "--channel",
        "chat",
        "--endpoint",
        "sender_action",
        "--params",
        "threadId=cnv_42",
        "-f",
        str(PAYLOADS / "typing-on.json"),
        "--format",
        "json",
    )
    assert done.returncode == 0, done.stderr
    item = as_json(done)["items"][0]
    assert item["kind"] == "sender_action" and item["route"] == "typing"
    (request,) = item["platform_requests"]
    assert request["url"].endswith("/conversations/cnv_42/typing")
    assert request["body"] == {"typing": True}
    assert "Idempotency-Key" not in request["headers"]


def test_no_outbound_route_lists_every_when() -> None:
    done = run_try(
        MAPPING,
        "--outbound",
        "--channel",
        "board",
        "--endpoint",
        "sender_action",
        "--params",
        "threadId=pst_7",
        "-f",
        str(PAYLOADS / "typing-on.json"),
    )
    assert done.returncode == 1
    out = done.stdout
    assert "no route: no outbound route of mapping 'watering-hole' matches" in out
    for route in ("typing", "proactive-chat", "chat-reply", "comment-reply"):
        assert f"    {route} " in out
    assert '"error": "no_route"' in out


def test_a_board_reply_with_a_reply_to_comment() -> None:
    done = run_try(
        MAPPING, "--outbound", "--channel", "board", "-f", str(PAYLOADS / "reply-board.json")
    )
    assert done.returncode == 0, done.stderr
    assert "route comment-reply" in done.stdout
    assert "/posts/pst_7/comments" in done.stdout
    assert '"reply_to_comment_id": "cmt_9"' in done.stdout
    assert "pass --platform-response F" in done.stdout


# -------------------------------------------------------------------------- handshake


def test_handshakes_are_answered_or_refused() -> None:
    ok = run_try(
        MAPPING,
        "--handshake",
        "--query",
        "wh.mode=subscribe",
        "wh.challenge=c-8f3a",
        "wh.verify_token=v3r1fy",
        env={"WH_VERIFY_TOKEN": "v3r1fy"},
        stdin="",
    )
    assert ok.returncode == 0, ok.stdout + ok.stderr
    assert "handshake reply: HTTP 200 text/plain\n  c-8f3a" in ok.stdout
    wrong = run_try(
        MAPPING,
        "--handshake",
        "--query",
        "wh.mode=subscribe",
        "wh.challenge=c",
        "wh.verify_token=guess",
        "--format",
        "json",
    )
    assert wrong.returncode == 0
    assert as_json(wrong)["handshake"]["status"] == 403
    plain = run_try(MAPPING, "--handshake", "--query", "hello=world")
    assert plain.returncode == 1
    assert "not a handshake" in plain.stdout


# ----------------------------------------------------------------------------- errors


def test_invalid_json_names_line_and_column(tmp_path: Path) -> None:
    bad = tmp_path / "bad.json"
    bad.write_text('{"events": [\n  {"id": "evt_1",}\n]}\n', encoding="utf-8")
    done = run_try(MAPPING, "--inbound", "-f", str(bad))
    assert done.returncode == 2
    assert f"{bad}: not valid JSON at line 2, column 18" in done.stderr
    stdin = run_try(MAPPING, "--inbound", stdin="{oops")
    assert stdin.returncode == 2
    assert "stdin: not valid JSON at line 1, column 2" in stdin.stderr


def test_usage_errors_exit_2() -> None:
    missing = run_try(MAPPING, "--inbound", "-f", "no/such/payload.json")
    assert missing.returncode == 2
    assert "cannot read the payload" in missing.stderr
    ambiguous = run_try(MAPPING, "--outbound", "-f", str(PAYLOADS / "reply.json"))
    assert ambiguous.returncode == 2
    assert "pick one with --channel (chat, board)" in ambiguous.stderr
    bad_pair = run_try(
        MAPPING, "--outbound", "--channel", "chat", "--params", "oops", "-f",
        str(PAYLOADS / "reply.json"),
    )  # fmt: skip
    assert bad_pair.returncode == 2 and "'oops' is not K=V" in bad_pair.stderr
    no_direction = run_try(MAPPING)
    assert no_direction.returncode == 2
    assert "Traceback" not in missing.stderr + ambiguous.stderr + bad_pair.stderr


def test_a_broken_mapping_is_reported_with_file_and_place() -> None:
    done = run_try(
        "tests/fixtures/mappings/broken/bad-jinja.yaml", "--inbound", "-f",
        str(PAYLOADS / "dm.json"),
    )  # fmt: skip
    assert done.returncode == 1
    assert "bad-jinja.yaml:14 at /outbound/0/request/body/text" in done.stderr
    assert "Traceback" not in done.stderr


def test_a_route_with_lookups_is_shown_rendered_with_its_fallbacks() -> None:
    mapping = yaml.safe_load((ROOT / "tests/fixtures/platforms/quetzal.yaml").read_text())
    body = next(t["inbound"]["body"] for t in mapping["tests"] if "body" in t.get("inbound", {}))
    done = run_try(
        "tests/fixtures/platforms/quetzal.yaml",
        "--inbound",
        "--format",
        "json",
        stdin=json.dumps(body),
    )
    assert done.returncode == 0, done.stdout + done.stderr
    item = as_json(done)["items"][0]
    assert item["outcome"] == "routed"
    assert "no lookup answering" in item["note"]
    author = item["cxone_request"]["body"]["authorEndUserIdentity"]
    assert author["firstName"].startswith("Quetzal user ")  # the mapping's fallback name
