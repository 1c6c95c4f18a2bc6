"""The prometheus_client Collector: renders the Tracker's table and MetricsSink at scrape time.

Rendering cost depends on the number of (source, role) pairs, never on the number of wsis:
live counts are set lengths, histograms are fixed-size integer lists.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import Any

from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.samples import Exemplar

from lwsobs.core.model import Transaction, Wsi
from lwsobs.core.roles import Role
from lwsobs.core.tracker import Tracker
from lwsobs.sinks.metrics.histogram import Histogram
from lwsobs.sinks.metrics.sink import MetricsSink
from lwsobs.sinks.spans.builder import SpanBuilder

ExtraFamilies = Callable[[], Iterable[Metric]]


# (family, help, labels, MetricsSink attribute) for every counter MetricsSink keeps.
COUNTERS: tuple[tuple[str, str, tuple[str, ...], str], ...] = (
    (
        "lwsobs_wsi_created",
        "wsis created, by the role they started in (per role: created + upgrades in"
        " - upgrades out - ended = live)",
        ("source", "role"),
        "created",
    ),
    (
        "lwsobs_wsi_destroyed",
        "wsis that got their WSI_DESTROY, by their final role",
        ("source", "role"),
        "destroyed",
    ),
    (
        "lwsobs_wsi_upgrades",
        "wsis that changed role (e.g. h1-server to ws-server)",
        ("source", "from_role", "to_role"),
        "upgrades",
    ),
    (
        "lwsobs_transactions",
        "transactions ended, by HTTP status class",
        ("source", "role", "code_class"),
        "transactions",
    ),
    (
        "lwsobs_wsi_leaked",
        "wsis flagged by a leak rule (idle and source_lost are suspects)",
        ("source", "role", "rule"),
        "leaked",
    ),
    (
        "lwsobs_wsi_suspects_resolved",
        "leak suspects that got their WSI_DESTROY after all",
        ("source", "role", "rule"),
        "resolved",
    ),
    (
        "lwsobs_wsi_ended",
        "wsis that left the live table, by their role then and how they ended"
        " (destroyed, shutdown, leaked, abandoned)",
        ("source", "role", "end"),
        "ended",
    ),
    (
        "lwsobs_wsi_abandoned",
        "wsis that ended with their producer process (crashed, exited, expired): not leaks",
        ("source", "role", "reason"),
        "abandoned",
    ),
    (
        "lwsobs_transactions_refused",
        "requests the producer answered itself with no callback (also in lwsobs_transactions)",
        ("source", "role"),
        "refused",
    ),
)

# (family, help, MetricsSink attribute) for every histogram, labelled by source and role.
HISTOGRAMS: tuple[tuple[str, str, str], ...] = (
    ("lwsobs_wsi_lifetime_seconds", "wsi lifetime from creation to WSI_DESTROY", "lifetime"),
    (
        "lwsobs_wsi_transactions",
        "transactions carried by each wsi, observed at WSI_DESTROY",
        "per_wsi",
    ),
    (
        "lwsobs_transaction_duration_seconds",
        "transaction duration from request arrival to the end of the response",
        "duration",
    ),
    (
        "lwsobs_transaction_queue_seconds",
        "time a request waited behind earlier pipelined requests on its wsi",
        "queue_wait",
    ),
)


class LwsobsCollector:
    """Registered once per registry; `extra` adds self-metrics of other parts (span export)."""

    def __init__(
        self,
        tracker: Tracker,
        metrics: MetricsSink,
        sampling: SpanBuilder | None = None,
        extra: list[ExtraFamilies] | None = None,
    ) -> None:
        """`sampling`: the span path's builder, whose kept traces exemplars may point at
        (None: spans are off, so no exemplars)."""
        self.tracker = tracker
        self.metrics = metrics
        self.sampling = sampling
        self.extra = extra if extra is not None else []

    def describe(self) -> list[Metric]:
        return []  # no collect() at registration time

    def collect(self) -> Iterator[Metric]:
        yield from self._live()
        for name, doc, labels, attr in COUNTERS:
            yield _counter(name, doc, labels, _relabel(getattr(self.metrics, attr)))
        for name, doc, attr in HISTOGRAMS:
            yield self._histogram(name, doc, getattr(self.metrics, attr))
        for more in self.extra:
            yield from more()

    def _live(self) -> Iterator[Metric]:
        # Every (source, role) ever seen keeps a series, at 0 once its wsis are gone.
        seen = {(source, role.value) for source, role in self.metrics.created}
        seen.update((source, to.value) for source, _, to in self.metrics.upgrades)
        live: dict[tuple[str, str], int] = dict.fromkeys(seen, 0)
        active: dict[tuple[str, str], int] = dict.fromkeys(seen, 0)
        for ctx in self.tracker.contexts:
            for role, wsis in ctx.live.items():
                key = (ctx.source, role.value)
                live[key] = live.get(key, 0) + len(wsis)
            for role, n in ctx.active_transactions.items():
                key = (ctx.source, role.value)
                active[key] = active.get(key, 0) + n
        suspects: dict[tuple[str, str], int] = dict.fromkeys(seen, 0)
        for ctx, by_role in self.tracker.suspects.items():
            for role, wsis in by_role.items():
                key = (ctx.source, role.value)
                suspects[key] = suspects.get(key, 0) + len(wsis)
        yield _gauge("lwsobs_wsi_live", "wsis live now, by role", ("source", "role"), live)
        yield _gauge(
            "lwsobs_transactions_active",
            "transactions bound and not yet dropped",
            ("source", "role"),
            active,
        )
        yield _gauge(
            "lwsobs_wsi_leak_suspects",
            "live wsis currently flagged as leak suspects",
            ("source", "role"),
            suspects,
        )

    def _histogram(
        self, name: str, doc: str, series: Mapping[tuple[str, Role], Histogram]
    ) -> Metric:
        family = HistogramMetricFamily(name, doc, labels=("source", "role"))
        for (source, role), hist in sorted(series.items(), key=_series_order):
            buckets: list[tuple[str, float] | tuple[str, float, Exemplar]] = []
            for (le, count), ex in zip(hist.cumulative(), hist.exemplars, strict=True):
                exemplar = self._exemplar(ex)
                buckets.append((le, count, exemplar) if exemplar else (le, count))
            family.add_metric([source, role.value], buckets, hist.sum)
        return family

    def _exemplar(self, ex: tuple[object, float] | None) -> Exemplar | None:
        sampling = self.sampling
        if ex is None or sampling is None:
            return None
        obj, value = ex
        if not isinstance(obj, Transaction | Wsi) or not sampling.known_kept(obj):
            return None
        ids = sampling.ids
        if isinstance(obj, Transaction):
            trace = ids.txn_trace(obj)
            return _make_exemplar(trace.trace_id, trace.span_id, value, obj.end_ns)
        return _make_exemplar(ids.wsi_trace_id(obj), ids.wsi_span_id(obj), value, obj.span_end_ns)


def _series_order(item: tuple[tuple[str, Role], Histogram]) -> tuple[str, str]:
    return (item[0][0], item[0][1].value)


def _make_exemplar(trace_id: int, span_id: int, value: float, ts_ns: int | None) -> Exemplar:
    labels = {"trace_id": f"{trace_id:032x}", "span_id": f"{span_id:016x}"}
    return Exemplar(labels, value, None if ts_ns is None else ts_ns / 1e9)


def _relabel(counts: Mapping[Any, int]) -> dict[tuple[str, ...], int]:
    return {tuple(str(v) for v in key): n for key, n in counts.items()}


def _counter(
    name: str, doc: str, labels: tuple[str, ...], values: Mapping[tuple[str, ...], int]
) -> Metric:
    family = CounterMetricFamily(name, doc, labels=labels)
    for key in sorted(values):
        family.add_metric(list(key), values[key])
    return family


def _gauge(
    name: str, doc: str, labels: tuple[str, ...], values: Mapping[tuple[str, str], int]
) -> Metric:
    family = GaugeMetricFamily(name, doc, labels=labels)
    for key in sorted(values):
        family.add_metric(list(key), values[key])
    return family


def table_bounds(tracker: Tracker) -> Iterator[Metric]:
    """What the Tracker's bounds cost: evicted wsis and source names folded into "other".

    Both are 0 until a producer pushes past `max_wsis` / `max_sources`; a rise means the
    table or the label set is at its cap and data is being forgotten, never silently.
    """
    evicted = CounterMetricFamily(
        "lwsobs_wsi_evicted",
        "live wsis dropped from the table to stay within LWSOBS_MAX_WSIS (flagged 'evicted')",
    )
    evicted.add_metric([], tracker.evicted)
    yield evicted
    folded = CounterMetricFamily(
        "lwsobs_wsi_sources_folded",
        'source names beyond LWSOBS_MAX_SOURCE_LABELS, counted under source="other"',
    )
    folded.add_metric([], tracker.sources_folded)
    yield folded
