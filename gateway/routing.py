"""The immutable routing object: settings + compiled mappings + derived indexes.

Hot reload builds a new one off the event loop and swaps it in one assignment;
a request takes one snapshot at its start and finishes on it.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Any

from gateway.clock import Clock, system_clock
from gateway.cxone.tokens import TokenIssuer
from gateway.errors import ConfigError, MappingError, Problem
from gateway.mapping import CompiledMapping, TestFailure, load_mapping_dir, run_inline_tests
from gateway.platform.signatures import Verifier, compile_verifier
from gateway.settings import ChannelBinding, IntegrationSettings, Settings
from gateway.settings_loader import load_settings


@dataclass(frozen=True)
class Routing:
    """Everything a request needs to find its mapping, frozen."""

    generation: int
    loaded_at: float
    settings: Settings
    mappings: Mapping[str, CompiledMapping]
    by_webhook_path: Mapping[str, CompiledMapping]
    verifiers: Mapping[str, Verifier]
    bindings: Mapping[str, tuple[IntegrationSettings, ChannelBinding]]
    channel_ids: Mapping[tuple[str, str], str]
    issuer: TokenIssuer  # issues and checks the bearer tokens of these integrations
    files: tuple[str, ...] = field(default=())

    def binding(self, channel_id: str) -> tuple[IntegrationSettings, ChannelBinding] | None:
        return self.bindings.get(channel_id)

    def channel_id(self, mapping: str, role: str) -> str | None:
        return self.channel_ids.get((mapping, role))

    def describe(self) -> dict[str, Any]:
        return {
            "generation": self.generation,
            "loaded_at": self.loaded_at,
            "mappings": {
                m.name: {"version": m.version, "file": m.source, "webhook": m.webhook.path}
                for m in self.mappings.values()
            },
        }


def build_routing(
    settings: Settings,
    mappings: Mapping[str, CompiledMapping],
    generation: int,
    clock: Clock = system_clock,
) -> Routing:
    """Cross-check settings against mappings and derive the indexes; ConfigError on mismatch."""
    problems: list[Problem] = []
    source = str(settings.source or "gateway.yaml")
    bindings: dict[str, tuple[IntegrationSettings, ChannelBinding]] = {}
    channel_ids: dict[tuple[str, str], str] = {}
    for i, integ in enumerate(settings.integrations):
        for j, ch in enumerate(integ.channels):
            where = f"/integrations/{i}/channels/{j}"
            m = mappings.get(ch.mapping)
            if m is None:
                problems.append(
                    Problem(
                        source,
                        where + "/mapping",
                        f"no mapping named {ch.mapping!r}",
                        f"known mappings: {', '.join(sorted(mappings)) or 'none'}",
                    )
                )
                continue
            if ch.role not in m.channels:
                problems.append(
                    Problem(
                        source,
                        where + "/role",
                        f"mapping {ch.mapping!r} has no channel {ch.role!r}",
                        f"use one of: {', '.join(sorted(m.channels))}",
                    )
                )
                continue
            if (ch.mapping, ch.role) in channel_ids:
                problems.append(
                    Problem(
                        source,
                        where,
                        f"{ch.mapping}/{ch.role} is bound to two CXone channels",
                        "bind each mapping channel once",
                    )
                )
            bindings[ch.id] = (integ, ch)
            channel_ids[(ch.mapping, ch.role)] = ch.id
    lease = settings.delivery.lease_seconds
    for m in mappings.values():
        for route, budget in m.lookup_budgets.items():
            # a job is leased while its lookups run: a lease that ran out mid-way would let
            # another worker deliver the same message again
            if budget + settings.cxone.timeouts.total >= lease:
                problems.append(
                    Problem(
                        m.source,
                        f"/inbound/{m.inbound_routes.index(route)}/lookups",
                        f"the route's lookups may take {budget:g} s, which with the CXone call"
                        f" ({settings.cxone.timeouts.total:g} s) does not fit in"
                        f" delivery.lease_seconds ({lease:g} s)",
                        "lower the lookups' timeouts or raise delivery.lease_seconds",
                    )
                )
    verifiers: dict[str, Verifier] = {}
    by_path: dict[str, CompiledMapping] = {}
    for m in mappings.values():
        try:
            verifiers[m.name] = compile_verifier(
                m.webhook.signature, file=m.source, where="/webhook/signature", clock=clock
            )
        except ConfigError as exc:
            problems.extend(exc.problems)
        by_path[m.webhook.path] = m
    if problems:
        raise ConfigError(problems)
    return Routing(
        generation=generation,
        loaded_at=time.time(),
        settings=settings,
        mappings=MappingProxyType(dict(mappings)),
        by_webhook_path=MappingProxyType(by_path),
        verifiers=MappingProxyType(verifiers),
        bindings=MappingProxyType(bindings),
        channel_ids=MappingProxyType(channel_ids),
        issuer=TokenIssuer(settings.integrations, clock=clock),
        files=tuple(sorted([source, *(m.source for m in mappings.values())])),
    )


def load_routing(
    settings: Settings,
    generation: int,
    *,
    reread_settings: bool,
    clock: Clock = system_clock,
    previous: Mapping[str, CompiledMapping] | None = None,
) -> Routing:
    """Read (again) gateway.yaml and every mapping, compile, test, cross-check. Blocking."""
    if reread_settings and settings.source is not None:
        fresh = load_settings(Path(settings.source), env=settings.env)
        # Listeners and the store cannot change without a restart; keep the running ones.
        settings = _keep_restart_only(settings, fresh)
    # Fail closed: a mapping whose own inline tests fail is never put in service (one
    # reused unchanged from the running configuration has passed them already). Once they
    # pass, the YAML tree and the tests are dropped (CompiledMapping.for_serving).
    failures: list[TestFailure] = []

    def tested(mapping: CompiledMapping) -> CompiledMapping:
        found = run_inline_tests(mapping)
        failures.extend(found)
        return mapping if found else mapping.for_serving()

    mappings = load_mapping_dir(
        settings.mappings_dir, env=settings.env, previous=previous, each=tested
    )
    if failures:
        raise MappingError(
            [
                Problem(
                    f.file,
                    f.where,
                    f"inline test {f.test!r} failed: {f.reason}",
                    "run `byoc-gateway check` for the diff",
                    line=f.line,
                )
                for f in failures
            ]
        )
    return build_routing(settings, mappings, generation, clock)


def _keep_restart_only(running: Settings, fresh: Settings) -> Settings:
    from dataclasses import replace

    return replace(
        fresh,
        platform_listener=running.platform_listener,
        cxone_listener=running.cxone_listener,
        store=running.store,
    )
