"""The span sink: the hot path appends finished facts; a worker thread samples and exports.

Appending is the only per-request cost. The worker wakes every `delay_s` (or when a batch is
full), asks the sampler about each fact and hands the kept ones to every exporter (OTLP, the
in-memory store), which encode them their own way. A full queue drops new facts and counts
them: nothing is lost silently.

A backend that hangs must not hold the process: `flush` waits a bounded time, and so does
`shutdown`, which then aborts the export in progress (exporters with an `abort()` cut their
connection) and counts what was left as dropped for `shutdown`.
"""

from __future__ import annotations

import logging
import threading
from collections import Counter, deque
from collections.abc import Iterator, Sequence
from typing import Any, Protocol

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric

from lwsobs.core.model import Transaction, Wsi
from lwsobs.core.sink import BaseSink
from lwsobs.sinks.spans.builder import ConnectionFact, SpanBuilder, snapshot

log = logging.getLogger("lwsobs.spans")

Fact = Transaction | ConnectionFact


FLUSH_TIMEOUT_S = 1.0
"""How long `flush` waits by default: an app's cleanup waits this long, then shutdown goes on."""
SHUTDOWN_TIMEOUT_S = 2.0
"""How long `shutdown` lets the worker export what is queued before it gives up."""
ABORT_GRACE_S = 1.0  # after an abort, how long the worker gets to notice and stop


class FactExporter(Protocol):
    def export(self, facts: Sequence[Fact]) -> bool:
        """Deliver sampled facts; False when they could not be delivered."""

    def shutdown(self) -> None: ...


class SpanSink(BaseSink):
    """Feeds the export worker; safe to call only from the thread that drives the Tracker."""

    def __init__(
        self,
        builder: SpanBuilder,
        exporters: Sequence[FactExporter],
        *,
        max_queue: int = 65536,
        batch_size: int = 512,
        delay_s: float = 0.5,
    ) -> None:
        self.builder = builder
        self.exporters = list(exporters)
        # beyond max_queue new facts are dropped (queue_full); a batch_size queue wakes the worker
        self.max_queue = max_queue
        self.batch_size = batch_size
        self.delay_s = delay_s
        self._queue: deque[Fact] = deque()
        self._wake = threading.Event()
        self._stop = False
        self._abandon = False  # shutdown gave up: export nothing more
        self._flush_requested = False
        self._idle = threading.Event()
        self._idle.set()
        self.exported = 0
        self.sampled_out = 0
        self.dropped: Counter[str] = Counter()
        self._worker: threading.Thread | None = None

    # -- hot path ----------------------------------------------------------------------------

    def transaction_ended(self, txn: Transaction) -> None:
        self._push(txn)

    def wsi_span_ended(self, wsi: Wsi) -> None:
        self._push(snapshot(wsi))

    def _push(self, fact: Fact) -> None:
        queue = self._queue
        if len(queue) >= self.max_queue:
            self._overflow(fact)
            return
        queue.append(fact)
        if len(queue) == self.batch_size:
            self._wake.set()

    def _overflow(self, fact: Fact) -> None:
        self.dropped["queue_full"] += 1

    # -- worker ------------------------------------------------------------------------------

    def start(self) -> None:
        if self._worker is None:
            self._stop = False
            self._worker = threading.Thread(
                target=self._run, name="lwsobs-span-export", daemon=True
            )
            self._worker.start()

    def _run(self) -> None:
        while True:
            woken = self._wake.wait(self.delay_s)
            self._wake.clear()
            # A full batch wakes the worker early: send full batches only, so every request
            # to the backend carries batch_size spans. The timer, a flush or a stop sends all
            # that is queued; a stop also what arrives meanwhile.
            everything = not woken or self._flush_requested or self._stop
            self._flush_requested = False
            try:
                self._drain(everything)
                if self._stop:
                    self._drain_all()
            except Exception:  # the worker must outlive any bug in an exporter or the sampler
                log.exception("span export worker failed; it carries on")
                self._idle.set()
            if self._stop:
                return

    def _drain(self, everything: bool = True) -> None:
        """Export full batches, and with `everything` also the rest of what is queued now.

        Facts pushed while a batch is exported wait for the next full batch or the next drain:
        chasing them would send a stream of small requests whenever exporting is slow.
        """
        queue = self._queue
        batch = self.batch_size
        owed = len(queue) if everything else 0
        while (len(queue) >= batch or (owed > 0 and queue)) and not self._abandon:
            self._idle.clear()
            take = min(len(queue), batch)
            owed -= take
            kept = self._sample([queue.popleft() for _ in range(take)])
            self._export(kept)
        self._idle.set()

    def _drain_all(self) -> None:
        """Drain until nothing is queued, what arrives meanwhile included (stop, no worker)."""
        while self._queue and not self._abandon:
            self._drain(everything=True)

    def _sample(self, facts: list[Fact]) -> list[Fact]:
        return [fact for fact in facts if self._decide(fact)]

    def _decide(self, fact: Fact) -> bool:
        """Whether to keep `fact`; a fact not kept is counted (sampled out, or a build error)."""
        try:
            keep = self.builder.decide(fact)
        except Exception:  # a bad fact must not stop the worker
            log.exception("could not sample a span")
            self.dropped["build_error"] += 1
            return False
        if not keep:
            self.sampled_out += 1
        return keep

    def _export(self, facts: list[Fact]) -> None:
        if not facts:
            return
        ok = True
        for exporter in self.exporters:
            try:
                delivered = exporter.export(facts)
            except Exception:
                log.exception("span exporter %s failed", type(exporter).__name__)
                delivered = False
            ok = ok and delivered
        if ok:
            self.exported += len(facts)
        else:
            self.dropped["export_failed"] += len(facts)

    def flush(self, timeout_s: float = FLUSH_TIMEOUT_S) -> bool:
        """Wait until everything queued so far has been exported (or timed out)."""
        if self._worker is None:
            self._drain_all()
            return True
        pause = threading.Event()
        waited = 0.0
        while True:
            self._flush_requested = True
            self._wake.set()
            if (not self._queue and self._idle.is_set()) or waited >= timeout_s:
                break
            pause.wait(0.01)
            waited += 0.01
        return not self._queue and self._idle.is_set()

    def shutdown(self, timeout_s: float = SHUTDOWN_TIMEOUT_S) -> None:
        """Export what is queued within `timeout_s`, then stop the worker and the exporters.

        If the backend still holds the worker then (it hangs, or is too slow for the queue),
        the export in progress is aborted and whatever is still queued is counted as dropped
        for `shutdown`: the process exits on time and the loss is visible.
        """
        thread = self._worker
        if thread is not None:
            self._stop = True
            self._wake.set()
            thread.join(timeout_s)
            if thread.is_alive():
                self._abandon = True
                self._abort_exports()
                thread.join(ABORT_GRACE_S)
                log.warning(
                    "span export did not finish within %.1f s of shutdown; %d spans dropped",
                    timeout_s,
                    len(self._queue),
                )
            self._worker = None
        else:
            self._drain_all()
        if self._queue:
            self.dropped["shutdown"] += len(self._queue)
            self._queue.clear()
        for exporter in self.exporters:
            try:
                exporter.shutdown()
            except Exception:
                log.exception("span exporter %s failed to shut down", type(exporter).__name__)

    def _abort_exports(self) -> None:
        """Cut the exports in progress (from another thread): exporters that can, stop now."""
        for exporter in self.exporters:
            abort = getattr(exporter, "abort", None)
            if abort is None:
                continue
            try:
                abort()
            except Exception:
                log.exception("span exporter %s failed to abort", type(exporter).__name__)

    # -- self-metrics ------------------------------------------------------------------------

    def families(self) -> Iterator[Metric]:
        exported = CounterMetricFamily("lwsobs_spans_exported", "spans handed to every exporter")
        exported.add_metric([], self.exported)
        yield exported
        sampled = CounterMetricFamily("lwsobs_spans_sampled_out", "spans the sampler dropped")
        sampled.add_metric([], self.sampled_out)
        yield sampled
        dropped = CounterMetricFamily(
            "lwsobs_spans_dropped", "spans lost, by reason", labels=("reason",)
        )
        for reason in ("queue_full", "export_failed", "build_error", "shutdown"):
            dropped.add_metric([reason], self.dropped[reason])
        yield dropped
        queued = GaugeMetricFamily("lwsobs_span_queue_size", "facts waiting to become spans")
        queued.add_metric([], len(self._queue))
        yield queued

    def stats(self) -> dict[str, Any]:
        return {
            "exported": self.exported,
            "sampled_out": self.sampled_out,
            "dropped": dict(self.dropped),
            "queued": len(self._queue),
        }
