"""Lookups: named calls to the platform API that fill fields a webhook does not carry.

A route's lookups run in the queue worker (never at intake: the platform's deadline is
the acknowledgement's), in order, each seeing the fields extracted so far and the
results of the lookups before it. A result is cached per rendered key (in the store,
so every instance shares it). A lookup that fails (no answer within its `timeout`, a
non-2xx answer, `success` false) never holds a message back: its `fallback` fields are
used and the failure is reported to the runtime, which counts it.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Mapping
from dataclasses import dataclass
from functools import cached_property
from typing import Any

from gateway import jsonutil
from gateway.errors import MappingRuntimeError, UpstreamError, UpstreamUnavailable
from gateway.mapping.expressions import Expr, ExpressionError, compile_or_report, optional_expr
from gateway.mapping.extraction import Extraction
from gateway.mapping.loader import Problems
from gateway.mapping.model import InboundIO, LookupOutcome, PlatformResponse, PlatformSpec
from gateway.mapping.request import RequestTemplate, compile_request
from gateway.mapping.templates import OMIT, Node, RenderError, compile_template, render_text
from gateway.mapping.values import escape_pointer

# Fields the queue needs at intake, before any lookup has run.
INTAKE_FIELDS = frozenset({"thread_id", "message_id"})


@dataclass(frozen=True)
class Lookup:
    """One compiled lookup of an inbound route."""

    name: str
    when: Expr | None  # over the fields so far
    request: RequestTemplate
    timeout: float
    cache_key: Node | None  # text template; None: not cached
    cache_ttl: float
    success: Expr | None  # over {status, headers, body}
    retryable: Expr | None  # over {status, headers, body}: a failure worth one more try
    error_code: Expr | None  # over the response body
    error_message: Expr | None  # over the response body
    result: tuple[tuple[str, Expr], ...]  # over the response body
    fallback: Node | None  # field -> template
    digest: str = ""  # of the lookup's definition: a changed lookup never reads old results

    @property
    def fields(self) -> tuple[str, ...]:
        """The fields this lookup gives."""
        return tuple(name for name, _ in self.result)

    @cached_property
    def results(self) -> Extraction:
        """`result` as one generated function, numeric id fields as exact text."""
        return Extraction(self.result, exact=True)


def compile_lookups(
    tree: Mapping[str, Any],
    where: str,
    problems: Problems,
    extracted: frozenset[str],
) -> tuple[Lookup, ...]:
    """Compile a route's `lookups:` (in order); field names must not clash."""
    lookups: list[Lookup] = []
    given: set[str] = set()
    for name, spec in tree.items():
        at = f"{where}/{escape_pointer(name)}"
        result = []
        for field, source in spec["result"].items():
            pointer = f"{at}/result/{escape_pointer(field)}"
            if field in INTAKE_FIELDS:
                problems.add(
                    pointer,
                    f"a lookup cannot give {field}: the queue needs it before lookups run",
                    "extract it from the webhook",
                )
            elif field in extracted or field in given or field == "vars":
                problems.add(
                    pointer,
                    f"the field {field!r} is already given by the route's extract or a lookup",
                    "give each field one source (a lookup's fallback covers a missing value)",
                )
            given.add(field)
            result.append((field, compile_or_report(source, pointer, problems.add)))
        fallback = spec.get("fallback")
        for field in fallback or {}:
            if field not in spec["result"]:
                problems.add(
                    f"{at}/fallback/{escape_pointer(field)}",
                    f"the fallback gives {field!r}, which the lookup's result does not",
                    f"fall back only for: {', '.join(spec['result'])}",
                )
        cache = spec.get("cache")
        error = spec.get("error", {})
        lookups.append(
            Lookup(
                name=name,
                when=optional_expr(spec, "when", at, problems.add),
                request=compile_request(
                    {"method": "GET", **spec["request"]}, f"{at}/request", problems
                ),
                timeout=float(spec["timeout"]),
                cache_key=compile_template(
                    cache["key"], f"{at}/cache/key", problems.add, mode="text", label="cache.key"
                )
                if cache
                else None,
                cache_ttl=float(cache["ttl"]) if cache else 0.0,
                success=optional_expr(spec, "success", at, problems.add),
                retryable=optional_expr(spec, "retryable", at, problems.add),
                error_code=optional_expr(error, "code", f"{at}/error", problems.add),
                error_message=optional_expr(error, "message", f"{at}/error", problems.add),
                result=tuple(result),
                fallback=compile_template(
                    fallback, f"{at}/fallback", problems.add, label=f"lookups.{name}.fallback"
                )
                if fallback
                else None,
                digest=hashlib.sha256(jsonutil.dumps([name, spec])).hexdigest()[:12],
            )
        )
    return tuple(lookups)


async def run_lookups(
    mapping: str,
    route: str,
    lookups: tuple[Lookup, ...],
    fields: dict[str, Any],
    variables: Mapping[str, Any],
    platform: PlatformSpec,
    io: InboundIO,
) -> tuple[LookupOutcome, ...]:
    """Run a route's lookups in order, adding their fields to `fields`; report each."""
    outcomes = []
    for lookup in lookups:
        outcome, found = await _one(mapping, lookup, fields, variables, platform, io)
        fields.update(found)
        if lookup.fallback is not None and any(f not in fields for f in lookup.fields):
            try:
                fallback = lookup.fallback.render({**fields, "vars": variables})
            except RenderError as exc:
                raise MappingRuntimeError(mapping, route, str(exc)) from None
            for field, value in (fallback if isinstance(fallback, dict) else {}).items():
                if field not in fields and value is not None and value is not OMIT:
                    fields[field] = value
        outcomes.append(outcome)
    return tuple(outcomes)


_ATTEMPTS = 2


async def _attempt(
    lookup: Lookup, request: Any, io: InboundIO, within: float
) -> tuple[str | None, bool, dict[str, Any]]:
    """One call: (None, _, fields) on success, else (reason, retryable, {})."""
    try:
        response = await io.send(lookup.name, request, max(within, 0.001))
    except UpstreamUnavailable as exc:
        return exc.message, True, {}
    except UpstreamError as exc:
        return exc.message, False, {}
    except TimeoutError:
        return f"no answer within {lookup.timeout:g} s", True, {}
    scope = response.scope()
    try:
        if not 200 <= response.status < 300:
            retry = response.status in (408, 429) or response.status >= 500
            return (
                f"the platform answered HTTP {response.status}{_error(lookup, response)}",
                retry,
                {},
            )
        if lookup.success is not None and not lookup.success.test(scope):
            retry = lookup.retryable is not None and lookup.retryable.test(scope)
            return f"the platform's answer is a failure{_error(lookup, response)}", retry, {}
        found = lookup.results(response.body)
    except ExpressionError as exc:
        return str(exc), False, {}
    return None, False, found


def _error(lookup: Lookup, response: PlatformResponse) -> str:
    """` (code): message` from the answer, as the lookup's `error` extracts them."""
    parts = []
    for expr in (lookup.error_code, lookup.error_message):
        value = expr.search(response.body) if expr is not None else None
        parts.append("" if value is None else str(value)[:200])
    code, message = parts
    if not code and not message:
        return ""
    return (f" ({code})" if code else "") + (f": {message}" if message else "")


async def _one(
    mapping: str,
    lookup: Lookup,
    fields: Mapping[str, Any],
    variables: Mapping[str, Any],
    platform: PlatformSpec,
    io: InboundIO,
) -> tuple[LookupOutcome, dict[str, Any]]:
    def failed(reason: str) -> tuple[LookupOutcome, dict[str, Any]]:
        return LookupOutcome(lookup.name, "failed", reason), {}

    context = {**fields, "vars": variables}
    try:
        if lookup.when is not None and not lookup.when.test(dict(fields)):
            return LookupOutcome(lookup.name, "skipped"), {}
        request = lookup.request.render(platform, context)
        key = None
        if lookup.cache_key is not None:
            rendered = render_text(lookup.cache_key, context)
            key = f"{mapping}\x1f{lookup.name}\x1f{lookup.digest}\x1f{rendered}"
    except (ExpressionError, RenderError) as exc:
        # a message is never held back by a lookup, not even by a broken one
        return failed(f"the lookup could not be rendered: {exc}")
    if key is not None:
        cached = await io.cached(key)
        if isinstance(cached, dict):
            return LookupOutcome(lookup.name, "cached"), cached
    # A retryable failure (no answer, 408/429/5xx, or `retryable` true) gets one more try
    # while the lookup's time allows; a final one goes straight to the fallback.
    deadline = time.monotonic() + lookup.timeout
    attempt = 0
    while True:
        attempt += 1
        reason, retry, found = await _attempt(lookup, request, io, deadline - time.monotonic())
        if reason is None:
            break
        if not retry or attempt >= _ATTEMPTS or time.monotonic() >= deadline:
            kind = "retryable" if retry else "final"
            return failed(f"{reason} ({kind}, after {attempt} attempt(s))")
    if key is not None:
        await io.remember(key, found, lookup.cache_ttl)
    return LookupOutcome(lookup.name, "fetched"), found
