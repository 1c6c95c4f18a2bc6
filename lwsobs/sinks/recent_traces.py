"""The embedded default exporter: the most recent finished traces, kept in memory.

It keeps references to the ReadableSpans it is given and renders JSON only when asked, so
keeping traces costs the exporter thread almost nothing.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Sequence
from typing import Any

from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export import SpanExporter, SpanExportResult


class RecentTraces(SpanExporter):
    """Keeps at most `max_traces` traces, `max_spans` spans in all, `max_spans_per_trace` each.

    The oldest traces go first when a bound is reached; spans beyond a trace's own bound are
    counted in `truncated` (a keep-alive connection can carry thousands of transactions).
    """

    def __init__(
        self, max_traces: int = 500, max_spans: int = 20_000, max_spans_per_trace: int = 1000
    ) -> None:
        self.max_traces = max_traces
        self.max_spans = max_spans
        self.max_spans_per_trace = max_spans_per_trace
        self._traces: OrderedDict[int, list[ReadableSpan]] = OrderedDict()
        self._spans = 0
        self._lock = threading.Lock()
        self.truncated = 0

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        with self._lock:
            for span in spans:
                trace_id = span.context.trace_id
                bucket = self._traces.get(trace_id)
                if bucket is None:
                    bucket = self._traces[trace_id] = []
                else:
                    self._traces.move_to_end(trace_id)
                if len(bucket) < self.max_spans_per_trace:
                    bucket.append(span)
                    self._spans += 1
                else:
                    self.truncated += 1
                while len(self._traces) > 1 and (
                    len(self._traces) > self.max_traces or self._spans > self.max_spans
                ):
                    _, evicted = self._traces.popitem(last=False)
                    self._spans -= len(evicted)
        return SpanExportResult.SUCCESS

    @property
    def span_count(self) -> int:
        return self._spans

    def shutdown(self) -> None:
        pass

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        return True

    def traces(self, limit: int = 50) -> list[dict[str, Any]]:
        """The newest `limit` traces as JSON-ready dicts, newest first."""
        with self._lock:
            newest = list(self._traces.items())[-limit:][::-1]
            return [
                {"trace_id": f"{tid:032x}", "spans": [span_json(s) for s in spans]}
                for tid, spans in newest
            ]


def span_json(span: ReadableSpan) -> dict[str, Any]:
    ctx = span.context
    parent = span.parent
    return {
        "name": span.name,
        "trace_id": f"{ctx.trace_id:032x}",
        "span_id": f"{ctx.span_id:016x}",
        "parent_span_id": None if parent is None else f"{parent.span_id:016x}",
        "kind": span.kind.name,
        "start_ns": span.start_time,
        "end_ns": span.end_time,
        "status": span.status.status_code.name,
        "attributes": dict(span.attributes or {}),
        "events": [
            {"name": e.name, "time_ns": e.timestamp, "attributes": dict(e.attributes or {})}
            for e in span.events
        ],
        "links": [
            {"trace_id": f"{link.context.trace_id:032x}", "span_id": f"{link.context.span_id:016x}"}
            for link in span.links
        ],
    }
