"""Per-source ingest counters exist at 0 while a source is heard, before its first loss.

A counter series that is born at a non-zero value shows no `increase()` over its first samples,
so deploy/alerts.yml (LwsobsIngestLosingEvents) and the dashboard would miss the first loss of a
source. The pipeline therefore renders lost and duplicates at 0 for every live source that has,
or would get, its own label.
"""

from __future__ import annotations

from lwsobs.sources.lws.pipeline import OTHER, IngestPipeline
from lwsobs.sources.lws.wire import BYE
from tests.unit.test_ingest_pipeline import NS, T0, RecordingConsumer, line, lines


def per_source(pipeline: IngestPipeline, name: str) -> dict[str, float]:
    return {
        s.labels["source"]: s.value
        for family in pipeline.families()
        for s in family.samples
        if s.name == name
    }


def test_a_heard_source_has_lost_and_duplicates_at_zero() -> None:
    pipeline = IngestPipeline(RecordingConsumer())
    assert per_source(pipeline, "lwsobs_ingest_lost_total") == {}
    pipeline.feed_datagram(lines(line("app@h:1", 0), line("app@h:1", 1)), "udp", T0)
    # labelled by program name, exactly as the wsi metrics label the same producer
    assert per_source(pipeline, "lwsobs_ingest_lost_total") == {"app": 0}
    assert per_source(pipeline, "lwsobs_ingest_duplicates_total") == {"app": 0}
    pipeline.feed_datagram(lines(line("app@h:1", 4), line("app@h:1", 4)), "udp", T0)
    assert per_source(pipeline, "lwsobs_ingest_lost_total") == {"app": 2}
    assert per_source(pipeline, "lwsobs_ingest_duplicates_total") == {"app": 1}


def test_a_restarted_producer_keeps_its_label_and_takes_no_new_slot() -> None:
    pipeline = IngestPipeline(RecordingConsumer(), max_label_sources=1)
    pipeline.feed_datagram(lines(line("app@h:1", 0), line("app@h:1", 3)), "udp", T0)
    pipeline.feed_datagram(lines(line("app@h:2", 0), line("app@h:2", 2)), "udp", T0)
    assert per_source(pipeline, "lwsobs_ingest_lost_total") == {"app": 3}
    assert pipeline.folded == 0


def test_the_zero_series_ends_with_the_source_but_a_count_stays() -> None:
    pipeline = IngestPipeline(RecordingConsumer(), silence_limit_s=30)
    pipeline.feed_datagram(lines(line("quiet", 0)), "udp", T0)
    pipeline.feed_datagram(lines(line("bye", 0), line("bye", 2), line("bye", 3, r=BYE)), "udp", T0)
    assert per_source(pipeline, "lwsobs_ingest_lost_total") == {"quiet": 0, "bye": 1}
    pipeline.tick(T0 + 31 * NS)  # quiet is declared silent
    assert per_source(pipeline, "lwsobs_ingest_lost_total") == {"bye": 1}


def test_zero_series_never_exceed_the_label_limit_nor_take_a_label() -> None:
    pipeline = IngestPipeline(RecordingConsumer(), max_label_sources=2)
    for src in ("a", "b", "c"):
        pipeline.feed_datagram(lines(line(src, 0)), "udp", T0)
    assert per_source(pipeline, "lwsobs_ingest_lost_total") == {"a": 0, "b": 0}
    # rendering reserved nothing: the first source to lose lines gets the first label
    pipeline.feed_datagram(lines(line("c", 5)), "udp", T0)
    assert per_source(pipeline, "lwsobs_ingest_lost_total") == {"c": 4, "a": 0}
    # b loses lines first and takes the last label; a's zero series ends, its loss is folded
    pipeline.feed_datagram(lines(line("b", 3), line("a", 9)), "udp", T0)
    assert per_source(pipeline, "lwsobs_ingest_lost_total") == {"c": 4, "b": 2, OTHER: 8}
