"""Webhook signature schemes: every documented style, hostile input, bad specs."""

from __future__ import annotations

import base64
import hashlib
import hmac
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl

import pytest
import yaml
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st
from multidict import CIMultiDict

from gateway.clock import FakeClock
from gateway.errors import ConfigError, Unauthorized
from gateway.platform.signatures import MAX_CANDIDATES, Verifier, compile_verifier
from gateway.platform.signing import sign
from gateway.secrets import Secret, resolve_tree

NOW = 1_764_158_400
BODY = b'{"delivery":{"id":"dlv_7Qm2","attempt":1},"events":[{"id":"evt_1","text":"caf\xc3\xa9"}]}'
DISCORD_KEY = Ed25519PrivateKey.from_private_bytes(bytes(range(32)))
DISCORD_OTHER_KEY = Ed25519PrivateKey.from_private_bytes(bytes(range(1, 33)))
TWILIO_URL = "https://gw.example.com/webhooks/twilio?tenant=a"
TWILIO_BODY = b"Body=Hello+there&From=%2B15551234567&To=%2B15557654321&MessageSid=SM1"


def _public_hex(key: Ed25519PrivateKey) -> str:
    raw = key.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return raw.hex()


def _mac(secret: str, message: bytes, digest: Any = hashlib.sha256) -> bytes:
    return hmac.new(secret.encode(), message, digest).digest()


# The specs as an operator writes them (docs/signatures.md shows the same).
WATERING_HOLE: dict[str, Any] = {
    "scheme": "hmac-sha256",
    "secrets": ["wh-secret", ""],
    "header": "WH-Signature",
    "signature_pattern": "v1=([0-9a-f]+)",
    "timestamp": {"from_header": "WH-Signature", "pattern": "t=([0-9]+)", "unit": "s"},
    "payload": "{timestamp}.{body}",
    "encoding": "hex",
    "tolerance_seconds": 300,
}
GITHUB: dict[str, Any] = {
    "scheme": "hmac-sha256",
    "secrets": ["gh-secret"],
    "header": "X-Hub-Signature-256",
    "prefix": "sha256=",
}
SLACK: dict[str, Any] = {
    "scheme": "hmac-sha256",
    "secrets": ["slack-secret"],
    "header": "X-Slack-Signature",
    "prefix": "v0=",
    "timestamp": {"from_header": "X-Slack-Request-Timestamp", "unit": "s"},
    "payload": "v0:{timestamp}:{body}",
    "tolerance_seconds": 300,
}
TWILIO: dict[str, Any] = {
    "scheme": "hmac-sha1",
    "secrets": ["twilio-auth-token"],
    "header": "X-Twilio-Signature",
    "payload": "{url}{form_sorted}",
    "encoding": "base64",
}
SHARED: dict[str, Any] = {
    "scheme": "shared-secret",
    "secrets": ["tg-secret-token"],
    "header": "X-Telegram-Bot-Api-Secret-Token",
}
DISCORD: dict[str, Any] = {
    "scheme": "ed25519",
    "public_keys": [_public_hex(DISCORD_KEY)],
    "header": "X-Signature-Ed25519",
    "timestamp": {"from_header": "X-Signature-Timestamp", "unit": "s"},
    "payload": "{timestamp}{body}",
    "tolerance_seconds": 300,
}


# What each platform does, written from its documentation, independently of the module.
def wh_headers(secret: str, body: bytes, t: int) -> dict[str, str]:
    return {"WH-Signature": f"t={t},v1={_mac(secret, f'{t}.'.encode() + body).hex()}"}


def github_headers(secret: str, body: bytes, t: int) -> dict[str, str]:
    return {"X-Hub-Signature-256": "sha256=" + _mac(secret, body).hex()}


def slack_headers(secret: str, body: bytes, t: int) -> dict[str, str]:
    mac = _mac(secret, f"v0:{t}:".encode() + body).hex()
    return {"X-Slack-Request-Timestamp": str(t), "X-Slack-Signature": f"v0={mac}"}


def twilio_headers(token: str, body: bytes, t: int, url: str = TWILIO_URL) -> dict[str, str]:
    params = sorted(parse_qsl(body.decode(), keep_blank_values=True))
    message = (url + "".join(k + v for k, v in params)).encode()
    mac = _mac(token, message, hashlib.sha1)
    return {"X-Twilio-Signature": base64.b64encode(mac).decode()}


def shared_headers(secret: str, body: bytes, t: int) -> dict[str, str]:
    return {"X-Telegram-Bot-Api-Secret-Token": secret}


def discord_headers(key: Ed25519PrivateKey, body: bytes, t: int) -> dict[str, str]:
    signature = key.sign(str(t).encode() + body)
    return {"X-Signature-Ed25519": signature.hex(), "X-Signature-Timestamp": str(t)}


@dataclass(frozen=True)
class Style:
    name: str
    spec: dict[str, Any]
    make: Callable[[Any, bytes, int], dict[str, str]]
    key: Any
    wrong_key: Any
    body: bytes = BODY
    timed: bool = False
    signs_body: bool = True
    malformed: str = "garbage"

    def verifier(self, clock: FakeClock | None = None) -> Verifier:
        return compile_verifier(self.spec, clock=clock or FakeClock(NOW))

    def verify(self, headers: Mapping[str, str], body: bytes | None = None, **kw: Any) -> None:
        clock = kw.pop("clock", None)
        url = kw.pop("url", TWILIO_URL)
        self.verifier(clock).verify(self.body if body is None else body, headers, url, **kw)


STYLES = [
    Style(
        "watering-hole",
        WATERING_HOLE,
        wh_headers,
        "wh-secret",
        "nope",
        timed=True,
        malformed="t=1764158400,v1=not-hex",
    ),
    Style("github", GITHUB, github_headers, "gh-secret", "nope", malformed="sha256=xyz"),
    Style("slack", SLACK, slack_headers, "slack-secret", "nope", timed=True, malformed="v0=="),
    Style(
        "twilio",
        TWILIO,
        twilio_headers,
        "twilio-auth-token",
        "nope",
        body=TWILIO_BODY,
        malformed="!!!not base64!!!",
    ),
    Style(
        "shared-secret",
        SHARED,
        shared_headers,
        "tg-secret-token",
        "nope",
        signs_body=False,
        malformed="",
    ),
    Style(
        "discord",
        DISCORD,
        discord_headers,
        DISCORD_KEY,
        DISCORD_OTHER_KEY,
        timed=True,
        malformed="zz" * 64,
    ),
]
TIMED = [s for s in STYLES if s.timed]
BODY_SIGNED = [s for s in STYLES if s.signs_body]
ids = [s.name for s in STYLES]


def rejects(reason: str, call: Callable[[], None]) -> None:
    with pytest.raises(Unauthorized) as info:
        call()
    assert info.value.message == reason
    assert info.value.code == "invalid_signature"
    assert info.value.status == 401


def signature_header(style: Style) -> str:
    return str(style.spec["header"])


# --- every documented style ---------------------------------------------------------


@pytest.mark.parametrize("style", STYLES, ids=ids)
def test_accepts_a_correctly_signed_request(style: Style) -> None:
    style.verify(style.make(style.key, style.body, NOW))


@pytest.mark.parametrize("style", STYLES, ids=ids)
def test_sign_builds_the_same_headers_as_the_platform(style: Style) -> None:
    headers = sign(
        style.spec, style.body, timestamp=NOW, url=TWILIO_URL, secret_or_private_key=style.key
    )
    assert headers == style.make(style.key, style.body, NOW)
    style.verify(headers)


@pytest.mark.parametrize("style", STYLES, ids=ids)
def test_rejects_the_wrong_secret(style: Style) -> None:
    headers = style.make(style.wrong_key, style.body, NOW)
    rejects("invalid signature", lambda: style.verify(headers))


@pytest.mark.parametrize("style", BODY_SIGNED, ids=[s.name for s in BODY_SIGNED])
def test_rejects_a_body_with_one_byte_changed(style: Style) -> None:
    headers = style.make(style.key, style.body, NOW)
    tampered = bytearray(style.body)
    tampered[-3] ^= 0x01  # "SM1" -> "SL1" for Twilio, a JSON letter for the others
    rejects("invalid signature", lambda: style.verify(headers, bytes(tampered)))


@pytest.mark.parametrize("style", TIMED, ids=[s.name for s in TIMED])
@pytest.mark.parametrize("offset", [-301, 301, -10_000_000, 10_000_000])
def test_rejects_stale_and_future_timestamps(style: Style, offset: int) -> None:
    headers = style.make(style.key, style.body, NOW + offset)
    rejects("stale timestamp", lambda: style.verify(headers))


@pytest.mark.parametrize("style", TIMED, ids=[s.name for s in TIMED])
@pytest.mark.parametrize("offset", [-300, 0, 300])
def test_accepts_timestamps_within_tolerance(style: Style, offset: int) -> None:
    style.verify(style.make(style.key, style.body, NOW + offset))


@pytest.mark.parametrize("style", STYLES, ids=ids)
def test_rejects_a_missing_header(style: Style) -> None:
    rejects("missing signature", lambda: style.verify({}))
    rejects("missing signature", lambda: style.verify({"Content-Type": "application/json"}))


@pytest.mark.parametrize("style", TIMED, ids=[s.name for s in TIMED])
def test_a_missing_or_broken_timestamp_is_refused(style: Style) -> None:
    ts = style.spec["timestamp"]["from_header"]
    headers = style.make(style.key, style.body, NOW)
    if ts != signature_header(style):
        without = {k: v for k, v in headers.items() if k != ts}
        rejects("missing signature", lambda: style.verify(without))
        broken = {**headers, ts: "yesterday"}
    else:
        broken = {ts: headers[ts].replace(f"t={NOW}", "t=soon")}
    rejects("invalid signature", lambda: style.verify(broken))


@pytest.mark.parametrize("style", STYLES, ids=ids)
def test_rejects_a_malformed_header(style: Style) -> None:
    rejects(
        "invalid signature",
        lambda: style.verify(
            {**style.make(style.key, style.body, NOW), signature_header(style): style.malformed}
        ),
    )


@pytest.mark.parametrize(
    "style", [s for s in STYLES if "prefix" in s.spec], ids=["github", "slack"]
)
def test_rejects_a_signature_without_its_prefix(style: Style) -> None:
    headers = style.make(style.key, style.body, NOW)
    name = signature_header(style)
    headers[name] = headers[name].removeprefix(style.spec["prefix"])
    rejects("invalid signature", lambda: style.verify(headers))


def test_published_vectors_of_github_slack_twilio_and_rfc8032() -> None:
    """The worked examples in each platform's own documentation, and RFC 8032 test 2."""
    github = {**GITHUB, "secrets": ["It's a Secret to Everybody"]}
    sig = "sha256=757107ea0eb2509fc211221cce984b8a37570b6d7586c22c46f4379c8b043e17"
    compile_verifier(github).verify(b"Hello, World!", {"X-Hub-Signature-256": sig}, "")

    slack = {**SLACK, "secrets": ["8f742231b10e8888abcd99yyyzzz85a5"]}
    body = (
        b"token=xyzz0WbapA4vBCDEFasx0q6G&team_id=T1DC2JH3J&team_domain=testteamnow"
        b"&channel_id=G8PSS9T3V&channel_name=foobar&user_id=U2CERLKJA&user_name=roadrunner"
        b"&command=%2Fwebhook-collect&text=&response_url=https%3A%2F%2Fhooks.slack.com%2F"
        b"commands%2FT1DC2JH3J%2F397700885554%2F96rGlfmibIGlgcZRskXaIFfN"
        b"&trigger_id=398738663015.47445629121.803a0bc887a14d10d2c447fce8b6703c"
    )
    headers = {
        "X-Slack-Request-Timestamp": "1531420618",
        "X-Slack-Signature": "v0=a2114d57b48eac39b9ad189dd8316235a7b4a8d21a10bd27519666489c69b503",
    }
    compile_verifier(slack, clock=FakeClock(1531420618)).verify(body, headers, "")

    twilio = {**TWILIO, "secrets": ["12345"]}
    form = {
        "CallSid": "CA1234567890ABCDE",
        "Caller": "+12349013030",
        "Digits": "1234",
        "From": "+12349013030",
        "To": "+18005551212",
    }
    compile_verifier(twilio).verify(
        b"",
        {"X-Twilio-Signature": "0/KCTR6DLpKmkAf8muzZqo1nDgQ="},
        "https://mycompany.com/myapp.php?foo=1&bar=2",
        form,
    )

    rfc = {
        "scheme": "ed25519",
        "public_keys": ["3d4017c3e843895a92b70aa74d1b7ebc9c982ccf2ec4968cc0cd55f12af4660c"],
        "header": "X-Signature-Ed25519",
    }
    signature = (
        "92a009a9f0d4cab8720e820b5f642540a2b27b5416503f8fb3762223ebdb69da"
        "085ac1e43e15996e458f3613d0f11d8c387b2eaeb4302aeeb00d291612bb0c00"
    )
    compile_verifier(rfc).verify(b"\x72", {"X-Signature-Ed25519": signature}, "")


DOC_BODY = b'{"delivery":{"id":"dlv_7Qm2","attempt":1},"account_id":"acc_jungle","events":[]}'
ZERO_KEY = Ed25519PrivateKey.from_private_bytes(bytes(32))
DOC_EXAMPLES: list[tuple[dict[str, Any], bytes, str, Any, dict[str, str]]] = [
    (
        WATERING_HOLE,
        DOC_BODY,
        "",
        "whsec_test",
        {
            "WH-Signature": "t=1764158400,"
            "v1=788390d66b93120bf48b80262f18abd93153641afd8fb84b789a33468e79a682"
        },
    ),
    (
        GITHUB,
        DOC_BODY,
        "",
        "It's a Secret to Everybody",
        {
            "X-Hub-Signature-256": "sha256="
            + "3aa10bea5a11c9508ffa5de072343f1a8c2e333169b235f3b50cfca3be563d9f"
        },
    ),
    (
        SLACK,
        b"token=x&team_id=T1&text=hi",
        "",
        "8f742231b10e8888abcd99yyyzzz85a5",
        {
            "X-Slack-Request-Timestamp": "1764158400",
            "X-Slack-Signature": "v0="
            + "fa1aa8ffb7f983c703b1a2c9aa7d8ab4cb6c8933acb57b86feb6518488c4989b",
        },
    ),
    (
        TWILIO,
        b"To=%2B15557654321&From=%2B15551234567&Body=Hello",
        "https://gw.example.com/webhooks/twilio",
        "12345",
        {"X-Twilio-Signature": "lHkJIq6AZlJQqJtgSFlz1W8PyCo="},
    ),
    (SHARED, DOC_BODY, "", "s3cr3t-token", {"X-Telegram-Bot-Api-Secret-Token": "s3cr3t-token"}),
    (
        {**DISCORD, "public_keys": [_public_hex(ZERO_KEY)]},
        b'{"type":1}',
        "",
        ZERO_KEY,
        {
            "X-Signature-Timestamp": "1764158400",
            "X-Signature-Ed25519": "8bfaa630a7005f7b5a30c4436b1ef24e9edee7d091f74add9c50f8b2124347"
            "4b1fb617febad4fd1b6b7a3cc54588e74127cbb6207e0c3f60a9fb02fbdcc20009",
        },
    ),
]


@pytest.mark.parametrize(("spec", "body", "url", "key", "headers"), DOC_EXAMPLES, ids=ids)
def test_the_worked_examples_of_docs_signatures_md(
    spec: dict[str, Any], body: bytes, url: str, key: Any, headers: dict[str, str]
) -> None:
    assert sign(spec, body, timestamp=NOW, url=url, secret_or_private_key=key) == headers
    if not isinstance(key, Ed25519PrivateKey):
        spec = {**spec, "secrets": [key]}
    compile_verifier(spec, clock=FakeClock(NOW)).verify(body, headers, url)
    assert (
        _public_hex(ZERO_KEY) == "3b6a27bcceb6a42d62a3a8d02a6f0d73653215771de243a63ac048a18b59da29"
    )


def test_the_shipped_watering_hole_mapping_verifies_the_platform_spec() -> None:
    path = Path(__file__).parent.parent / "mappings" / "watering-hole.yaml"
    raw = yaml.safe_load(path.read_text(encoding="utf-8"))["webhook"]["signature"]
    spec = resolve_tree(raw, file=str(path), env={"WH_SECRET": "whsec_test"})
    verifier = compile_verifier(spec, file=str(path), clock=FakeClock(NOW))
    verifier.verify(DOC_BODY, wh_headers("whsec_test", DOC_BODY, NOW), "")
    rejects("invalid signature", lambda: verifier.verify(DOC_BODY, wh_headers("x", DOC_BODY, NOW)))


# --- rotation and bounds ------------------------------------------------------------


def test_rotation_two_v1_entries_any_match_passes() -> None:
    old = wh_headers("old-secret", BODY, NOW)["WH-Signature"]
    new = wh_headers("wh-secret", BODY, NOW)["WH-Signature"]
    both = f"{old},{new.split(',')[1]}"  # t=..,v1=<old>,v1=<new>
    compile_verifier(WATERING_HOLE, clock=FakeClock(NOW)).verify(BODY, {"WH-Signature": both}, "")
    only_old = {**WATERING_HOLE, "secrets": ["old-secret"]}
    compile_verifier(only_old, clock=FakeClock(NOW)).verify(BODY, {"WH-Signature": both}, "")
    neither = {**WATERING_HOLE, "secrets": ["third"]}
    rejects(
        "invalid signature",
        lambda: compile_verifier(neither, clock=FakeClock(NOW)).verify(
            BODY, {"WH-Signature": both}, ""
        ),
    )


@pytest.mark.parametrize("signer", ["new-secret", "old-secret"])
def test_rotation_two_secrets_configured_either_signs(signer: str) -> None:
    spec = {**WATERING_HOLE, "secrets": ["new-secret", "", "old-secret"]}
    compile_verifier(spec, clock=FakeClock(NOW)).verify(BODY, wh_headers(signer, BODY, NOW), "")


def test_rotation_of_ed25519_public_keys() -> None:
    spec = {**DISCORD, "public_keys": [_public_hex(DISCORD_OTHER_KEY), _public_hex(DISCORD_KEY)]}
    for key in (DISCORD_KEY, DISCORD_OTHER_KEY):
        compile_verifier(spec, clock=FakeClock(NOW)).verify(BODY, discord_headers(key, BODY, NOW))


def test_only_the_first_candidates_are_considered() -> None:
    good = wh_headers("wh-secret", BODY, NOW)["WH-Signature"].split(",")[1]
    junk = ",".join(["v1=" + "00" * 32] * (MAX_CANDIDATES - 1))
    verifier = compile_verifier(WATERING_HOLE, clock=FakeClock(NOW))
    verifier.verify(BODY, {"WH-Signature": f"t={NOW},{junk},{good}"}, "")
    late = f"t={NOW},{junk},v1={'00' * 32},{good}"
    rejects("invalid signature", lambda: verifier.verify(BODY, {"WH-Signature": late}, ""))


def test_a_pattern_with_several_groups_reads_group_one_only() -> None:
    """Group 1 is the signature; where it takes no part in a match, that match is none."""
    good = wh_headers("wh-secret", BODY, NOW)["WH-Signature"].split(",")[1].removeprefix("v1=")
    spec = {**WATERING_HOLE, "signature_pattern": "v1=([0-9a-f]+)|v0=([0-9a-f]+)"}
    verifier = compile_verifier(spec, clock=FakeClock(NOW))
    assert verifier.candidates(f"t={NOW},v0=00,v1={good}") == [good]
    verifier.verify(BODY, {"WH-Signature": f"t={NOW},v0=00,v1={good}"}, "")
    in_group_two = {"WH-Signature": f"t={NOW},v0={good}"}
    rejects("invalid signature", lambda: verifier.verify(BODY, in_group_two, ""))
    optional = {**WATERING_HOLE, "signature_pattern": "v1=([0-9a-f]+)?"}
    assert compile_verifier(optional).candidates(f"t={NOW},v1=,v1={good}") == [good]


def test_a_header_with_ten_thousand_signatures_is_refused() -> None:
    good = wh_headers("wh-secret", BODY, NOW)["WH-Signature"]
    huge = good + ",v1=" + ",v1=".join(["ab" * 32] * 10_000)
    verifier = compile_verifier(WATERING_HOLE, clock=FakeClock(NOW))
    rejects("invalid signature", lambda: verifier.verify(BODY, {"WH-Signature": huge}, ""))


# --- details of reading and computing ------------------------------------------------


@pytest.mark.parametrize(
    "transform",
    [
        lambda h: h,
        lambda h: {k.lower(): v for k, v in h.items()},
        lambda h: {k.upper(): v for k, v in h.items()},
        lambda h: CIMultiDict({"x-other": "1", **h}),
    ],
    ids=["as-sent", "lower", "upper", "cimultidict"],
)
def test_header_names_are_case_insensitive(transform: Callable[[dict[str, str]], Any]) -> None:
    headers = transform(slack_headers("slack-secret", BODY, NOW))
    compile_verifier(SLACK, clock=FakeClock(NOW)).verify(BODY, headers, "")


def test_hex_is_case_insensitive_but_strict() -> None:
    verifier = compile_verifier(GITHUB)
    mac = _mac("gh-secret", BODY).hex()
    verifier.verify(BODY, {"X-Hub-Signature-256": "sha256=" + mac.upper()}, "")
    spaced = "sha256=" + mac[:10] + " " + mac[10:]
    rejects("invalid signature", lambda: verifier.verify(BODY, {"X-Hub-Signature-256": spaced}, ""))
    rejects(
        "invalid signature",
        lambda: verifier.verify(BODY, {"X-Hub-Signature-256": "sha256=" + mac[:-1]}, ""),
    )


def test_base64_accepts_urlsafe_and_unpadded_but_not_spare_bits() -> None:
    verifier = compile_verifier(TWILIO)
    good = twilio_headers("twilio-auth-token", TWILIO_BODY, NOW)["X-Twilio-Signature"]
    urlsafe = good.replace("+", "-").replace("/", "_")
    for variant in (good, urlsafe, good.rstrip("="), urlsafe.rstrip("=")):
        verifier.verify(TWILIO_BODY, {"X-Twilio-Signature": variant}, TWILIO_URL)
    # 20 bytes -> 27 characters + "="; the last character carries 2 unused bits
    alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"
    last = alphabet.index(good[26])
    spare = good[:26] + alphabet[last ^ 0b01] + "="
    assert base64.b64decode(spare) == base64.b64decode(good)
    rejects(
        "invalid signature",
        lambda: verifier.verify(TWILIO_BODY, {"X-Twilio-Signature": spare}, TWILIO_URL),
    )


def test_twilio_signs_the_url_and_the_sorted_form() -> None:
    verifier = compile_verifier(TWILIO)
    headers = twilio_headers("twilio-auth-token", TWILIO_BODY, NOW)
    form = dict(parse_qsl(TWILIO_BODY.decode()))
    verifier.verify(b"ignored when the form is given", headers, TWILIO_URL, form)
    reordered = b"&".join(reversed(TWILIO_BODY.split(b"&")))
    verifier.verify(reordered, headers, TWILIO_URL)
    rejects(
        "invalid signature",
        lambda: verifier.verify(TWILIO_BODY, headers, TWILIO_URL.replace("tenant=a", "tenant=b")),
    )
    rejects(
        "invalid signature",
        lambda: verifier.verify(TWILIO_BODY, headers, TWILIO_URL, {**form, "Extra": "1"}),
    )


def test_the_timestamp_can_be_in_milliseconds() -> None:
    spec = {**SLACK, "timestamp": {"from_header": "X-Slack-Request-Timestamp", "unit": "ms"}}
    ms = NOW * 1000 + 123
    headers = sign(spec, BODY, timestamp=ms / 1000)
    assert headers["X-Slack-Request-Timestamp"] == str(ms)
    compile_verifier(spec, clock=FakeClock(NOW)).verify(BODY, headers, "")
    rejects(
        "stale timestamp",
        lambda: compile_verifier(spec, clock=FakeClock(NOW + 301)).verify(BODY, headers, ""),
    )


def test_payload_braces_are_escaped_by_doubling() -> None:
    spec = {**SLACK, "payload": "{{v0}}:{timestamp}:{body}"}
    mac = _mac("slack-secret", f"{{v0}}:{NOW}:".encode() + BODY).hex()
    headers = {"X-Slack-Request-Timestamp": str(NOW), "X-Slack-Signature": "v0=" + mac}
    compile_verifier(spec, clock=FakeClock(NOW)).verify(BODY, headers, "")


def test_the_raw_body_bytes_are_signed_untouched() -> None:
    body = b'\xff\xfe not utf-8 \r\n {"a": 1}  \x00'
    verifier = compile_verifier(GITHUB)
    verifier.verify(body, github_headers("gh-secret", body, NOW), "")
    rejects(
        "invalid signature",
        lambda: verifier.verify(
            body.replace(b"\r\n", b"\n"), github_headers("gh-secret", body, NOW), ""
        ),
    )


def test_ed25519_public_keys_in_hex_base64_and_pem() -> None:
    public = DISCORD_KEY.public_key()
    raw = public.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    der = public.public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    pem = public.public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    ).decode()
    headers = discord_headers(DISCORD_KEY, BODY, NOW)
    for text in (
        raw.hex(),
        raw.hex().upper(),
        base64.b64encode(raw).decode(),
        base64.b64encode(der).decode(),
        pem,
    ):
        spec = {**DISCORD, "public_keys": [text]}
        compile_verifier(spec, clock=FakeClock(NOW)).verify(BODY, headers, "")


def test_sign_accepts_ed25519_private_keys_in_every_form() -> None:
    seed = bytes(range(32))
    pem = DISCORD_KEY.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    ).decode()
    expected = discord_headers(DISCORD_KEY, BODY, NOW)
    for key in (
        DISCORD_KEY,
        seed,
        seed.hex(),
        base64.b64encode(seed).decode(),
        pem,
        Secret(seed.hex()),
    ):
        assert sign(DISCORD, BODY, timestamp=NOW, secret_or_private_key=key) == expected


def test_sign_defaults_to_the_first_secret_and_the_clock() -> None:
    headers = sign(WATERING_HOLE, BODY, clock=FakeClock(NOW + 0.9))
    assert headers == wh_headers("wh-secret", BODY, NOW)


def test_sign_refuses_what_it_cannot_build() -> None:
    with pytest.raises(ConfigError, match="private key"):
        sign(DISCORD, BODY, timestamp=NOW)
    with pytest.raises(ConfigError, match="private key"):
        sign(DISCORD, BODY, timestamp=NOW, secret_or_private_key="not a key")
    with pytest.raises(ConfigError, match="read back"):
        sign({**GITHUB, "signature_pattern": r"sha256=([0-9a-f]+)\s*"}, BODY)
    with pytest.raises(ConfigError, match="no secret"):
        sign({**GITHUB, "secrets": [""]}, BODY)


def test_scheme_none_needs_an_explicit_allow_unsigned() -> None:
    with pytest.raises(ConfigError, match="allow_unsigned"):
        compile_verifier({"scheme": "none"})
    verifier = compile_verifier({"scheme": "none", "allow_unsigned": True})
    verifier.verify(b"anything", {}, "")
    assert sign({"scheme": "none", "allow_unsigned": True}, b"x") == {}


def test_no_secrets_mode_compiles_but_refuses_everything() -> None:
    spec = {**GITHUB, "secrets": ["", ""]}
    with pytest.raises(ConfigError, match="fail closed"):
        compile_verifier(spec)
    verifier = compile_verifier(spec, check_secrets=False)
    rejects("invalid signature", lambda: verifier.verify(BODY, github_headers("", BODY, NOW), ""))


def test_secrets_never_show_in_repr() -> None:
    spec = {**GITHUB, "secrets": [Secret("very-secret-value", "GH_SECRET")]}
    verifier = compile_verifier(spec)
    assert "very-secret-value" not in repr(verifier)
    verifier.verify(BODY, github_headers("very-secret-value", BODY, NOW), "")


# --- compile-time errors name the place -------------------------------------------------

_EC_PEM = (
    ec.generate_private_key(ec.SECP256R1())
    .public_key()
    .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    .decode()
)
BAD_SPECS: list[tuple[dict[str, Any], str, str]] = [
    ({**GITHUB, "scheme": "hmac-sha512"}, "/scheme", "unknown scheme"),
    ({"header": "X"}, "/scheme", "unknown scheme"),
    ({**GITHUB, "secret": "x"}, "/secret", "unknown key"),
    ({**GITHUB, "public_keys": ["ab" * 32]}, "/public_keys", "no meaning for scheme hmac"),
    ({**GITHUB, "allow_unsigned": True}, "/allow_unsigned", "no meaning"),
    ({**SHARED, "payload": "{body}"}, "/payload", "no meaning for scheme shared-secret"),
    ({**GITHUB, "secrets": "gh-secret"}, "/secrets", "must be a list"),
    ({**GITHUB, "secrets": [42]}, "/secrets/0", "must be a string"),
    ({**GITHUB, "secrets": ["", ""]}, "/secrets", "fail closed"),
    ({k: v for k, v in GITHUB.items() if k != "secrets"}, "/secrets", "must be a list"),
    ({k: v for k, v in GITHUB.items() if k != "header"}, "/header", "is required"),
    ({**GITHUB, "header": "X Hub"}, "/header", "header name"),
    ({**GITHUB, "prefix": 1}, "/prefix", "must be a string"),
    ({**GITHUB, "signature_pattern": "v1=([0-9a-f"}, "/signature_pattern", "regular expression"),
    ({**GITHUB, "signature_pattern": "v1=[0-9a-f]+"}, "/signature_pattern", "capturing group"),
    ({k: v for k, v in DISCORD.items() if k != "public_keys"}, "/public_keys", "must be a list"),
    ({**DISCORD, "public_keys": ["", "not a key"]}, "/public_keys/1", "not an Ed25519"),
    ({**DISCORD, "public_keys": ["ab" * 31]}, "/public_keys/0", "not an Ed25519"),
    ({**DISCORD, "public_keys": [_EC_PEM]}, "/public_keys/0", "not an Ed25519"),
    ({**DISCORD, "secrets": ["x"]}, "/secrets", "no meaning for scheme ed25519"),
    ({**GITHUB, "tolerance_seconds": 300}, "/tolerance_seconds", "needs a timestamp"),
    ({**SLACK, "tolerance_seconds": -1}, "/tolerance_seconds", "positive"),
    ({**SLACK, "tolerance_seconds": True}, "/tolerance_seconds", "positive"),
    ({**SLACK, "timestamp": "X-Ts"}, "/timestamp", "must be a mapping"),
    ({**SLACK, "timestamp": {"unit": "s"}}, "/timestamp/from_header", "is required"),
    (
        {**SLACK, "timestamp": {**SLACK["timestamp"], "format": "x"}},
        "/timestamp/format",
        "unknown key",
    ),
    (
        {**SLACK, "timestamp": {**SLACK["timestamp"], "unit": "us"}},
        "/timestamp/unit",
        "unknown unit",
    ),
    (
        {**WATERING_HOLE, "timestamp": {**WATERING_HOLE["timestamp"], "pattern": "t=[0-9]+"}},
        "/timestamp/pattern",
        "capturing group",
    ),
    ({**SLACK, "payload": "v0:{timestamp}:{bdoy}"}, "/payload", "{bdoy}"),
    ({**SLACK, "payload": "v0:{timestamp}:{body"}, "/payload", "payload template"),
    ({**SLACK, "payload": "}{timestamp}{body}"}, "/payload", "payload template"),
    ({**SLACK, "payload": "{body!r}{timestamp}"}, "/payload", "unknown placeholder"),
    ({**SLACK, "payload": 7}, "/payload", "not a string"),
    ({**GITHUB, "payload": "{timestamp}.{body}"}, "/payload", "no timestamp is configured"),
    ({**SLACK, "payload": "{body}"}, "/timestamp", "proves nothing"),
    ({**GITHUB, "encoding": "base32"}, "/encoding", "unknown encoding"),
    ({"scheme": "none"}, "/allow_unsigned", "allow_unsigned: true"),
    ({"scheme": "none", "allow_unsigned": "yes"}, "/allow_unsigned", "allow_unsigned: true"),
    ({"scheme": "none", "allow_unsigned": True, "header": "X"}, "/header", "no meaning"),
]


@pytest.mark.parametrize(("spec", "pointer", "reason"), BAD_SPECS)
def test_bad_specs_are_refused_with_their_place(
    spec: dict[str, Any], pointer: str, reason: str
) -> None:
    with pytest.raises(ConfigError) as info:
        compile_verifier(spec, file="mappings/x.yaml", where="/webhook/signature")
    places = {p.where: p for p in info.value.problems}
    assert "/webhook/signature" + pointer in places, info.value.problems
    problem = places["/webhook/signature" + pointer]
    assert reason in problem.reason
    assert problem.file == "mappings/x.yaml"
    assert problem.fix


def test_a_spec_that_is_not_a_mapping_is_refused() -> None:
    with pytest.raises(ConfigError, match="must be a mapping"):
        compile_verifier(["hmac-sha256"])  # type: ignore[arg-type]


def test_every_problem_of_a_spec_is_reported_at_once() -> None:
    spec = {
        "scheme": "hmac-sha256",
        "secrets": [""],
        "header": "X-Sig",
        "signature_pattern": "(",
        "tolerance_seconds": 1,
        "encoding": "hex2",
    }
    with pytest.raises(ConfigError) as info:
        compile_verifier(spec, file="m.yaml", where="/webhook/signature")
    assert {p.where.rsplit("/", 1)[1] for p in info.value.problems} == {
        "secrets",
        "signature_pattern",
        "tolerance_seconds",
        "encoding",
    }
    assert "m.yaml at /webhook/signature/encoding" in str(info.value)


# --- properties -------------------------------------------------------------------------

secrets_st = st.text(min_size=1, max_size=40)
bodies = st.binary(min_size=1, max_size=512)
# header text as aiohttp hands it over: any character, including (escaped) surrogates
header_text = st.text(st.characters() | st.characters(categories=["Cs"]), max_size=300)


@settings(max_examples=150, deadline=None)
@given(body=bodies, secret=secrets_st, skew=st.integers(-300, 300), data=st.data())
def test_property_watering_hole_roundtrip_and_mutations(
    body: bytes, secret: str, skew: int, data: st.DataObject
) -> None:
    spec = {**WATERING_HOLE, "secrets": [secret]}
    verifier = compile_verifier(spec, clock=FakeClock(NOW))
    headers = wh_headers(secret, body, NOW + skew)
    assert sign(spec, body, timestamp=NOW + skew) == headers
    verifier.verify(body, headers, "")

    i = data.draw(st.integers(0, len(body) - 1), label="body index")
    new = data.draw(st.integers(0, 255).filter(lambda b: b != body[i]), label="new byte")
    mutated = body[:i] + bytes([new]) + body[i + 1 :]
    rejects("invalid signature", lambda: verifier.verify(mutated, headers, ""))

    value = headers["WH-Signature"]
    start = value.index("v1=") + 3
    j = data.draw(st.integers(start, len(value) - 1), label="signature index")
    c = data.draw(st.characters(codec="ascii").filter(lambda c: c.lower() != value[j].lower()))
    bad = {"WH-Signature": value[:j] + c + value[j + 1 :]}
    rejects("invalid signature", lambda: verifier.verify(body, bad, ""))


@settings(max_examples=100, deadline=None)
@given(
    body=bodies, secrets=st.lists(secrets_st, min_size=2, max_size=3, unique=True), data=st.data()
)
def test_property_any_configured_secret_signs(
    body: bytes, secrets: list[str], data: st.DataObject
) -> None:
    spec = {**GITHUB, "secrets": secrets}
    signer = data.draw(st.sampled_from(secrets))
    compile_verifier(spec).verify(body, github_headers(signer, body, NOW), "")
    stranger = data.draw(secrets_st.filter(lambda s: s not in secrets))
    rejects(
        "invalid signature",
        lambda: compile_verifier(spec).verify(body, github_headers(stranger, body, NOW), ""),
    )


def _same_base64(text: str) -> str:
    """The spelling-independent form: url-safe alphabet, padding and outer blanks do not count."""
    return text.strip().rstrip("=").replace("-", "+").replace("_", "/")


@settings(max_examples=100, deadline=None)
@given(
    form=st.dictionaries(st.text(min_size=1, max_size=10), st.text(max_size=30), max_size=8),
    token=secrets_st,
    data=st.data(),
)
def test_property_twilio_roundtrip_and_signature_mutations(
    form: dict[str, str], token: str, data: st.DataObject
) -> None:
    spec = {**TWILIO, "secrets": [token]}
    verifier = compile_verifier(spec)
    headers = sign(spec, b"", url=TWILIO_URL, form=form)
    verifier.verify(b"", headers, TWILIO_URL, form)
    value = headers["X-Twilio-Signature"]
    j = data.draw(st.integers(0, len(value) - 1))
    mutated = value[:j] + data.draw(st.characters(codec="ascii")) + value[j + 1 :]
    assume(_same_base64(mutated) != _same_base64(value))  # "+" -> "-" is the same signature
    bad = {"X-Twilio-Signature": mutated}
    rejects("invalid signature", lambda: verifier.verify(b"", bad, TWILIO_URL, form))


@settings(max_examples=60, deadline=None)
@given(body=bodies, data=st.data())
def test_property_ed25519_rejects_any_changed_byte(body: bytes, data: st.DataObject) -> None:
    verifier = compile_verifier(DISCORD, clock=FakeClock(NOW))
    headers = discord_headers(DISCORD_KEY, body, NOW)
    verifier.verify(body, headers, "")
    i = data.draw(st.integers(0, len(body) - 1))
    mutated = body[:i] + bytes([body[i] ^ data.draw(st.integers(1, 255))]) + body[i + 1 :]
    rejects("invalid signature", lambda: verifier.verify(mutated, headers, ""))


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    style=st.sampled_from(STYLES),
    headers=st.dictionaries(
        st.sampled_from(
            [
                "WH-Signature",
                "X-Hub-Signature-256",
                "X-Slack-Signature",
                "X-Slack-Request-Timestamp",
                "X-Twilio-Signature",
                "X-Telegram-Bot-Api-Secret-Token",
                "X-Signature-Ed25519",
                "X-Signature-Timestamp",
                "wh-signature",
                "x-signature-timestamp",
            ]
        )
        | st.text(max_size=20),
        header_text | st.sampled_from([f"t={NOW},v1=" + "0" * 64, "sha256=", "v0=", str(NOW)]),
        max_size=6,
    ),
    body=st.binary(max_size=256),
    url=header_text,
)
def test_property_garbage_never_raises_anything_but_unauthorized(
    style: Style, headers: dict[str, str], body: bytes, url: str
) -> None:
    assume(headers.get(signature_header(style)) != style.key)
    with pytest.raises(Unauthorized):
        style.verify(headers, body, url=url, clock=FakeClock(NOW))
