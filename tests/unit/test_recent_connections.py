"""The recent-connections ring: fed by the span sink's facts, bounded, grouped per connection.

Facts go through a real Tracker and SpanSink (no worker thread: flush drains in place), so the
ring sees exactly what the export worker hands it.
"""

from __future__ import annotations

from opentelemetry.sdk.trace.sampling import ALWAYS_OFF, ALWAYS_ON, Sampler

from lwsobs.app.status.waterfall import connections_json
from lwsobs.config import Config
from lwsobs.core.ids import Ids
from lwsobs.core.model import Wsi
from lwsobs.core.roles import LeakRule, Role
from lwsobs.core.tracker import Tracker
from lwsobs.observer import Observer
from lwsobs.sinks.spans.builder import SpanBuilder
from lwsobs.sinks.spans.recent_connections import RecentConnections
from lwsobs.sinks.spans.sink import SpanSink

T0 = 1_700_000_000_000_000_000
MS = 1_000_000


def setup(
    sampler: Sampler = ALWAYS_ON, **bounds: int
) -> tuple[Tracker, SpanSink, RecentConnections]:
    ring = RecentConnections(**bounds)
    spans = SpanSink(SpanBuilder(Ids(7), sampler), [ring])
    return Tracker([spans]), spans, ring


def open_wsi(tracker: Tracker, at: int = T0) -> Wsi:
    return tracker.open(tracker.context("s", "c"), Role.H1_SERVER, at, peer=("127.0.0.1", 5000))


def request(
    tracker: Tracker, wsi: Wsi, at: int, path: str = "/", arrived: int | None = None
) -> None:
    tracker.bind(wsi, at, arrived, "GET", path)
    tracker.drop(wsi, at + MS, 200, path)


def test_a_finished_connection_carries_its_transactions_in_order() -> None:
    tracker, spans, ring = setup()
    wsi = open_wsi(tracker)
    for i in range(3):
        request(tracker, wsi, T0 + (i + 1) * 10 * MS, f"/{i}")
    spans.flush()
    assert ring.finished(10) == []
    [live] = ring.live(10)
    assert live.wsi is wsi and live.fact is None and len(live.txns) == 3
    tracker.destroy(wsi, T0 + 100 * MS)
    spans.flush()
    assert ring.live(10) == []
    [rec] = ring.finished(10)
    assert rec.wsi is wsi and rec.fact is not None and rec.fact.end_reason == "destroyed"
    assert [t.path for t in rec.txns] == ["/0", "/1", "/2"]
    assert rec.seen == 3


def test_bounds_keep_the_newest_connections_and_transactions() -> None:
    tracker, spans, ring = setup(max_connections=2, max_transactions=2, max_pending=2)
    wsis = [open_wsi(tracker) for _ in range(3)]
    for wsi in wsis:
        for i in range(5):
            request(tracker, wsi, T0 + i * 10 * MS, f"/{i}")
    spans.flush()
    assert ring.evicted == 1  # the first connection's pending transactions were forgotten
    assert [r.wsi for r in ring.live(10)] == [wsis[2], wsis[1]]
    for wsi in wsis:
        tracker.destroy(wsi, T0 + 100 * MS)
    spans.flush()
    newest = ring.finished(10)
    assert [r.wsi for r in newest] == [wsis[2], wsis[1]]
    assert [t.path for t in newest[0].txns] == ["/3", "/4"]
    assert newest[0].seen == 5 and newest[0].fact is not None
    assert newest[0].fact.transactions == 5
    assert ring.sizes == (2, 0)


def test_a_suspect_is_recorded_when_flagged_and_marked() -> None:
    tracker, spans, ring = setup()
    wsi = open_wsi(tracker)
    tracker.flag(wsi, T0 + 5000 * MS, LeakRule.IDLE)
    spans.flush()
    [rec] = ring.finished(1)
    assert rec.fact is not None and rec.fact.leak == "idle" and rec.wsi.live


def test_unsampled_connections_are_not_kept() -> None:
    tracker, spans, ring = setup(ALWAYS_OFF)
    wsi = open_wsi(tracker)
    request(tracker, wsi, T0 + MS)
    tracker.destroy(wsi, T0 + 10 * MS)
    spans.flush()
    assert ring.finished(10) == [] and ring.live(10) == []


def test_waterfall_json_marks_pipelined_waits_leaks_and_trace_ids() -> None:
    observer = Observer(Config(spans=True, otlp=False))
    try:
        tracker = observer.tracker
        assert observer.spans is not None
        piped = open_wsi(tracker)
        # three requests arrive in one write at +1 ms; each waits for the one before it
        for i in range(3):
            start = T0 + (1 + 10 * i) * MS
            request(tracker, piped, start, f"/p{i}?secret=1", arrived=T0 + MS)
        tracker.destroy(piped, T0 + 40 * MS)
        idle = open_wsi(tracker, T0 + 2 * MS)
        tracker.flag(idle, T0 + 3000 * MS, LeakRule.IDLE)
        observer.spans.flush()
        data = connections_json(observer, T0 + 4000 * MS, 10)
    finally:
        observer.close()
    assert data["enabled"] is True
    first, second = data["connections"]
    assert first["id"] == piped.id and first["leak"] is None and first["transactions"] == 3
    assert [t["path"] for t in first["txns"]] == ["/p0", "/p1", "/p2"]
    assert [t["pipelined"] for t in first["txns"]] == [False, True, True]
    assert [round(t["queue_ms"]) for t in first["txns"]] == [0, 10, 20]
    assert first["trace_id"] == f"{observer.ids.wsi_trace_id(piped):032x}"
    assert all(t["trace_id"] == first["trace_id"] for t in first["txns"])
    assert second["id"] == idle.id and second["leak"] == "idle" and second["certain"] is False
    assert second["live"] is True and second["end_ms"] == (T0 + 3000 * MS) / 1e6


def test_no_ring_without_spans() -> None:
    observer = Observer(Config(spans=False))
    try:
        assert observer.connections is None
        data = connections_json(observer, T0, 10)
    finally:
        observer.close()
    assert data["enabled"] is False and data["connections"] == []
