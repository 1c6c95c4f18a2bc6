"""Delivering a recorded stream the way a lossy datagram network might: dropped, doubled, late.

`deliver` is deterministic for a given Random, and reports what it did, so a test can compute
independently what the pipeline must count. `run` plays a delivery through the real pipeline,
decoder and Tracker and returns a JSON-ready snapshot of everything a user could observe.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from typing import Any

from lwsobs.core.tracker import Tracker
from lwsobs.sinks.live import LiveView
from lwsobs.sources.lws.pipeline import IngestPipeline
from tests.reliability.consumers import CountingDecoder

T0 = 1_800_000_000 * 10**9


@dataclass
class Delivery:
    """Indexes into the original lines, in arrival order; what was dropped and doubled."""

    order: list[int]
    dropped: set[int] = field(default_factory=set)
    doubled: set[int] = field(default_factory=set)


def deliver(
    n: int,
    rnd: random.Random,
    *,
    drop: float = 0.05,
    double: float = 0.05,
    reorder: float = 0.05,
    distance: int = 8,
    keep: frozenset[int] = frozenset({0}),
) -> Delivery:
    """Each line is dropped with p=`drop` (except those in `keep`), doubled with p=`double`
    (the copy arrives up to `distance` places later), and a share `reorder` of the lines
    swap with a neighbour up to `distance` places later (the first line stays first)."""
    out = Delivery([])
    for i in range(n):
        if i not in keep and rnd.random() < drop:
            out.dropped.add(i)
            continue
        out.order.append(i)
        if rnd.random() < double:
            out.doubled.add(i)
            out.order.insert(min(len(out.order), len(out.order) + rnd.randint(0, distance)), i)
    order = out.order
    for pos in range(1, len(order)):
        if rnd.random() < reorder:
            other = min(len(order) - 1, pos + rnd.randint(1, distance))
            order[pos], order[other] = order[other], order[pos]
    return out


def run(
    lines: list[bytes], delivery: Delivery, rnd: random.Random, *, silence_at_end: bool = True
) -> tuple[IngestPipeline, CountingDecoder, LiveView]:
    """Feed the delivery in datagrams of 1-8 lines, then let the silence limit pass."""
    consumer = CountingDecoder(keep_pairs=True)
    live = LiveView(consumer.tracker, max_leaks=100_000)
    consumer.tracker.add_sink(live)
    pipeline = IngestPipeline(consumer, silence_limit_s=30)
    now = T0
    pos = 0
    while pos < len(delivery.order):
        size = rnd.randint(1, 8)
        chunk = delivery.order[pos : pos + size]
        pos += size
        now += 1_000_000
        pipeline.feed_datagram(b"\n".join(lines[i] for i in chunk), "udp", now)
    if silence_at_end:
        pipeline.tick(now + 31 * 10**9)
    return pipeline, consumer, live


def snapshot(pipeline: IngestPipeline, consumer: CountingDecoder, live: LiveView) -> dict[str, Any]:
    """Everything observable after a run, as sorted plain data."""
    metrics = consumer.metrics
    tracker: Tracker = consumer.tracker

    def table(counts: Any) -> list[list[Any]]:
        return sorted([*(str(k) for k in key), n] for key, n in counts.items())

    return {
        "lines": dict(pipeline.lines),
        "lost": dict(pipeline.lost),
        "duplicates": dict(pipeline.duplicates),
        "silent": pipeline.silent_total,
        "fed": consumer.fed,
        "created": table(metrics.created),
        "destroyed": table(metrics.destroyed),
        "upgrades": table(metrics.upgrades),
        "leaked": table(metrics.leaked),
        "resolved": table(metrics.resolved),
        "transactions": table(metrics.transactions),
        "flags": [
            [
                w.id,
                w.role.value,
                w.leak,
                w.end_reason,
                bool((w.attrs or {}).get("lws.leak.uncertain")),
            ]
            for w in live.leaks
        ],
        "live": sorted([w.id, w.role.value, w.transactions] for w in tracker.live_wsis()),
        "decoder": dict(sorted(consumer.decoder.stats.items())),
    }
