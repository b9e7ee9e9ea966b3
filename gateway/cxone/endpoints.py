"""The BYOC endpoints CXone calls: token, replies (legacy and DFO 3.0), sender actions.

Replies are synchronous: CXone needs the platform's message id back. The same reply
delivered twice within the idempotency window posts once and gets the same answer.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import time
from typing import Any, Literal

from aiohttp import web

from gateway import jsonutil
from gateway.delivery.worker import THREAD_CHANNEL_NS
from gateway.edge import read_body_limited
from gateway.errors import BadRequest, NotFound, RequestError
from gateway.keys import GATEWAY
from gateway.mapping import OutboundContext, PlatformResponse
from gateway.settings import IntegrationSettings

log = logging.getLogger("gateway.cxone")

BOX = "/integration/box"
REPLY_NS = "reply"
REPLY_KEY_NS = "reply-key"
_MAX_BODY = 1_048_576


def add_routes(app: web.Application) -> None:
    """Register the BYOC endpoints under /integration/box."""
    app.router.add_post(f"{BOX}/1.0/token", token_endpoint)
    app.router.add_post(f"{BOX}/1.0/posts/{{postId}}/messages", legacy_reply)
    app.router.add_post(f"{BOX}/2.0/channel/{{channelId}}/outbound", outbound_reply)
    app.router.add_post(
        f"{BOX}/1.0/channel/{{channelId}}/thread/{{threadId}}/sender-action", sender_action
    )


async def token_endpoint(request: web.Request) -> web.Response:
    """Issue a bearer token (OAuth2 client credentials; JSON, form or Basic auth)."""
    gw = request.app[GATEWAY]
    source = request.remote or "?"
    delay = gw.throttle.penalty(source)
    if delay:
        await asyncio.sleep(delay)  # slow down guessing; bounded (see FailureThrottle)
    raw = await _read(request, 16_384)
    try:
        _, client_id, secret = gw.issuer.parse_request(
            request.content_type, raw, request.headers.get("Authorization")
        )
        grant = gw.issuer.issue(client_id, secret)
    except RequestError:
        gw.throttle.failed(source)
        gw.metrics.tokens_issued.labels("refused").inc()
        raise
    gw.throttle.succeeded(source)
    gw.metrics.tokens_issued.labels("issued").inc()
    return web.Response(
        body=jsonutil.dumps(
            {
                "access_token": grant.access_token,
                "token_type": "Bearer",
                "expires_in": grant.expires_in,
            }
        ),
        content_type="application/json",
        headers={"Cache-Control": "no-store", "Pragma": "no-cache"},
    )


async def legacy_reply(request: web.Request) -> web.Response:
    """POST 1.0/posts/{postId}/messages -> {"idOnExternalPlatform"}."""
    integ = _authenticate(request)
    body = await _json_body(request)
    post_id = request.match_info["postId"]
    channel_id = await _legacy_channel(request, integ, body, post_id)
    result = await _reply(request, integ, "legacy", channel_id, {"postId": post_id}, body)
    return web.Response(body=jsonutil.dumps(result), content_type="application/json")


async def outbound_reply(request: web.Request) -> web.Response:
    """POST 2.0/channel/{channelId}/outbound -> {message, thread, endUserIdentities, recipients}."""
    integ = _authenticate(request)
    body = await _json_body(request)
    channel_id = request.match_info["channelId"]
    result = await _reply(request, integ, "outbound", channel_id, {"channelId": channel_id}, body)
    return web.Response(body=jsonutil.dumps(result), content_type="application/json")


async def sender_action(request: web.Request) -> web.Response:
    """POST 1.0/channel/{channelId}/thread/{threadId}/sender-action -> 204."""
    integ = _authenticate(request)
    body = await _json_body(request)
    gw = request.app[GATEWAY]
    routing = gw.routing
    channel_id = request.match_info["channelId"]
    mapping, role = _resolve(routing, integ, channel_id)
    ctx = OutboundContext(
        kind="sender_action",
        endpoint="sender_action",
        channel=role,
        channel_id=channel_id,
        params=dict(request.match_info),
        body=body,
    )
    plan = mapping.route_outbound(ctx)
    for req in plan.requests:
        await gw.platform.send(
            req,
            upstream=mapping.name,
            timeouts=mapping.platform.timeouts,
            deadline=gw.settings.outbound.deadline,
            error_of=mapping.platform_error,
        )
    gw.metrics.messages.labels(mapping.name, role, plan.route, "sender_action", "sent").inc()
    return web.Response(status=204)


def _authenticate(request: web.Request) -> IntegrationSettings:
    return request.app[GATEWAY].issuer.verify(request.headers.get("Authorization"))


async def _read(request: web.Request, limit: int) -> bytes:
    return await read_body_limited(
        request, min(limit, request.app[GATEWAY].settings.cxone_listener.max_body_bytes)
    )


async def _json_body(request: web.Request) -> Any:
    raw = await _read(request, _MAX_BODY)
    if not raw.strip():
        raise BadRequest("a JSON body is required", code="invalid_json")
    body = jsonutil.loads(raw)
    if not isinstance(body, dict):
        raise BadRequest("the body must be a JSON object", code="invalid_json")
    return body


def _resolve(routing: Any, integ: IntegrationSettings, channel_id: str) -> tuple[Any, str]:
    bound = routing.binding(channel_id)
    if bound is None or bound[0].name != integ.name:
        raise NotFound(
            f"channel {channel_id!r} is not served by this integration", code="unknown_channel"
        )
    binding = bound[1]
    return routing.mappings[binding.mapping], binding.role


async def _legacy_channel(
    request: web.Request, integ: IntegrationSettings, body: dict[str, Any], post_id: str
) -> str:
    """The legacy endpoint names no channel: take it from the body, the thread, or the only one."""
    for candidate in (
        _dig(body, "channel", "id"),
        body.get("channelId"),
        _dig(body, "thread", "channelId"),
        _dig(body, "post", "channelId"),
    ):
        if isinstance(candidate, str) and candidate:
            return candidate
    gw = request.app[GATEWAY]
    thread_id = _dig(body, "thread", "idOnExternalPlatform") or post_id
    for ch in integ.channels:
        known = await gw.store.kv_get(THREAD_CHANNEL_NS, f"{ch.mapping}\x1f{thread_id}")
        if known is not None:
            return known.decode()
    if len(integ.channels) == 1:
        return integ.channels[0].id
    raise BadRequest(
        "cannot tell which channel this reply is for: the body names no channel and the thread "
        "is unknown",
        code="unknown_channel",
    )


def _dig(body: Any, *keys: str) -> Any:
    for k in keys:
        if not isinstance(body, dict):
            return None
        body = body.get(k)
    return body


async def _reply(
    request: web.Request,
    integ: IntegrationSettings,
    endpoint: Literal["legacy", "outbound"],
    channel_id: str,
    params: dict[str, str],
    body: dict[str, Any],
) -> dict[str, Any]:
    gw = request.app[GATEWAY]
    routing = gw.routing  # one snapshot for the whole request
    mapping, role = _resolve(routing, integ, channel_id)
    ctx = OutboundContext(
        kind="reply",
        endpoint=endpoint,
        channel=role,
        channel_id=channel_id,
        params=params,
        body=body,
    )
    plan = mapping.route_outbound(ctx)
    fingerprint = hashlib.sha256(
        channel_id.encode() + b"\x00" + endpoint.encode() + b"\x00" + jsonutil.dumps(body)
    ).hexdigest()
    cached = await gw.store.kv_get(REPLY_NS, fingerprint)
    if cached is not None:
        gw.metrics.duplicates.labels(mapping.name).inc()
        result: dict[str, Any] = jsonutil.loads(cached)
        return result
    window = gw.settings.outbound.idempotency_window
    key = f"{fingerprint[:40]}.{int(time.time() * 1000)}"
    if not await gw.store.kv_add(REPLY_KEY_NS, fingerprint, key.encode(), window or None):
        existing = await gw.store.kv_get(REPLY_KEY_NS, fingerprint)
        key = existing.decode() if existing else key
    header = mapping.platform.idempotency_header
    responses: list[PlatformResponse] = []
    started = time.monotonic()
    for i, req in enumerate(plan.requests):
        part_key = key if len(plan.requests) == 1 else f"{key}.{i}"
        responses.append(
            await gw.platform.send(
                req,
                upstream=mapping.name,
                timeouts=mapping.platform.timeouts,
                deadline=gw.settings.outbound.deadline,
                idempotency=(header, part_key) if header else None,
                error_of=mapping.platform_error,
            )
        )
    result = mapping.complete_outbound(plan, responses)
    if window:
        await gw.store.kv_set(REPLY_NS, fingerprint, jsonutil.dumps(result), window)
    thread_id = plan.fields.get("thread_id")
    if isinstance(thread_id, str):
        await gw.store.kv_set(
            THREAD_CHANNEL_NS, f"{mapping.name}\x1f{thread_id}", channel_id.encode(), 30 * 86400.0
        )
    gw.metrics.messages.labels(mapping.name, role, plan.route, "outbound", "sent").inc()
    log.info(
        "reply sent",
        extra={
            "mapping": mapping.name,
            "channel": channel_id,
            "route": plan.route,
            "outcome": "sent",
            "duration_ms": round((time.monotonic() - started) * 1000, 1),
        },
    )
    return result
