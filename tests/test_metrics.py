"""gateway.metrics: the loop's counters and histograms expose what prometheus_client's do."""

from __future__ import annotations

import pytest
from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest

from gateway.metrics import LoopCounter, LoopHistogram, advance_counter

BUCKETS = (0.005, 0.01, 0.25, 1, 300)


def _exposed(registry: CollectorRegistry) -> list[str]:
    """The text exposition, without the `_created` series prometheus_client adds."""
    text = generate_latest(registry).decode()
    return sorted(line for line in text.splitlines() if "_created" not in line)


def test_the_same_updates_expose_the_same_samples_as_prometheus_client() -> None:
    ours, theirs = CollectorRegistry(), CollectorRegistry()
    counters = (
        LoopCounter("t_requests", "Requests", ["listener", "status"], registry=ours),
        Counter("t_requests", "Requests", ["listener", "status"], registry=theirs),
    )
    histograms = (
        LoopHistogram("t_latency_seconds", "Latency", ["route"], registry=ours, buckets=BUCKETS),
        Histogram("t_latency_seconds", "Latency", ["route"], registry=theirs, buckets=BUCKETS),
    )
    # unlabelled, never updated: both show 0
    LoopCounter("t_refreshes", "Refreshes", registry=ours)
    Counter("t_refreshes", "Refreshes", registry=theirs)
    for counter in counters:
        counter.labels("cxone", "200").inc()
        counter.labels("cxone", "200").inc(2.5)
        counter.labels("platform", "404").inc()
    for histogram in histograms:
        for seconds in (0.001, 0.005, 0.0051, 0.3, 1, 400):  # on bounds, between, past all
            histogram.labels("dm").observe(seconds)
        histogram.labels("post").observe(0.02)
    assert _exposed(ours) == _exposed(theirs)
    assert any(
        line.startswith('t_latency_seconds_bucket{le="+Inf",route="dm"} 6.0')
        for line in _exposed(ours)
    )


def test_label_values_are_exposed_as_text_one_series_per_text() -> None:
    registry = CollectorRegistry()
    counter = LoopCounter("t_status", "Statuses", ["status"], registry=registry)
    counter.labels(404).inc()
    counter.labels("404").inc()
    assert counter.labels(404) is counter.labels("404")
    assert registry.get_sample_value("t_status_total", {"status": "404"}) == 2.0


def test_wrong_label_counts_and_negative_increments_are_refused() -> None:
    counter = LoopCounter("t_refused", "Refused", ["a", "b"], registry=CollectorRegistry())
    with pytest.raises(ValueError, match=r"takes the labels \('a', 'b'\)"):
        counter.labels("only one")
    with pytest.raises(ValueError, match="only goes up"):
        counter.labels("x", "y").inc(-1)


def test_advance_counter_raises_to_a_total_and_never_lowers() -> None:
    registry = CollectorRegistry()
    counter = LoopCounter("t_fetches", "Fetches", registry=registry)
    advance_counter(counter, 5)
    advance_counter(counter, 3)
    assert registry.get_sample_value("t_fetches_total") == 5.0
