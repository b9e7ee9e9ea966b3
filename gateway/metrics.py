"""Prometheus metrics, held in one registry per gateway (none created at import)."""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from itertools import accumulate
from math import inf as INF
from typing import Generic, TypeVar

from prometheus_client import (
    GC_COLLECTOR,
    PLATFORM_COLLECTOR,
    PROCESS_COLLECTOR,
    CollectorRegistry,
    Gauge,
    generate_latest,
)
from prometheus_client.core import CounterMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.exposition import CONTENT_TYPE_LATEST
from prometheus_client.registry import Collector

__all__ = [
    "CONTENT_TYPE_LATEST",
    "LoopCounter",
    "LoopHistogram",
    "Metrics",
    "advance_counter",
    "create_metrics",
]

_LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300)


class _CounterChild:
    """One labelled series of a counter: a plain float (the event loop alone writes it)."""

    __slots__ = ("value",)

    def __init__(self) -> None:
        self.value = 0.0

    def inc(self, amount: float = 1.0) -> None:
        if amount < 0:
            raise ValueError("a counter only goes up")
        self.value += amount


class _HistogramChild:
    """One labelled series of a histogram: a count per bucket (not cumulative) and a sum."""

    __slots__ = ("_bounds", "counts", "sum")

    def __init__(self, bounds: tuple[float, ...]) -> None:
        self._bounds = bounds  # ascending, +Inf last
        self.counts = [0] * len(bounds)
        self.sum = 0.0

    def observe(self, amount: float) -> None:
        self.sum += amount
        self.counts[bisect_left(self._bounds, amount)] += 1  # the first bound >= amount


C = TypeVar("C", _CounterChild, _HistogramChild)


class _Family(Collector, Generic[C]):
    """A counter or histogram kept in plain numbers and read by the registry at scrape.

    prometheus_client's own metrics check that they may be observed and take a lock
    around every increment: about 310 of the 8,421 bytecodes a single inbound event
    runs (docs/performance.md). The gateway updates its counters and histograms from
    the event loop only, so a float per series does; this collector turns them into
    the same samples at scrape time through the library's public metric families.
    `labels(*values)` is remembered per tuple of values as given; values are exposed
    as `str(value)`, one series per distinct text.
    """

    def __init__(
        self,
        name: str,
        documentation: str,
        labelnames: Sequence[str] = (),
        *,
        registry: CollectorRegistry,
    ) -> None:
        self.name = name
        self.documentation = documentation
        self.labelnames = tuple(labelnames)
        self._given: dict[tuple[object, ...], C] = {}
        self.series: dict[tuple[str, ...], C] = {}
        if not self.labelnames:
            self.labels()  # an unlabelled metric shows 0 before its first update
        registry.register(self)

    def _child(self) -> C:
        raise NotImplementedError

    def labels(self, *values: object) -> C:
        child = self._given.get(values)
        if child is None:
            if len(values) != len(self.labelnames):
                raise ValueError(f"{self.name} takes the labels {self.labelnames}")
            text = tuple(str(v) for v in values)
            child = self.series.get(text)
            if child is None:
                child = self.series[text] = self._child()
            self._given[values] = child
        return child

    def describe(self) -> Iterable[Metric]:
        return [self._family()]

    def collect(self) -> Iterable[Metric]:
        family = self._family()
        for labels, child in self.series.items():
            self._add(family, labels, child)
        return [family]

    def _family(self) -> Metric:
        raise NotImplementedError

    def _add(self, family: Metric, labels: tuple[str, ...], child: C) -> None:
        raise NotImplementedError


class LoopCounter(_Family[_CounterChild]):
    """A counter updated from the event loop (`_Family`)."""

    def _child(self) -> _CounterChild:
        return _CounterChild()

    def inc(self, amount: float = 1.0) -> None:
        """Increment an unlabelled counter."""
        self.labels().inc(amount)

    def _family(self) -> CounterMetricFamily:
        return CounterMetricFamily(self.name, self.documentation, labels=self.labelnames)

    def _add(self, family: Metric, labels: tuple[str, ...], child: _CounterChild) -> None:
        assert isinstance(family, CounterMetricFamily)
        family.add_metric(labels, child.value)


class LoopHistogram(_Family[_HistogramChild]):
    """A histogram updated from the event loop (`_Family`)."""

    def __init__(
        self,
        name: str,
        documentation: str,
        labelnames: Sequence[str] = (),
        *,
        registry: CollectorRegistry,
        buckets: Sequence[float],
    ) -> None:
        self.bounds = (*sorted(float(b) for b in buckets if b != INF), INF)
        self._le = tuple("+Inf" if b == INF else repr(b) for b in self.bounds)
        super().__init__(name, documentation, labelnames, registry=registry)

    def _child(self) -> _HistogramChild:
        return _HistogramChild(self.bounds)

    def observe(self, amount: float) -> None:
        """Observe into an unlabelled histogram."""
        self.labels().observe(amount)

    def _family(self) -> HistogramMetricFamily:
        return HistogramMetricFamily(self.name, self.documentation, labels=self.labelnames)

    def _add(self, family: Metric, labels: tuple[str, ...], child: _HistogramChild) -> None:
        assert isinstance(family, HistogramMetricFamily)
        cumulative = list(zip(self._le, accumulate(child.counts), strict=True))
        family.add_metric(labels, cumulative, child.sum)


@dataclass(frozen=True)
class Metrics:
    """Every metric the gateway exports."""

    registry: CollectorRegistry
    requests: LoopCounter
    messages: LoopCounter
    ignored: LoopCounter
    duplicates: LoopCounter
    delivery_latency: LoopHistogram
    retries: LoopCounter
    dead_letters: LoopCounter
    queue_depth: Gauge
    dead_letter_depth: Gauge
    intake_holding: Gauge
    intake_hold: LoopHistogram
    reloads: LoopCounter
    mapping_info: Gauge
    token_refreshes: LoopCounter
    tokens_issued: LoopCounter
    upstream_errors: LoopCounter
    lookups: LoopCounter
    media: LoopCounter

    def render(self) -> bytes:
        return generate_latest(self.registry)


def create_metrics() -> Metrics:
    """Create a fresh registry with all metrics."""
    r = CollectorRegistry(auto_describe=True)
    # the process's own (CPU, memory, descriptors), the interpreter's, and its garbage
    # collections by generation: prometheus_client's default collectors, read at scrape
    for collector in (PROCESS_COLLECTOR, PLATFORM_COLLECTOR, GC_COLLECTOR):
        r.register(collector)
    return Metrics(
        registry=r,
        requests=LoopCounter(
            "byoc_http_requests",
            "HTTP requests served",
            ["listener", "endpoint", "status"],
            registry=r,
        ),
        messages=LoopCounter(
            "byoc_messages",
            "Messages handled, by channel, route, direction and outcome",
            ["mapping", "channel", "route", "direction", "outcome"],
            registry=r,
        ),
        ignored=LoopCounter(
            "byoc_events_ignored",
            "Webhook events acknowledged and ignored",
            ["mapping", "route"],
            registry=r,
        ),
        duplicates=LoopCounter(
            "byoc_events_duplicate", "Webhook events dropped as duplicates", ["mapping"], registry=r
        ),
        delivery_latency=LoopHistogram(
            "byoc_delivery_latency_seconds",
            "From webhook receipt to CXone acceptance",
            ["mapping", "action"],
            buckets=_LATENCY_BUCKETS,
            registry=r,
        ),
        retries=LoopCounter(
            "byoc_retries", "Retried upstream calls", ["upstream", "reason"], registry=r
        ),
        dead_letters=LoopCounter(
            "byoc_dead_letters", "Messages moved to dead letters", ["mapping", "reason"], registry=r
        ),
        queue_depth=Gauge("byoc_queue_depth", "Jobs waiting for delivery to CXone", registry=r),
        dead_letter_depth=Gauge("byoc_dead_letter_depth", "Dead letters kept", registry=r),
        intake_holding=Gauge(
            "byoc_intake_holding",
            "Webhooks waiting now for the workers to drain a queue",
            registry=r,
        ),
        intake_hold=LoopHistogram(
            "byoc_intake_hold_seconds",
            "How long webhooks waited for the workers to drain a queue before being written",
            buckets=(0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
            registry=r,
        ),
        reloads=LoopCounter("byoc_reloads", "Configuration reloads", ["outcome"], registry=r),
        mapping_info=Gauge(
            "byoc_mapping_info", "Loaded mappings (value 1)", ["mapping", "version"], registry=r
        ),
        token_refreshes=LoopCounter(
            "byoc_cxone_token_refreshes", "Access tokens fetched from CXone", registry=r
        ),
        tokens_issued=LoopCounter(
            "byoc_tokens_issued", "Bearer tokens issued to CXone", ["outcome"], registry=r
        ),
        upstream_errors=LoopCounter(
            "byoc_upstream_errors", "Failed upstream calls", ["upstream", "kind"], registry=r
        ),
        lookups=LoopCounter(
            "byoc_lookups",
            "Mapping lookups by outcome (failed: delivered with the fallback)",
            ["mapping", "lookup", "outcome"],
            registry=r,
        ),
        media=LoopCounter(
            "byoc_media_requests",
            "Requests for proxied platform files, by outcome",
            ["mapping", "outcome"],
            registry=r,
        ),
    )


def advance_counter(counter: LoopCounter, total: float) -> None:
    """Raise an unlabelled counter to a running total kept elsewhere (never lowers it)."""
    series = counter.labels()
    if total > series.value:
        series.inc(total - series.value)
