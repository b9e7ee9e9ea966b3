"""CompiledMapping and loading one file: YAML -> schema -> ${VAR} -> compile -> frozen object."""

from __future__ import annotations

import copy
import hashlib
import os
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from functools import cached_property
from pathlib import Path
from typing import Any

from gateway.errors import MappingError, MappingRuntimeError, Problem, UpstreamError
from gateway.mapping import schema
from gateway.mapping.compiler import Parts, compile_tree
from gateway.mapping.defaults import cxone_defaults
from gateway.mapping.loader import LineMap, Problems, load_yaml
from gateway.mapping.media import MediaSpec
from gateway.mapping.model import (
    ChannelSpec,
    HandshakeReply,
    Ignored,
    InboundCall,
    InboundIO,
    InboundItem,
    OutboundContext,
    OutboundPlan,
    PlatformRequest,
    PlatformResponse,
    PlatformSpec,
    UploadIO,
    WebhookSpec,
)
from gateway.mapping.resolve import resolve


@dataclass(frozen=True, eq=False)
class CompiledMapping:
    """One loaded mapping, fully compiled; the per-request methods do no parsing work."""

    name: str
    source: str
    version: str
    description: str
    vars: Mapping[str, Any]
    platform: PlatformSpec
    channels: Mapping[str, ChannelSpec]
    webhook: WebhookSpec
    tests: tuple[Mapping[str, Any], ...] = field(repr=False)
    lines: LineMap = field(repr=False)
    _parts: Parts = field(repr=False)
    _tree: Mapping[str, Any] = field(repr=False)  # schema-valid, references unresolved
    _placeholders: bool = field(repr=False)  # loaded with check_secrets=False
    _base_dir: Path = field(repr=False)
    # what it was compiled from: the file's digest and the value of every ${...} it reads
    _inputs: tuple[Any, ...] = field(default=(), repr=False, compare=False)

    def __repr__(self) -> str:
        return (
            f"CompiledMapping(name={self.name!r}, source={self.source!r}, version={self.version!r})"
        )

    # -- platform side ------------------------------------------------------------------
    def parse_body(self, raw: bytes, content_type: str | None) -> Any:
        """Parse a webhook body (BadRequest on junk)."""
        return self._parts.webhook.parse_body(raw, content_type)

    def handshake(
        self, method: str, query: Mapping[str, str], headers: Mapping[str, str], body: Any | None
    ) -> HandshakeReply | None:
        """Answer a subscription handshake; None when the request is not one."""
        return self._parts.webhook.handshake(method, query, headers, body)

    def sync_response(self, payload: Any) -> HandshakeReply | None:
        """Render `webhook.response` for an accepted delivery, if any."""
        return self._parts.webhook.sync_response(payload)

    def split(
        self, payload: Any, *, headers: Mapping[str, str], query: Mapping[str, str]
    ) -> list[InboundItem]:
        """Split a delivery into items (`webhook.foreach`)."""
        return self._parts.webhook.split(payload, headers=headers, query=query)

    def route_inbound(self, item: InboundItem) -> InboundCall | Ignored:
        """Route one item to a CXone call or an ignore (MappingRuntimeError on failure).

        A route with lookups, media URLs or thread state gives a `deferred` call: routed
        for the queue only; the worker finishes it with `render_inbound`.
        """
        return self._parts.inbound.route(self._with_ancestors(item))

    def dedupe_key(self, item: InboundItem) -> str | None:
        """The item's dedupe key alone (for an event whose route fails: kept once only)."""
        return self._parts.inbound.dedupe_of(self._with_ancestors(item))

    async def render_inbound(self, item: InboundItem, io: InboundIO) -> InboundCall | Ignored:
        """Route and render one item completely (queue worker): lookups go through `io`."""
        return await self._parts.inbound.render(self._with_ancestors(item), io)

    @cached_property
    def stores_thread_state(self) -> bool:
        """Some inbound route stores thread state (outbound calls then load it)."""
        return any(r.state is not None for r in self._parts.inbound.routes)

    def _with_ancestors(self, item: InboundItem) -> InboundItem:
        if not item.parents and item.delivery is not None and len(self._parts.webhook.levels) > 1:
            return self._restore_ancestors(item)
        return item

    def _restore_ancestors(self, item: InboundItem) -> InboundItem:
        # An item stored by the queue keeps its parent and delivery only; nested `foreach`
        # levels find the other ancestors again by splitting the delivery.
        try:
            found = self.split(item.delivery, headers=item.headers, query=item.query)
        except MappingRuntimeError:
            return item
        if item.position < len(found) and found[item.position].item == item.item:
            return item._replace(parents=found[item.position].parents)
        return item

    # -- CXone side ---------------------------------------------------------------------
    def route_outbound(self, ctx: OutboundContext) -> OutboundPlan:
        """Route a CXone reply / sender action to platform requests (NoRoute -> 422)."""
        return self._parts.outbound.route(ctx)

    def outbound_thread(self, ctx: OutboundContext) -> str | None:
        """The thread a CXone call is about, as `thread_id` is extracted before any route."""
        return self._parts.outbound.thread_of(ctx)

    async def upload_attachments(self, plan: OutboundPlan, io: UploadIO) -> OutboundPlan:
        """Run the route's `upload:` for each pending attachment; render the requests."""
        return await self._parts.outbound.upload(plan, io)

    @property
    def media(self) -> MediaSpec | None:
        """The `media:` section: how a proxied platform file is fetched."""
        return self._parts.media

    def media_request(self, fields: Mapping[str, Any]) -> PlatformRequest:
        """The platform request for one proxied file (fields as given to media_url())."""
        if self._parts.media is None:
            raise MappingRuntimeError(self.name, "(media)", "the mapping has no media: section")
        return self._parts.media.fetch_request(self.name, self.platform, fields, self.vars)

    def complete_outbound(
        self, plan: OutboundPlan, responses: Sequence[PlatformResponse]
    ) -> dict[str, Any]:
        """Check the platform's answers and render CXone's response body."""
        return self._parts.outbound.complete(plan, responses)

    def check_response(self, plan: OutboundPlan, response: PlatformResponse) -> None:
        """Raise the error one platform answer stands for: non-2xx, or `success` false.

        UpstreamUnavailable (retry it: 408, 429, 5xx, or `retryable`) or UpstreamRejected
        (final). Call it on each answer as it comes, so the parts of a split reply after a
        refused one are never sent.
        """
        self._parts.outbound.check(plan, response)

    def platform_error(self, response: PlatformResponse) -> UpstreamError:
        """Build the error for a non-2xx platform answer using `platform.error`."""
        return self._parts.outbound.error_for(response)

    @property
    def lookup_budgets(self) -> dict[str, float]:
        """Per inbound route with lookups: the seconds its lookups may take at most."""
        return {
            r.name: sum(lookup.timeout for lookup in r.lookups)
            for r in self._parts.inbound.routes
            if r.lookups
        }

    @property
    def inbound_routes(self) -> tuple[str, ...]:
        """Names of the inbound routes, in order."""
        return tuple(r.name for r in self._parts.inbound.routes)

    @property
    def outbound_routes(self) -> tuple[str, ...]:
        """Names of the outbound routes, in order."""
        return tuple(r.name for r in self._parts.outbound.routes)

    def for_serving(self) -> CompiledMapping:
        """This mapping without what only loading needs, once its inline tests passed.

        Leaves out the YAML tree kept to compile test twins, the tests, and the line of
        every pointer but those that later problems (duplicate names and paths) name:
        together about two thirds of a compiled mapping's memory.
        """
        if self._placeholders or not self._tree:
            return self
        lines = {p: n for p in _SERVING_LINES if (n := self.lines.lines.get(p)) is not None}
        return replace(self, tests=(), lines=LineMap(lines), _tree={})

    def built_from(self, path: Path, env: Mapping[str, str] | None) -> bool:
        """True when `path` and its references still hold what this was compiled from."""
        if self._placeholders or not self._inputs:
            return False
        try:
            data = path.read_bytes()
        except OSError:
            return False
        return _inputs_of(data, env, path.parent) == self._inputs

    def test_twin(self) -> CompiledMapping:
        """This mapping compiled with placeholders (inline tests never depend on the env).

        Compiled on each call and not kept: a serving gateway would otherwise hold a
        second compiled copy of every mapping only for the tests it ran at load.
        """
        if self._placeholders:
            return self
        if not self._tree:
            raise RuntimeError(f"{self.source}: a mapping kept for serving has no test twin")
        return _build(
            dict(self._tree),
            self.lines,
            Problems(self.source, self.lines),
            source=self.source,
            version=self.version,
            base_dir=self._base_dir,
            env=None,
            check_secrets=False,
        )


# the pointers whose lines a serving mapping keeps (duplicate_problems names them)
_SERVING_LINES = ("", "/name", "/webhook", "/webhook/path")


def load_mapping(
    path: Path, *, env: Mapping[str, str] | None = None, check_secrets: bool = True
) -> CompiledMapping:
    """Load and compile one mapping file; raise MappingError listing every problem."""
    problems = Problems(str(path))
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise MappingError(
            Problem(str(path), "", f"cannot read the file ({exc.strerror})", "check the path")
        ) from None
    version = hashlib.sha256(data).hexdigest()[:12]
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise MappingError(
            Problem(
                str(path), "", f"the file is not UTF-8 (byte {exc.start})", "save the file as UTF-8"
            )
        ) from None
    tree, lines = load_yaml(text, problems)
    if problems or not schema.validate(tree, problems):
        raise MappingError(problems.items)
    built = _build(
        tree,
        lines,
        problems,
        source=str(path),
        version=version,
        base_dir=path.parent,
        env=env,
        check_secrets=check_secrets,
    )
    return replace(built, _inputs=_inputs_of(data, env, path.parent))


_REF_NAME = re.compile(rb"\$\{(file:[^}]+|[^}:]+)")  # the names gateway.secrets.REFERENCE reads


def _inputs_of(data: bytes, env: Mapping[str, str] | None, base_dir: Path) -> tuple[Any, ...]:
    """The file's digest and the current value of every reference it makes (files hashed)."""
    source = os.environ if env is None else env
    values: list[tuple[str, str | None]] = []
    for name in sorted({m.group(1).decode("utf-8", "replace") for m in _REF_NAME.finditer(data)}):
        if name.startswith("file:"):
            try:
                digest: str | None = hashlib.sha256((base_dir / name[5:]).read_bytes()).hexdigest()
            except OSError:
                digest = None
            values.append((name, digest))
        else:
            values.append((name, source.get(name)))
    return (hashlib.sha256(data).hexdigest(), tuple(values))


def _build(
    tree: dict[str, Any],
    lines: LineMap,
    problems: Problems,
    *,
    source: str,
    version: str,
    base_dir: Path,
    env: Mapping[str, str] | None,
    check_secrets: bool,
) -> CompiledMapping:
    defaults = cxone_defaults()
    resolved, placeholders = resolve(
        tree, problems, env=env, base_dir=base_dir, check_secrets=check_secrets
    )
    secret_problems = list(problems.items)
    unresolved = placeholders | {p.where for p in secret_problems}
    parts = compile_tree(
        resolved,
        problems,
        base_dir=base_dir,
        placeholders=unresolved,
        defaults=defaults,
        placeholders_mode=not check_secrets,
    )
    if problems:
        # a missing secret also empties the value it was in: drop the echoes of that
        raise MappingError(
            secret_problems
            + [
                p
                for p in problems.items[len(secret_problems) :]
                if not any(_related(p.where, q.where) for q in secret_problems)
            ]
        )
    return CompiledMapping(
        name=parts.name,
        source=source,
        version=version,
        description=parts.description,
        vars=parts.vars,
        platform=parts.platform,
        channels=parts.channels,
        webhook=parts.webhook.spec,
        tests=tuple(tree.get("tests") or ()),
        lines=lines,
        _parts=parts,
        _tree=copy.deepcopy(tree),
        _placeholders=not check_secrets,
        _base_dir=base_dir,
    )


def _related(a: str, b: str) -> bool:
    return a == b or a.startswith(b + "/") or b.startswith(a + "/")
