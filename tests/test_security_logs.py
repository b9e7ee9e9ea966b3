"""Issue 5: no secret and no token in any log line, at DEBUG level, across a full conversation.

Everything is logged at DEBUG while a whole conversation runs over TLS and mTLS: a DM,
CXone's token fetch after its first 401, a reply, typing on and off, delivery and read
receipts, a refused token request, a reload, the operator pages. Then every record
(message, arguments, traceback), and every line the gateway's own formatters write, is
searched for every secret the gateway knows and every token that crossed it. Reprs of
the settings are checked too.
"""

from __future__ import annotations

import dataclasses
import logging
from pathlib import Path

import pytest

from gateway.logs import JsonFormatter, TextFormatter
from tests.security_world import (
    CHAT_CHANNEL,
    CLIENT_PASSWORD,
    GATEWAY_CLIENT_PASSWORD,
    MEADOW_SECRET,
    MEADOW_SIGNING_KEY,
    SECRETS,
    SERVER_KEY_PASSWORD,
    Pki,
    build_pki,
    fetch,
    start_tls_world,
    token_request,
)


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    return build_pki(tmp_path_factory.mktemp("pki"))


def _key_lines(pki: Pki) -> list[str]:
    """A line from the middle of every private key file (PEM body)."""
    out = []
    for files in (pki.server, pki.cxone, pki.gateway_client, pki.intruder):
        lines = files.key.read_text().splitlines()
        out.append(lines[len(lines) // 2])
    return out


async def test_no_secret_or_token_appears_in_any_log_record(
    tmp_path: Path, pki: Pki, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    async with start_tls_world(tmp_path, pki, log_level="DEBUG") as world:
        conv, msg = await world.dm("usr_zebra", "a secret-free hello")
        await world.delivered(CHAT_CHANNEL, msg)
        status, body = await world.cxone.agent_reply(CHAT_CHANNEL, conv, "hello from the agent")
        assert status == 200, body  # after a 401 and a token fetch
        assert world.cxone.gateway_token_fetches == 1
        assert (await world.cxone.agent_typing(CHAT_CHANNEL, conv, True)).status == 204
        assert (await world.cxone.agent_typing(CHAT_CHANNEL, conv, False)).status == 204
        sent = body["message"]["idOnExternalPlatform"]
        await world.wh.message_delivered(sent)
        await world.wh.message_read(sent)
        await world.wh.flush()
        await world.cxone.wait_for(lambda: len(world.cxone.statuses) >= 2 or None)
        wrong = token_request(SECRETS.byoc_client_id, SECRETS.byoc_client_secret[::-1])
        refused, _, _ = await fetch(world.box_url + "/1.0/token", world.as_cxone(), "POST", **wrong)
        assert refused == 401
        assert (await world.gateway.reload()).ok
        admin = {"Authorization": f"Bearer {SECRETS.admin_token}"}
        for page in ("/status.json", "/metrics", "/readyz"):
            code, text, _ = await fetch(world.cxone_url + page, world.as_cxone(), headers=admin)
            assert code == 200
            for value in (SECRETS.byoc_client_secret, SECRETS.access_key_secret):
                assert value not in str(text)  # the status page shows no secret either

        bearer = world.cxone.agent.token
        assert bearer
        cxone_tokens = list(world.cxone.tokens._access)
        assert cxone_tokens  # the gateway got an access token from CXone
        settings_repr = repr(world.gateway.settings)

    secrets = {
        **{f"sandbox.{k}": v for k, v in dataclasses.asdict(SECRETS).items()},
        "meadow secret": MEADOW_SECRET,
        "meadow signing key": MEADOW_SIGNING_KEY,
        "server key password": SERVER_KEY_PASSWORD,
        "gateway client key password": GATEWAY_CLIENT_PASSWORD,
        "cxone client key password": CLIENT_PASSWORD,
        "issued bearer token": bearer,
        "issued bearer token signature": bearer.rsplit(".", 1)[1],
        **{f"cxone access token {i}": t for i, t in enumerate(cxone_tokens)},
        **{f"private key line {i}": line for i, line in enumerate(_key_lines(pki))},
    }
    # ids and the client id are not secret; the rest must never show
    for public in ("sandbox.byoc_client_id", "sandbox.access_key_id", "sandbox.app_client_id"):
        secrets.pop(public)

    records = caplog.records
    assert any(r.levelno == logging.DEBUG for r in records)  # DEBUG really was on
    assert any("refused: invalid_client" in r.getMessage() for r in records)
    formatters = [JsonFormatter(), TextFormatter("%(levelname)s %(name)s %(message)s")]
    for record in records:
        texts = [record.getMessage(), repr(record.args), record.exc_text or ""]
        texts += [f.format(record) for f in formatters]
        texts += [repr(v) for k, v in vars(record).items() if k not in ("args", "msg")]
        for name, value in secrets.items():
            for text in texts:
                assert value not in text, f"{name} in a log record of {record.name}: {text[:300]}"
    for name, value in secrets.items():
        assert value not in settings_repr, name
