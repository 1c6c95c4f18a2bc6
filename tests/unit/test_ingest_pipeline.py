"""IngestPipeline: what reaches the consumer, in which order, and what is counted instead."""

from __future__ import annotations

import json
from typing import Any

import pytest
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from lwsobs.sinks.metrics.exposition import render_families
from lwsobs.sources.lws.pipeline import OTHER, Counts, DropReason, EventConsumer, IngestPipeline
from lwsobs.sources.lws.wire import BYE, HEARTBEAT, HELLO, Event, RejectReason

NS = 1_000_000_000
T0 = 1_700_000_000 * NS
LIMIT_S = 30.0


class RecordingConsumer:
    """Records every call as a tuple; `fail_on` makes feed raise for that (src, seq)."""

    def __init__(self, fail_on: tuple[str, int] | None = None) -> None:
        self.calls: list[tuple[Any, ...]] = []
        self.fail_on = fail_on

    def feed(self, event: Event) -> None:
        if self.fail_on == (event.src, event.seq):
            raise RuntimeError("decoder bug")
        self.calls.append(("feed", event.src, event.seq, event.r))

    def lines_lost(self, src: str, count: int) -> None:
        self.calls.append(("lost", src, count))

    def source_silent(self, src: str, now_ns: int) -> None:
        self.calls.append(("silent", src, now_ns))

    def fed(self) -> list[tuple[str, int]]:
        return [(c[1], c[2]) for c in self.calls if c[0] == "feed"]

    def silent(self) -> list[str]:
        return [c[1] for c in self.calls if c[0] == "silent"]


_: type[EventConsumer] = RecordingConsumer  # mypy checks the protocol


def line(src: str, seq: int, r: int = 5, **fields: Any) -> bytes:
    return json.dumps({"v": 1, "src": src, "seq": seq, "t": T0 + seq, "r": r, **fields}).encode()


def lines(*items: bytes) -> bytes:
    return b"".join(item + b"\n" for item in items)


def make(**kwargs: Any) -> tuple[IngestPipeline, RecordingConsumer]:
    consumer = RecordingConsumer()
    return IngestPipeline(consumer, silence_limit_s=LIMIT_S, **kwargs), consumer


def samples(pipeline: IngestPipeline) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in pipeline.families()
        for s in family.samples
    }


# -- order, gaps, duplicates -----------------------------------------------------------------------


def test_events_are_fed_in_order_across_datagrams() -> None:
    pipeline, consumer = make()
    pipeline.feed_datagram(lines(line("a", 0, HELLO), line("a", 1), line("a", 2)), "udp", T0)
    pipeline.feed_datagram(lines(line("a", 3), line("b", 0)), "udp", T0)
    pipeline.feed_datagram(lines(line("a", 4, HEARTBEAT)), "udp", T0)
    assert consumer.calls == [
        ("feed", "a", 0, -1),
        ("feed", "a", 1, 5),
        ("feed", "a", 2, 5),
        ("feed", "a", 3, 5),
        ("feed", "b", 0, 5),
        ("feed", "a", 4, -2),
    ]
    assert pipeline.lines["udp"] == 6
    assert pipeline.lost_total == pipeline.duplicates_total == 0


def test_a_gap_is_reported_with_the_exact_count_before_the_next_event() -> None:
    pipeline, consumer = make()
    pipeline.feed_datagram(lines(*(line("a", s) for s in (0, 1, 5, 6, 10))), "udp", T0)
    assert consumer.calls == [
        ("feed", "a", 0, 5),
        ("feed", "a", 1, 5),
        ("lost", "a", 3),
        ("feed", "a", 5, 5),
        ("feed", "a", 6, 5),
        ("lost", "a", 3),
        ("feed", "a", 10, 5),
    ]
    assert pipeline.lost == {"a": 6}
    assert samples(pipeline)[("lwsobs_ingest_lost_total", (("source", "a"),))] == 6


def test_a_first_line_above_zero_is_no_gap() -> None:
    """The service may start after the producer: no baseline, nothing lost."""
    pipeline, consumer = make()
    pipeline.feed_datagram(lines(line("a", 41), line("a", 42)), "udp", T0)
    assert consumer.fed() == [("a", 41), ("a", 42)]
    assert pipeline.lost_total == 0


def test_duplicates_and_reorders_are_counted_not_fed() -> None:
    pipeline, consumer = make()
    pipeline.feed_datagram(lines(*(line("a", s) for s in (0, 1, 1, 3, 2, 0, 4))), "udp", T0)
    assert consumer.fed() == [("a", 0), ("a", 1), ("a", 3), ("a", 4)]
    assert ("lost", "a", 1) in consumer.calls  # 2 was missing when 3 came; late 2 is not applied
    assert pipeline.duplicates == {"a": 3}
    assert pipeline.lost == {"a": 1}
    assert samples(pipeline)[("lwsobs_ingest_duplicates_total", (("source", "a"),))] == 3


def test_hello_restart_of_the_same_source_is_fed_normally() -> None:
    pipeline, consumer = make()
    first = [line("a", 0, HELLO, pid=10), line("a", 1), line("a", 2)]
    pipeline.feed_datagram(lines(*first), "udp", T0)
    # the producer restarts: new pid, seq back at 0, a later t
    restart = json.dumps({"v": 1, "src": "a", "seq": 0, "t": T0 + NS, "r": -1, "pid": 11})
    pipeline.feed_datagram(lines(restart.encode(), line("a", 1)), "udp", T0 + NS)
    assert consumer.fed() == [("a", 0), ("a", 1), ("a", 2), ("a", 0), ("a", 1)]
    assert pipeline.lost_total == pipeline.duplicates_total == 0


def test_a_repeated_hello_is_a_duplicate_not_a_restart() -> None:
    """The same HELLO twice (a retried POST) must not replay the lines after it."""
    pipeline, consumer = make()
    body = lines(line("a", 0, HELLO, pid=10), line("a", 1), line("a", 2))
    pipeline.feed_lines(body, "http", T0)
    assert pipeline.feed_lines(body, "http", T0) == Counts(accepted=3, rejected=0)
    pipeline.feed_lines(lines(line("a", 3)), "http", T0)
    assert consumer.fed() == [("a", 0), ("a", 1), ("a", 2), ("a", 3)]
    assert pipeline.duplicates == {"a": 3}
    assert pipeline.lost_total == 0


# -- BYE and silence -------------------------------------------------------------------------------


def test_bye_is_fed_and_then_the_source_is_never_silent() -> None:
    pipeline, consumer = make()
    pipeline.feed_datagram(lines(line("a", 0, HELLO), line("a", 1), line("a", 2, BYE)), "udp", T0)
    assert consumer.fed() == [("a", 0), ("a", 1), ("a", 2)]
    assert pipeline.live_sources == 0
    pipeline.tick(T0 + 3600 * NS)
    assert consumer.silent() == []
    assert pipeline.silent_total == 0


def test_a_straggler_after_bye_is_not_applied_and_does_not_revive_the_source() -> None:
    pipeline, consumer = make()
    pipeline.feed_datagram(lines(line("a", 0, HELLO), line("a", 2), line("a", 3, BYE)), "udp", T0)
    pipeline.feed_datagram(lines(line("a", 1)), "udp", T0 + NS)  # reordered behind the BYE
    assert consumer.fed() == [("a", 0), ("a", 2), ("a", 3)]
    assert pipeline.duplicates == {"a": 1}
    assert not pipeline.is_live("a")
    pipeline.tick(T0 + 3600 * NS)
    assert consumer.silent() == []


def test_a_restart_after_bye_is_live_again() -> None:
    pipeline, consumer = make()
    pipeline.feed_datagram(lines(line("a", 0, HELLO, pid=1), line("a", 1, BYE)), "udp", T0)
    later = json.dumps({"v": 1, "src": "a", "seq": 0, "t": T0 + 5 * NS, "r": -1, "pid": 2})
    pipeline.feed_datagram(lines(later.encode()), "udp", T0 + 5 * NS)
    assert consumer.fed() == [("a", 0), ("a", 1), ("a", 0)]
    assert pipeline.is_live("a")
    pipeline.tick(T0 + 5 * NS + int(LIMIT_S * NS) + 1)
    assert consumer.silent() == ["a"]


def test_silence_is_reported_once_and_again_only_after_speaking_again() -> None:
    pipeline, consumer = make()
    limit = int(LIMIT_S * NS)
    pipeline.feed_datagram(lines(line("a", 0)), "udp", T0)
    pipeline.tick(T0 + limit)  # exactly the limit is not longer than it
    assert consumer.silent() == []
    pipeline.tick(T0 + limit + 1)
    assert consumer.calls[-1] == ("silent", "a", T0 + limit + 1)
    pipeline.tick(T0 + 2 * limit)
    pipeline.tick(T0 + 10 * limit)
    assert consumer.silent() == ["a"]
    assert pipeline.live_sources == 0
    # it speaks again (the lines in between are a gap), then goes quiet again
    t1 = T0 + 11 * limit
    pipeline.feed_datagram(lines(line("a", 5)), "udp", t1)
    assert consumer.calls[-2:] == [("lost", "a", 4), ("feed", "a", 5, 5)]
    assert pipeline.live_sources == 1
    pipeline.tick(t1 + limit)
    assert consumer.silent() == ["a"]
    pipeline.tick(t1 + limit + 1)
    assert consumer.silent() == ["a", "a"]
    assert pipeline.silent_total == 2


def test_only_the_quiet_source_is_silent() -> None:
    pipeline, consumer = make()
    limit = int(LIMIT_S * NS)
    pipeline.feed_datagram(lines(line("a", 0), line("b", 0)), "udp", T0)
    pipeline.feed_datagram(lines(line("b", 1, HEARTBEAT)), "udp", T0 + limit)
    pipeline.tick(T0 + limit + 1)
    assert consumer.silent() == ["a"]
    assert pipeline.is_live("b") and not pipeline.is_live("a")
    assert samples(pipeline)[("lwsobs_ingest_sources", ())] == 1


def test_a_duplicate_still_proves_the_source_alive() -> None:
    pipeline, consumer = make()
    limit = int(LIMIT_S * NS)
    pipeline.feed_datagram(lines(line("a", 0), line("a", 1)), "udp", T0)
    pipeline.feed_datagram(lines(line("a", 1)), "udp", T0 + limit)
    pipeline.tick(T0 + limit + 1)
    assert consumer.silent() == []


def test_too_many_live_sources_give_up_the_least_recently_heard() -> None:
    pipeline, consumer = make(max_sources=2)
    pipeline.feed_datagram(lines(line("a", 0), line("b", 0)), "udp", T0)
    pipeline.feed_datagram(lines(line("a", 1), line("c", 0)), "udp", T0 + 1)
    assert consumer.silent() == ["b"]
    assert pipeline.live_sources == 2
    assert pipeline.silent_total == 1


# -- rejections ------------------------------------------------------------------------------------


def test_a_bad_line_between_two_good_ones_spoils_nothing() -> None:
    pipeline, consumer = make()
    counts = pipeline.feed_lines(lines(line("a", 0), b"{not json", line("a", 1)), "http", T0)
    assert counts == Counts(accepted=2, rejected=1)
    assert consumer.fed() == [("a", 0), ("a", 1)]
    assert pipeline.rejected == {("http", RejectReason.NOT_JSON): 1}
    assert pipeline.lines["http"] == 3


def test_rejections_are_counted_by_reason_and_transport() -> None:
    pipeline, consumer = make()
    bad_udp = [
        b"[1]",
        b'{"v": 2, "src": "a", "seq": 0, "t": 0, "r": 1}',
        b'{"v": 1, "seq": 0, "t": 0, "r": 1}',
        b'{"v": 1, "src": "a b", "seq": 0, "t": 0, "r": 1}',
        b"\xff\xfe",
        b"x" * (16 * 1024 + 1),
    ]
    pipeline.feed_datagram(lines(line("a", 0), *bad_udp), "udp", T0)
    pipeline.feed_datagram(lines(b"nope", b"nope"), "unix", T0)
    assert pipeline.feed_lines(b"{\n", "http", T0) == Counts(0, 1)
    assert pipeline.rejected == {
        ("udp", RejectReason.NOT_OBJECT): 1,
        ("udp", RejectReason.BAD_VERSION): 1,
        ("udp", RejectReason.MISSING_FIELD): 1,
        ("udp", RejectReason.BAD_FIELD): 1,
        ("udp", RejectReason.NOT_UTF8): 1,
        ("udp", RejectReason.TOO_LONG): 1,
        ("unix", RejectReason.NOT_JSON): 2,
        ("http", RejectReason.NOT_JSON): 1,
    }
    assert consumer.fed() == [("a", 0)]
    got = samples(pipeline)
    key = "lwsobs_ingest_rejected_total"
    assert got[(key, (("reason", "not_json"), ("transport", "unix")))] == 2
    assert got[(key, (("reason", "too_long"), ("transport", "udp")))] == 1
    assert got[(key, (("reason", "too_long"), ("transport", "http")))] == 0
    assert got[("lwsobs_ingest_lines_total", (("transport", "udp"),))] == 7
    assert got[("lwsobs_ingest_lines_total", (("transport", "unix"),))] == 2
    assert got[("lwsobs_ingest_lines_total", (("transport", "file"),))] == 0


def test_empty_lines_are_not_lines() -> None:
    pipeline, _ = make()
    assert pipeline.feed_lines(b"\n\n" + line("a", 0) + b"\n\n", "http", T0) == Counts(1, 0)
    assert pipeline.lines["http"] == 1


# -- robustness and bounds -------------------------------------------------------------------------


def test_a_consumer_error_costs_only_its_own_event() -> None:
    consumer = RecordingConsumer(fail_on=("a", 1))
    pipeline = IngestPipeline(consumer)
    pipeline.feed_datagram(lines(line("a", 0), line("a", 1), line("a", 2)), "udp", T0)
    assert consumer.fed() == [("a", 0), ("a", 2)]
    assert pipeline.consumer_errors == 1
    assert isinstance(pipeline.last_error, RuntimeError)
    assert samples(pipeline)[("lwsobs_ingest_consumer_errors_total", ())] == 1


def test_source_labels_are_bounded_and_the_folding_is_counted() -> None:
    pipeline, _ = make(max_label_sources=2)
    for src in ("a", "b", "c", "d"):
        pipeline.feed_datagram(lines(line(src, 0), line(src, 3)), "udp", T0)
    pipeline.feed_datagram(lines(line("c", 3)), "udp", T0)  # c again: duplicate, folded already
    assert pipeline.lost == {"a": 2, "b": 2, OTHER: 4}
    assert pipeline.duplicates == {OTHER: 1}
    assert pipeline.folded == 2
    got = samples(pipeline)
    assert got[("lwsobs_ingest_sources_folded_total", ())] == 2
    assert {lbl for (name, lbl) in got if name == "lwsobs_ingest_lost_total"} == {
        (("source", "a"),),
        (("source", "b"),),
        (("source", OTHER),),
    }


def test_dropped_datagrams_are_counted_by_reason() -> None:
    pipeline, _ = make()
    pipeline.note_dropped(DropReason.OVERLOAD, 3)
    pipeline.note_dropped(DropReason.OVERSIZE)
    got = samples(pipeline)
    assert got[("lwsobs_ingest_dropped_total", (("reason", "overload"),))] == 3
    assert got[("lwsobs_ingest_dropped_total", (("reason", "oversize"),))] == 1


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"silence_limit_s": 0}, "silence_limit_s must be positive"),
        ({"silence_limit_s": float("inf")}, "silence_limit_s must be positive"),
        ({"max_sources": 0}, "max_sources must be at least 1"),
        ({"max_label_sources": -1}, "max_label_sources must be >= 0"),
    ],
)
def test_bad_arguments(kwargs: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        IngestPipeline(RecordingConsumer(), **kwargs)


# -- exposition ------------------------------------------------------------------------------------


class _Families:
    def __init__(self, pipeline: IngestPipeline) -> None:
        self.pipeline = pipeline

    def collect(self) -> Any:
        return self.pipeline.families()


def test_families_render_through_prometheus_client_with_every_reason() -> None:
    pipeline, _ = make()
    pipeline.feed_datagram(lines(line("a", 0), b"x", line("a", 2), line("a", 2)), "udp", T0)
    pipeline.tick(T0 + 3600 * NS)
    registry = CollectorRegistry(auto_describe=False)
    registry.register(_Families(pipeline))
    text = generate_latest(registry).decode()
    assert text == render_families(pipeline.families(), openmetrics=False)
    parsed = {f.name: f for f in text_string_to_metric_families(text)}
    reasons = {s.labels["reason"] for s in parsed["lwsobs_ingest_rejected"].samples}
    assert reasons == {r.value for r in RejectReason}
    assert {s.labels["transport"] for s in parsed["lwsobs_ingest_rejected"].samples} == {
        "udp",
        "unix",
        "http",
        "file",
    }
    assert parsed["lwsobs_ingest_sources_silent"].samples[0].value == 1
    assert parsed["lwsobs_ingest_lost"].samples[0].value == 1
    assert parsed["lwsobs_ingest_duplicates"].samples[0].value == 1
    assert parsed["lwsobs_ingest_sources"].type == "gauge"
