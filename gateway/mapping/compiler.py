"""Compile a schema-valid, secret-resolved mapping tree into the engine's parts."""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, cast
from urllib.parse import urlsplit

from gateway.errors import ConfigError
from gateway.mapping.defaults import CxoneDefaults
from gateway.mapping.expressions import Expr, compile_or_report
from gateway.mapping.inbound import InboundRoute, InboundRouter
from gateway.mapping.loader import Problems
from gateway.mapping.media import MediaSpec, compile_media
from gateway.mapping.model import (
    AttachmentLimits,
    AuthSpec,
    ChannelSpec,
    MaskedMapping,
    PlatformSpec,
    WebhookSpec,
)
from gateway.mapping.outbound import OutboundRoute, OutboundRouter
from gateway.mapping.routes import compile_inbound, compile_outbound
from gateway.mapping.templates import compile_template
from gateway.mapping.webhook import Handshake, Reply, TokenCheck, Webhook
from gateway.platform.signatures import compile_verifier
from gateway.secrets import Secret
from gateway.settings import Timeouts, TlsClientSettings

_ANCESTRY = frozenset({"parent", "parents", "delivery"})
_REQUEST = frozenset({"headers", "query"})


def _inbound_exprs(routes: tuple[InboundRoute, ...], dedupe: Expr | None) -> list[Expr]:
    exprs = [dedupe] if dedupe is not None else []
    for route in routes:
        exprs.extend(e for _, e in route.extract)
        if route.when is not None:
            exprs.append(route.when)
        if route.state is not None:  # evaluated over the item, when the worker renders
            exprs.extend(e.value for e in route.state.entries)
            exprs.extend(e.expires_at for e in route.state.entries if e.expires_at)
    return exprs


@dataclass(frozen=True)
class Parts:
    """Everything compiled from one mapping file."""

    name: str
    description: str
    vars: dict[str, Any]
    platform: PlatformSpec
    channels: dict[str, ChannelSpec]
    webhook: Webhook
    inbound: InboundRouter
    outbound: OutboundRouter
    media: MediaSpec | None = None


def compile_tree(
    tree: dict[str, Any],
    problems: Problems,
    *,
    base_dir: Path,
    placeholders: frozenset[str],
    defaults: CxoneDefaults,
    placeholders_mode: bool = False,
) -> Parts:
    """Compile every section, recording problems (the result is unusable if there are any)."""
    name = tree["name"]
    variables = dict(tree.get("vars") or {})
    platform, error_code, error_message = _platform(
        tree["platform"], problems, base_dir, placeholders
    )
    channels = _channels(tree["channels"], problems)
    webhook = _webhook(
        name,
        tree["webhook"],
        problems,
        variables,
        check_secrets=not placeholders_mode,
        placeholders=placeholders,
    )
    inbound = compile_inbound(tree.get("inbound") or [], problems, defaults, channels)
    used = set().union(*(e.functions for e in _inbound_exprs(inbound, webhook.dedupe)))
    webhook.spec = replace(
        webhook.spec, needs_ancestors=bool(used & _ANCESTRY), needs_request=bool(used & _REQUEST)
    )
    outbound = compile_outbound(tree.get("outbound") or [], problems, defaults)
    media = compile_media(tree["media"], problems) if "media" in tree else None
    _check_bridges(inbound, outbound, media is not None, bool(used & _REQUEST), problems)
    _check_tests(tree.get("tests") or [], problems, channels)
    return Parts(
        name=name,
        description=tree.get("description", ""),
        vars=variables,
        platform=platform,
        channels=channels,
        webhook=webhook,
        inbound=InboundRouter(name, variables, inbound, webhook.dedupe, platform),
        outbound=OutboundRouter(
            name,
            variables,
            defaults.extract,
            outbound,
            platform,
            channels,
            error_code,
            error_message,
        ),
        media=media,
    )


def _check_bridges(
    inbound: tuple[InboundRoute, ...],
    outbound: tuple[OutboundRoute, ...],
    has_media: bool,
    reads_request: bool,
    problems: Problems,
) -> None:
    """Cross-route checks: media_url() needs `media:`; required state must be stored."""
    stored = {e.name for r in inbound if r.state is not None for e in r.state.entries}
    deferred = next((i for i, r in enumerate(inbound) if r.deferred), None)
    if deferred is not None and reads_request:
        # the worker routes the item again from the queue, where the request is gone
        problems.add(
            f"/inbound/{deferred}",
            "a route with lookups, state or media_url() is rendered by the queue worker, "
            "where headers() and query() are empty, yet inbound expressions use them",
            "read the values from the body instead of headers() / query()",
        )
    for index, route in enumerate(inbound):
        if route.media and not has_media:
            problems.add(
                f"/inbound/{index}",
                f"the route {route.name!r} uses media_url() but the mapping has no `media:`",
                "add a media: section saying how to fetch a file from the platform",
            )
    for index, out in enumerate(outbound):
        for name in out.require_state:
            if name not in stored:
                problems.add(
                    f"/outbound/{index}/require_state",
                    f"no inbound route stores {name!r} in its state",
                    f"store it under an inbound route's state.store; stored: "
                    f"{', '.join(sorted(stored)) or 'nothing'}",
                )


def _platform(
    spec: dict[str, Any], problems: Problems, base_dir: Path, placeholders: frozenset[str]
) -> tuple[PlatformSpec, Expr | None, Expr | None]:
    base_url = spec["base_url"]
    parts = urlsplit(base_url)
    if "/platform/base_url" not in placeholders and (
        parts.scheme not in ("http", "https") or not parts.netloc or parts.query
    ):
        problems.add(
            "/platform/base_url",
            f"{base_url!r} is not an http(s) URL without query",
            "write e.g. https://api.example.com/v1",
        )
    auth = None
    raw = spec.get("auth")
    if raw:
        kind, value = next(iter(raw.items()))
        label = f"platform.auth.{kind}"
        if kind == "bearer":
            auth = AuthSpec("bearer", Secret(value, label))
        elif kind == "basic":
            auth = AuthSpec(
                "basic",
                Secret(value["password"], label),
                username=Secret(value["username"], f"{label}.username"),
            )
        else:
            auth = AuthSpec(kind, Secret(value["value"], label), name=value["name"])
    timeouts = replace(Timeouts(), **(spec.get("timeouts") or {}))
    tls_spec = spec.get("tls") or {}

    def file(key: str) -> Path | None:
        return base_dir / tls_spec[key] if key in tls_spec else None

    password = tls_spec.get("key_password")
    tls = TlsClientSettings(
        ca_file=file("ca_file"),
        cert_file=file("cert_file"),
        key_file=file("key_file"),
        key_password=Secret(password, "platform.tls.key_password") if password else None,
    )
    headers = dict(spec.get("headers") or {})
    for header, value in headers.items():
        if any(c in header for c in " :\r\n\t") or "\r" in value or "\n" in value:
            problems.add(
                f"/platform/headers/{header}",
                "invalid header name or value",
                "header names have no spaces or colons; values no line breaks",
            )
    error = spec.get("error") or {}
    code = (
        compile_or_report(error["code"], "/platform/error/code", problems.add)
        if "code" in error
        else None
    )
    message = (
        compile_or_report(error["message"], "/platform/error/message", problems.add)
        if "message" in error
        else None
    )
    platform = PlatformSpec(
        base_url=base_url,
        auth=auth,
        timeouts=timeouts,
        idempotency_header=spec.get("idempotency_header"),
        tls=tls,
        headers=headers,
    )
    return platform, code, message


def _channels(spec: dict[str, Any], problems: Problems) -> dict[str, ChannelSpec]:
    channels = {}
    for role, flags in spec.items():
        limits = None
        if "attachments" in flags:
            raw = flags["attachments"]
            if flags.get("hasAbilityToSendFiles") is False:
                problems.add(
                    f"/channels/{role}/attachments",
                    "attachments are set but hasAbilityToSendFiles is false",
                    "remove one of them",
                )
            limits = AttachmentLimits(
                raw.get("max_bytes"), tuple(raw.get("content_types", ())), raw.get("max_count")
            )
        cxone = {k: v for k, v in flags.items() if k != "attachments"}
        if limits is not None:
            cxone.setdefault("hasAbilityToSendFiles", True)
        channels[role] = ChannelSpec(role, cxone, limits)
    return channels


def _reply(spec: dict[str, Any], where: str, problems: Problems) -> Reply:
    body = spec.get("body")
    default_type = (
        "application/json" if isinstance(body, dict | list) else "text/plain; charset=utf-8"
    )
    content_type = spec.get("content_type", default_type)
    is_json = "json" in content_type.lower()
    node = None
    if body is not None:
        if not is_json and not isinstance(body, str):
            problems.add(
                f"{where}/body",
                f"with content_type {content_type} the body must be text",
                "write one string, or use content_type: application/json",
            )
        node = compile_template(
            body, f"{where}/body", problems.add, mode="native" if is_json else "text", label="body"
        )
    return Reply(spec.get("status", 200), content_type, node, is_json)


def _webhook(
    mapping: str,
    spec: dict[str, Any],
    problems: Problems,
    variables: dict[str, Any],
    check_secrets: bool,
    placeholders: frozenset[str] = frozenset(),
) -> Webhook:
    signature = spec["signature"]
    checked = signature
    if not check_secrets and isinstance(signature.get("public_keys"), list):
        # an unresolved ${KEY} is no key to parse: leave it out (that verifier refuses all)
        keys = signature["public_keys"]
        checked = {
            **signature,
            "public_keys": [
                "" if f"/webhook/signature/public_keys/{i}" in placeholders else key
                for i, key in enumerate(keys)
            ],
        }
    try:  # the platform listener compiles it again with its clock; this checks it early
        compile_verifier(checked, file=problems.file, check_secrets=check_secrets)
    except ConfigError as exc:
        problems.extend(exc.problems)
    foreach = spec.get("foreach")
    levels: tuple[Expr, ...]
    if isinstance(foreach, str):
        levels = (compile_or_report(foreach, "/webhook/foreach", problems.add),)
    else:
        levels = tuple(
            compile_or_report(level["path"], f"/webhook/foreach/{i}/path", problems.add)
            for i, level in enumerate(foreach or [])
        )
    dedupe = (
        compile_or_report(spec["dedupe"], "/webhook/dedupe", problems.add)
        if "dedupe" in spec
        else None
    )
    handshakes = []
    for index, hs in enumerate(spec.get("handshakes") or []):
        pointer = f"/webhook/handshakes/{index}"
        token = None
        if "verify_token" in hs:
            raw = hs["verify_token"]
            source = (
                next(k for k in ("param", "header", "field") if k in raw)
                if any(k in raw for k in ("param", "header", "field"))
                else "param"
            )
            field_expr = (
                compile_or_report(raw["field"], f"{pointer}/verify_token/field", problems.add)
                if source == "field"
                else None
            )
            if not raw["value"]:
                problems.add(
                    f"{pointer}/verify_token/value",
                    "the verify token is empty",
                    "set it, e.g. value: ${MY_VERIFY_TOKEN}",
                )
            token = TokenCheck(
                cast(Any, source),
                str(raw.get(source, "")),
                field_expr,
                Secret(raw["value"], f"webhook.handshakes.{index}.verify_token"),
            )
        handshakes.append(
            Handshake(
                name=hs["name"],
                method=hs.get("method", "GET"),
                when=compile_or_report(hs["when"], f"{pointer}/when", problems.add),
                token=token,
                respond=_reply(hs["respond"], f"{pointer}/respond", problems),
            )
        )
    response = (
        _reply(spec["response"], "/webhook/response", problems) if "response" in spec else None
    )
    public_url = spec.get("public_url") or None
    if public_url is not None and "/webhook/public_url" not in placeholders:
        parts = urlsplit(public_url)
        if (
            parts.scheme not in ("http", "https")
            or not parts.netloc
            or parts.query
            or parts.fragment
        ):
            problems.add(
                "/webhook/public_url",
                f"{public_url!r} is not an http(s) base URL without query or fragment",
                "write the scheme, host and path prefix the platform calls, "
                "e.g. https://hooks.example.com/gw",
            )
    webhook_spec = WebhookSpec(
        path=spec["path"],
        format=spec.get("format", "json"),
        signature=MaskedMapping(signature),
        max_body_bytes=spec.get("max_body_bytes"),
        public_url=public_url if "/webhook/public_url" not in placeholders else None,
    )
    return Webhook(mapping, webhook_spec, levels, dedupe, tuple(handshakes), response, variables)


def _check_tests(
    tests: list[dict[str, Any]], problems: Problems, channels: dict[str, ChannelSpec]
) -> None:
    seen: set[str] = set()
    for index, test in enumerate(tests):
        where = f"/tests/{index}"
        if test["name"] in seen:
            problems.add(
                f"{where}/name",
                f"the test name {test['name']!r} is used twice",
                "give every test its own name",
            )
        seen.add(test["name"])
        inputs = [k for k in ("inbound", "outbound", "handshake") if k in test]
        if len(inputs) != 1:
            problems.add(
                where,
                "a test needs exactly one of inbound, outbound, handshake",
                "see the tests section of docs/mappings.md",
            )
        if ("expect" in test) == ("expect_error" in test):
            problems.add(
                where,
                "a test needs exactly one of expect, expect_error",
                "say what the run must give, or which error",
            )
        channel = test.get("outbound", {}).get("channel")
        if channel is not None and channel not in channels:
            problems.add(
                f"{where}/outbound/channel",
                f"unknown channel role {channel!r}",
                f"use one of: {', '.join(channels)}",
            )
