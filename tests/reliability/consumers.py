"""Wrappers around the real lws decoder that count what the pipeline applied to it."""

from __future__ import annotations

from collections import Counter

from lwsobs.core.tracker import Tracker
from lwsobs.sinks.metrics.sink import MetricsSink
from lwsobs.sources.lws.decoder import LwsDecoder
from lwsobs.sources.lws.wire import Event


class CountingDecoder:
    """An EventConsumer: counts every call, then hands it to a real LwsDecoder.

    `applied` counts (src, seq) pairs so a test can prove that no line was applied twice.
    """

    def __init__(self, tracker: Tracker | None = None, *, keep_pairs: bool = False) -> None:
        self.metrics = MetricsSink()
        self.tracker = tracker if tracker is not None else Tracker([self.metrics])
        self.decoder = LwsDecoder(self.tracker)
        self.fed = 0
        self.lost = 0
        self.silent: list[str] = []
        self.keep_pairs = keep_pairs
        self.applied: Counter[tuple[str, int]] = Counter()

    def feed(self, event: Event) -> None:
        self.fed += 1
        if self.keep_pairs:
            self.applied[(event.src, event.seq)] += 1
        self.decoder.feed(event)

    def lines_lost(self, src: str, count: int) -> None:
        self.lost += count
        self.decoder.lines_lost(src, count)

    def source_silent(self, src: str, now_ns: int) -> None:
        self.silent.append(src)
        self.decoder.source_silent(src, now_ns)


def table_is_consistent(tracker: Tracker) -> bool:
    """The live counter equals the table, every live wsi is live, every suspect is live."""
    in_sets = [w for ctx in tracker.contexts for live in ctx.live.values() for w in live]
    return (
        len(in_sets) == tracker.live_total
        and all(w.end_ns is None for w in in_sets)
        and all(w.end_ns is None and w.leak is not None for w in tracker.suspect_wsis())
    )
