"""The pipeline's hot loop (runs of in-order lines of one source) against its full path.

`feed_lines` skips the per-line checks while a body continues one source's sequence in order.
A body fed one line per call never forms a run, so each line takes the full path: feeding the
same lines both ways must give the consumer the same calls and leave the same counters, whatever
the mix of sources, gaps, duplicates, HELLOs, BYEs, bad lines and failing consumer calls.
"""

from __future__ import annotations

from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from lwsobs.sources.lws.pipeline import IngestPipeline
from lwsobs.sources.lws.wire import BYE, HEARTBEAT, HELLO, Event
from tests.unit.test_ingest_pipeline import T0, RecordingConsumer, line


class FailingConsumer(RecordingConsumer):
    """Records like RecordingConsumer; raises for every event whose seq is a multiple of 7."""

    def feed(self, event: Event) -> None:
        self.calls.append(("feed", event.src, event.seq, event.r))
        if event.seq % 7 == 6:
            raise RuntimeError("decoder bug")


def counters(pipeline: IngestPipeline) -> dict[str, Any]:
    return {
        "lines": pipeline.lines,
        "rejected": pipeline.rejected,
        "lost": pipeline.lost,
        "duplicates": pipeline.duplicates,
        "errors": pipeline.consumer_errors,
        "live": list(pipeline._live.items()),
        "departed": list(pipeline._departed.items()),
        "sequence": [(src, pipeline.sequence.stats(src)) for src in pipeline.sequence._sources],
    }


STEP = st.tuples(
    st.sampled_from(["a", "b", "c"]),
    st.sampled_from(["next", "next", "next", "next", "gap", "back", "same", "restart"]),
    st.sampled_from([5, 5, 5, 30, HEARTBEAT, BYE, HELLO, "bad"]),
)


def body_lines(steps: list[tuple[str, str, object]]) -> list[bytes]:
    """Lines of a few sources whose seq mostly advances by one, with every kind of break."""
    seq = {"a": 0, "b": 0, "c": 0}
    out: list[bytes] = []
    for src, move, r in steps:
        if r == "bad":
            out.append(b'{"v":1,"src":"' + src.encode() + b'"}')
            continue
        if move == "restart":
            seq[src] = 0
            out.append(line(src, 0, HELLO, pid=len(out)))
            continue
        seq[src] += {"next": 1, "gap": 3, "back": -2, "same": 0}[move]
        extra: dict[str, Any] = {"pid": 1} if r == HELLO else {}
        out.append(line(src, max(seq[src], 0), int(r), wsi="a1", ctx="c1", **extra))  # type: ignore[call-overload]
    return out


@settings(max_examples=300, deadline=None)
@given(st.lists(STEP, max_size=40), st.integers(1, 4))
def test_runs_change_nothing_the_full_path_would_do(
    steps: list[tuple[str, str, object]], max_sources: int
) -> None:
    lines = body_lines(steps)
    whole = IngestPipeline(FailingConsumer(), max_sources=max_sources)
    whole.feed_lines(b"\n".join(lines), "udp", T0)
    single = IngestPipeline(FailingConsumer(), max_sources=max_sources)
    for data in lines:
        single.feed_lines(data, "udp", T0)
    assert whole.consumer.calls == single.consumer.calls  # type: ignore[attr-defined]
    assert counters(whole) == counters(single)


def test_a_run_is_taken_and_broken_where_expected() -> None:
    """The common shape: one source in order, a gap, a duplicate and a failing event inside."""
    seqs = [0, 1, 2, 3, 7, 8, 8, 9, 10]
    lines = [line("a", 0, HELLO, pid=1)] + [line("a", s, 5, wsi="a1") for s in seqs[1:]]
    whole = IngestPipeline(FailingConsumer())
    whole.feed_lines(b"\n".join(lines), "udp", T0)
    fed = [c[2] for c in whole.consumer.calls if c[0] == "feed"]  # type: ignore[attr-defined]
    assert fed == [0, 1, 2, 3, 7, 8, 9, 10]
    assert whole.lost == {"a": 3} and whole.duplicates == {"a": 1}
    assert whole.consumer_errors == 0
    whole.feed_lines(b"\n".join(line("a", s, 5) for s in range(11, 15)), "udp", T0)
    assert whole.consumer_errors == 1  # seq 13 raised; 14 was still applied
    assert [c[2] for c in whole.consumer.calls][-4:] == [11, 12, 13, 14]  # type: ignore[attr-defined]
