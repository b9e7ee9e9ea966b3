"""TokenIssuer: client authentication forms, RFC 6749 errors, expiry by the injected clock."""

from __future__ import annotations

import base64

import pytest

from gateway.clock import FakeClock
from gateway.cxone.tokens import FailureThrottle, TokenIssuer
from gateway.errors import RequestError, Unauthorized
from gateway.secrets import Secret
from gateway.settings import ChannelBinding, IntegrationSettings


def _integ(name: str = "jungle", secrets: tuple[str, ...] = ("s3cret-one",)) -> IntegrationSettings:
    return IntegrationSettings(
        name=name,
        client_id=f"{name}-client",
        client_secrets=tuple(Secret(s) for s in secrets),
        token_signing_key=Secret("k" * 40 + name),
        channels=(ChannelBinding("chat", "watering-hole", "chat"),),
        token_ttl=600,
    )


def test_json_form_and_basic_are_accepted() -> None:
    issuer = TokenIssuer([_integ()])
    json_req = (
        b'{"grant_type": "client_credentials", "client_id": "jungle-client",'
        b' "client_secret": "s3cret-one"}'
    )
    assert issuer.parse_request("application/json", json_req, None)[1:] == (
        "jungle-client",
        "s3cret-one",
    )
    form = b"grant_type=client_credentials&client_id=jungle-client&client_secret=s3cret-one"
    assert (
        issuer.parse_request("application/x-www-form-urlencoded", form, None)[1] == "jungle-client"
    )
    basic = "Basic " + base64.b64encode(b"jungle-client:s3cret-one").decode()
    assert (
        issuer.parse_request(
            "application/x-www-form-urlencoded", b"grant_type=client_credentials", basic
        )[2]
        == "s3cret-one"
    )


@pytest.mark.parametrize(
    ("body", "code", "status"),
    [
        (
            b'{"grant_type": "password", "client_id": "a", "client_secret": "b"}',
            "unsupported_grant_type",
            400,
        ),
        (b'{"client_id": "a", "client_secret": "b"}', "invalid_request", 400),
        (b"{not json", "invalid_request", 400),
        (b'{"grant_type": "client_credentials"}', "invalid_client", 401),
    ],
)
def test_rfc6749_errors(body: bytes, code: str, status: int) -> None:
    issuer = TokenIssuer([_integ()])
    with pytest.raises(RequestError) as info:
        issuer.parse_request("application/json", body, None)
    assert info.value.status == status
    assert info.value.body == {"error": code, "error_description": info.value.message}
    assert info.value.headers["Cache-Control"] == "no-store"


def test_wrong_secret_is_invalid_client_and_rotation_accepts_both() -> None:
    issuer = TokenIssuer([_integ(secrets=("old-secret", "new-secret"))])
    assert issuer.issue("jungle-client", "old-secret").access_token
    assert issuer.issue("jungle-client", "new-secret").access_token
    with pytest.raises(RequestError) as info:
        issuer.issue("jungle-client", "guess")
    assert info.value.status == 401 and info.value.code == "invalid_client"
    with pytest.raises(RequestError):
        issuer.issue("nobody", "old-secret")


def test_tokens_expire_by_the_clock_and_are_bound_to_their_integration() -> None:
    clock = FakeClock()
    issuer = TokenIssuer([_integ("jungle"), _integ("savanna")], clock=clock)
    token = issuer.issue("jungle-client", "s3cret-one").access_token
    assert issuer.verify(f"Bearer {token}").name == "jungle"
    clock.advance(601)
    with pytest.raises(Unauthorized) as info:
        issuer.verify(f"Bearer {token}")
    assert "expired" in info.value.headers["WWW-Authenticate"]
    for header in (None, "", "Bearer", "Basic abc", f"Bearer {token}x", "Bearer a.b.c"):
        with pytest.raises(Unauthorized):
            issuer.verify(header)


def test_a_token_signed_with_another_key_is_refused() -> None:
    a = TokenIssuer([_integ("jungle")])
    other = IntegrationSettings(
        name="jungle",
        client_id="jungle-client",
        client_secrets=(Secret("s3cret-one"),),
        token_signing_key=Secret("z" * 48),
        channels=(),
    )
    forged = TokenIssuer([other]).issue("jungle-client", "s3cret-one").access_token
    with pytest.raises(Unauthorized):
        a.verify(f"Bearer {forged}")


def test_failure_throttle_slows_repeated_failures() -> None:
    clock = FakeClock()
    throttle = FailureThrottle(free=3, window=60, clock=clock)
    for _ in range(3):
        assert throttle.penalty("1.2.3.4") == 0
        throttle.failed("1.2.3.4")
    assert throttle.penalty("1.2.3.4") > 0
    assert throttle.penalty("5.6.7.8") == 0
    clock.advance(61)
    assert throttle.penalty("1.2.3.4") == 0
