"""State bounds: wsis that are never destroyed, endless new sources, and what they cost.

The Tracker keeps at most `max_wsis` live wsis: beyond it the oldest live wsi is evicted and
flagged `evicted` (counted in lwsobs_wsi_leaked_total, listed, logged, its span ended), at O(1)
per wsi. Ended wsis are not kept alive by the idle wheel or the eviction order. At most
`max_sources` source names become label values; the rest are folded into "other" and counted.
"""

from __future__ import annotations

import gc
import json
import os
import subprocess
import sys
import time
import tracemalloc
from pathlib import Path
from typing import Any

from opentelemetry.sdk.trace.sampling import ALWAYS_ON
from prometheus_client.parser import text_string_to_metric_families

from lwsobs.core.ids import Ids
from lwsobs.core.model import Wsi
from lwsobs.core.policy import LeakPolicy
from lwsobs.core.roles import LeakRule, Role
from lwsobs.core.tracker import OTHER_SOURCE, Tracker
from lwsobs.sinks.live import LiveView
from lwsobs.sinks.metrics.collector import LwsobsCollector
from lwsobs.sinks.metrics.exposition import render
from lwsobs.sinks.metrics.sink import MetricsSink
from lwsobs.sinks.spans.builder import SpanBuilder
from lwsobs.sinks.spans.sink import SpanSink
from lwsobs.sources.lws.decoder import LwsDecoder
from lwsobs.sources.lws.pipeline import IngestPipeline
from lwsobs.sources.lws.sequence import DEFAULT_MAX_SOURCES
from tests.reliability.consumers import table_is_consistent
from tests.reliability.figures import record, rss_bytes
from tests.unit.recording import RecordingSink

T0 = 1_800_000_000 * 10**9
MS = 1_000_000


def tracker_with(max_wsis: int | None, **kwargs: object) -> tuple[Tracker, RecordingSink]:
    rec = RecordingSink()
    return Tracker([rec], max_wsis=max_wsis, **kwargs), rec  # type: ignore[arg-type]


def test_the_table_never_grows_past_max_wsis_and_each_eviction_is_flagged() -> None:
    tracker, rec = tracker_with(100)
    ctx = tracker.context("app", "c")
    opened = [tracker.open(ctx, Role.H1_SERVER, T0 + i) for i in range(1000)]
    assert tracker.live_total == tracker.live_count() == 100 and tracker.evicted == 900
    assert {w.serial for w in tracker.live_wsis()} == set(range(901, 1001))  # the newest stay
    flags = [args for name, args in rec.calls if name == "wsi_flagged"]
    assert flags == [(w, "evicted", False) for w in opened[:900]]  # oldest first, suspects
    ended = [args[0] for name, args in rec.calls if name == "wsi_span_ended"]
    assert ended == opened[:900]
    assert all(w.end_reason == "leaked" and w.leak == "evicted" for w in opened[:900])
    assert table_is_consistent(tracker)


def test_eviction_is_counted_in_metrics_listed_and_ends_an_open_transaction() -> None:
    metrics = MetricsSink()
    tracker = Tracker([metrics], max_wsis=2)
    live = LiveView(tracker)
    tracker.add_sink(live)
    ctx = tracker.context("app", "c")
    first = tracker.open(ctx, Role.H1_SERVER, T0)
    txn = tracker.bind(first, T0 + 1, method="GET", path="/")
    tracker.open(ctx, Role.H1_SERVER, T0 + 2)
    tracker.open(ctx, Role.WS_SERVER, T0 + 3)
    assert txn is not None and txn.error == "evicted" and txn.end_ns == T0 + 3
    assert metrics.leaked == {("app", Role.H1_SERVER, "evicted"): 1}
    (item,) = live.leak_list(T0 + 4)["leaks"]
    assert (item["rule"], item["certain"], item["live"], item["resolved"]) == (
        "evicted",
        False,
        False,
        False,
    )
    assert tracker.destroy(first, T0 + 5) is False  # a late destroy of a forgotten wsi is a no-op


def test_an_evicted_suspect_keeps_its_flag_and_is_not_counted_twice() -> None:
    tracker, rec = tracker_with(1)
    ctx = tracker.context("app", "c")
    suspect = tracker.open(ctx, Role.H1_SERVER, T0)
    tracker.flag(suspect, T0 + 1, LeakRule.IDLE)
    rec.take()
    tracker.open(ctx, Role.H1_SERVER, T0 + 2)
    assert suspect.leak == "idle" and not suspect.live and tracker.evicted == 1
    assert [name for name, _ in rec.take()] == ["wsi_opened"]
    assert list(tracker.suspect_wsis()) == []


def test_findings_in_a_context_that_lost_events_are_uncertain_whatever_the_rule() -> None:
    tracker, _ = tracker_with(1)
    ctx = tracker.context("app", "c")
    idle = tracker.open(ctx, Role.H1_SERVER, T0)
    ctx.uncertain = True
    tracker.flag(idle, T0 + 1, LeakRule.IDLE)
    evicted = tracker.open(ctx, Role.H1_SERVER, T0 + 2)  # evicts `idle`: already flagged
    tracker.open(ctx, Role.H1_SERVER, T0 + 3)  # evicts `evicted`
    assert (idle.attrs or {}).get("lws.leak.uncertain") is True
    assert (evicted.attrs or {}).get("lws.leak.uncertain") is True


def wsi_objects() -> int:
    return sum(1 for obj in gc.get_objects() if type(obj) is Wsi)


def test_ended_wsis_are_not_kept_alive_by_the_idle_wheel_or_the_eviction_order() -> None:
    """200,000 short connections with an hour of idle limit: before, the wheel kept every one
    of them for that hour; now at most about as many as are live (plus a constant)."""
    tracker = Tracker([MetricsSink()], LeakPolicy(), max_wsis=1_000_000)
    ctx = tracker.context("app", "c")
    keep = [tracker.open(ctx, Role.LISTEN, T0)]  # one long-lived wsi at the head of the order
    gc.collect()
    before = wsi_objects()
    for i in range(200_000):
        wsi = tracker.open(ctx, Role.H1_SERVER, T0 + i * MS)
        tracker.destroy(wsi, T0 + i * MS + 1)
    gc.collect()
    retained = wsi_objects() - before
    # MetricsSink keeps one exemplar per lifetime bucket; the rest is the compaction slack
    assert retained <= 2 * tracker.live_total + 4096 + 64, retained
    assert keep[0].live and tracker.live_total == 1
    assert tracker.tick(T0 + 10**15) == []  # the wheel still works after compactions
    record("state: ended wsis still referenced after 200k short connections", retained)


def test_sources_beyond_the_label_limit_are_folded_into_other_and_counted() -> None:
    tracker, _ = tracker_with(None, max_sources=3)
    contexts = [tracker.context(f"app{i}", f"app{i}/c") for i in range(10)]
    assert [c.source for c in contexts] == ["app0", "app1", "app2"] + [OTHER_SOURCE] * 7
    assert tracker.sources_folded == 7
    assert tracker.context("app9", "app9/c") is contexts[9]  # found again by its own name
    assert tracker.context("app9", "app9/d").source == OTHER_SOURCE
    assert tracker.sources_folded == 7  # a name is counted once
    tracker.context_destroyed(contexts[9], T0, graceful=True)
    assert tracker.context("app9", "app9/c") is not contexts[9]  # the folded one was removed


# -- a million wsis that are never destroyed -------------------------------------------------------

CAP = 100_000
MILLION = 1_000_000
ROOT = Path(__file__).resolve().parents[2]


def in_fresh_process(scenario: str) -> dict[str, Any]:
    """Run `scenario()` of this module in a new interpreter: its RSS is its own, not what
    earlier tests left behind, so the memory figures mean something."""
    code = f"import json; from {__name__} import {scenario}; print(json.dumps({scenario}()))"
    proc = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr
    result: dict[str, Any] = json.loads(proc.stdout.splitlines()[-1])
    return result


def million_wsis() -> dict[str, Any]:
    """The sinks an Observer has (metrics, live view, span queue without its worker, so it
    fills up and counts drops), 1,000,000 server wsis that each carry a transaction and are
    never destroyed, the table capped at 100,000. RSS is read at the cap, once the span queue
    is full too (400,000), and at the end."""
    metrics = MetricsSink()
    spans = SpanSink(SpanBuilder(Ids(1), ALWAYS_ON), [], max_queue=65536)
    tracker = Tracker([metrics, spans], max_wsis=CAP, epoch_ns=T0)
    live = LiveView(tracker)
    tracker.add_sink(live)
    collector = LwsobsCollector(tracker, metrics)
    contexts = [tracker.context("lwsapp", f"lwsapp@h:{i}/ctx") for i in range(4)]
    gc.collect()
    rss = {"start": rss_bytes()}
    per_wsi_s: list[float] = []
    most = 0
    step = CAP // 2
    for base in range(0, MILLION, step):
        started = time.perf_counter()
        for i in range(base, base + step):
            now = T0 + i * 1000
            wsi = tracker.open(contexts[i & 3], Role.H1_SERVER, now, peer=("127.0.0.1", i))
            tracker.bind(wsi, now + 1, method="GET", path="/")
        per_wsi_s.append((time.perf_counter() - started) / step)
        most = max(most, tracker.live_total)
        if base + step in (CAP, 4 * CAP):
            gc.collect()
            rss["cap" if base + step == CAP else "full"] = rss_bytes()
    gc.collect()
    rss["end"] = rss_bytes()
    render_ms = []
    for _ in range(20):
        started = time.perf_counter()
        text = render(collector, openmetrics=False)
        render_ms.append((time.perf_counter() - started) * 1000)
    return {
        "most_live": most,
        "live": tracker.live_total,
        "evicted": tracker.evicted,
        "leaked": [[*map(str, k), n] for k, n in metrics.leaked.items()],
        "listed": len(live.leaks),
        "queued": len(spans._queue),
        "queue_full": spans.dropped["queue_full"],
        "consistent": table_is_consistent(tracker),
        "rss": rss,
        "per_wsi_us": [x * 1e6 for x in per_wsi_s],
        "render_ms": render_ms,
        "metrics": text,
    }


def test_a_million_never_destroyed_wsis_stay_under_the_cap_in_memory_and_render_time() -> None:
    r = in_fresh_process("million_wsis")
    assert r["most_live"] == r["live"] == CAP and r["evicted"] == MILLION - CAP
    assert r["leaked"] == [["lwsapp", "h1-server", "evicted", MILLION - CAP]]
    assert r["listed"] == 1000 and r["queued"] <= 65536 < r["queue_full"]
    assert r["consistent"]
    rss = r["rss"]
    table = rss["cap"] - rss["start"]
    # from 400,000 on, both the table and the span queue are full: 600,000 more wsis came
    # and went and the process did not grow with them (without the cap: +600,000 x ~600 B)
    assert rss["end"] - rss["full"] < table / 4, rss
    samples = {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(r["metrics"])
        for s in family.samples
    }
    assert samples[("lwsobs_wsi_live", (("role", "h1-server"), ("source", "lwsapp")))] == CAP
    key = (
        "lwsobs_wsi_leaked_total",
        (("role", "h1-server"), ("rule", "evicted"), ("source", "lwsapp")),
    )
    assert samples[key] == MILLION - CAP
    render_ms = sorted(r["render_ms"])
    evicting = r["per_wsi_us"][2:]
    record(
        "state: 1,000,000 never-destroyed wsis, max_wsis",
        f"{CAP:,} live kept, {r['evicted']:,} evicted and flagged (rule evicted)",
    )
    record("state: memory per live wsi (with its transaction)", f"{table / CAP:.0f} B")
    record(
        "state: RSS growth: table at the cap / + full span queue / + 600k more wsis",
        f"+{table / 2**20:.0f} MiB / +{(rss['full'] - rss['cap']) / 2**20:.0f} MiB "
        f"/ +{(rss['end'] - rss['full']) / 2**20:.1f} MiB",
    )
    record(
        "state: open+bind per wsi, below the cap / evicting",
        f"{r['per_wsi_us'][0]:.1f} us / {sum(evicting) / len(evicting):.1f} us (flat: O(1))",
    )
    record(
        "state: /metrics render with 100k live wsis",
        f"median {render_ms[len(render_ms) // 2]:.2f} ms, max {render_ms[-1]:.2f} ms",
    )


# -- an unbounded stream of new sources ------------------------------------------------------------

SOURCES = 20_000


def new_sources() -> dict[str, Any]:
    """20,000 producers, each a new program: a HELLO, one accepted connection, then silence."""
    metrics = MetricsSink()
    tracker = Tracker([metrics], max_wsis=CAP, epoch_ns=T0)
    decoder = LwsDecoder(tracker)
    pipeline = IngestPipeline(decoder, silence_limit_s=5, max_sources=1000)
    collector = LwsobsCollector(tracker, metrics, extra=[pipeline.families])
    gc.collect()
    rss_start = rss_bytes()
    now = T0
    for n in range(SOURCES):
        src = f"prog{n}@host:{n}"
        lines: list[dict[str, Any]] = [
            {"r": -1, "pid": n},
            {"r": 17, "wsi": "10", "afd": 7, "peer": "127.0.0.1:1"},
            {"r": 29, "wsi": "a1", "fd": -1},
            {"r": 18, "wsi": "a1", "uri": "/"},
        ]
        body = b"\n".join(
            json.dumps({"v": 1, "src": src, "seq": i, "t": now, "ctx": "c", **line}).encode()
            for i, line in enumerate(lines)
        )
        now += 10 * MS
        pipeline.feed_lines(body, "udp", now)
        if n % 100 == 0:
            pipeline.tick(now)
    gc.collect()
    return {
        "rss_per_source": (rss_bytes() - rss_start) / SOURCES,
        "metrics": render(collector, openmetrics=False),
        "folded": tracker.sources_folded,
        "remembered": len(pipeline.sequence),
        "live_sources": pipeline.live_sources,
        "live": tracker.live_total,
        "errors": pipeline.consumer_errors,
    }


def test_endless_new_sources_keep_label_values_and_ingest_state_bounded() -> None:
    r = in_fresh_process("new_sources")
    values: dict[str, set[str]] = {}
    for family in text_string_to_metric_families(r["metrics"]):
        for sample in family.samples:
            if "source" in sample.labels:
                values.setdefault(family.name, set()).add(sample.labels["source"])
    assert values and max(len(v) for v in values.values()) <= 100 + 1
    assert all(OTHER_SOURCE in v for name, v in values.items() if name.startswith("lwsobs_wsi"))
    assert r["folded"] == SOURCES - 100
    assert r["remembered"] <= 1000 and r["live_sources"] <= 1000
    assert r["live"] <= CAP and r["errors"] == 0
    record(
        "state: 20,000 new sources",
        f"source label values {max(len(v) for v in values.values())} (100 + other), "
        f"{r['folded']:,} folded; the ingest remembers {r['remembered']:,}",
    )
    record(
        "state: memory per new source (decoder state included)",
        f"{r['rss_per_source']:.0f} B (the decoder keeps at most {DEFAULT_MAX_SOURCES:,})",
    )


def decoder_records() -> int:
    """Live records of the lws decoder's own state (sources, contexts, pointers)."""
    gc.collect()
    return sum(1 for obj in gc.get_objects() if type(obj).__module__ == LwsDecoder.__module__)


def test_endless_new_sources_keep_the_lws_decoder_bounded() -> None:
    """20,000 producers, each a HELLO and one accepted connection, never heard again, through
    the pipeline into the decoder, both with their default source limits (the same). Past the
    limit each new source pushes out the least recently heard one: its two live wsis become
    suspects (source_lost) and leave the table with their context; the decoder holds as many
    records after 20,000 sources as at its limit."""
    tracker = Tracker([metrics := MetricsSink()], max_wsis=CAP, epoch_ns=T0)
    before = decoder_records()
    decoder = LwsDecoder(tracker)
    pipeline = IngestPipeline(decoder)
    limit = decoder.max_sources
    assert limit == pipeline.max_sources == DEFAULT_MAX_SOURCES
    records: dict[str, int] = {}
    traced: dict[str, int] = {}
    tracemalloc.start()
    try:
        now = T0
        for n in range(SOURCES):
            lines: list[dict[str, Any]] = [
                {"r": -1, "pid": n},
                {"r": 17, "wsi": "10", "afd": 7, "peer": "127.0.0.1:1"},
                {"r": 29, "wsi": "a1", "fd": -1},
            ]
            src = f"prog{n}@host:{n}"
            body = b"\n".join(
                json.dumps({"v": 1, "src": src, "seq": i, "t": now, "ctx": "c", **line}).encode()
                for i, line in enumerate(lines)
            )
            now += MS
            pipeline.feed_lines(body, "udp", now)
            if n + 1 in (limit, SOURCES):
                stage = "limit" if n + 1 == limit else "end"
                records[stage] = decoder_records() - before
                traced[stage] = tracemalloc.get_traced_memory()[0]
    finally:
        tracemalloc.stop()
    # the decoder itself, and per kept source: its state, one context, two pointers
    assert records == {"limit": 1 + 4 * limit, "end": 1 + 4 * limit}
    assert pipeline.consumer_errors == 0
    assert decoder.source_count == limit
    assert decoder.stats["sources_evicted"] == SOURCES - limit
    assert tracker.live_total == 2 * limit and table_is_consistent(tracker)
    assert sum(1 for _ in tracker.contexts) == limit
    lost = sum(n for (_, _, rule), n in metrics.leaked.items() if rule == "source_lost")
    assert lost == sum(metrics.leaked.values()) == 2 * (SOURCES - limit)
    record(
        "state: 20,000 new lws sources, decoder limit",
        f"{limit:,} kept ({records['end']:,} decoder records at the limit and at the end), "
        f"{decoder.stats['sources_evicted']:,} pushed out (their wsis suspects source_lost)",
    )
    record(
        "state: traced memory at the decoder's source limit / after 20,000 sources",
        f"{traced['limit'] / 2**20:.1f} MiB ({traced['limit'] / limit:,.0f} B per source, "
        f"Tracker included) / {traced['end'] / 2**20:.1f} MiB (ended wsis the Tracker has not "
        "compacted yet)",
    )
