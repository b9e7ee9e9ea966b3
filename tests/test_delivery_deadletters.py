"""`byoc-gateway dead-letters`: list, show, replay, drop against real sqlite and Redis stores.

The store is filled the way the workers fill it (enqueue, claim, retry_later,
dead_letter) and the command is run as the CLI runs it: parsed arguments, gateway.yaml
read by the real settings loader from the environment.
"""

from __future__ import annotations

import argparse
import asyncio
import socket
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson
import pytest

from gateway.deadletters import add_dead_letter_commands, redact, run_dead_letter_command
from gateway.delivery.jobs import InboundJob, thread_key
from gateway.delivery.store import NewJob, Store, open_store
from gateway.errors import ConfigError
from gateway.mapping import InboundCall
from gateway.sandbox.wiring import sandbox_env, write_sandbox_settings
from gateway.settings import Settings
from tests.test_store_contract import REDIS_URL, cleanup_redis, redis_available

SECRET_TEXT = "my card number is 4111 and my name is Zara"
OWNER = "test-worker"


def parse(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="byoc-gateway")
    sub = parser.add_subparsers(dest="command", required=True)
    add_dead_letter_commands(sub)
    return parser.parse_args(argv)


@dataclass
class Env:
    """A gateway.yaml on disk and the environment it needs."""

    config: Path
    settings: Settings

    def run(self, *argv: str) -> int:
        return run_dead_letter_command(parse(["dead-letters", *argv, "--config", str(self.config)]))

    def store(self) -> Store:
        return open_store(self.settings.store)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _write(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, backend: str, redis_url: str | None = None
) -> Env:
    env = sandbox_env("http://127.0.0.1:9/v1", "http://127.0.0.1:9")
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    # a unique directory name: it becomes the Redis key prefix (other test runs share Redis)
    directory = tmp_path / f"dl{uuid.uuid4().hex[:12]}"
    settings = write_sandbox_settings(
        directory,
        wh_api=env["WATERING_HOLE_API"],
        cxone_issuer=env["CXONE_ISSUER"],
        backend=backend,
        redis_url=redis_url,
    )
    return Env(directory / "gateway.yaml", settings)


@pytest.fixture(params=["sqlite", "redis"])
def env(
    request: pytest.FixtureRequest, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[Env]:
    if request.param == "redis" and not redis_available():
        pytest.skip(f"no Redis at {REDIS_URL}")
    e = _write(tmp_path, monkeypatch, request.param, REDIS_URL)
    try:
        yield e
    finally:
        if request.param == "redis":
            cleanup_redis(e.settings.store.prefix)


def _job(thread: str, message: str, text: str = SECRET_TEXT) -> InboundJob:
    item = {
        "id": f"evt_{message}",
        "type": "message.created",
        "created_at_ms": 1764158400000,
        "data": {
            "conversation": {"id": thread},
            "message": {"id": message, "text": text, "sent_at_ms": 1764158400000},
            "sender": {"id": "usr_zebra", "display_name": "Zara Zebra", "handle": "zara"},
        },
    }
    body = {
        "idOnExternalPlatform": message,
        "thread": {"idOnExternalPlatform": thread},
        "messageContent": {"type": "TEXT", "payload": {"text": text}},
        "authorEndUserIdentity": {"idOnExternalPlatform": "usr_zebra", "firstName": "Zara"},
        "direction": "inbound",
        "createdAtWithMilliseconds": "2025-11-26T12:00:00.000Z",
    }
    call = InboundCall(
        mapping="watering-hole",
        route="direct-message",
        channel="chat",
        action="create_message",
        thread_id=thread,
        message_id=message,
        dedupe_key=f"evt_{message}",
        method="POST",
        path="/channels/{channel_id}/messages",
        body=body,
        fields={},
    )
    return InboundJob("watering-hole", "0123456789ab", 1764158400.0, item, None, None, 0, call)


async def _kill(store: Store, thread: str, message: str, reason: str, *, retries: int = 0) -> str:
    """Enqueue one job and fail it like a worker would: `retries` 503s, then `reason`."""
    key = thread_key("watering-hole", "chat", thread)
    assert await store.enqueue([NewJob(key, _job(thread, message).encode(), None)], 60) == [True]
    for n in range(retries):
        (job,) = await store.claim(OWNER, 1, 30)
        attempt = {"at": 1764158400.0 + n, "outcome": "HTTP 503", "status": 503}
        assert await store.retry_later(job, OWNER, 0.0, attempt)
    (job,) = await store.claim(OWNER, 1, 30)
    attempt = {"at": 1764158500.0, "outcome": reason, "status": 400}
    assert await store.dead_letter(job, OWNER, reason, attempt)
    return job.id


def _fill(env: Env, *letters: tuple[str, str, str, int]) -> list[str]:
    async def go() -> list[str]:
        async with env.store() as store:
            return [await _kill(store, t, m, r, retries=n) for t, m, r, n in letters]

    return asyncio.run(go())


def _state(env: Env) -> tuple[int, int]:
    """(queue depth, dead letters)."""

    async def go() -> tuple[int, int]:
        async with env.store() as store:
            return await store.depth(), await store.dead_count()

    return asyncio.run(go())


def _drain(env: Env) -> list[tuple[str, int]]:
    """Claim and complete everything queued; return (message id, attempts) in order."""

    async def go() -> list[tuple[str, int]]:
        out = []
        async with env.store() as store:
            while jobs := await store.claim(OWNER, 1, 30):
                for job in jobs:
                    call = InboundJob.decode(job.payload).call
                    assert call is not None and call.message_id is not None
                    out.append((call.message_id, job.attempts))
                    assert await store.complete(job, OWNER)
        return out

    return asyncio.run(go())


# ------------------------------------------------------------------------------ list


def test_list_says_when_there_are_none(env: Env, capsys: pytest.CaptureFixture[str]) -> None:
    _fill(env)  # creates the store
    assert env.run("list") == 0
    assert "no dead letters" in capsys.readouterr().out
    assert env.run("list", "--format", "json") == 0
    assert orjson.loads(capsys.readouterr().out) == {"total": 0, "dead_letters": []}


def test_list_shows_most_recent_first_with_reason_and_tries(
    env: Env, capsys: pytest.CaptureFixture[str]
) -> None:
    first, second = _fill(
        env,
        ("cnv_a", "msg_1", "CXone refused: POST answered HTTP 400: bad thing", 2),
        ("cnv_b", "msg_2", "out of retries after 12 attempts: HTTP 503", 0),
    )
    assert env.run("list") == 0
    out = capsys.readouterr().out
    lines = out.splitlines()
    assert lines[0].split()[:3] == ["ID", "FAILED", "AT"]
    assert lines[1].startswith(second) and lines[2].startswith(first)
    assert "cnv_a" in lines[2] and "watering-hole" in lines[2] and "chat" in lines[2]
    assert "HTTP 400: bad thing" in lines[2]
    assert lines[2].split()[3] == "3"  # two retries, then the final attempt
    assert "2 dead letters" in out
    assert SECRET_TEXT not in out

    assert env.run("list", "--format", "json", "--limit", "1") == 0
    doc = orjson.loads(capsys.readouterr().out)
    assert doc["total"] == 2
    assert [d["id"] for d in doc["dead_letters"]] == [second]
    assert doc["dead_letters"][0] | {"failed_at": 0} == {
        "id": second,
        "failed_at": 0,
        "mapping": "watering-hole",
        "channel": "chat",
        "thread_id": "cnv_b",
        "attempts": 1,
        "reason": "out of retries after 12 attempts: HTTP 503",
    }


def test_list_cannot_be_fooled_by_control_characters(
    env: Env, capsys: pytest.CaptureFixture[str]
) -> None:
    _fill(env, ("cnv_\x1b[2J\nevil", "msg_1", "refused \x1b[31mred\x07", 0))
    assert env.run("list") == 0
    out = capsys.readouterr().out
    assert "\x1b" not in out and "\x07" not in out
    assert "cnv_\\x1b[2J\\x0aevil" in out


# ------------------------------------------------------------------------------ show


def test_show_redacts_text_but_keeps_ids_and_every_attempt(
    env: Env, capsys: pytest.CaptureFixture[str]
) -> None:
    (id_,) = _fill(env, ("cnv_a", "msg_1", "CXone refused: HTTP 400: invalid thread", 1))
    assert env.run("show", id_) == 0
    out = capsys.readouterr().out
    assert SECRET_TEXT not in out and "Zara" not in out
    assert f"<{len(SECRET_TEXT)} chars redacted>" in out
    for visible in ("msg_1", "cnv_a", "usr_zebra", "message.created", "direct-message"):
        assert visible in out
    assert "CXone refused: HTTP 400: invalid thread" in out
    assert "attempts (2):" in out and "HTTP 503" in out and "HTTP 400" in out
    assert "POST /channels/{channel_id}/messages" in out

    assert env.run("show", id_, "--show-text") == 0
    assert SECRET_TEXT in capsys.readouterr().out


def test_show_json_holds_the_whole_record(env: Env, capsys: pytest.CaptureFixture[str]) -> None:
    (id_,) = _fill(env, ("cnv_a", "msg_1", "CXone refused: HTTP 400", 0))
    assert env.run("show", id_, "--format", "json") == 0
    doc = orjson.loads(capsys.readouterr().out)
    assert doc["id"] == id_ and doc["reason"] == "CXone refused: HTTP 400"
    assert doc["attempts"] == [
        {"at": 1764158500.0, "outcome": "CXone refused: HTTP 400", "status": 400}
    ]
    assert doc["event"]["data"]["message"]["text"] == f"<{len(SECRET_TEXT)} chars redacted>"
    assert doc["event"]["data"]["message"]["id"] == "msg_1"
    assert doc["cxone_request"]["body"]["idOnExternalPlatform"] == "msg_1"
    payload = doc["cxone_request"]["body"]["messageContent"]["payload"]
    assert payload["text"].endswith("chars redacted>")

    assert env.run("show", id_, "--format", "json", "--show-text") == 0
    doc = orjson.loads(capsys.readouterr().out)
    assert doc["event"]["data"]["message"]["text"] == SECRET_TEXT


def test_show_an_unknown_id_fails(env: Env, capsys: pytest.CaptureFixture[str]) -> None:
    _fill(env)
    assert env.run("show", "nope\x1b") == 1
    err = capsys.readouterr().err
    assert "no dead letter nope\\x1b" in err


# ---------------------------------------------------------------------- replay, drop


def test_replay_one_puts_it_back_with_fresh_attempts(
    env: Env, capsys: pytest.CaptureFixture[str]
) -> None:
    keep, again = _fill(env, ("cnv_a", "msg_1", "refused", 0), ("cnv_b", "msg_2", "refused", 3))
    assert env.run("replay", again) == 0
    assert f"replayed {again}" in capsys.readouterr().out
    assert _state(env) == (1, 1)
    assert _drain(env) == [("msg_2", 0)]
    assert env.run("replay", again) == 1
    assert f"no dead letter {again}" in capsys.readouterr().err
    assert env.run("show", keep) == 0


def test_replay_all_keeps_the_order_of_a_thread(
    env: Env, capsys: pytest.CaptureFixture[str]
) -> None:
    _fill(
        env,
        ("cnv_a", "msg_1", "refused", 0),
        ("cnv_a", "msg_2", "refused", 0),
        ("cnv_a", "msg_3", "refused", 0),
    )
    assert env.run("replay", "--all") == 0
    assert "replayed 3 dead letters" in capsys.readouterr().out
    assert _drain(env) == [("msg_1", 0), ("msg_2", 0), ("msg_3", 0)]
    assert _state(env) == (0, 0)


def test_drop_one_and_all(env: Env, capsys: pytest.CaptureFixture[str]) -> None:
    a, _, _ = _fill(
        env,
        ("cnv_a", "msg_1", "refused", 0),
        ("cnv_b", "msg_2", "refused", 0),
        ("cnv_c", "msg_3", "refused", 0),
    )
    assert env.run("drop", a) == 0
    assert f"dropped {a}" in capsys.readouterr().out
    assert env.run("drop", a) == 1
    assert env.run("drop", "--all") == 0
    assert "dropped 2 dead letters" in capsys.readouterr().out
    assert _state(env) == (0, 0)


def test_the_byoc_gateway_command_line_runs_it(
    env: Env, capsys: pytest.CaptureFixture[str]
) -> None:
    """Needs "gateway.deadletters" in gateway.cli._COMMAND_MODULES."""
    from gateway.cli import main

    (id_,) = _fill(env, ("cnv_a", "msg_1", "refused", 0))
    assert main(["dead-letters", "list", "--config", str(env.config)]) == 0
    assert id_ in capsys.readouterr().out
    assert main(["dead-letters", "--config", str(env.config), "drop", "--all"]) == 0
    assert main(["dead-letters", "show", id_, "--config", str(env.config)]) == 1


def test_replay_and_drop_need_an_id_or_all(env: Env) -> None:
    for action in ("replay", "drop"):
        with pytest.raises(SystemExit):
            parse(["dead-letters", action])
        with pytest.raises(SystemExit):
            parse(["dead-letters", action, "abc", "--all"])


# -------------------------------------------------------------------- configuration


def test_config_may_come_before_or_after_the_action(tmp_path: Path) -> None:
    before = parse(["dead-letters", "--config", str(tmp_path / "a.yaml"), "list"])
    after = parse(["dead-letters", "list", "--config", str(tmp_path / "b.yaml")])
    default = parse(["dead-letters", "list"])
    assert before.config == tmp_path / "a.yaml"
    assert after.config == tmp_path / "b.yaml"
    assert default.config == Path("gateway.yaml")


def test_a_missing_sqlite_file_is_an_error_not_a_new_store(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    env = _write(tmp_path, monkeypatch, "sqlite")
    assert env.run("list") == 1
    assert "no store at" in capsys.readouterr().err
    assert not env.settings.store.path.exists()


def test_the_memory_backend_cannot_be_reached(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    env = _write(tmp_path, monkeypatch, "memory")
    assert env.run("list") == 1
    assert "memory store" in capsys.readouterr().err


def test_an_unreachable_redis_is_reported_without_credentials(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    url = f"redis://ops:hunter2-pw@127.0.0.1:{_free_port()}/0"
    env = _write(tmp_path, monkeypatch, "redis", url)
    assert env.run("list") == 1
    err = capsys.readouterr().err
    assert err.startswith("error: redis store") and "hunter2-pw" not in err


def test_a_bad_config_raises_config_error_for_the_cli(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    env = _write(tmp_path, monkeypatch, "sqlite")
    monkeypatch.delenv("CXONE_ACCESS_KEY_ID")
    with pytest.raises(ConfigError):
        env.run("list")


# --------------------------------------------------------------------------- redaction


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ({"text": "hi there"}, {"text": "<8 chars redacted>"}),
        ({"id": "m1", "user_id": "u1", "conversationId": "c1"}, None),
        ({"idOnExternalPlatform": "x", "type": "t", "created_at": "2025"}, None),
        ({"createdAtWithMilliseconds": "2025-11-26T12:00:00.000Z", "n": 5, "b": True}, None),
        ({"names": ["Zara", "Leo"]}, {"names": ["<4 chars redacted>", "<3 chars redacted>"]}),
        ({"message_ids": ["m1", "m2"]}, None),
        ("plain", "<5 chars redacted>"),
        (
            {"sender": {"display_name": "Z", "id": "u"}},
            {"sender": {"display_name": "<1 chars redacted>", "id": "u"}},
        ),
    ],
)
def test_redact(value: Any, expected: Any) -> None:
    assert redact(value) == (value if expected is None else expected)
    assert redact(value, show_text=True) == value
