"""Issue 6.1: channels declared once (mapping + gateway.yaml) and `byoc-gateway channels`.

The command runs for real (argument parsing, gateway.yaml from the environment, its own
CXone client) against a CXone simulator on a real socket, in a worker thread.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

from gateway import cli, jsonutil
from gateway.channels import channel_body, declare
from gateway.mapping import load_mapping
from gateway.sandbox.cxone import CxoneSim, CxoneSimConfig
from gateway.sandbox.cxone.responses import Invalid
from gateway.sandbox.wiring import (
    BOARD_CHANNEL,
    CHAT_CHANNEL,
    REPO_MAPPINGS,
    sandbox_env,
    write_sandbox_settings,
)
from gateway.settings import ChannelBinding, IntegrationSettings
from tests.harness import SECRETS, serve_app

INTEGRATION_ID = "int-jungle-0001"


def integration(**kw: Any) -> IntegrationSettings:
    from gateway.secrets import Secret

    base: dict[str, Any] = {
        "name": "jungle",
        "client_id": "c",
        "client_secrets": (Secret("s" * 20),),
        "token_signing_key": Secret("k" * 40),
        "channels": (),
        "integration_id": INTEGRATION_ID,
    }
    return IntegrationSettings(**{**base, **kw})


@pytest.fixture(scope="module")
def mapping() -> Any:
    return load_mapping(REPO_MAPPINGS / "watering-hole.yaml", check_secrets=False)


# --- the bodies ---------------------------------------------------------------------------


def test_a_private_chat_channel_takes_its_flags_from_the_mapping(mapping: Any) -> None:
    binding = ChannelBinding(id="wh-chat", mapping="watering-hole", role="chat")
    body = channel_body(integration(), binding, mapping.channels["chat"].cxone)
    assert body == {
        "id": "wh-chat",
        "idOnExternalPlatform": "wh-chat",
        "channelIntegrationId": INTEGRATION_ID,
        "realExternalPlatformId": "chat",
        "name": "Watering Hole DMs",
        "isPrivate": True,
        "hasTreeStructure": False,
        "hasAbilityToSendFiles": True,
        "hasOutboundFlow": True,
        "hasManualOutboundFlow": True,
        "canReplyToAnyMessage": False,
        "canSendSenderActions": True,
    }


def test_a_public_board_is_a_tree_and_every_absent_flag_is_sent_false(mapping: Any) -> None:
    binding = ChannelBinding(
        id="wh-board",
        mapping="watering-hole",
        role="board",
        name="Jungle board",
        id_on_external_platform="acc_jungle",
    )
    body = channel_body(integration(), binding, mapping.channels["board"].cxone)
    assert body["isPrivate"] is False and body["hasTreeStructure"] is True
    assert body["name"] == "Jungle board"  # gateway.yaml's name wins
    assert body["idOnExternalPlatform"] == "acc_jungle"
    assert body["canReplyToAnyMessage"] is True
    assert body["hasOutboundFlow"] is False and body["canSendSenderActions"] is False
    assert body["realExternalPlatformId"] == "forum"


def test_without_an_integration_id_the_integration_name_is_sent(mapping: Any) -> None:
    binding = ChannelBinding(id="x", mapping="watering-hole", role="chat")
    body = channel_body(integration(integration_id=None), binding, mapping.channels["chat"].cxone)
    assert body["channelIntegrationId"] == "jungle"


def test_declare_lists_bindings_in_order_and_filters_by_integration(mapping: Any) -> None:
    one = integration(
        channels=(
            ChannelBinding(id="b", mapping="watering-hole", role="board"),
            ChannelBinding(id="a", mapping="watering-hole", role="chat"),
        )
    )
    other = integration(
        name="other", channels=(ChannelBinding(id="c", mapping="watering-hole", role="chat"),)
    )
    mappings = {"watering-hole": mapping}
    assert [d.id for d in declare([one, other], mappings)] == ["b", "a", "c"]
    assert [d.id for d in declare([one, other], mappings, "other")] == ["c"]
    assert [(d.mapping, d.role) for d in declare([one], mappings)] == [
        ("watering-hole", "board"),
        ("watering-hole", "chat"),
    ]


# --- the command against the CXone simulator -----------------------------------------------


@dataclass
class Env:
    sim: CxoneSim
    config: Path

    async def run(self, *args: str) -> int:
        """Run `byoc-gateway channels ...` in a thread (it runs its own event loop)."""
        return await asyncio.to_thread(cli.main, ["channels", *args, "--config", str(self.config)])


@pytest.fixture
async def env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[Env]:
    sim = CxoneSim(
        CxoneSimConfig(
            access_key_id=SECRETS.access_key_id,
            access_key_secret=SECRETS.access_key_secret,
            app_client_id=SECRETS.app_client_id,
            app_client_secret=SECRETS.app_client_secret,
            integration_id=INTEGRATION_ID,  # the sim refuses channels of other integrations
        )
    )
    runner, url = await serve_app(sim.app)
    try:
        wh_api = "http://127.0.0.1:9/v1"  # never called by the channels command
        write_sandbox_settings(tmp_path, wh_api=wh_api, cxone_issuer=url)
        config = tmp_path / "gateway.yaml"
        tree = yaml.safe_load(config.read_text())
        tree["integrations"][0]["integration_id"] = INTEGRATION_ID
        config.write_text(yaml.safe_dump(tree, sort_keys=False))
        for key, value in sandbox_env(wh_api, url).items():
            monkeypatch.setenv(key, value)
        yield Env(sim, config)
    finally:
        await runner.cleanup()


def listed(out: str) -> dict[str, dict[str, Any]]:
    return {c["id"]: c for c in jsonutil.loads(out)["channels"]}


async def test_create_makes_every_declared_channel_in_cxone(
    env: Env, capsys: pytest.CaptureFixture[str]
) -> None:
    assert await env.run("list") == 0
    out = capsys.readouterr().out
    assert CHAT_CHANNEL in out and BOARD_CHANNEL in out and out.count("missing") == 2

    assert await env.run("create") == 0
    out = capsys.readouterr().out
    assert f"created {CHAT_CHANNEL}" in out and f"created {BOARD_CHANNEL}" in out
    chat, board = env.sim.channels[CHAT_CHANNEL], env.sim.channels[BOARD_CHANNEL]
    assert chat["channelIntegrationId"] == INTEGRATION_ID
    assert chat["isPrivate"] is True and chat["hasOutboundFlow"] is True
    assert board["hasTreeStructure"] is True and board["isPrivate"] is False
    assert not env.sim.violations

    assert await env.run("list", "--format", "json") == 0
    states = listed(capsys.readouterr().out)
    assert {cid: s["state"] for cid, s in states.items()} == {
        CHAT_CHANNEL: "in_sync",
        BOARD_CHANNEL: "in_sync",
    }
    assert states[CHAT_CHANNEL]["mapping"] == "watering-hole"
    assert states[CHAT_CHANNEL]["role"] == "chat"

    # creating again changes nothing and is not an error (scripts may run it every deploy)
    upserts = env.sim.hits("channel_upsert")
    assert await env.run("create", CHAT_CHANNEL) == 0
    assert "already exists" in capsys.readouterr().out
    assert env.sim.hits("channel_upsert") == upserts


async def test_update_sends_the_declared_settings_again(
    env: Env, capsys: pytest.CaptureFixture[str]
) -> None:
    assert await env.run("create") == 0
    env.sim.channels[CHAT_CHANNEL]["name"] = "Renamed in CXone"
    env.sim.channels[CHAT_CHANNEL]["hasOutboundFlow"] = False
    capsys.readouterr()
    assert await env.run("list", "--format", "json") == 0
    chat = listed(capsys.readouterr().out)[CHAT_CHANNEL]
    assert chat["state"] == "differs"
    assert sorted(chat["differences"]) == ["hasOutboundFlow", "name"]

    assert await env.run("update", "--dry-run") == 0
    assert f"would update {CHAT_CHANNEL}" in capsys.readouterr().out
    assert env.sim.channels[CHAT_CHANNEL]["name"] == "Renamed in CXone"

    assert await env.run("update") == 0
    assert f"updated {CHAT_CHANNEL}" in capsys.readouterr().out
    assert env.sim.channels[CHAT_CHANNEL]["name"] == "Watering Hole DMs"
    assert env.sim.channels[CHAT_CHANNEL]["hasOutboundFlow"] is True


async def test_delete_removes_channels_and_reports_unknown_ones(
    env: Env, capsys: pytest.CaptureFixture[str]
) -> None:
    assert await env.run("create") == 0
    assert await env.run("delete") == 1  # nothing named: refuse rather than guess
    assert "--all" in capsys.readouterr().err

    assert await env.run("delete", BOARD_CHANNEL) == 0
    assert f"deleted {BOARD_CHANNEL}" in capsys.readouterr().out
    assert set(env.sim.channels) == {CHAT_CHANNEL}

    assert await env.run("delete", BOARD_CHANNEL) == 1
    assert "no such channel" in capsys.readouterr().err

    assert await env.run("delete", "--all", "--dry-run") == 0
    assert f"would delete {CHAT_CHANNEL}" in capsys.readouterr().out
    assert await env.run("delete", "--all") == 0
    assert env.sim.channels == {}


async def test_a_leftover_channel_of_the_integration_is_listed_and_can_be_deleted(
    env: Env, capsys: pytest.CaptureFixture[str]
) -> None:
    leftover = {
        "id": "old-dms",
        "idOnExternalPlatform": "old",
        "channelIntegrationId": INTEGRATION_ID,
        "realExternalPlatformId": "chat",
        "name": "Old DMs",
        "isPrivate": True,
        "hasTreeStructure": False,
    }
    env.sim.dfo.upsert_channel(leftover)
    assert await env.run("list", "--format", "json") == 0
    assert listed(capsys.readouterr().out)["old-dms"]["state"] == "not_declared"
    assert await env.run("create", "old-dms") == 1  # only declared channels are created
    assert "not declared" in capsys.readouterr().err
    assert await env.run("delete", "old-dms") == 0
    assert "old-dms" not in env.sim.channels


async def test_update_of_a_missing_channel_and_cxone_errors_exit_1(
    env: Env, capsys: pytest.CaptureFixture[str]
) -> None:
    assert await env.run("update", CHAT_CHANNEL) == 1
    assert "run create" in capsys.readouterr().err
    env.sim.script("channel_list", [(503, {}, {"error": "down"})])
    assert await env.run("list") == 1
    assert "HTTP 503" in capsys.readouterr().err


async def test_a_broken_gateway_yaml_exits_1(
    env: Env, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("CXONE_ACCESS_KEY_SECRET")
    assert await env.run("list") == 1
    assert "CXONE_ACCESS_KEY_SECRET" in capsys.readouterr().err


def test_the_command_is_registered() -> None:
    parser = cli._parser()
    args = parser.parse_args(["channels", "delete", "a", "b", "--dry-run"])
    assert args.channels_command == "delete" and args.ids == ["a", "b"] and args.dry_run
    assert callable(args.run)


def test_sim_refuses_a_channel_of_another_integration() -> None:
    # guards the fixture: a wrong channelIntegrationId must not pass unnoticed
    sim = CxoneSim(CxoneSimConfig(integration_id=INTEGRATION_ID))
    with pytest.raises(Invalid):
        sim.dfo.upsert_channel(
            {
                "id": "x",
                "idOnExternalPlatform": "x",
                "channelIntegrationId": "jungle",
                "realExternalPlatformId": "chat",
                "name": "x",
                "isPrivate": True,
                "hasTreeStructure": False,
            }
        )
