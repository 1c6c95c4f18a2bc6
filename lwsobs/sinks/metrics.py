"""Metrics aggregation: counters and histograms as plain integers, keyed by bounded labels.

The hot path only bumps integers here; the Collector (collector.py) renders them at scrape time.
Live counts are not kept here at all: they are read from the Tracker's table.
"""

from __future__ import annotations

from collections import defaultdict

from lwsobs.core.model import Transaction, Wsi
from lwsobs.core.policy import NS
from lwsobs.core.roles import SUSPECT_RULES, Role, code_class
from lwsobs.sinks.base import NullSink
from lwsobs.sinks.histogram import (
    DURATION_BUCKETS_S,
    LIFETIME_BUCKETS_S,
    TRANSACTIONS_BUCKETS,
    Histogram,
)

SourceRole = tuple[str, Role]


class MetricsSink(NullSink):
    """Counts what the Tracker reports; every key is (source, role[, closed-set value])."""

    def __init__(self) -> None:
        self.created: dict[SourceRole, int] = defaultdict(int)
        self.destroyed: dict[SourceRole, int] = defaultdict(int)
        self.upgrades: dict[tuple[str, Role, Role], int] = defaultdict(int)
        self.transactions: dict[tuple[str, Role, str], int] = defaultdict(int)
        self.leaked: dict[tuple[str, Role, str], int] = defaultdict(int)
        self.resolved: dict[tuple[str, Role, str], int] = defaultdict(int)
        self.lifetime: dict[SourceRole, Histogram] = {}
        self.per_wsi: dict[SourceRole, Histogram] = {}
        self.duration: dict[SourceRole, Histogram] = {}
        self.queue_wait: dict[SourceRole, Histogram] = {}

    def wsi_opened(self, wsi: Wsi) -> None:
        self.created[(wsi.context.source, wsi.role)] += 1

    def role_changed(self, wsi: Wsi, old: Role) -> None:
        self.upgrades[(wsi.context.source, old, wsi.role)] += 1

    def transaction_ended(self, txn: Transaction) -> None:
        key = (txn.wsi.context.source, txn.role)
        self.transactions[(key[0], key[1], code_class(txn.status))] += 1
        end = txn.end_ns if txn.end_ns is not None else txn.start_ns
        duration = self.duration.get(key)
        if duration is None:
            duration = self.duration[key] = Histogram(DURATION_BUCKETS_S)
            self.queue_wait[key] = Histogram(DURATION_BUCKETS_S)
        duration.observe(max(0, end - txn.arrived_ns) / NS, txn)
        self.queue_wait[key].observe(txn.queue_ns / NS)

    def wsi_flagged(self, wsi: Wsi, rule: str, certain: bool) -> None:
        self.leaked[(wsi.context.source, wsi.role, rule)] += 1

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
