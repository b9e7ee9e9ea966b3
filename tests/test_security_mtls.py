"""Issue 5: TLS on both listeners and mTLS on the CXone listener, through the real gateway.

Every connection is real TLS on localhost. The CXone simulator calls with its client
certificate; the Watering Hole simulator delivers webhooks to the platform listener,
which never asks for one; the gateway presents its own client certificate to CXone.
"""

from __future__ import annotations

import ssl
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import yaml

from gateway.certwatch import prepare_tls
from gateway.errors import ConfigError
from gateway.secrets import Secret
from gateway.server import start_gateway
from gateway.settings import TlsClientSettings
from gateway.settings_loader import load_settings
from gateway.tls import client_context
from tests.security_world import (
    CHAT_CHANNEL,
    CLIENT_PASSWORD,
    MEADOW_CLIENT_ID,
    MEADOW_SECRET,
    SECRETS,
    Pki,
    TlsWorld,
    build_pki,
    copy_pki,
    fetch,
    gateway_yaml,
    start_tls_world,
    token_request,
    world_env,
)


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    return build_pki(tmp_path_factory.mktemp("pki"))


@pytest.fixture
async def required(tmp_path: Path, pki: Pki) -> AsyncIterator[TlsWorld]:
    """mTLS for the whole CXone listener (client_certificate: required, the default)."""
    async with start_tls_world(tmp_path, pki) as world:
        yield world


@pytest.fixture
async def optional(tmp_path: Path, pki: Pki) -> AsyncIterator[TlsWorld]:
    """mTLS per integration: jungle has `mtls: true`, meadow does not."""
    async with start_tls_world(tmp_path, pki, client_certificate="optional") as world:
        yield world


async def _conversation(world: TlsWorld) -> None:
    """DM in over the platform listener, agent reply and typing out over mTLS."""
    conv, msg = await world.dm("usr_zebra", "hello over TLS")
    got = await world.delivered(CHAT_CHANNEL, msg)  # the gateway's client cert reached CXone
    assert got.body["messageContent"]["payload"]["text"] == "hello over TLS"
    status, body = await world.cxone.agent_reply(CHAT_CHANNEL, conv, "hi, over mTLS")
    assert status == 200, body
    assert world.wh.world.conversations[conv].messages[-1].text == "hi, over mTLS"
    assert (await world.cxone.agent_typing(CHAT_CHANNEL, conv, True)).status == 204
    assert world.cxone.violations == []


async def test_mtls_matrix_on_the_cxone_listener(required: TlsWorld) -> None:
    world, pki = required, required.pki
    token = world.box_url + "/1.0/token"
    ok = token_request(SECRETS.byoc_client_id, SECRETS.byoc_client_secret)
    before = world.gateway.metrics.tokens_issued.labels("issued").value

    # refused in the TLS handshake: no HTTP answer at all
    for refused in (world.tls_as(), world.tls_as(pki.foreign), world.tls_as(pki.expired)):
        for url in (token, world.cxone_url + "/healthz"):
            with pytest.raises(aiohttp.ClientError):
                await fetch(url, refused, "POST" if url == token else "GET", **ok)

    # right CA, wrong name: refused before any handler runs
    status, body, _ = await fetch(token, world.tls_as(pki.intruder), "POST", **ok)
    assert (status, body["error"]) == (403, "client_certificate_rejected")
    assert world.gateway.metrics.tokens_issued.labels("issued").value == before

    # the valid certificate, as CXone presents it (PEM key and its password)
    status, body, _ = await fetch(token, world.as_cxone(), "POST", **ok)
    assert status == 200 and body["token_type"] == "Bearer"

    # the same certificate from its PKCS#12 bundle
    assert pki.cxone.p12 is not None
    from_p12 = client_context(
        TlsClientSettings(
            ca_file=pki.ca.cert_path, cert_file=pki.cxone.p12, key_password=Secret(CLIENT_PASSWORD)
        )
    )
    status, body, _ = await fetch(world.cxone_url + "/healthz", from_p12)
    assert (status, body) == (200, {"status": "ok"})

    # meanwhile the platform listener serves the platform without any client certificate
    status, body, _ = await fetch(world.platform_url + "/healthz", world.tls_as())
    assert (status, body) == (200, {"status": "ok"})
    await _conversation(world)


async def test_both_listeners_speak_tls_12_or_later_only(required: TlsWorld) -> None:
    for name in ("cxone", "platform"):
        live = required.gateway.listener_tls[name]  # the context the socket really uses
        assert live.minimum_version == ssl.TLSVersion.TLSv1_2
        assert live.options & ssl.OP_NO_COMPRESSION
    for url in (required.cxone_url, required.platform_url):
        tls12 = required.as_cxone()
        tls12.maximum_version = ssl.TLSVersion.TLSv1_2
        assert (await fetch(url + "/healthz", tls12))[0] == 200
        plain = url.replace("https://", "http://") + "/healthz"  # no plaintext fallback
        async with aiohttp.ClientSession() as session:
            with pytest.raises(aiohttp.ClientError):
                async with session.get(plain, timeout=aiohttp.ClientTimeout(total=5)) as resp:
                    await resp.read()


async def test_mtls_per_integration(optional: TlsWorld) -> None:
    world, pki = optional, optional.pki
    token = world.box_url + "/1.0/token"
    jungle = token_request(SECRETS.byoc_client_id, SECRETS.byoc_client_secret)
    meadow = token_request(MEADOW_CLIENT_ID, MEADOW_SECRET)

    # a certificate that is presented must still verify: refused in the handshake
    for refused in (world.tls_as(pki.foreign), world.tls_as(pki.expired)):
        with pytest.raises(aiohttp.ClientError):
            await fetch(token, refused, "POST", **jungle)

    # no certificate: the integration with mtls is refused, the other one is not
    status, body, _ = await fetch(token, world.tls_as(), "POST", **jungle)
    assert (status, body["error"]) == (403, "client_certificate_required")
    assert "access_token" not in body
    status, body, _ = await fetch(token, world.tls_as(), "POST", **meadow)
    assert status == 200, body
    # ... and operator pages need no certificate in this mode
    assert (await fetch(world.cxone_url + "/healthz", world.tls_as()))[0] == 200

    # wrong name for the integration with mtls
    status, body, _ = await fetch(token, world.tls_as(pki.intruder), "POST", **jungle)
    assert (status, body["error"]) == (403, "client_certificate_rejected")

    # a valid token alone is not enough: the reply endpoints check the certificate too
    status, body, _ = await fetch(token, world.as_cxone(), "POST", **jungle)
    assert status == 200
    bearer = {"Authorization": f"Bearer {body['access_token']}"}
    reply = f"{world.box_url}/2.0/channel/{CHAT_CHANNEL}/outbound"
    payload = {"thread": {"idOnExternalPlatform": "t"}, "messageContent": {"type": "TEXT"}}
    status, body, _ = await fetch(reply, world.tls_as(), "POST", json=payload, headers=bearer)
    assert (status, body["error"]) == (403, "client_certificate_required")
    status, body, _ = await fetch(
        reply, world.tls_as(pki.intruder), "POST", json=payload, headers=bearer
    )
    assert (status, body["error"]) == (403, "client_certificate_rejected")
    # without a token, the 401 that starts CXone's token dance comes first
    status, _, headers = await fetch(reply, world.tls_as(), "POST", json=payload)
    assert status == 401 and headers["WWW-Authenticate"].startswith("Bearer")

    await _conversation(world)


async def test_encrypted_server_key_needs_its_password(tmp_path: Path, pki: Pki) -> None:
    local = copy_pki(pki, tmp_path)
    path = tmp_path / "gateway.yaml"
    path.write_text(gateway_yaml(tmp_path, local))
    env = world_env("http://127.0.0.1:9/v1", "https://127.0.0.1:9")
    prepare_tls(load_settings(path, env=env), [])  # with its password, the key loads

    del env["SERVER_KEY_PASSWORD"]
    with pytest.raises(ConfigError, match="SERVER_KEY_PASSWORD"):
        load_settings(path, env=env)  # a missing secret fails closed

    env["SERVER_KEY_PASSWORD"] = "not-the-password"
    with pytest.raises(ConfigError) as wrong:
        prepare_tls(load_settings(path, env=env), [])
    message = str(wrong.value)
    assert str(local.server.key) in message and "does not decrypt" in message
    assert "not-the-password" not in message

    # and the real gateway refuses to start with it, naming the file
    with pytest.raises(ConfigError, match="does not decrypt"):
        await start_gateway(load_settings(path, env=env), shutdown_timeout=1)


def _listener(doc: dict[str, Any]) -> dict[str, Any]:
    cxone: dict[str, Any] = doc["listeners"]["cxone"]
    return cxone


def _drop_ca(doc: dict[str, Any]) -> None:
    del _listener(doc)["tls"]["client_ca"]


def _drop_ca_and_names(doc: dict[str, Any]) -> None:
    _drop_ca(doc)
    del _listener(doc)["tls"]["client_subjects"]
    del _listener(doc)["tls"]["client_certificate"]


EDITS: dict[str, tuple[Callable[[dict[str, Any]], None], str, str]] = {
    "bad-cidr": (
        lambda d: _listener(d).update(allow=["203.0.113.0/24", "10.0.0.0/33"]),
        "/listeners/cxone/allow/1",
        "not an IP network",
    ),
    "bad-proxy": (
        lambda d: _listener(d).update(trusted_proxies=["proxy.example.com"]),
        "/listeners/cxone/trusted_proxies/0",
        "not an IP network",
    ),
    "subjects-without-ca": (_drop_ca, "/listeners/cxone/tls/client_subjects", "without client_ca"),
    "mtls-without-ca": (_drop_ca_and_names, "/integrations/0/mtls", "no client_ca"),
    "bad-mode": (
        lambda d: _listener(d)["tls"].update(client_certificate="maybe"),
        "/listeners/cxone/tls/client_certificate",
        "",
    ),
}


@pytest.mark.parametrize("case", sorted(EDITS))
def test_settings_refuse_unsafe_or_broken_tls(tmp_path: Path, pki: Pki, case: str) -> None:
    edit, pointer, words = EDITS[case]
    local = copy_pki(pki, tmp_path)
    doc = yaml.safe_load(gateway_yaml(tmp_path, local, client_certificate="optional"))
    edit(doc)
    path = tmp_path / "gateway.yaml"
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    with pytest.raises(ConfigError) as exc:
        load_settings(path, env=world_env("http://x/v1", "https://x"))
    found = [p for p in exc.value.problems if p.where == pointer]
    assert found, [str(p) for p in exc.value.problems]
    assert words in found[0].reason
    assert found[0].line is not None  # the operator is told where


async def test_client_certificate_on_calls_to_a_platform_when_the_mapping_asks(
    tmp_path: Path, pki: Pki
) -> None:
    async with start_tls_world(tmp_path, pki, platform_mtls=True) as world:
        assert "watering-hole" in world.gateway.platform_tls  # built from the mapping
        await _conversation(world)  # the reply reached the platform's mTLS API
        monitor = world.gateway.certificates
        assert monitor is not None
        roles = {c["role"] for c in monitor.describe()["certificates"]}
        assert {"platform:watering-hole", "platform:watering-hole-ca"} <= roles
