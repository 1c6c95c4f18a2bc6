"""The in-memory trace store stays within its bounds and serves the newest traces first."""

from __future__ import annotations

from opentelemetry.sdk.trace.sampling import ALWAYS_ON

from lwsobs.core.ids import Ids
from lwsobs.core.model import Transaction, Wsi
from lwsobs.core.roles import Role
from lwsobs.core.tracker import Tracker
from lwsobs.sinks.spans.builder import SpanBuilder, snapshot
from lwsobs.sinks.spans.recent_traces import RecentTraces

T0 = 1_700_000_000_000_000_000


def setup(**bounds: int) -> tuple[Tracker, RecentTraces, SpanBuilder]:
    builder = SpanBuilder(Ids(42), ALWAYS_ON)
    return Tracker(), RecentTraces(builder, **bounds), builder


def connection(tracker: Tracker, n_txns: int = 0) -> tuple[Wsi, list[Transaction]]:
    wsi = tracker.open(tracker.context("s", "c"), Role.H1_SERVER, T0)
    txns = []
    for i in range(n_txns):
        txn = tracker.bind(wsi, T0 + 10 * i + 1, None, "GET", f"/{i}")
        assert txn is not None
        tracker.drop(wsi, T0 + 10 * i + 5, 200, "/{i}")
        txns.append(txn)
    return wsi, txns


def trace_ids(store: RecentTraces) -> list[str]:
    return [t["trace_id"] for t in store.traces()]


def test_oldest_traces_are_evicted_beyond_max_traces() -> None:
    tracker, store, builder = setup(max_traces=2)
    wsis = [connection(tracker)[0] for _ in range(3)]
    for wsi in wsis:
        tracker.destroy(wsi, T0 + 100)
        store.export([snapshot(wsi)])
    assert trace_ids(store) == [f"{builder.ids.wsi_trace_id(w):032x}" for w in wsis[:0:-1]]
    assert store.span_count == 2


def test_total_span_bound_evicts_whole_old_traces() -> None:
    tracker, store, builder = setup(max_traces=100, max_spans=5)
    _, first_txns = connection(tracker, 3)
    second, second_txns = connection(tracker, 3)
    store.export(first_txns)
    store.export(second_txns)
    assert trace_ids(store) == [f"{builder.ids.wsi_trace_id(second):032x}"]
    assert store.span_count == 3


def test_spans_beyond_a_traces_bound_are_counted_not_kept() -> None:
    tracker, store, _ = setup(max_spans_per_trace=2)
    _, txns = connection(tracker, 5)
    store.export(txns)
    (trace,) = store.traces()
    assert [s["attributes"]["url.path"] for s in trace["spans"]] == ["/0", "/1"]
    assert store.truncated == 3


def test_a_trace_receiving_spans_becomes_the_newest() -> None:
    tracker, store, builder = setup(max_traces=2)
    a, a_txns = connection(tracker, 2)
    _, b_txns = connection(tracker, 1)
    c, c_txns = connection(tracker, 1)
    store.export([a_txns[0], b_txns[0]])
    store.export([a_txns[1]])
    store.export(c_txns)
    assert trace_ids(store) == [f"{builder.ids.wsi_trace_id(w):032x}" for w in (c, a)]
    assert [len(t["spans"]) for t in store.traces()] == [1, 2]


def test_json_shows_connection_and_transaction_spans_with_their_parenting() -> None:
    tracker, store, builder = setup()
    wsi, txns = connection(tracker, 1)
    tracker.destroy(wsi, T0 + 50)
    store.export([*txns, snapshot(wsi)])
    (trace,) = store.traces()
    txn_span, conn_span = trace["spans"]
    assert conn_span["name"] == "wsi h1-server" and conn_span["kind"] == "SERVER"
    assert conn_span["parent_span_id"] is None
    assert (
        txn_span["parent_span_id"] == conn_span["span_id"] == f"{builder.ids.wsi_span_id(wsi):016x}"
    )
    assert (txn_span["start_ns"], txn_span["end_ns"]) == (T0 + 1, T0 + 5)
    assert txn_span["status"] == "UNSET" and conn_span["attributes"]["lws.transactions"] == 1
