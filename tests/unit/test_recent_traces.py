"""The in-memory trace store stays within its bounds and serves the newest traces first."""

from __future__ import annotations

from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.trace import SpanContext

from lwsobs.sinks.recent_traces import RecentTraces


def span(trace_id: int, span_id: int) -> ReadableSpan:
    return ReadableSpan(
        name=f"s{span_id}",
        context=SpanContext(trace_id, span_id, is_remote=False),
        start_time=span_id,
        end_time=span_id + 1,
    )


def test_oldest_traces_are_evicted_beyond_max_traces() -> None:
    store = RecentTraces(max_traces=2)
    store.export([span(1, 1), span(2, 2), span(3, 3)])
    assert [t["trace_id"] for t in store.traces()] == [f"{3:032x}", f"{2:032x}"]
    assert store.span_count == 2


def test_total_span_bound_evicts_whole_old_traces() -> None:
    store = RecentTraces(max_traces=100, max_spans=5)
    store.export([span(1, i) for i in range(1, 4)])
    store.export([span(2, i) for i in range(10, 13)])
    assert [t["trace_id"] for t in store.traces()] == [f"{2:032x}"]
    assert store.span_count == 3


def test_spans_beyond_a_traces_bound_are_counted_not_kept() -> None:
    store = RecentTraces(max_spans_per_trace=2)
    store.export([span(7, i) for i in range(1, 6)])
    (trace,) = store.traces()
    assert [s["span_id"] for s in trace["spans"]] == [f"{1:016x}", f"{2:016x}"]
    assert store.truncated == 3


def test_a_trace_receiving_spans_becomes_the_newest() -> None:
    store = RecentTraces(max_traces=2)
    store.export([span(1, 1), span(2, 2)])
    store.export([span(1, 3)])
    store.export([span(3, 4)])
    assert [t["trace_id"] for t in store.traces()] == [f"{3:032x}", f"{1:032x}"]
    assert [len(t["spans"]) for t in store.traces()] == [1, 2]
