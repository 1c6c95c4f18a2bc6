"""Connect-phase metrics of client wsis: DNS and connect time, failed connects.

The core's families cover every wsi alike; these phases exist only for outbound connections, so
they are rendered through the collector's `extra` hook (the same one the span export uses for its
self-metrics) from integer histograms, one provider per Observer.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterator
from typing import TYPE_CHECKING
from weakref import WeakKeyDictionary

from prometheus_client.core import CounterMetricFamily, HistogramMetricFamily, Metric

from lwsobs.core.policy import NS
from lwsobs.sinks.metrics.histogram import DURATION_BUCKETS_S, Histogram

if TYPE_CHECKING:
    from lwsobs.observer import Observer

PHASES = ("dns", "connect")


class ClientMetrics:
    """Per (source, phase) histograms and per source failed-connect counts."""

    def __init__(self) -> None:
        self.phases: dict[tuple[str, str], Histogram] = {}
        self.failed: dict[str, int] = defaultdict(int)

    def observe(self, source: str, phase: str, duration_ns: int) -> None:
        key = (source, phase)
        hist = self.phases.get(key)
        if hist is None:
            hist = self.phases[key] = Histogram(DURATION_BUCKETS_S)
        hist.observe(max(0, duration_ns) / NS)

    def connect_failed(self, source: str) -> None:
        self.failed[source] += 1

    def families(self) -> Iterator[Metric]:
        hist = HistogramMetricFamily(
            "lwsobs_client_connect_seconds",
            "time an outbound connection spent resolving its host (dns) and connecting (connect,"
            " TLS included)",
            labels=("source", "phase"),
        )
        for (source, phase), h in sorted(self.phases.items()):
            hist.add_metric([source, phase], h.cumulative(), h.sum)
        yield hist
        failed = CounterMetricFamily(
            "lwsobs_client_connect_failed",
            "outbound connection attempts that failed (refused, DNS error, timeout, TLS error)",
            labels=("source",),
        )
        for source in sorted(self.failed):
            failed.add_metric([source], self.failed[source])
        yield failed


_by_observer: WeakKeyDictionary[Observer, ClientMetrics] = WeakKeyDictionary()


def client_metrics(observer: Observer) -> ClientMetrics:
    """The observer's ClientMetrics, registered with its collector on first use."""
    metrics = _by_observer.get(observer)
    if metrics is None:
        metrics = _by_observer[observer] = ClientMetrics()
        observer.collector.extra.append(metrics.families)
    return metrics
