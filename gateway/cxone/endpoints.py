"""The BYOC endpoints CXone calls: token, replies (legacy and DFO 3.0), sender actions.

Replies are synchronous: CXone needs the platform's message id back. The same reply
delivered twice within the idempotency window posts once and gets the same answer.
"""

from __future__ import annotations

import asyncio
import functools
import hashlib
import logging
import time
from typing import Any, Literal

from aiohttp import web

from gateway import jsonutil, thread_state
from gateway.client_address import client_ip
from gateway.cxone import threads
from gateway.edge import check_json_depth, read_body_limited
from gateway.errors import BadRequest, GatewayError, NotFound, RequestError
from gateway.ids import unique_id
from gateway.keys import GATEWAY
from gateway.logs import text_for_log
from gateway.mapping import CompiledMapping, OutboundContext, OutboundPlan, PlatformResponse
from gateway.media import ReplyUploads
from gateway.routing import Routing
from gateway.runtime import Gateway
from gateway.settings import IntegrationSettings, LoggingSettings
from gateway.tls_peers import require_peer

log = logging.getLogger("gateway.cxone")

BOX = "/integration/box"
REPLY_NS = "reply"
REPLY_KEY_NS = "reply-key"
_MAX_BODY = 1_048_576


def routes() -> list[web.RouteDef]:
    """The BYOC endpoints under /integration/box."""
    return [
        web.post(f"{BOX}/1.0/token", token_endpoint),
        web.post(f"{BOX}/1.0/posts/{{postId}}/messages", legacy_reply),
        web.post(f"{BOX}/2.0/channel/{{channelId}}/outbound", outbound_reply),
        web.post(
            f"{BOX}/1.0/channel/{{channelId}}/thread/{{threadId}}/sender-action", sender_action
        ),
    ]


async def token_endpoint(request: web.Request) -> web.Response:
    """Issue a bearer token (OAuth2 client credentials; JSON, form or Basic auth)."""
    gw = request.app[GATEWAY]
    issuer = gw.routing.issuer
    listener = gw.settings.cxone_listener
    source = str(client_ip(request, listener.trusted_proxies) or request.remote or "?")
    delay = gw.throttle.penalty(source)
    if delay:
        await asyncio.sleep(delay)  # slow down guessing; bounded (see FailureThrottle)
    raw = await _read(request, 16_384)
    try:
        _, client_id, secret = issuer.parse_request(
            request.content_type, raw, request.headers.get("Authorization")
        )
        integ = issuer.integration_of(client_id)
        if integ is not None and integ.mtls:
            # before the secret is looked at: without the certificate, no guessing either
            _require_certificate(request)
        grant = issuer.issue(client_id, secret)
    except RequestError as exc:
        gw.throttle.failed(source)
        gw.metrics.tokens_issued.labels("refused").inc()
        # who and why, never what was sent (it may be a secret, or a near miss of one)
        log.info("token request from %s refused: %s", source, exc.code, extra={"outcome": exc.code})
        raise
    gw.throttle.succeeded(source)
    gw.metrics.tokens_issued.labels("issued").inc()
    log.debug(
        "issued a token to integration %s, valid %d s",
        integ.name if integ is not None else "?",
        grant.expires_in,
        extra={"outcome": "issued"},
    )
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
    routing = request.app[GATEWAY].routing  # one snapshot for the whole request
    integ = _authenticate(request, routing)
    body = await _json_body(request)
    post_id = request.match_info["postId"]
    channel_id = await _legacy_channel(request, integ, body, post_id)
    result = await _reply(request, routing, integ, "legacy", channel_id, {"postId": post_id}, body)
    return web.Response(body=jsonutil.dumps(result), content_type="application/json")


async def outbound_reply(request: web.Request) -> web.Response:
    """POST 2.0/channel/{channelId}/outbound -> {message, thread, endUserIdentities, recipients}."""
    routing = request.app[GATEWAY].routing  # one snapshot for the whole request
    integ = _authenticate(request, routing)
    body = await _json_body(request)
    channel_id = request.match_info["channelId"]
    params = {"channelId": channel_id}
    result = await _reply(request, routing, integ, "outbound", channel_id, params, body)
    return web.Response(body=jsonutil.dumps(result), content_type="application/json")


async def sender_action(request: web.Request) -> web.Response:
    """POST 1.0/channel/{channelId}/thread/{threadId}/sender-action -> 204."""
    gw = request.app[GATEWAY]
    routing = gw.routing  # one snapshot for the whole request
    integ = _authenticate(request, routing)
    body = await _json_body(request)
    channel_id = request.match_info["channelId"]
    mapping, role = _resolve(routing, integ, channel_id)
    params = dict(request.match_info)
    alias = await threads.platform_thread(gw.store, mapping.name, role, params["threadId"])
    if alias is not None:  # a proactive conversation: the platform knows it by its own id
        params["threadId"] = alias
    ctx = OutboundContext(
        kind="sender_action",
        endpoint="sender_action",
        channel=role,
        channel_id=channel_id,
        params=params,
        body=body,
    )
    plan = mapping.route_outbound(await _with_state(gw, mapping, ctx))
    for req in plan.requests:
        await gw.platform.send(
            req,
            upstream=mapping.name,
            timeouts=mapping.platform.timeouts,
            deadline=routing.settings.outbound.deadline,
            ssl_context=gw.platform_tls.get(mapping.name),
            error_of=mapping.platform_error,
            check=functools.partial(mapping.check_response, plan),
        )
    gw.metrics.messages.labels(mapping.name, role, plan.route, "sender_action", "sent").inc()
    return web.Response(status=204)


def _authenticate(request: web.Request, routing: Routing) -> IntegrationSettings:
    integ = routing.issuer.verify(request.headers.get("Authorization"))
    if integ.mtls:
        _require_certificate(request)
    return integ


def _require_certificate(request: web.Request) -> None:
    """403 unless the connection has a verified client certificate with an accepted name."""
    tls = request.app[GATEWAY].settings.cxone_listener.tls
    require_peer(request, tls.client_subjects if tls is not None else ())


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
    check_json_depth(body, raw=raw)
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
        known = await threads.channel_of(gw.store, ch.mapping, thread_id)
        if known is not None:
            return known
    if len(integ.channels) == 1:
        return integ.channels[0].id
    # an unknown thread is a proactive message, which only a channel with an outbound
    # flow can send (specs/cxone-byoc.md 1.3): when one channel has it, it is that one
    mappings = gw.routing.mappings
    outbound = [
        ch.id
        for ch in integ.channels
        if ch.mapping in mappings
        and ch.role in mappings[ch.mapping].channels
        and mappings[ch.mapping].channels[ch.role].cxone.get("hasOutboundFlow")
    ]
    if len(outbound) == 1:
        return outbound[0]
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
    routing: Routing,
    integ: IntegrationSettings,
    endpoint: Literal["legacy", "outbound"],
    channel_id: str,
    params: dict[str, str],
    body: dict[str, Any],
) -> dict[str, Any]:
    gw = request.app[GATEWAY]
    mapping, role = _resolve(routing, integ, channel_id)
    cxone_thread = threads.thread_of(body) or params.get("postId")
    routed_body, routed_params = body, params
    if cxone_thread is not None:
        alias = await threads.platform_thread(gw.store, mapping.name, role, cxone_thread)
        if alias is not None:  # a later reply in a proactive conversation
            if threads.thread_of(body) is not None:
                routed_body = threads.with_thread(body, alias)
            if params.get("postId") == cxone_thread:
                routed_params = {**params, "postId": alias}
    ctx = OutboundContext(
        kind="reply",
        endpoint=endpoint,
        channel=role,
        channel_id=channel_id,
        params=routed_params,
        body=routed_body,
    )
    ctx = await _with_state(gw, mapping, ctx)
    try:
        plan = mapping.route_outbound(ctx)
    except GatewayError:
        gw.metrics.messages.labels(mapping.name, role, "unrouted", "outbound", "failed").inc()
        raise
    fingerprint = hashlib.sha256(
        channel_id.encode() + b"\x00" + endpoint.encode() + b"\x00" + jsonutil.dumps(body)
    ).hexdigest()
    window = routing.settings.outbound.idempotency_window
    if not window:  # deduplication off: every reply posts, its own retries share one key
        key = f"{fingerprint[:40]}.{unique_id(16)}"
    else:
        key = f"{fingerprint[:40]}.{int(time.time() * 1000)}"
        # Take the idempotency key first: only a repeat (key already taken) can have a
        # stored answer, so a first reply costs one store write and no read.
        if not await gw.store.kv_add(REPLY_KEY_NS, fingerprint, key.encode(), window):
            cached = await gw.store.kv_get(REPLY_NS, fingerprint)
            if cached is not None:
                gw.metrics.duplicates.labels(mapping.name).inc()
                result: dict[str, Any] = jsonutil.loads(cached)
                return result
            existing = await gw.store.kv_get(REPLY_KEY_NS, fingerprint)  # a repeated failure
            key = existing.decode() if existing else key
    header = mapping.platform.idempotency_header
    responses: list[PlatformResponse] = []
    started = time.monotonic()
    try:
        if plan.pending_uploads:  # the platform takes files as uploads first
            plan = await mapping.upload_attachments(plan, ReplyUploads(gw, mapping, key))
        for i, req in enumerate(plan.requests):
            part_key = key if len(plan.requests) == 1 else f"{key}.{i}"
            responses.append(
                await gw.platform.send(
                    req,
                    upstream=mapping.name,
                    timeouts=mapping.platform.timeouts,
                    deadline=routing.settings.outbound.deadline,
                    idempotency=(header, part_key) if header else None,
                    ssl_context=gw.platform_tls.get(mapping.name),
                    error_of=mapping.platform_error,
                    check=functools.partial(mapping.check_response, plan),
                )
            )
        result = mapping.complete_outbound(plan, responses)
    except GatewayError as exc:
        gw.metrics.messages.labels(mapping.name, role, plan.route, "outbound", "failed").inc()
        log.warning(
            "reply failed: %s",
            exc,
            extra={
                "mapping": mapping.name,
                "channel": channel_id,
                "route": plan.route,
                "cxone_id": cxone_thread,
                "outcome": "failed",
                "duration_ms": round((time.monotonic() - started) * 1000, 1),
            },
        )
        raise
    if window:
        # not waited for: if it is lost, a repeat finds the key alone and sends again
        # under the same Idempotency-Key (above); with SQLite it joins the next commit
        gw.store.kv_set_later(REPLY_NS, fingerprint, jsonutil.dumps(result), window)
    thread_id = plan.fields.get("thread_id")
    if isinstance(thread_id, str):
        await threads.remember_channel(gw.store, mapping.name, thread_id, channel_id)
        platform_thread = _platform_thread(mapping, plan, responses, result)
        if platform_thread is not None and platform_thread != thread_id:
            # a proactive message opened a conversation: later replies and the user's
            # answers must find each other (gateway.cxone.threads)
            await threads.remember(gw.store, mapping.name, role, thread_id, platform_thread)
    gw.metrics.messages.labels(mapping.name, role, plan.route, "outbound", "sent").inc()
    if log.isEnabledFor(logging.INFO):  # the record's fields cost more than the check
        log.info(
            "reply sent",
            extra={
                "mapping": mapping.name,
                "channel": channel_id,
                "route": plan.route,
                "cxone_id": cxone_thread,
                "platform_id": _message_id(result),
                "outcome": "sent",
                "text": _text_for_log(plan.fields.get("text"), routing.settings.logging),
                "duration_ms": round((time.monotonic() - started) * 1000, 1),
            },
        )
    return result


async def _with_state(
    gw: Gateway, mapping: CompiledMapping, ctx: OutboundContext
) -> OutboundContext:
    """The call with what inbound messages stored under its thread (mapping `state:`)."""
    if not mapping.stores_thread_state:
        return ctx
    thread = mapping.outbound_thread(ctx)
    if thread is None:
        return ctx
    state = await thread_state.load(gw.store, mapping.name, ctx.channel, thread, gw.clock())
    return ctx._replace(state=state)


def _platform_thread(
    mapping: CompiledMapping,
    plan: OutboundPlan,
    responses: list[PlatformResponse],
    result: dict[str, Any],
) -> str | None:
    """The platform conversation a reply went to, as the DFO 3.0 answer names it.

    The legacy answer names no thread, so for it the DFO 3.0 answer is rendered too
    (from the same responses, nothing is sent) to read the route's platform_thread_id.
    """
    if plan.ctx.endpoint != "outbound":
        ctx = plan.ctx._replace(endpoint="outbound")
        try:
            result = mapping.complete_outbound(plan._replace(ctx=ctx), responses)
        except GatewayError:
            return None
    return threads.thread_of(result)


def _message_id(result: dict[str, Any]) -> str | None:
    message = result.get("message")
    value = message.get("idOnExternalPlatform") if isinstance(message, dict) else None
    value = value if value is not None else result.get("idOnExternalPlatform")
    return value if isinstance(value, str) else None


def _text_for_log(text: Any, settings: LoggingSettings) -> str | None:
    return text_for_log(text, settings.log_message_text) if isinstance(text, str) else None
