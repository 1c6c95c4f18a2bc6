"""The embedded default exporter: the most recent finished traces, kept in memory.

It keeps the sampled facts themselves, grouped by trace id, and builds span JSON only when
/api/traces asks, so keeping traces costs the export worker almost nothing.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Sequence
from typing import Any

from lwsobs.sinks.spans.builder import (
    KIND_NAMES,
    STATUS_NAMES,
    ConnectionFact,
    SpanBuilder,
    SpanData,
)
from lwsobs.sinks.spans.otlp_facts import Fact


class RecentTraces:
    """Keeps at most `max_traces` traces, `max_spans` spans in all, `max_spans_per_trace` each.

    The oldest traces go first when a bound is reached; spans beyond a trace's own bound are
    counted in `truncated` (a keep-alive connection can carry thousands of transactions).
    """

    def __init__(
        self,
        builder: SpanBuilder,
        max_traces: int = 500,
        max_spans: int = 20_000,
        max_spans_per_trace: int = 1000,
    ) -> None:
        self.builder = builder
        self.max_traces = max_traces
        self.max_spans = max_spans
        self.max_spans_per_trace = max_spans_per_trace
        self._traces: OrderedDict[int, list[Fact]] = OrderedDict()
        self._spans = 0
        self._lock = threading.Lock()
        self.truncated = 0

    def export(self, facts: Sequence[Fact]) -> bool:
        ids = self.builder.ids
        with self._lock:
            for fact in facts:
                trace_id = (
                    ids.wsi_trace_id(fact.wsi)
                    if isinstance(fact, ConnectionFact)
                    else ids.txn_trace(fact).trace_id
                )
                bucket = self._traces.get(trace_id)
                if bucket is None:
                    bucket = self._traces[trace_id] = []
                else:
                    self._traces.move_to_end(trace_id)
                if len(bucket) < self.max_spans_per_trace:
                    bucket.append(fact)
                    self._spans += 1
                else:
                    self.truncated += 1
                while len(self._traces) > 1 and (
                    len(self._traces) > self.max_traces or self._spans > self.max_spans
                ):
                    _, evicted = self._traces.popitem(last=False)
                    self._spans -= len(evicted)
        return True

    def shutdown(self) -> None:
        pass

    @property
    def span_count(self) -> int:
        return self._spans

    def traces(self, limit: int = 50) -> list[dict[str, Any]]:
        """The newest `limit` traces as JSON-ready dicts, newest first."""
        with self._lock:
            newest = [(tid, list(facts)) for tid, facts in list(self._traces.items())[-limit:]]
        build = self.builder
        return [
            {
                "trace_id": f"{tid:032x}",
                "spans": [
                    span_json(
                        build.connection(f)
                        if isinstance(f, ConnectionFact)
                        else build.transaction(f)
                    )
                    for f in facts
                ],
            }
            for tid, facts in reversed(newest)
        ]


def span_json(span: SpanData) -> dict[str, Any]:
    return {
        "name": span.name,
        "trace_id": f"{span.trace_id:032x}",
        "span_id": f"{span.span_id:016x}",
        "parent_span_id": f"{span.parent_span_id:016x}" if span.parent_span_id else None,
        "kind": KIND_NAMES.get(span.kind, str(span.kind)),
        "start_ns": span.start_ns,
        "end_ns": span.end_ns,
        "status": STATUS_NAMES.get(span.status_code, str(span.status_code)),
        "status_message": span.status_message,
        "attributes": dict(span.attributes),
        "events": [
            {"name": name, "time_ns": ts, "attributes": dict(attrs or {})}
            for name, ts, attrs in span.events
        ],
        "links": [
            {"trace_id": f"{trace_id:032x}", "span_id": f"{span_id:016x}"}
            for trace_id, span_id, _ in span.links
        ],
    }
