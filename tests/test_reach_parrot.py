"""Issue 3: Parrot (form webhooks, URL + sorted-form HMAC-SHA1, TwiML, form replies, basic auth).

The gateway runs tests/fixtures/platforms/parrot.yaml against the CXone simulator and a
fake Parrot API; nothing here is specific Python for Parrot beyond the test itself.
"""

from __future__ import annotations

import base64
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from gateway.clock import FakeClock
from tests.reach_world import Reach, start_reach

ENV = {
    "PARROT_AUTH_TOKEN": "parrot-auth-token-test",
    "PARROT_ACCOUNT_SID": "AC_test",
    "PARROT_NUMBER": "+15557654321",
}
TWIML = '<?xml version="1.0" encoding="UTF-8"?><Response></Response>'
CUSTOMER = "+15551234567"


@pytest.fixture
async def parrot(tmp_path: Path, clock: FakeClock) -> AsyncIterator[Reach]:
    async with start_reach(tmp_path, "parrot", env=ENV, api_env="PARROT_API", clock=clock) as r:
        yield r


def sms(sid: str, text: str, **extra: str) -> dict[str, str]:
    return {"MessageSid": sid, "From": CUSTOMER, "To": ENV["PARROT_NUMBER"], "Body": text, **extra}


async def test_an_mms_form_reaches_cxone_with_its_pictures_and_parrot_gets_twiml(
    parrot: Reach,
) -> None:
    form = sms(
        "SM1",
        "Is this the right part? ✓ & 100%",
        NumMedia="2",
        MediaUrl0="https://media.parrot.example/m/part.jpg",
        MediaContentType0="image/jpeg",
        MediaUrl1="https://media.parrot.example/m/box.png",
        MediaContentType1="image/png",
    )
    answer = await parrot.post(form, form=True)
    assert answer.status == 200
    assert answer.content_type == "text/xml" and answer.text == TWIML
    got = await parrot.delivered("sms", "SM1")
    assert got.thread_id == CUSTOMER
    assert got.body["messageContent"]["payload"]["text"] == "Is this the right part? ✓ & 100%"
    assert got.body["attachments"] == [
        {"url": "https://media.parrot.example/m/part.jpg", "friendlyName": "part.jpg"},
        {"url": "https://media.parrot.example/m/box.png", "friendlyName": "box.png"},
    ]
    assert not parrot.cxone.violations


async def test_the_signature_covers_the_url_and_every_form_field(parrot: Reach) -> None:
    form = sms("SM2", "hello")
    raw = b"&".join(f"{k}={v}".replace("+", "%2B").encode() for k, v in form.items())
    good = parrot.sign(raw)
    cases = {
        "missing": {},
        "wrong token": parrot.sign(raw, key="not-the-token"),
        "signed for another URL": parrot.sign(raw, url=parrot.webhook_url + "?x=1"),
        "tampered field": good,
    }
    for name, headers in cases.items():
        body = raw.replace(b"hello", b"hellO") if name == "tampered field" else raw
        answer = await parrot.post(body, form=True, signed=False, headers=headers)
        assert answer.status == 401, name
        assert answer.json["error"] == "invalid_signature", name
    # the same bytes in another field order are the same form: still valid
    reordered = b"&".join(sorted(raw.split(b"&"), reverse=True))
    answer = await parrot.post(reordered, form=True, signed=False, headers=good)
    assert answer.status == 200
    await parrot.delivered("sms", "SM2")
    assert [m.message_id for m in parrot.cxone.messages] == ["SM2"]


async def test_receipts_update_cxone_and_unused_ones_are_only_acknowledged(
    parrot: Reach,
) -> None:
    base = {"MessageSid": "SM_out_1", "To": CUSTOMER, "From": ENV["PARROT_NUMBER"]}
    for status in ("queued", "sent"):
        answer = await parrot.post({**base, "MessageStatus": status}, form=True)
        assert answer.status == 200 and answer.text == TWIML
    answer = await parrot.post({**base, "MessageStatus": "delivered"}, form=True)
    assert answer.status == 200
    update = await parrot.cxone.wait_for(lambda: parrot.cxone.statuses)
    assert [(s.message_id, s.status) for s in update] == [("SM_out_1", "delivered")]
    assert parrot.ignored("receipt-unused") == 2


async def test_an_agent_reply_is_a_form_with_basic_auth_and_a_numeric_id(parrot: Reach) -> None:
    await parrot.post(sms("SM3", "hi"), form=True)
    await parrot.delivered("sms", "SM3")
    parrot.api.on(
        "POST",
        "/Accounts/AC_test/Messages.json",
        status=201,
        json={"sid": 4815162342, "status": "queued"},
    )
    result = await parrot.reply(
        "sms",
        CUSTOMER,
        "Yes, and here are the instructions",
        attachments=[
            {"url": "https://cxone.example/f/step1.png", "friendlyName": "step1.png"},
            {"url": "https://cxone.example/f/step2.png", "friendlyName": "step2.png"},
        ],
    )
    assert result.status == 200, result.body
    assert result.body["message"]["idOnExternalPlatform"] == "4815162342"
    (sent,) = parrot.api.requests_to("POST")
    assert sent.form == {
        "To": CUSTOMER,
        "From": ENV["PARROT_NUMBER"],
        "Body": "Yes, and here are the instructions",
        "MediaUrl": ["https://cxone.example/f/step1.png", "https://cxone.example/f/step2.png"],
    }
    expected = base64.b64encode(b"AC_test:" + ENV["PARROT_AUTH_TOKEN"].encode()).decode()
    assert sent.headers["authorization"] == f"Basic {expected}"


async def test_a_document_is_refused_before_anything_is_sent(parrot: Reach) -> None:
    result = await parrot.reply(
        "sms",
        CUSTOMER,
        "the contract",
        attachments=[
            {"url": "https://cxone.example/f/contract.pdf", "friendlyName": "contract.pdf"}
        ],
    )
    assert result.status == 422
    assert result.body["error"] == "attachment_not_allowed"
    assert "application/pdf" in result.body["message"]
    assert parrot.api.requests == []
