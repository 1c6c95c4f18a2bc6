"""From received bytes to applied events: parse, sequence, count, and hand the rest to a consumer.

Every transport (UDP, unix datagram, HTTP, file replay) ends here, so the rules of wire-v1 live
in one place: a bad line is counted by reason and never spoils its neighbours, a duplicate is
counted and never applied twice, a gap is counted and told to the consumer before the event that
follows it, and a source that goes quiet is reported once. Pure: no clock, no socket, no logging;
the caller passes `now` in nanoseconds (lwsobs.clock.now_ns, which never goes backwards).

Memory is bounded: at most `max_sources` sources are remembered (sequence, liveness, departed),
and at most `max_label_sources` distinct sources get their own label on the per-source counters;
the others are folded into source="other" and the folding is counted.
"""

from __future__ import annotations

import math
from collections import OrderedDict
from collections.abc import Callable, Iterator
from enum import StrEnum
from typing import Final, NamedTuple, ParamSpec, Protocol

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric

from lwsobs.sources.lws.sequence import DEFAULT_MAX_SOURCES, SequenceTracker, SourceRun
from lwsobs.sources.lws.wire import BYE, HELLO, Event, RejectReason, parse_datagram, source_label

NS: Final = 1_000_000_000
DEFAULT_SILENCE_LIMIT_S: Final = 30.0
DEFAULT_MAX_LABEL_SOURCES: Final = 100
OTHER: Final = "other"
"""The source label of every source beyond `max_label_sources`."""

TRANSPORTS: Final = ("udp", "unix", "http", "file")
"""Transports always present in the counters (at 0 until used); others appear when first used."""

_P = ParamSpec("_P")


class DropReason(StrEnum):
    """Why a transport threw a whole datagram away before the pipeline saw it."""

    OVERLOAD = "overload"  # read while the pipeline was over its time budget: shed, not parsed
    OVERSIZE = "oversize"  # larger than the wire's datagram limit (unix sockets allow more)


class EventConsumer(Protocol):
    """What the pipeline drives: the lws decoder (or a test's recorder) implements this.

    Calls arrive in the order the pipeline applies lines, on the thread that feeds it. An
    exception raised here is counted (lwsobs_ingest_consumer_errors_total, `last_error`) and
    swallowed, so one bad event never costs the lines after it.
    """

    def feed(self, event: Event) -> None:
        """Every applied event, in order, pseudo-events (HELLO, HEARTBEAT, BYE...) included."""

    def lines_lost(self, src: str, count: int) -> None:
        """`count` lines of `src` went missing just before the next event fed for it.

        The consumer marks findings for `src` uncertain (wire-v1, "Sequence gaps").
        """

    def source_silent(self, src: str, now_ns: int) -> None:
        """`src` sent nothing for longer than the silence limit (never after its BYE).

        Its live wsis become leak suspects. Reported once; if `src` speaks again it is live
        again (its events simply resume) and may be reported again later.
        """


class TimedConsumer(EventConsumer, Protocol):
    """A consumer that also wants the clock: the lws decoder ends sources whose process is
    gone (its pid left this host, or it stayed silent past the source expiry)."""

    def tick(self, now_ns: int) -> None:
        """Called on every pipeline tick, after the silence checks."""


class Counts(NamedTuple):
    """The judgement on one body: valid lines (duplicates included) and refused lines."""

    accepted: int
    rejected: int


class IngestPipeline:
    """Applies wire-v1 lines from any transport to one EventConsumer, with the self-metrics."""

    def __init__(
        self,
        consumer: EventConsumer,
        *,
        silence_limit_s: float = DEFAULT_SILENCE_LIMIT_S,
        max_sources: int = DEFAULT_MAX_SOURCES,
        max_label_sources: int = DEFAULT_MAX_LABEL_SOURCES,
    ) -> None:
        if not 0 < silence_limit_s < math.inf:
            raise ValueError(f"silence_limit_s must be positive and finite, got {silence_limit_s}")
        if max_label_sources < 0:
            raise ValueError(f"max_label_sources must be >= 0, got {max_label_sources}")
        self.consumer = consumer
        # only a TimedConsumer has one: looked up once, not on every tick
        self._consumer_tick: Callable[[int], None] | None = getattr(consumer, "tick", None)
        self.silence_limit_ns = round(silence_limit_s * NS)
        self.max_sources = max_sources
        self.max_label_sources = max_label_sources
        self.sequence = SequenceTracker(max_sources)  # validates max_sources
        # counters, all monotonic
        self.lines: dict[str, int] = dict.fromkeys(TRANSPORTS, 0)
        self.rejected: dict[tuple[str, RejectReason], int] = {}
        self.lost: dict[str, int] = {}  # by source label
        self.duplicates: dict[str, int] = {}  # by source label
        self.dropped: dict[DropReason, int] = dict.fromkeys(DropReason, 0)
        self.silent_total = 0
        self.folded = 0  # distinct sources counted under OTHER (as far as remembered)
        self.consumer_errors = 0
        self.last_error: Exception | None = None
        # per-source state, least recently heard first
        self._live: OrderedDict[str, int] = OrderedDict()  # src -> time of its last line
        self._departed: OrderedDict[str, int] = OrderedDict()  # src -> seq of its BYE
        self._hellos: OrderedDict[str, tuple[int | None, int]] = OrderedDict()  # src -> pid, t
        self._labelled: set[str] = set()
        self._folded: OrderedDict[str, None] = OrderedDict()

    # -- feeding -------------------------------------------------------------------------------

    def feed_datagram(self, data: bytes, transport: str, now_ns: int) -> None:
        """One UDP or unix datagram: one or more whole lines."""
        self.feed_lines(data, transport, now_ns)

    def feed_lines(self, data: bytes, transport: str, now_ns: int) -> Counts:
        """A body of lines (HTTP, a slice of a replayed file); returns its counts for the reply."""
        events, rejections = parse_datagram(data)
        self.lines[transport] = self.lines.get(transport, 0) + len(events) + len(rejections)
        if rejections:
            rejected = self.rejected
            for rejection in rejections:
                key = (transport, rejection.reason)
                rejected[key] = rejected.get(key, 0) + 1
        # The hot loop. A run of lines from one source, each the successor of the one before,
        # needs none of _apply's checks: the run's first line went through them (the source is
        # heard and in order, not departed), and only a pseudo-event (HELLO, BYE...) or another
        # source can change that, so those break the run and take the full path again.
        consumer_feed = self.consumer.feed
        run_src: str | None = None
        run: SourceRun | None = None
        for event in events:
            if run is not None and event.src == run_src and event.r >= 0:
                seq = event.seq
                if seq == run.last + 1:  # type: ignore[operator]  # an open run has a last seq
                    run.last = seq
                    run.last_t = event.t
                    run.last_mono = event.mono
                    try:
                        consumer_feed(event)
                    except Exception as exc:  # as _call: the lines after it still apply
                        self.consumer_errors += 1
                        self.last_error = exc
                    continue
            self._apply(event, now_ns)
            run_src = event.src
            run = self.sequence.run(run_src)
        return Counts(len(events), len(rejections))

    def note_dropped(self, reason: DropReason, count: int = 1) -> None:
        """A transport threw `count` datagrams away unparsed (they reappear as sequence gaps)."""
        self.dropped[reason] += count

    def _apply(self, event: Event, now: int) -> None:
        src = event.src
        if event.r == HELLO and self._hellos.get(src) != (event.pid, event.t):
            # a (re)start: its seq begins again, and it is back if it had said BYE. A HELLO
            # seen before (same pid and time: a retried POST, a duplicated datagram) is not,
            # nor is the HELLO of the process already heard, arriving after its later lines
            # (a reorder: it is judged below as the duplicate it is).
            self._hellos[src] = (event.pid, event.t)
            self._hellos.move_to_end(src)
            if len(self._hellos) > self.max_sources:
                self._hellos.popitem(last=False)
            if not self.sequence.is_behind(src, event.seq, event.t, event.mono):
                self.sequence.reset(src)
                self._departed.pop(src, None)
        elif self._departed and src in self._departed:
            if event.seq <= self._departed[src]:
                # a straggler from before the BYE, reordered behind it: the source stays gone
                self._count(self.duplicates, src, 1)
                return
            del self._departed[src]  # lines after BYE without a HELLO: take them as a new start
        verdict = self.sequence.observe(src, event.seq, event.t, event.mono)
        self._heard(src, now)
        if not verdict.apply:
            self._count(self.duplicates, src, 1)
            return
        if verdict.lost:
            self._count(self.lost, src, verdict.lost)
            self._call(self.consumer.lines_lost, src, verdict.lost)
        self._call(self.consumer.feed, event)
        if event.r == BYE:
            self.sequence.forget(src)
            self._live.pop(src, None)
            self._departed[src] = event.seq
            if len(self._departed) > self.max_sources:
                self._departed.popitem(last=False)

    def _heard(self, src: str, now: int) -> None:
        live = self._live
        if src in live:
            live.move_to_end(src)
        elif len(live) >= self.max_sources:
            # too many sources at once: the one heard from longest ago is given up as silent
            old, _ = live.popitem(last=False)
            self._silent(old, now)
        live[src] = now

    # -- time ----------------------------------------------------------------------------------

    def tick(self, now_ns: int) -> None:
        """Report each source that sent nothing for longer than the silence limit, once."""
        live = self._live
        limit = self.silence_limit_ns
        while live:
            src, last = next(iter(live.items()))
            if now_ns - last <= limit:
                break
            del live[src]
            self._silent(src, now_ns)
        if self._consumer_tick is not None:
            self._call(self._consumer_tick, now_ns)

    def _silent(self, src: str, now: int) -> None:
        self.silent_total += 1
        self._call(self.consumer.source_silent, src, now)

    # -- helpers -------------------------------------------------------------------------------

    def _call(self, method: Callable[_P, None], *args: _P.args, **kwargs: _P.kwargs) -> None:
        try:
            method(*args, **kwargs)
        except Exception as exc:  # the consumer's bug must not cost the lines after it
            self.consumer_errors += 1
            self.last_error = exc

    def _count(self, counter: dict[str, int], src: str, n: int) -> None:
        label = self._label(src)
        counter[label] = counter.get(label, 0) + n

    def _label(self, src: str) -> str:
        """The program name (as the wsi metrics label it), or OTHER past the label limit."""
        name = source_label(src)
        if name in self._labelled:
            return name
        if len(self._labelled) < self.max_label_sources:
            self._labelled.add(name)
            return name
        if name not in self._folded:
            self.folded += 1
            self._folded[name] = None
            if len(self._folded) > self.max_sources:
                self._folded.popitem(last=False)
        return OTHER

    # -- reading -------------------------------------------------------------------------------

    @property
    def live_sources(self) -> int:
        return len(self._live)

    def is_live(self, src: str) -> bool:
        return src in self._live

    @property
    def lost_total(self) -> int:
        return sum(self.lost.values())

    @property
    def duplicates_total(self) -> int:
        return sum(self.duplicates.values())

    def _with_heard_sources(self, counted: dict[str, int]) -> dict[str, int]:
        """`counted` plus 0 for each live source that has, or would get, a label of its own.

        A per-source counter then exists before its first increment, so `increase()` in an
        alert or a panel sees the first loss (a series born at 1 shows no increase). Pure: it
        predicts the label `_label` would give without taking a slot.
        """
        values = dict(counted)
        room = self.max_label_sources - len(self._labelled)
        for name in sorted({source_label(src) for src in self._live}):
            if name in values:
                continue
            if name in self._labelled:
                values[name] = 0
            elif room > 0 and name not in self._folded:
                values[name] = 0
                room -= 1
        return values

    def families(self) -> Iterator[Metric]:
        """Self-metrics for a prometheus_client collector (LwsobsCollector.extra takes this)."""
        lines = CounterMetricFamily(
            "lwsobs_ingest_lines",
            "wire lines received (accepted or rejected), by transport",
            labels=("transport",),
        )
        for transport, n in self.lines.items():
            lines.add_metric([transport], n)
        yield lines
        rejected = CounterMetricFamily(
            "lwsobs_ingest_rejected",
            "wire lines refused, by transport and reason",
            labels=("transport", "reason"),
        )
        for transport in self.lines:
            for reason in RejectReason:
                rejected.add_metric(
                    [transport, reason.value], self.rejected.get((transport, reason), 0)
                )
        yield rejected
        lost = CounterMetricFamily(
            "lwsobs_ingest_lost",
            "lines missing from a source's sequence (gaps), by source",
            labels=("source",),
        )
        for source, n in sorted(self._with_heard_sources(self.lost).items()):
            lost.add_metric([source], n)
        yield lost
        duplicates = CounterMetricFamily(
            "lwsobs_ingest_duplicates",
            "lines at or below their source's last sequence number, not applied, by source",
            labels=("source",),
        )
        for source, n in sorted(self._with_heard_sources(self.duplicates).items()):
            duplicates.add_metric([source], n)
        yield duplicates
        folded = CounterMetricFamily(
            "lwsobs_ingest_sources_folded",
            f'sources counted as source="{OTHER}" once the per-source label limit was reached',
        )
        folded.add_metric([], self.folded)
        yield folded
        sources = GaugeMetricFamily(
            "lwsobs_ingest_sources", "sources heard from within the silence limit"
        )
        sources.add_metric([], len(self._live))
        yield sources
        silent = CounterMetricFamily(
            "lwsobs_ingest_sources_silent", "times a source was declared lost for silence"
        )
        silent.add_metric([], self.silent_total)
        yield silent
        dropped = CounterMetricFamily(
            "lwsobs_ingest_dropped",
            "datagrams thrown away unparsed by a transport, by reason",
            labels=("reason",),
        )
        for drop_reason, n in self.dropped.items():
            dropped.add_metric([drop_reason.value], n)
        yield dropped
        errors = CounterMetricFamily(
            "lwsobs_ingest_consumer_errors", "events or notices the decoder failed on"
        )
        errors.add_metric([], self.consumer_errors)
        yield errors
