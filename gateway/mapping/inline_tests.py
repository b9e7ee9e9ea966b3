"""Run a mapping's `tests:` with no network: samples in, expected CXone/platform calls out.

Tests run against the mapping compiled with placeholders (`${NAME:-default}` gives its
default; `${NAME}` stands for itself), with the clock fixed at TEST_NOW, so they give the
same result on every machine.
"""

from __future__ import annotations

import difflib
from collections.abc import Mapping
from email import policy
from email.parser import BytesParser
from typing import Any
from urllib.parse import parse_qsl

import yaml

from gateway import jsonutil
from gateway.errors import (
    BadRequest,
    GatewayError,
    MappingRuntimeError,
    RequestError,
    UpstreamRejected,
    UpstreamUnavailable,
)
from gateway.mapping.mapping import CompiledMapping
from gateway.mapping.model import (
    Ignored,
    InboundCall,
    OutboundContext,
    PlatformRequest,
    TestFailure,
    ThreadState,
    mask_url,
)
from gateway.mapping.offline import CannedLookups, CannedUploads, response_of, run_offline
from gateway.mapping.templates import fixed_clock

TEST_NOW = 1_764_158_400.0  # 2025-11-26T12:00:00.000Z
_AUTH_HEADERS = {"authorization", "proxy-authorization"}


class _Mismatch(Exception):
    def __init__(self, reason: str, diff: str = "") -> None:
        super().__init__(reason)
        self.reason = reason
        self.diff = diff


def run_inline_tests(m: CompiledMapping) -> list[TestFailure]:
    """Run every inline test of `m`; return the failures (empty: all passed)."""
    twin = m.test_twin()
    failures = []
    for index, test in enumerate(twin.tests):
        where = f"/tests/{index}"
        try:
            with fixed_clock(lambda: TEST_NOW):
                _run_one(twin, test)
        except _Mismatch as exc:
            failures.append(
                TestFailure(
                    m.name,
                    str(test.get("name", index)),
                    m.source,
                    where,
                    m.lines.line(where),
                    exc.reason,
                    exc.diff,
                )
            )
    return failures


def error_code(exc: BaseException) -> str:
    """The stable code `expect_error.code` compares with."""
    if isinstance(exc, RequestError):
        return exc.code
    if isinstance(exc, MappingRuntimeError):
        return "mapping_error"
    if isinstance(exc, UpstreamUnavailable):
        return "upstream_unavailable"
    if isinstance(exc, UpstreamRejected):
        return "upstream_rejected"
    return type(exc).__name__


def _run_one(m: CompiledMapping, test: Mapping[str, Any]) -> None:
    expected_error = test.get("expect_error")
    try:
        if "inbound" in test:
            actual: Any = _inbound(m, test["inbound"])
        elif "outbound" in test:
            actual = _outbound(m, test["outbound"], test.get("expect"))
        elif "handshake" in test:
            actual = _handshake(m, test["handshake"])
        else:
            raise _Mismatch("the test needs one of inbound, outbound or handshake")
    except GatewayError as exc:
        if expected_error is None:
            raise _Mismatch(f"unexpected error ({error_code(exc)}): {exc}") from None
        _check_error(expected_error, exc)
        return
    except _Mismatch:
        raise
    except Exception as exc:  # a bug must fail the test, never the whole check
        raise _Mismatch(f"crashed: {type(exc).__name__}: {exc}") from None
    if expected_error is not None:
        raise _Mismatch(
            f"expected an error ({_describe_error(expected_error)}) but the run succeeded",
            _diff({"error": expected_error}, {"result": actual}),
        )
    if "expect" not in test:
        raise _Mismatch("the test has no `expect` (or `expect_error`)")
    expected = test["expect"]
    kind = "inbound" if "inbound" in test else "other"
    projected = _project(actual, expected, kind)
    if _dump(projected) != _dump(_strip_match(expected)):
        raise _Mismatch(
            "the result differs from `expect`", _diff(_strip_match(expected), projected)
        )


def _describe_error(spec: Mapping[str, Any]) -> str:
    return ", ".join(f"{k} {v!r}" for k, v in spec.items())


def _check_error(spec: Mapping[str, Any], exc: BaseException) -> None:
    code = error_code(exc)
    if "code" in spec and spec["code"] != code:
        raise _Mismatch(f"expected error code {spec['code']!r}, got {code!r}: {exc}")
    if "contains" in spec and spec["contains"] not in str(exc):
        raise _Mismatch(f"the error does not contain {spec['contains']!r}: {exc}")


def _inbound(m: CompiledMapping, spec: Mapping[str, Any]) -> list[dict[str, Any]]:
    headers = dict(spec.get("headers") or {})
    query = dict(spec.get("query") or {})
    if "raw" in spec:
        payload = m.parse_body(spec["raw"].encode(), spec.get("content_type"))
    elif "body" in spec:
        payload = spec["body"]
    else:
        raise BadRequest("the inbound test needs `body` or `raw`")
    io = CannedLookups(m.name, spec.get("lookups") or {})
    return [
        _call_view(run_offline(m.render_inbound(item, io)))
        for item in m.split(payload, headers=headers, query=query)
    ]


def _call_view(result: InboundCall | Ignored) -> dict[str, Any]:
    if isinstance(result, Ignored):
        return {"route": result.route, "ignored": True, "dedupe_key": result.dedupe_key}
    return {
        "route": result.route,
        "ignored": False,
        "channel": result.channel,
        "action": result.action,
        "thread_id": result.thread_id,
        "message_id": result.message_id,
        "dedupe_key": result.dedupe_key,
        "method": result.method,
        "path": result.path,
        "fields": dict(result.fields),
        "body": result.body,
        "state": {v.name: v.value for v in result.state},
        "lookups": {o.name: o.result for o in result.lookups},
    }


def _outbound(m: CompiledMapping, spec: Mapping[str, Any], expect: Any) -> dict[str, Any]:
    kind = spec["kind"]
    ctx = OutboundContext(
        kind=kind,
        endpoint=spec.get("endpoint", "outbound" if kind == "reply" else "sender_action"),
        channel=spec["channel"],
        channel_id=spec.get("channel_id", "test-channel"),
        params=dict(spec.get("params") or {}),
        body=spec.get("body", {}),
        state=ThreadState(dict(spec.get("state") or {})),
    )
    plan = m.route_outbound(ctx)
    uploads = CannedUploads(m.name, spec.get("upload_responses") or [])
    if plan.pending_uploads:
        plan = run_offline(m.upload_attachments(plan, uploads))
    view: dict[str, Any] = {
        "route": plan.route,
        "fields": dict(plan.fields),
        "requests": [_request_view(m, r) for r in (*uploads.sent, *plan.requests)],
    }
    answers = spec.get("platform_responses") or (
        [spec["platform_response"]] if "platform_response" in spec else []
    )
    if answers:
        responses = [
            response_of(answers[min(i, len(answers) - 1)]) for i in range(len(plan.requests))
        ]
        view["response"] = m.complete_outbound(plan, responses)
    elif isinstance(expect, Mapping) and "response" in expect:
        raise _Mismatch("`expect.response` needs `platform_response` in the test's outbound")
    return view


def _request_view(m: CompiledMapping, request: PlatformRequest) -> dict[str, Any]:
    base = m.platform.base_url.rstrip("/")
    masked = {n.lower() for n in request.masked} | _AUTH_HEADERS
    url = mask_url(request.url, {n.lower() for n in request.masked})
    path = url[len(base) :] if url.startswith(base) else url
    headers = {k: ("***" if k.lower() in masked else v) for k, v in request.headers.items()}
    body: Any = None
    if request.body is not None:
        kind = request.headers.get("Content-Type", "")
        if "json" in kind:
            body = jsonutil.loads(request.body)
        elif "x-www-form-urlencoded" in kind:
            body = dict(parse_qsl(request.body.decode(), keep_blank_values=True))
        elif kind.startswith("multipart/form-data"):
            body = _multipart_view(kind, request.body)
        else:
            body = request.body.decode()
    return {"method": request.method, "path": path, "headers": headers, "body": body}


def _multipart_view(content_type: str, body: bytes) -> dict[str, Any]:
    """Form fields as text; a file part as {filename, content_type, size}."""
    message = BytesParser(policy=policy.HTTP).parsebytes(
        f"Content-Type: {content_type}\r\n\r\n".encode() + body
    )
    view: dict[str, Any] = {}
    for part in message.iter_parts():
        name = part.get_param("name", header="content-disposition")
        content = part.get_payload(decode=True)
        data = content if isinstance(content, bytes) else b""
        filename = part.get_filename()
        if filename is None:
            view[str(name)] = data.decode()
        else:
            view[str(name)] = {
                "filename": filename,
                "content_type": part.get_content_type(),
                "size": len(data),
            }
    return view


def _handshake(m: CompiledMapping, spec: Mapping[str, Any]) -> dict[str, Any] | None:
    reply = m.handshake(
        spec.get("method", "GET"),
        dict(spec.get("query") or {}),
        dict(spec.get("headers") or {}),
        spec.get("body"),
    )
    if reply is None:
        return None
    text = reply.body.decode()
    body = jsonutil.loads(reply.body) if "json" in reply.content_type and text else text
    return {"status": reply.status, "content_type": reply.content_type, "body": body}


def _project(actual: Any, expected: Any, kind: str) -> Any:
    """Reduce `actual` to what `expected` talks about, so the diff shows only that."""
    if kind == "inbound" and isinstance(actual, list) and isinstance(expected, list):
        return _pairs(actual, expected, {"fields", "body"})
    if isinstance(actual, Mapping) and isinstance(expected, Mapping):
        return _select(actual, expected, {"fields", "response", "body"})
    return actual


def _pairs(
    actual: list[Any], expected: list[Any], data_keys: set[str], inherited: bool = False
) -> list[Any]:
    out = [
        _select(a, e, data_keys, inherited)
        if isinstance(a, Mapping) and isinstance(e, Mapping)
        else a
        for a, e in zip(actual, expected, strict=False)
    ]
    return out + [_summary(a) for a in actual[len(expected) :]]


def _select(
    actual: Mapping[str, Any],
    expected: Mapping[str, Any],
    data_keys: set[str],
    inherited: bool = False,
) -> dict[str, Any]:
    subset = expected.get("match", "subset" if inherited else "exact") == "subset"
    out: dict[str, Any] = {}
    for key, wanted in expected.items():
        if key == "match" or key not in actual:
            continue
        value = actual[key]
        if key == "headers" and isinstance(value, Mapping) and isinstance(wanted, Mapping):
            # headers are always compared as a subset, by case-insensitive name
            lowered = {k.lower(): v for k, v in value.items()}
            out[key] = {k: lowered[k.lower()] for k in wanted if k.lower() in lowered}
        elif key == "requests" and isinstance(value, list) and isinstance(wanted, list):
            out[key] = _pairs(value, wanted, {"body"}, subset)
        elif key in data_keys and subset:
            out[key] = _subset(value, wanted)
        else:
            out[key] = value
    return out


def _subset(actual: Any, expected: Any) -> Any:
    if isinstance(actual, Mapping) and isinstance(expected, Mapping):
        return {k: _subset(actual[k], v) for k, v in expected.items() if k in actual}
    if isinstance(actual, list) and isinstance(expected, list) and len(actual) == len(expected):
        return [_subset(a, e) for a, e in zip(actual, expected, strict=True)]
    return actual


def _summary(actual: Any) -> Any:
    if isinstance(actual, Mapping):
        return {
            k: actual[k] for k in ("route", "ignored", "action", "method", "path") if k in actual
        }
    return actual


def _strip_match(expected: Any) -> Any:
    """Drop the `match` keys of the test structure (never inside payload data)."""
    if isinstance(expected, list):
        return [_strip_match(v) for v in expected]
    if not isinstance(expected, Mapping):
        return expected
    out = {k: v for k, v in expected.items() if k != "match"}
    if isinstance(out.get("requests"), list):
        out["requests"] = [_strip_match(r) for r in out["requests"]]
    return out


def _dump(value: Any) -> str:
    return yaml.safe_dump(
        value, sort_keys=True, allow_unicode=True, default_flow_style=False, width=100
    )


def _diff(expected: Any, actual: Any) -> str:
    lines = difflib.unified_diff(
        _dump(expected).splitlines(), _dump(actual).splitlines(), "expected", "actual", lineterm=""
    )
    return "\n".join(lines)
