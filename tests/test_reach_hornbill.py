"""Issue 9: Hornbill (APIs that answer HTTP 200 with the failure in the body).

The chat API says `{"ok": false, "error": ..., "detail": ...}`, the SMS API
`{"status": <non-zero>, "message": ...}`. Each route's `success` decides, `retryable`
says which failures are transient, and `platform.error` reads the code and message, so
a failure is never taken for a delivered message and CXone is told what went wrong.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from gateway.clock import FakeClock
from tests.fakeplatform import Answer
from tests.reach_world import Reach, start_reach

ENV = {"HORNBILL_WEBHOOK_SECRET": "hornbill-webhook-secret", "HORNBILL_TOKEN": "hornbill-token"}
CHAT = "/v2/chat.send"
SMS = "/sms/send.json"


@pytest.fixture
async def hornbill(tmp_path: Path, clock: FakeClock) -> AsyncIterator[Reach]:
    async with start_reach(tmp_path, "hornbill", env=ENV, api_env="HORNBILL_API", clock=clock) as r:
        yield r


def outcomes(reach: Reach, role: str, route: str) -> dict[str, float]:
    registry = reach.gateway.metrics.registry
    return {
        outcome: registry.get_sample_value(
            "byoc_messages_total",
            {
                "mapping": "hornbill",
                "channel": role,
                "route": route,
                "direction": "outbound",
                "outcome": outcome,
            },
        )
        or 0.0
        for outcome in ("sent", "failed")
    }


async def test_ok_true_is_delivered(hornbill: Reach) -> None:
    hornbill.api.on("POST", CHAT, json={"ok": True, "message": {"id": "hm_1"}})
    result = await hornbill.reply("chat", "hc_1", "hello")
    assert result.status == 200, result.body
    assert result.body["message"]["idOnExternalPlatform"] == "hm_1"
    (sent,) = hornbill.api.requests
    assert sent.json == {"chat": "hc_1", "text": "hello"}
    assert outcomes(hornbill, "chat", "chat-reply") == {"sent": 1, "failed": 0}


async def test_ok_false_is_a_final_failure_that_cxone_is_told_about(hornbill: Reach) -> None:
    hornbill.api.on(
        "POST",
        CHAT,
        json={"ok": False, "error": "chat_archived", "detail": "The chat is archived"},
    )
    result = await hornbill.reply("chat", "hc_1", "hello?")
    assert result.status == 422
    assert result.body["error"] == "platform_rejected"
    assert "chat_archived" in result.body["message"]
    assert "The chat is archived" in result.body["message"]
    assert "idOnExternalPlatform" not in str(result.body)
    assert len(hornbill.api.requests) == 1  # final: not retried
    assert outcomes(hornbill, "chat", "chat-reply") == {"sent": 0, "failed": 1}


async def test_a_transient_ok_false_is_retried_with_the_same_request_id(hornbill: Reach) -> None:
    hornbill.api.on(
        "POST",
        CHAT,
        Answer(json={"ok": False, "error": "rate_limited"}),
        Answer(json={"ok": True, "message": {"id": "hm_2"}}),
    )
    result = await hornbill.reply("chat", "hc_1", "hello")
    assert result.status == 200, result.body
    assert result.body["message"]["idOnExternalPlatform"] == "hm_2"
    first, second = hornbill.api.requests
    assert first.raw == second.raw
    assert first.headers["x-hornbill-request-id"] == second.headers["x-hornbill-request-id"]


async def test_a_non_zero_status_is_final_or_retryable_as_the_route_says(hornbill: Reach) -> None:
    hornbill.api.on("POST", SMS, json={"status": 3, "message": "Invalid destination number"})
    result = await hornbill.reply("sms", "+1555", "hello")
    assert result.status == 422
    assert result.body["error"] == "platform_rejected"
    assert "(3): Invalid destination number" in result.body["message"]
    assert len(hornbill.api.requests) == 1

    hornbill.api.on("POST", SMS, json={"status": 7, "message": "Throughput exceeded"})
    result = await hornbill.reply("sms", "+15550100", "hello again")
    assert result.status == 503
    assert result.body["error"] == "platform_unavailable"
    assert "(7): Throughput exceeded" in result.body["message"]
    retried = hornbill.api.requests[1:]
    assert len(retried) == 3  # every attempt the retry policy allows, inside the deadline
    assert len({r.headers["x-hornbill-request-id"] for r in retried}) == 1
    assert outcomes(hornbill, "sms", "sms-reply") == {"sent": 0, "failed": 2}


async def test_status_zero_is_delivered_with_its_numeric_id(hornbill: Reach) -> None:
    hornbill.api.on(
        "POST",
        SMS,
        Answer(json={"status": 8, "message": "Carrier timeout"}),
        Answer(json={"status": 0, "message_id": 12345678901234567890123}),
    )
    result = await hornbill.reply("sms", "+15550100", "hello")
    assert result.status == 200, result.body
    assert result.body["message"]["idOnExternalPlatform"] == "12345678901234567890123"
    assert len(hornbill.api.requests) == 2
    assert outcomes(hornbill, "sms", "sms-reply") == {"sent": 1, "failed": 0}


async def test_inbound_messages_reach_cxone(hornbill: Reach) -> None:
    chat = {
        "event_id": "ev_1",
        "type": "chat.message",
        "chat": {"id": "hc_1"},
        "message": {"id": "hm_0", "text": "hi", "ts": 1764158400, "user": "hu_1"},
    }
    sms = {
        "event_id": "ev_2",
        "type": "sms.received",
        "sms_id": "hs_0",
        "from": "+15550100",
        "text": "hi",
        "received_at": "2025-11-26T12:00:00Z",
    }
    assert (await hornbill.post(chat)).status == 200
    assert (await hornbill.post(sms)).status == 200
    assert (await hornbill.delivered("chat", "hm_0")).thread_id == "hc_1"
    assert (await hornbill.delivered("sms", "hs_0")).thread_id == "+15550100"
