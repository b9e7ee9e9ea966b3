"""The running gateway's shared services, and hot reload."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import hashlib
import logging
import ssl
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml

from gateway.certwatch import TlsPlan, apply_tls, prepare_tls, reread_settings
from gateway.clock import Clock
from gateway.errors import ConfigError, GatewayError
from gateway.metrics import Metrics
from gateway.routing import Routing, load_routing
from gateway.secrets import references
from gateway.settings import Settings

if TYPE_CHECKING:
    from gateway.certwatch import CertificateMonitor
    from gateway.cxone.client import CxoneClient
    from gateway.cxone.tokens import FailureThrottle, TokenIssuer
    from gateway.delivery.store import Store
    from gateway.delivery.worker import Workers
    from gateway.media import MediaClient
    from gateway.platform.client import PlatformClient

log = logging.getLogger("gateway.reload")


@dataclass
class ReloadResult:
    """The outcome of the last reload, for logs, metrics and the status page."""

    generation: int  # the generation loaded, or the one that failed to load
    ok: bool
    at: float
    files: tuple[str, ...] = ()  # every file read: gateway.yaml, mappings, referenced files
    errors: list[str] = field(default_factory=list)
    problems: list[dict[str, Any]] = field(default_factory=list)  # errors: file, line, where
    versions: dict[str, str] = field(default_factory=dict)  # mapping name -> version
    changes: dict[str, list[str]] = field(default_factory=dict)  # added/changed/removed files
    seq: int = 0  # counts every load attempt (the first load is 1): tells reloads apart

    def as_dict(self) -> dict[str, Any]:
        return {
            "seq": self.seq,
            "generation": self.generation,
            "ok": self.ok,
            "at": self.at,
            "files": list(self.files),
            "versions": self.versions,
            "changes": self.changes,
            "errors": self.errors,
            "problems": self.problems,
        }


def file_digests(routing: Routing) -> dict[str, str]:
    """Digest every file a configuration was read from, `${file:...}` secrets included (blocking).

    The digests only tell which files changed between two reloads; they are never shown.
    """
    sources: list[tuple[str, str | None]] = []
    if routing.settings.source is not None:
        sources.append((str(routing.settings.source), None))
    sources += [(m.source, m.version) for m in routing.mappings.values()]
    out: dict[str, str] = {}
    for path, version in sources:
        try:
            data = Path(path).read_bytes()
        except OSError:
            continue
        out[path] = version or hashlib.sha256(data).hexdigest()[:12]
        for ref in _file_references(data, skip=("tests",) if version else ()):
            target = Path(ref) if Path(ref).is_absolute() else Path(path).parent / ref
            with contextlib.suppress(OSError):
                out[str(target)] = hashlib.sha256(target.read_bytes()).hexdigest()[:12]
    return out


# (sha256 of a file, sections skipped) -> the `${file:...}` it references. A reload reads
# every file again, but re-parsing the YAML of many unchanged mappings would be most of it.
_REFERENCES: dict[tuple[str, tuple[str, ...]], tuple[str, ...]] = {}
_YAML_LOADER: Any = getattr(yaml, "CSafeLoader", yaml.SafeLoader)  # libyaml when built with it


def _file_references(data: bytes, skip: tuple[str, ...]) -> list[str]:
    key = (hashlib.sha256(data).hexdigest(), skip)
    found = _REFERENCES.get(key)
    if found is None:
        found = tuple(_parse_references(data, skip))
        if len(_REFERENCES) >= 4096:
            _REFERENCES.clear()
        _REFERENCES[key] = found
    return list(found)


def _parse_references(data: bytes, skip: tuple[str, ...]) -> list[str]:
    try:
        tree = yaml.load(data, Loader=_YAML_LOADER)  # noqa: S506 - a safe loader (C or Python)
    except yaml.YAMLError:
        return []
    if isinstance(tree, dict):
        tree = {k: v for k, v in tree.items() if k not in skip}
    found: list[str] = []
    stack: list[Any] = [tree]
    while stack:
        node = stack.pop()
        if isinstance(node, str):
            found += [r[5:] for r in references(node) if r.startswith("file:")]
        elif isinstance(node, dict):
            stack.extend(node.values())
        elif isinstance(node, list):
            stack.extend(node)
    return found


def file_changes(old: Mapping[str, str], new: Mapping[str, str]) -> dict[str, list[str]]:
    """Which files were added, changed or removed between two digests."""
    return {
        "added": sorted(new.keys() - old.keys()),
        "changed": sorted(k for k in new.keys() & old.keys() if new[k] != old[k]),
        "removed": sorted(old.keys() - new.keys()),
    }


class Gateway:
    """Services shared by both listeners; resources are opened by the app's cleanup contexts."""

    def __init__(self, settings: Settings, *, clock: Clock, metrics: Metrics) -> None:
        self.settings = settings
        self.clock = clock
        self.metrics = metrics
        self._routing: Routing | None = None
        self.last_reload: ReloadResult | None = None
        self._reload_lock = asyncio.Lock()
        self._reload_seq = 0
        self._digests: dict[str, str] = {}  # file -> digest of the configuration in service
        # set by cleanup contexts
        self.store: Store
        self.cxone: CxoneClient
        self.platform: PlatformClient
        self.media: MediaClient
        self.throttle: FailureThrottle
        self.workers: Workers | None = None
        self.certificates: CertificateMonitor | None = None
        # set by gateway.server.serve, whose process is the gateway's alone: keep the
        # configuration out of the garbage collector's full passes (settle_heap)
        self.freeze_heap = False
        # TLS contexts in use, reloaded in place: the listeners' (set by gateway.server),
        # the one for CXone (set by the clients context), one per mapping that asks
        self.listener_tls: dict[str, ssl.SSLContext] = {}
        self.cxone_tls: ssl.SSLContext | None = None
        self.platform_tls: Mapping[str, ssl.SSLContext] = {}

    @property
    def routing(self) -> Routing:
        if self._routing is None:
            raise GatewayError("the gateway has not loaded its configuration yet")
        return self._routing

    @property
    def issuer(self) -> TokenIssuer:
        """The token issuer of the running configuration (part of the routing object)."""
        return self.routing.issuer

    def install(self, routing: Routing) -> None:
        """Swap the routing object (one assignment); its token issuer comes with it."""
        self.settings = routing.settings
        self._routing = routing
        self.metrics.mapping_info.clear()
        for m in routing.mappings.values():
            self.metrics.mapping_info.labels(m.name, m.version).set(1)

    def _load(self, generation: int, *, reread: bool) -> tuple[Routing, TlsPlan]:
        """Read, compile and check everything, TLS files included (blocking)."""
        settings = reread_settings(self.settings) if reread else self.settings
        previous = self._routing.mappings if reread and self._routing is not None else None
        routing = load_routing(
            settings, generation, reread_settings=False, clock=self.clock, previous=previous
        )
        return routing, prepare_tls(routing.settings, routing.mappings.values())

    async def load_initial(self) -> None:
        routing, plan = await asyncio.to_thread(self._load, 1, reread=False)
        self._digests = await asyncio.to_thread(file_digests, routing)
        self.platform_tls = plan.platform
        self.install(routing)
        self._reload_seq += 1
        self.last_reload = ReloadResult(
            1,
            True,
            time.time(),
            tuple(sorted(self._digests)),
            versions={m.name: m.version for m in routing.mappings.values()},
            seq=self._reload_seq,
        )
        log.info("configuration loaded: %s", _versions(routing), extra={"outcome": "ok"})

    async def reload(self) -> ReloadResult:
        """Re-read everything off the event loop; swap on success, keep the old on any error."""
        async with self._reload_lock:
            generation = (self._routing.generation if self._routing else 0) + 1
            self._reload_seq += 1
            seq = self._reload_seq
            try:
                routing, plan = await asyncio.to_thread(self._load, generation, reread=True)
                digests = await asyncio.to_thread(file_digests, routing)
                apply_tls(self, plan)  # new handshakes get the new certificates
            except ConfigError as exc:
                result = ReloadResult(
                    generation,
                    False,
                    time.time(),
                    errors=[str(p) for p in exc.problems],
                    problems=[p.as_dict() for p in exc.problems],
                    seq=seq,
                )
                self.metrics.reloads.labels("error").inc()
                for line in result.errors:
                    log.error(
                        "reload failed, keeping the running configuration: %s",
                        line,
                        extra={"outcome": "error"},
                    )
            except Exception as exc:  # an unexpected failure must not take the gateway down
                log.exception("reload failed unexpectedly")
                result = ReloadResult(
                    generation, False, time.time(), errors=[f"unexpected: {exc}"], seq=seq
                )
                self.metrics.reloads.labels("error").inc()
            else:
                self.install(routing)
                if self.freeze_heap:
                    settle_heap()
                changes = file_changes(self._digests, digests)
                self._digests = digests
                result = ReloadResult(
                    generation,
                    True,
                    time.time(),
                    tuple(sorted(digests)),
                    versions={m.name: m.version for m in routing.mappings.values()},
                    changes=changes,
                    seq=seq,
                )
                self.metrics.reloads.labels("ok").inc()
                log.info(
                    "reloaded generation %d: %s; %s",
                    generation,
                    _versions(routing),
                    "; ".join(f"{k}: {', '.join(v)}" for k, v in changes.items() if v)
                    or "no file changed",
                    extra={"outcome": "ok"},
                )
            if not result.ok:
                log.error(
                    "reload %d failed with %d problem(s); generation %d stays in service",
                    seq,
                    len(result.errors),
                    generation - 1,
                    extra={"outcome": "error"},
                )
            self.last_reload = result
            if result.ok and self.certificates is not None:
                await self.certificates.check()
            return result


# How many more containers may be allocated than freed before CPython collects the young
# generation (its default: 700); see `young_collections_less_often`.
YOUNG_GENERATION = 10_000


def young_collections_less_often() -> None:
    """Let the young generation hold `YOUNG_GENERATION` objects (CPython's default: 700).

    CPython collects it whenever 700 more containers were allocated than freed. A
    SQLite store's group commit keeps each operation's objects (its future, closure,
    coroutine frame) until the batch commits, about thirty operations at saturation,
    so nearly every batch crossed 700: one collection per 36 single events, each
    walking the 3,000 objects of the requests in flight, 0.5 ms; 17 µs of CPU per
    event (docs/performance.md). Requests and batches free what they allocate, so at
    10,000 a collection comes when garbage really accumulates (cycles, which the
    serving path does not make per message), and walks at most a few milliseconds'
    worth of objects. The older generations keep CPython's thresholds.
    """
    _, middle, old = gc.get_threshold()
    gc.set_threshold(YOUNG_GENERATION, middle, old)


def settle_heap() -> None:
    """Collect the garbage once, then freeze what is alive (`gc.freeze`).

    A serving gateway's long-lived objects (compiled mappings, modules, sessions) are
    most of its heap; every full collection walked them all, a pause of the event loop
    of 13 ms with one mapping and 200 ms with 200 (docs/performance.md), at moments CPython
    chooses under load. Frozen, they are skipped. After a reload the previous
    configuration is unfrozen and collected first, so nothing is kept by the freeze:
    the pause moves to the reload, where an operator expects work.
    """
    gc.unfreeze()
    gc.collect()
    gc.freeze()


def _versions(routing: Routing) -> str:
    return ", ".join(f"{m.name}@{m.version} ({m.source})" for m in routing.mappings.values())
