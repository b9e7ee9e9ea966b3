"""Webhook intake: find the mapping by path, verify, parse, split, route, persist, acknowledge.

A delivery is acknowledged 2xx only once every event in it is persisted in the durable
queue (or ignored on purpose); any failure before that answers 5xx so the platform
delivers again, and redelivered events are dropped by their dedupe keys.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Mapping
from typing import Any

from aiohttp import web

from gateway import jsonutil
from gateway.client_address import forwarded_origin
from gateway.delivery.jobs import InboundJob, thread_key
from gateway.delivery.store import Job, NewJob
from gateway.edge import check_json_depth, read_body_limited
from gateway.errors import MappingRuntimeError, NotFound, StoreError
from gateway.http_errors import json_error
from gateway.keys import GATEWAY
from gateway.mapping import CompiledMapping, HandshakeReply, Ignored
from gateway.request_context import CATCH_ALL

log = logging.getLogger("gateway.webhook")


def routes() -> list[web.RouteDef]:
    """One catch-all route: mappings (and their paths) change on reload, routes never do.

    It is the platform listener's last route (gateway.request_context): every path no
    other route takes comes here, and an unknown one is answered 404.
    """
    return [web.route("*", CATCH_ALL, handle_webhook)]


def public_url(request: web.Request, mapping: CompiledMapping | None = None) -> str:
    """The URL the platform called (what `{url}` signatures cover).

    The first that applies: the mapping's `webhook.public_url`, the platform listener's
    `public_url` (each a base, followed by the path and query as received), the origin
    told by X-Forwarded-Proto / -Host when the socket peer is a trusted proxy, else the
    URL of the request itself. Forwarded headers from anyone else change nothing.
    """
    listener = request.app[GATEWAY].settings.platform_listener
    base = (mapping.webhook.public_url if mapping is not None else None) or listener.public_url
    if base:
        return base.rstrip("/") + request.raw_path
    origin = forwarded_origin(request, listener.trusted_proxies)
    if origin is not None:
        return origin + request.raw_path
    return str(request.url)


async def handle_webhook(request: web.Request) -> web.StreamResponse:
    gw = request.app[GATEWAY]
    routing = gw.routing  # one snapshot: the request finishes on the config it started with
    mapping = routing.by_webhook_path.get(request.path)
    if mapping is None:
        raise NotFound("no webhook is configured at this path")
    # case-insensitive as they are: what needs plain dicts (handshakes, split) makes them
    query = request.query
    headers = request.headers
    if request.method == "GET":
        reply = mapping.handshake("GET", query, headers, None)
        if reply is None:
            raise web.HTTPMethodNotAllowed("GET", ["POST"])
        return _reply(reply)
    if request.method != "POST":
        raise web.HTTPMethodNotAllowed(request.method, ["GET", "POST"])
    limit = gw.settings.platform_listener.max_body_bytes
    if mapping.webhook.max_body_bytes:
        limit = min(limit, mapping.webhook.max_body_bytes)
    raw = await read_body_limited(request, limit)
    # verify the raw bytes before parsing anything (form schemes parse the raw form themselves)
    verifier = routing.verifiers[mapping.name]
    url = public_url(request, mapping) if verifier.signs_url else ""
    verifier.verify(raw, headers, url, None)
    payload = mapping.parse_body(raw, request.headers.get("Content-Type"))
    # a form is two levels deep at most; JSON came from `raw` itself
    check_json_depth(payload, raw=raw)
    reply = mapping.handshake("POST", query, headers, payload)
    if reply is not None:
        return _reply(reply)
    try:
        accepted, duplicates, ignored = await _accept(gw, mapping, payload, headers, query)
    except StoreError as exc:
        log.error("could not persist a delivery, asking the platform to retry: %s", exc)
        return json_error(503, "store_unavailable", "the delivery could not be stored; retry later")
    sync = mapping.sync_response(payload)
    if sync is not None:
        return _reply(sync)
    return web.Response(
        body=jsonutil.dumps({"accepted": accepted, "duplicates": duplicates, "ignored": ignored}),
        content_type="application/json",
    )


def _reply(reply: HandshakeReply) -> web.Response:
    return web.Response(
        status=reply.status, body=reply.body, headers={"Content-Type": reply.content_type}
    )


async def _accept(
    gw: Any,
    mapping: CompiledMapping,
    payload: Any,
    headers: Mapping[str, str],
    query: Mapping[str, str],
) -> tuple[int, int, int]:
    items = mapping.split(payload, headers=headers, query=query)
    now = gw.clock()
    jobs: list[NewJob] = []
    records: list[InboundJob] = []
    labels: list[tuple[str, str]] = []
    ignored = 0
    for item in items:
        try:
            routed = mapping.route_inbound(item)
        except MappingRuntimeError as exc:
            # Keep the event: the worker routes it again and, if it still fails, it becomes a
            # dead letter that can be replayed once the mapping is fixed.
            log.error("mapping failed on an event; queued for a dead letter: %s", exc)
            record = InboundJob.accept(mapping, item, now, None, str(exc))
            dedupe = mapping.dedupe_key(item)  # a redelivery must not make a second one
            jobs.append(
                NewJob(
                    thread_key(mapping.name, "?", dedupe or uuid.uuid4().hex),
                    record.encode(),
                    dedupe,
                )
            )
            records.append(record)
            labels.append(("", "(mapping error)"))
            continue
        if isinstance(routed, Ignored):
            ignored += 1
            gw.metrics.ignored.labels(mapping.name, routed.route).inc()
            continue
        # a deferred call (lookups, media URLs, thread state) is rendered by the worker:
        # intake never waits on the platform API
        record = InboundJob.accept(mapping, item, now, None if routed.deferred else routed)
        jobs.append(
            NewJob(
                thread_key(mapping.name, routed.channel, routed.thread_id),
                record.encode(),
                routed.dedupe_key,
            )
        )
        records.append(record)
        labels.append((routed.channel, routed.route))
    if not jobs:
        return 0, 0, ignored
    ttl = gw.settings.store.dedupe_ttl
    workers = gw.workers
    if workers is not None and workers.behind:  # written once they catch up (or soon)
        await workers.paced(gw.settings.delivery.intake_hold)
    if workers is not None and workers.can_take():
        # a job that starts an idle thread is leased to this process in the same
        # transaction and handed to a worker as it is: no claim, no decoding
        lease = gw.settings.delivery.lease_seconds
        results = await gw.store.enqueue_and_claim(jobs, ttl, workers.direct_owner, lease)
        for result, record in zip(results, records, strict=True):
            if isinstance(result, Job):
                workers.offer(result, record)
        fresh = [r is not False for r in results]
    else:
        fresh = await gw.store.enqueue(jobs, ttl)
    accepted = sum(1 for f in fresh if f)
    duplicates = len(fresh) - accepted
    if duplicates:
        gw.metrics.duplicates.labels(mapping.name).inc(duplicates)
    for (channel, route), new in zip(labels, fresh, strict=True):
        if new:
            gw.metrics.messages.labels(mapping.name, channel, route, "inbound", "accepted").inc()
    return accepted, duplicates, ignored
