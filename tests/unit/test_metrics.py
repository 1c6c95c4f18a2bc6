"""MetricsSink counts and LwsobsCollector renders: a scripted scenario, then every family."""

from __future__ import annotations

from dataclasses import dataclass

import pytest
from opentelemetry.sdk.trace.sampling import ALWAYS_ON
from prometheus_client import CollectorRegistry
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.exposition import generate_latest
from prometheus_client.openmetrics.exposition import generate_latest as generate_openmetrics
from prometheus_client.openmetrics.parser import (
    text_string_to_metric_families as parse_openmetrics,
)
from prometheus_client.parser import text_string_to_metric_families as parse_text
from prometheus_client.samples import Exemplar

from lwsobs.core.ids import Ids
from lwsobs.core.model import Transaction, Wsi
from lwsobs.core.policy import NS
from lwsobs.core.roles import LeakRule, Role
from lwsobs.core.tracker import Tracker
from lwsobs.sinks.metrics.collector import LwsobsCollector
from lwsobs.sinks.metrics.sink import MetricsSink
from lwsobs.sinks.spans.builder import SpanBuilder
from tests.unit.recording import T0, RecordingSink

MS = 1_000_000
TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"
SPAN = "00f067aa0ba902b7"


@dataclass
class Scenario:
    tracker: Tracker
    metrics: MetricsSink
    ids: Ids
    sampling: SpanBuilder
    collector: LwsobsCollector
    a: Wsi  # two transactions, destroyed after 4 s
    b: Wsi  # upgraded to ws-server, destroyed after 60 s
    c: Wsi  # idle suspect, then destroyed: resolved
    d: Wsi  # certain leak (identity reused)
    e: Wsi  # mid-transaction
    f: Wsi  # idle suspect, still live
    client: Wsi  # another source, destroyed
    a1: Transaction  # 10 ms, 2xx
    a2: Transaction  # pipelined: 5 ms queue, 205 ms, 5xx, joined a remote trace
    b1: Transaction  # 1 ms, ended by the upgrade (101)


def run_scenario() -> Scenario:
    metrics = MetricsSink()
    tracker = Tracker([RecordingSink(), metrics])
    ids = Ids(0xFEEDFACECAFEBEEF)
    sampling = SpanBuilder(ids, ALWAYS_ON)
    collector = LwsobsCollector(tracker, metrics, sampling)
    app = tracker.context("aiohttp", "app")
    lws = tracker.context("lws", "ctx")

    tracker.open(app, Role.LISTEN, T0)

    a = tracker.open(app, Role.H1_SERVER, T0 + NS)
    a1 = tracker.bind(a, T0 + NS, method="GET", path="/")
    tracker.drop(a, T0 + NS + 10 * MS, status=200, route="/")
    a2 = tracker.bind(
        a, T0 + 2 * NS, arrived=T0 + 2 * NS - 5 * MS, traceparent=f"00-{TRACE}-{SPAN}-01"
    )
    tracker.drop(a, T0 + 2 * NS + 200 * MS, status=503)
    tracker.destroy(a, T0 + 5 * NS)

    b = tracker.open(app, Role.H1_SERVER, T0 + 2 * NS)
    b1 = tracker.bind(b, T0 + 2 * NS)
    tracker.upgrade(b, Role.WS_SERVER, T0 + 2 * NS + MS)
    tracker.destroy(b, T0 + 62 * NS)

    c = tracker.open(app, Role.H1_SERVER, T0)
    tracker.flag(c, T0 + 50 * NS, LeakRule.IDLE)
    tracker.destroy(c, T0 + 100 * NS)

    d = tracker.open(app, Role.H1_SERVER, T0)
    tracker.flag(d, T0 + 7 * NS, LeakRule.IDENTITY_REUSED)

    e = tracker.open(app, Role.H1_SERVER, T0)
    tracker.bind(e, T0 + NS)

    f = tracker.open(app, Role.H1_SERVER, T0)
    tracker.flag(f, T0 + 50 * NS, LeakRule.IDLE)

    client = tracker.open(lws, Role.H1_CLIENT, T0)
    tracker.destroy(client, T0 + 3 * NS // 2)

    assert a1 is not None and a2 is not None and b1 is not None
    return Scenario(
        tracker, metrics, ids, sampling, collector, a, b, c, d, e, f, client, a1, a2, b1
    )


Key = tuple[str, frozenset[tuple[str, str]]]


def samples(metrics: list[Metric]) -> dict[Key, float]:
    return {(s.name, frozenset(s.labels.items())): s.value for m in metrics for s in m.samples}


def series(metrics: list[Metric], name: str) -> dict[tuple[str, ...], float]:
    """{label values in label order: value} of the samples called `name`."""
    return {tuple(s.labels.values()): s.value for m in metrics for s in m.samples if s.name == name}


def exemplars(metrics: list[Metric]) -> dict[tuple[str, str, str, str], Exemplar]:
    """{(family, source, role, le): exemplar} for every bucket that has one."""
    out = {}
    for m in metrics:
        for s in m.samples:
            if s.exemplar is not None:
                out[(m.name, s.labels["source"], s.labels["role"], s.labels["le"])] = s.exemplar
    return out


# -- MetricsSink -----------------------------------------------------------------------------------


def test_metrics_sink_counters() -> None:
    sc = run_scenario()
    m = sc.metrics
    h1, ws = Role.H1_SERVER, Role.WS_SERVER
    assert dict(m.created) == {
        ("aiohttp", Role.LISTEN): 1,
        ("aiohttp", h1): 6,
        ("lws", Role.H1_CLIENT): 1,
    }
    assert dict(m.destroyed) == {("aiohttp", h1): 2, ("aiohttp", ws): 1, ("lws", Role.H1_CLIENT): 1}
    assert dict(m.upgrades) == {("aiohttp", h1, ws): 1}
    assert dict(m.transactions) == {
        ("aiohttp", h1, "2xx"): 1,
        ("aiohttp", h1, "5xx"): 1,
        ("aiohttp", h1, "1xx"): 1,
    }
    assert dict(m.leaked) == {("aiohttp", h1, "idle"): 2, ("aiohttp", h1, "identity_reused"): 1}
    assert dict(m.resolved) == {("aiohttp", h1, "idle"): 1}


def test_metrics_sink_histograms() -> None:
    sc = run_scenario()
    m = sc.metrics
    h1, ws = Role.H1_SERVER, Role.WS_SERVER
    assert (
        set(m.lifetime)
        == set(m.per_wsi)
        == {("aiohttp", h1), ("aiohttp", ws), ("lws", Role.H1_CLIENT)}
    )
    life = m.lifetime[("aiohttp", h1)]
    assert life.count == 2 and life.sum == pytest.approx(104.0)  # a: 4 s, c: 100 s
    assert m.lifetime[("aiohttp", ws)].sum == pytest.approx(60.0)
    assert m.lifetime[("lws", Role.H1_CLIENT)].sum == pytest.approx(1.5)
    per_wsi = m.per_wsi[("aiohttp", h1)]
    assert dict(per_wsi.cumulative())["0.0"] == 1  # c carried none
    assert dict(per_wsi.cumulative())["2.0"] == 2  # a carried two
    assert per_wsi.sum == 2.0
    assert m.per_wsi[("aiohttp", ws)].sum == 1.0  # b's transaction ran before the upgrade
    # transactions are keyed by the role they ran in, not the wsi's final role
    assert set(m.duration) == set(m.queue_wait) == {("aiohttp", h1)}
    duration = m.duration[("aiohttp", h1)]
    assert duration.count == 3
    assert duration.sum == pytest.approx(0.010 + 0.205 + 0.001)
    cum = dict(duration.cumulative())
    assert (cum["0.001"], cum["0.01"], cum["0.25"], cum["+Inf"]) == (1, 2, 3, 3)
    queue = m.queue_wait[("aiohttp", h1)]
    assert queue.count == 3
    assert queue.sum == pytest.approx(0.005)
    assert dict(queue.cumulative())["0.0005"] == 2
    assert dict(queue.cumulative())["0.005"] == 3


def test_metrics_sink_exemplar_objects() -> None:
    sc = run_scenario()
    life = sc.metrics.lifetime[("aiohttp", Role.H1_SERVER)]
    assert [ex[0] for ex in life.exemplars if ex is not None] == [sc.a, sc.c]
    duration = sc.metrics.duration[("aiohttp", Role.H1_SERVER)]
    assert [ex[0] for ex in duration.exemplars if ex is not None] == [sc.b1, sc.a1, sc.a2]
    assert all(ex is None for ex in sc.metrics.queue_wait[("aiohttp", Role.H1_SERVER)].exemplars)
    assert all(ex is None for ex in sc.metrics.per_wsi[("aiohttp", Role.H1_SERVER)].exemplars)


# -- LwsobsCollector -------------------------------------------------------------------------------


def test_collector_family_names_and_types() -> None:
    sc = run_scenario()
    got = [(m.name, m.type) for m in sc.collector.collect()]
    assert got == [
        ("lwsobs_wsi_live", "gauge"),
        ("lwsobs_transactions_active", "gauge"),
        ("lwsobs_wsi_leak_suspects", "gauge"),
        ("lwsobs_wsi_created", "counter"),
        ("lwsobs_wsi_destroyed", "counter"),
        ("lwsobs_wsi_upgrades", "counter"),
        ("lwsobs_transactions", "counter"),
        ("lwsobs_wsi_leaked", "counter"),
        ("lwsobs_wsi_suspects_resolved", "counter"),
        ("lwsobs_wsi_ended", "counter"),
        ("lwsobs_wsi_abandoned", "counter"),
        ("lwsobs_transactions_refused", "counter"),
        ("lwsobs_wsi_lifetime_seconds", "histogram"),
        ("lwsobs_wsi_transactions", "histogram"),
        ("lwsobs_transaction_duration_seconds", "histogram"),
        ("lwsobs_transaction_queue_seconds", "histogram"),
    ]
    assert sc.collector.describe() == []


def test_collector_gauges() -> None:
    sc = run_scenario()
    fams = list(sc.collector.collect())
    assert series(fams, "lwsobs_wsi_live") == {
        ("aiohttp", "listen"): 1,
        ("aiohttp", "h1-server"): 2,  # e and f
        ("aiohttp", "ws-server"): 0,  # b, after it closed
        ("lws", "h1-client"): 0,
    }
    # every (source, role) ever seen keeps a series in each gauge, at 0 when nothing is there
    assert series(fams, "lwsobs_transactions_active") == {
        ("aiohttp", "listen"): 0,
        ("aiohttp", "h1-server"): 1,  # e
        ("aiohttp", "ws-server"): 0,
        ("lws", "h1-client"): 0,
    }
    assert series(fams, "lwsobs_wsi_leak_suspects") == {
        ("aiohttp", "listen"): 0,
        ("aiohttp", "h1-server"): 1,  # f (c was resolved)
        ("aiohttp", "ws-server"): 0,
        ("lws", "h1-client"): 0,
    }


def test_collector_counters() -> None:
    sc = run_scenario()
    fams = list(sc.collector.collect())
    assert series(fams, "lwsobs_wsi_created_total") == {
        ("aiohttp", "h1-server"): 6,
        ("aiohttp", "listen"): 1,
        ("lws", "h1-client"): 1,
    }
    assert series(fams, "lwsobs_wsi_destroyed_total") == {
        ("aiohttp", "h1-server"): 2,
        ("aiohttp", "ws-server"): 1,
        ("lws", "h1-client"): 1,
    }
    assert series(fams, "lwsobs_wsi_upgrades_total") == {("aiohttp", "h1-server", "ws-server"): 1}
    assert series(fams, "lwsobs_transactions_total") == {
        ("aiohttp", "h1-server", "1xx"): 1,
        ("aiohttp", "h1-server", "2xx"): 1,
        ("aiohttp", "h1-server", "5xx"): 1,
    }
    assert series(fams, "lwsobs_wsi_leaked_total") == {
        ("aiohttp", "h1-server", "identity_reused"): 1,
        ("aiohttp", "h1-server", "idle"): 2,
    }
    assert series(fams, "lwsobs_wsi_suspects_resolved_total") == {
        ("aiohttp", "h1-server", "idle"): 1
    }
    fam = {m.name: m for m in fams}
    labels = [list(s.labels) for s in fam["lwsobs_wsi_upgrades"].samples]
    assert labels == [["source", "from_role", "to_role"]]
    labels = [list(s.labels) for s in fam["lwsobs_transactions"].samples]
    assert labels == [["source", "role", "code_class"]] * 3


def test_collector_histograms() -> None:
    sc = run_scenario()
    fams = list(sc.collector.collect())
    got = samples(fams)

    def value(name: str, **labels: str) -> float:
        return got[(name, frozenset(labels.items()))]

    life = "lwsobs_wsi_lifetime_seconds"
    assert value(f"{life}_count", source="aiohttp", role="h1-server") == 2
    assert value(f"{life}_sum", source="aiohttp", role="h1-server") == pytest.approx(104.0)
    assert value(f"{life}_bucket", source="aiohttp", role="h1-server", le="1.0") == 0
    assert value(f"{life}_bucket", source="aiohttp", role="h1-server", le="5.0") == 1
    assert value(f"{life}_bucket", source="aiohttp", role="h1-server", le="60.0") == 1
    assert value(f"{life}_bucket", source="aiohttp", role="h1-server", le="300.0") == 2
    assert value(f"{life}_bucket", source="aiohttp", role="h1-server", le="+Inf") == 2
    assert value(f"{life}_bucket", source="aiohttp", role="ws-server", le="60.0") == 1
    assert value(f"{life}_bucket", source="aiohttp", role="ws-server", le="30.0") == 0
    assert value(f"{life}_bucket", source="lws", role="h1-client", le="5.0") == 1
    assert value(f"{life}_bucket", source="lws", role="h1-client", le="1.0") == 0

    per = "lwsobs_wsi_transactions"
    assert value(f"{per}_bucket", source="aiohttp", role="h1-server", le="0.0") == 1
    assert value(f"{per}_bucket", source="aiohttp", role="h1-server", le="1.0") == 1
    assert value(f"{per}_bucket", source="aiohttp", role="h1-server", le="2.0") == 2
    assert value(f"{per}_sum", source="aiohttp", role="h1-server") == 2
    assert value(f"{per}_bucket", source="aiohttp", role="ws-server", le="1.0") == 1

    dur = "lwsobs_transaction_duration_seconds"
    assert value(f"{dur}_count", source="aiohttp", role="h1-server") == 3
    assert value(f"{dur}_bucket", source="aiohttp", role="h1-server", le="0.0005") == 0
    assert value(f"{dur}_bucket", source="aiohttp", role="h1-server", le="0.001") == 1
    assert value(f"{dur}_bucket", source="aiohttp", role="h1-server", le="0.01") == 2
    assert value(f"{dur}_bucket", source="aiohttp", role="h1-server", le="0.1") == 2
    assert value(f"{dur}_bucket", source="aiohttp", role="h1-server", le="0.25") == 3

    q = "lwsobs_transaction_queue_seconds"
    assert value(f"{q}_count", source="aiohttp", role="h1-server") == 3
    assert value(f"{q}_sum", source="aiohttp", role="h1-server") == pytest.approx(0.005)
    assert value(f"{q}_bucket", source="aiohttp", role="h1-server", le="0.0005") == 2
    assert value(f"{q}_bucket", source="aiohttp", role="h1-server", le="0.0025") == 2
    assert value(f"{q}_bucket", source="aiohttp", role="h1-server", le="0.005") == 3

    # every histogram series has all its buckets, in order
    for m in fams:
        if m.type != "histogram":
            continue
        for source, role in {(s.labels["source"], s.labels["role"]) for s in m.samples}:
            les = [
                s.labels["le"]
                for s in m.samples
                if s.name.endswith("_bucket")
                and s.labels["source"] == source
                and s.labels["role"] == role
            ]
            assert les[-1] == "+Inf"
            assert [float(le) for le in les] == sorted(float(le) for le in les)


def test_no_exemplars_for_unsampled_objects() -> None:
    sc = run_scenario()
    assert exemplars(list(sc.collector.collect())) == {}
    sc.sampling.record_decision(sc.a, False)
    sc.sampling.record_decision(sc.a1, False)
    assert exemplars(list(sc.collector.collect())) == {}


def test_exemplars_point_at_sampled_objects_only() -> None:
    sc = run_scenario()
    ids = sc.ids
    sc.sampling.record_decision(sc.a, True)  # lifetime, le=5.0
    sc.sampling.record_decision(sc.a1, True)  # duration, le=0.01, nested under a's connection span
    sc.sampling.record_decision(sc.a2, True)  # duration, le=0.25, joined the caller's trace
    sc.sampling.record_decision(sc.b, True)  # ws-server lifetime, le=60.0
    # c (le=300.0) is left undecided; b1 (le=0.001) is nested in b, so its trace was kept
    got = exemplars(list(sc.collector.collect()))
    life, dur = "lwsobs_wsi_lifetime_seconds", "lwsobs_transaction_duration_seconds"
    assert set(got) == {
        (life, "aiohttp", "h1-server", "5.0"),
        (life, "aiohttp", "ws-server", "60.0"),
        (dur, "aiohttp", "h1-server", "0.01"),
        (dur, "aiohttp", "h1-server", "0.25"),
        (dur, "aiohttp", "h1-server", "0.001"),
    }
    ex = got[(life, "aiohttp", "h1-server", "5.0")]
    assert ex.labels == {
        "trace_id": f"{ids.wsi_trace_id(sc.a):032x}",
        "span_id": f"{ids.wsi_span_id(sc.a):016x}",
    }
    assert ex.value == pytest.approx(4.0)
    assert ex.timestamp == pytest.approx((T0 + 5 * NS) / 1e9)

    ex = got[(life, "aiohttp", "ws-server", "60.0")]
    assert ex.labels["trace_id"] == f"{ids.wsi_trace_id(sc.b):032x}"
    assert ex.labels["span_id"] == f"{ids.wsi_span_id(sc.b):016x}"

    ex = got[(dur, "aiohttp", "h1-server", "0.01")]
    assert ex.labels == {
        "trace_id": f"{ids.wsi_trace_id(sc.a):032x}",  # nested: the connection's trace
        "span_id": f"{ids.txn_span_id(sc.a1):016x}",
    }
    assert ex.value == pytest.approx(0.010)
    assert ex.timestamp == pytest.approx((T0 + NS + 10 * MS) / 1e9)

    ex = got[(dur, "aiohttp", "h1-server", "0.25")]
    assert ex.labels == {"trace_id": TRACE, "span_id": f"{ids.txn_span_id(sc.a2):016x}"}
    assert ex.value == pytest.approx(0.205)

    for ex in got.values():
        trace_id, span_id = ex.labels["trace_id"], ex.labels["span_id"]
        assert len(trace_id) == 32 and int(trace_id, 16) != 0 and trace_id == trace_id.lower()
        assert len(span_id) == 16 and int(span_id, 16) != 0 and span_id == span_id.lower()


def test_a_suspect_exemplar_is_stamped_with_its_flag_time() -> None:
    sc = run_scenario()
    sc.sampling.record_decision(sc.c, True)
    got = exemplars(list(sc.collector.collect()))
    ex = got[("lwsobs_wsi_lifetime_seconds", "aiohttp", "h1-server", "300.0")]
    assert ex.timestamp == pytest.approx((T0 + 50 * NS) / 1e9)  # its span ended at the flag
    assert ex.value == pytest.approx(100.0)


def test_no_exemplars_without_spans() -> None:
    sc = run_scenario()
    for obj in (sc.a, sc.b, sc.c, sc.a1, sc.a2, sc.b1):
        sc.sampling.record_decision(obj, True)
    collector = LwsobsCollector(sc.tracker, sc.metrics)
    assert exemplars(list(collector.collect())) == {}


def test_extra_families_come_last() -> None:
    sc = run_scenario()

    def more() -> list[Metric]:
        g = GaugeMetricFamily("lwsobs_span_queue", "queued spans")
        g.add_metric([], 3)
        return [g]

    collector = LwsobsCollector(sc.tracker, sc.metrics, sc.sampling, extra=[more])
    fams = list(collector.collect())
    assert fams[-1].name == "lwsobs_span_queue"
    assert len(fams) == 17


def test_an_empty_collector_renders_empty_families() -> None:
    tracker = Tracker([RecordingSink()])
    fams = list(LwsobsCollector(tracker, MetricsSink()).collect())
    assert len(fams) == 16
    assert all(m.samples == [] for m in fams)


def test_live_series_of_a_destroyed_context_stay_at_zero() -> None:
    metrics = MetricsSink()
    tracker = Tracker([metrics])
    ctx = tracker.context("aiohttp", "app")
    tracker.open(ctx, Role.H1_SERVER, T0)
    collector = LwsobsCollector(tracker, metrics)
    assert series(list(collector.collect()), "lwsobs_wsi_live") == {("aiohttp", "h1-server"): 1}
    tracker.context_destroyed(ctx, T0 + NS, graceful=True)
    assert series(list(collector.collect()), "lwsobs_wsi_live") == {("aiohttp", "h1-server"): 0}
    assert series(list(collector.collect()), "lwsobs_transactions_active") == {
        ("aiohttp", "h1-server"): 0
    }
    assert series(list(collector.collect()), "lwsobs_wsi_destroyed_total") == {
        ("aiohttp", "h1-server"): 1
    }


def test_two_contexts_of_one_source_add_up() -> None:
    metrics = MetricsSink()
    tracker = Tracker([metrics])
    for name in ("a", "b", "c"):
        tracker.open(tracker.context("lws", name), Role.H1_SERVER, T0)
    tracker.flag(next(iter(tracker.context("lws", "a").live[Role.H1_SERVER])), T0, LeakRule.IDLE)
    tracker.flag(next(iter(tracker.context("lws", "b").live[Role.H1_SERVER])), T0, LeakRule.IDLE)
    fams = list(LwsobsCollector(tracker, metrics).collect())
    assert series(fams, "lwsobs_wsi_live") == {("lws", "h1-server"): 3}
    assert series(fams, "lwsobs_wsi_leak_suspects") == {("lws", "h1-server"): 2}


# -- exposition ------------------------------------------------------------------------------------


def registry_with_exemplars() -> tuple[CollectorRegistry, Scenario]:
    sc = run_scenario()
    for obj in (sc.a, sc.b, sc.a1, sc.a2):
        sc.sampling.record_decision(obj, True)
    registry = CollectorRegistry()
    registry.register(sc.collector)
    return registry, sc


def test_prometheus_text_exposition_parses() -> None:
    registry, _ = registry_with_exemplars()
    text = generate_latest(registry).decode()
    fams = {m.name: m for m in parse_text(text)}
    assert (
        registry.get_sample_value("lwsobs_wsi_live", {"source": "aiohttp", "role": "h1-server"})
        == 2
    )
    assert set(fams) >= {
        "lwsobs_wsi_live",
        "lwsobs_wsi_created",
        "lwsobs_transactions",
        "lwsobs_wsi_lifetime_seconds",
    }
    got = samples(list(fams.values()))
    key = (
        "lwsobs_transactions_total",
        frozenset({("source", "aiohttp"), ("role", "h1-server"), ("code_class", "5xx")}),
    )
    assert got[key] == 1
    assert "trace_id" not in text  # the classic text format has no exemplars


def test_openmetrics_exposition_parses_with_exemplars() -> None:
    registry, sc = registry_with_exemplars()
    text = generate_openmetrics(registry).decode()  # type: ignore[no-untyped-call]
    assert text.endswith("# EOF\n")
    fams = list(parse_openmetrics(text))  # type: ignore[no-untyped-call]
    names = {m.name for m in fams}
    assert "lwsobs_wsi_created" in names and "lwsobs_wsi_lifetime_seconds" in names
    got = exemplars([m for m in fams if m.type == "histogram"])
    assert set(got) == {
        ("lwsobs_wsi_lifetime_seconds", "aiohttp", "h1-server", "5.0"),
        ("lwsobs_wsi_lifetime_seconds", "aiohttp", "ws-server", "60.0"),
        ("lwsobs_transaction_duration_seconds", "aiohttp", "h1-server", "0.01"),
        ("lwsobs_transaction_duration_seconds", "aiohttp", "h1-server", "0.25"),
        ("lwsobs_transaction_duration_seconds", "aiohttp", "h1-server", "0.001"),  # b1, in b
    }
    ex = got[("lwsobs_transaction_duration_seconds", "aiohttp", "h1-server", "0.25")]
    assert ex.labels == {"trace_id": TRACE, "span_id": f"{sc.ids.txn_span_id(sc.a2):016x}"}
    created = {
        (s.labels["source"], s.labels["role"]): s.value
        for m in fams
        for s in m.samples
        if s.name == "lwsobs_wsi_created_total"
    }
    assert created[("aiohttp", "h1-server")] == 6
