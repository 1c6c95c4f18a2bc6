"""Metrics aggregation: counters and histograms as plain integers, keyed by bounded labels.

The hot path only bumps integers here; the Collector (collector.py) renders them at scrape time.
Live counts are not kept here at all: they are read from the Tracker's table.
"""

from __future__ import annotations

from collections import defaultdict

from lwsobs.core.model import Transaction, Wsi
from lwsobs.core.policy import NS
from lwsobs.core.roles import CODE_CLASSES, SUSPECT_RULES, Role, code_class_index
from lwsobs.core.sink import BaseSink
from lwsobs.sinks.metrics.histogram import (
    DURATION_BUCKETS_S,
    LIFETIME_BUCKETS_S,
    TRANSACTIONS_BUCKETS,
    Histogram,
)

SourceRole = tuple[str, Role]


class TransactionSeries:
    """Per (source, role) transaction counts by code class and the two duration histograms.

    Kept as one object so the per-request path does a single lookup.
    """

    __slots__ = ("by_class", "duration", "queue_wait")

    def __init__(self) -> None:
        self.by_class = [0] * len(CODE_CLASSES)
        self.duration = Histogram(DURATION_BUCKETS_S)
        self.queue_wait = Histogram(DURATION_BUCKETS_S)


class MetricsSink(BaseSink):
    """Counts what the Tracker reports; every key is (source, role[, closed-set value])."""

    def __init__(self) -> None:
        self.created: dict[SourceRole, int] = defaultdict(int)
        self.destroyed: dict[SourceRole, int] = defaultdict(int)
        self.upgrades: dict[tuple[str, Role, Role], int] = defaultdict(int)
        self.leaked: dict[tuple[str, Role, str], int] = defaultdict(int)
        self.resolved: dict[tuple[str, Role, str], int] = defaultdict(int)
        self.ended: dict[tuple[str, Role, str], int] = defaultdict(int)
        self.abandoned: dict[tuple[str, Role, str], int] = defaultdict(int)
        self.refused: dict[SourceRole, int] = defaultdict(int)
        self.lifetime: dict[SourceRole, Histogram] = {}
        self.per_wsi: dict[SourceRole, Histogram] = {}
        self.series: dict[SourceRole, TransactionSeries] = {}
        # The series of the last transaction: requests come in runs from one (source, role).
        # Only transaction_ended adds to `series` and none is ever replaced, so a match of both
        # objects by identity is the same series a lookup would find.
        self._last_source: str | None = None
        self._last_role: Role | None = None
        self._last_series: TransactionSeries | None = None

    @property
    def transactions(self) -> dict[tuple[str, Role, str], int]:
        return {
            (source, role, CODE_CLASSES[i]): n
            for (source, role), series in self.series.items()
            for i, n in enumerate(series.by_class)
            if n
        }

    @property
    def duration(self) -> dict[SourceRole, Histogram]:
        return {key: series.duration for key, series in self.series.items()}

    @property
    def queue_wait(self) -> dict[SourceRole, Histogram]:
        return {key: series.queue_wait for key, series in self.series.items()}

    def transaction_ended(self, txn: Transaction) -> None:
        # The per-request path: one lookup (usually none), then integer and list arithmetic.
        source = txn.wsi.context.source
        role = txn.role
        series = self._last_series
        if series is None or source is not self._last_source or role is not self._last_role:
            key = (source, role)
            series = self.series.get(key)
            if series is None:
                series = self.series[key] = TransactionSeries()
            self._last_source, self._last_role, self._last_series = source, role, series
        series.by_class[code_class_index(txn.status)] += 1
        end = txn.end_ns
        arrived = txn.arrived_ns
        series.duration.observe(
            (end - arrived) / NS if end is not None and end > arrived else 0.0, txn
        )
        start = txn.start_ns
        series.queue_wait.observe((start - arrived) / NS if start > arrived else 0.0)

    def wsi_opened(self, wsi: Wsi) -> None:
        self.created[(wsi.context.source, wsi.role)] += 1

    def role_changed(self, wsi: Wsi, old: Role) -> None:
        self.upgrades[(wsi.context.source, old, wsi.role)] += 1

    def wsi_flagged(self, wsi: Wsi, rule: str, certain: bool) -> None:
        self.leaked[(wsi.context.source, wsi.role, rule)] += 1

    def wsi_left(self, wsi: Wsi) -> None:
        self.ended[(wsi.context.source, wsi.role, wsi.end_reason or "")] += 1

    def wsi_abandoned(self, wsi: Wsi, reason: str) -> None:
        self.abandoned[(wsi.context.source, wsi.role, reason)] += 1

    def transaction_refused(self, txn: Transaction) -> None:
        self.refused[(txn.wsi.context.source, txn.role)] += 1

    def wsi_destroyed(self, wsi: Wsi) -> None:
        key = (wsi.context.source, wsi.role)
        self.destroyed[key] += 1
        if wsi.leak is not None and wsi.leak in SUSPECT_RULES:
            self.resolved[(key[0], key[1], wsi.leak)] += 1
        lifetime = self.lifetime.get(key)
        if lifetime is None:
            lifetime = self.lifetime[key] = Histogram(LIFETIME_BUCKETS_S)
            self.per_wsi[key] = Histogram(TRANSACTIONS_BUCKETS)
        end = wsi.end_ns if wsi.end_ns is not None else wsi.created_ns
        lifetime.observe(max(0, end - wsi.created_ns) / NS, wsi)
        self.per_wsi[key].observe(float(wsi.transactions))
