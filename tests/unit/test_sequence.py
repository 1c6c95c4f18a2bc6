"""SequenceTracker: gaps counted exactly, duplicates and reorders never applied, bounded memory."""

from __future__ import annotations

import pytest

from lwsobs.sources.lws.sequence import Action, SequenceTracker, SourceStats, Verdict


def feed(tracker: SequenceTracker, src: str, seqs: list[int]) -> list[Verdict]:
    return [tracker.observe(src, seq) for seq in seqs]


def test_first_line_of_a_source_is_applied_and_marked_first() -> None:
    tracker = SequenceTracker()
    assert tracker.observe("a", 0) == Verdict(Action.APPLY, lost=0, first=True)
    assert tracker.stats("a") == SourceStats(last_seq=0, lost=0, duplicates=0)


def test_first_line_above_zero_is_not_counted_as_lost() -> None:
    """The service may have started after the producer: no baseline, no gap."""
    tracker = SequenceTracker()
    verdict = tracker.observe("a", 57)
    assert verdict.apply and verdict.first and verdict.lost == 0
    assert tracker.lost == 0
    assert tracker.observe("a", 58) == Verdict(Action.APPLY)


def test_in_order_lines_are_applied() -> None:
    tracker = SequenceTracker()
    verdicts = feed(tracker, "a", list(range(10)))
    assert all(v.apply for v in verdicts)
    assert [v.lost for v in verdicts] == [0] * 10
    assert [v.first for v in verdicts] == [True] + [False] * 9
    assert (tracker.lost, tracker.duplicates) == (0, 0)


def test_a_gap_reports_exactly_the_missing_lines() -> None:
    tracker = SequenceTracker()
    verdicts = feed(tracker, "a", [0, 1, 5, 6, 10])
    assert [v.lost for v in verdicts] == [0, 0, 3, 0, 3]
    assert all(v.action is Action.APPLY for v in verdicts)
    assert tracker.lost == 6
    assert tracker.stats("a") == SourceStats(last_seq=10, lost=6, duplicates=0)


def test_a_huge_gap() -> None:
    tracker = SequenceTracker()
    feed(tracker, "a", [0])
    assert tracker.observe("a", (1 << 63) - 1).lost == (1 << 63) - 2


@pytest.mark.parametrize("seqs", [[0, 1, 1], [0, 1, 2, 0], [3, 3], [5, 6, 7, 2]])
def test_duplicates_are_counted_not_applied(seqs: list[int]) -> None:
    tracker = SequenceTracker()
    *head, last = feed(tracker, "a", seqs)
    assert all(v.apply for v in head)
    assert last == Verdict(Action.DUPLICATE)
    assert not last.apply
    assert tracker.duplicates == 1
    stats = tracker.stats("a")
    assert stats is not None and stats.last_seq == max(seqs) and stats.duplicates == 1


def test_a_reorder_counts_a_loss_then_a_duplicate() -> None:
    """The spec's rule: a late line is at or below the last seq, so it is not applied."""
    tracker = SequenceTracker()
    verdicts = feed(tracker, "a", [0, 2, 1, 3])
    assert [v.action for v in verdicts] == [
        Action.APPLY,
        Action.APPLY,
        Action.DUPLICATE,
        Action.APPLY,
    ]
    assert [v.lost for v in verdicts] == [0, 1, 0, 0]
    assert (tracker.lost, tracker.duplicates) == (1, 1)


def test_sources_are_independent() -> None:
    tracker = SequenceTracker()
    feed(tracker, "a", [0, 1, 2])
    assert tracker.observe("b", 0).first
    assert tracker.observe("b", 3).lost == 2
    assert tracker.observe("a", 3) == Verdict(Action.APPLY)
    assert tracker.observe("a", 1).action is Action.DUPLICATE
    assert tracker.stats("a") == SourceStats(3, 0, 1)
    assert tracker.stats("b") == SourceStats(3, 2, 0)
    assert (tracker.lost, tracker.duplicates) == (2, 1)


def test_a_restart_without_reset_looks_like_duplicates() -> None:
    """Why the caller must reset on HELLO."""
    tracker = SequenceTracker()
    feed(tracker, "a", list(range(100)))
    assert all(v.action is Action.DUPLICATE for v in feed(tracker, "a", [0, 1, 2]))


def test_reset_on_hello_restarts_the_sequence() -> None:
    tracker = SequenceTracker()
    feed(tracker, "a", [0, 1, 2, 3, 4, 9])  # 4 lost
    tracker.observe("a", 3)  # 1 duplicate
    tracker.reset("a")
    assert tracker.stats("a") == SourceStats(last_seq=None, lost=4, duplicates=1)
    assert tracker.observe("a", 0) == Verdict(Action.APPLY, first=True)
    assert tracker.observe("a", 1) == Verdict(Action.APPLY)
    assert tracker.observe("a", 3).lost == 1
    assert tracker.stats("a") == SourceStats(last_seq=3, lost=5, duplicates=1)
    assert (tracker.lost, tracker.duplicates) == (5, 1)


def test_reset_of_an_unknown_source_does_nothing() -> None:
    tracker = SequenceTracker()
    tracker.reset("nobody")
    assert len(tracker) == 0 and "nobody" not in tracker


def test_forget_on_bye_drops_the_source_but_not_the_totals() -> None:
    tracker = SequenceTracker()
    feed(tracker, "a", [0, 2, 2])
    tracker.forget("a")
    assert "a" not in tracker and tracker.stats("a") is None and len(tracker) == 0
    assert (tracker.lost, tracker.duplicates) == (1, 1)
    assert tracker.observe("a", 0).first
    tracker.forget("a")
    tracker.forget("a")  # idempotent
    tracker.forget("never seen")


def test_eviction_keeps_at_most_max_sources() -> None:
    tracker = SequenceTracker(max_sources=2)
    tracker.observe("a", 0)
    tracker.observe("b", 0)
    tracker.observe("c", 0)
    assert len(tracker) == 2 and "a" not in tracker
    assert "b" in tracker and "c" in tracker
    assert tracker.evictions == 1
    assert tracker.observe("a", 5).first  # evicted: no baseline any more, nothing counted lost
    assert tracker.lost == 0


def test_eviction_picks_the_least_recently_seen() -> None:
    tracker = SequenceTracker(max_sources=2)
    tracker.observe("a", 0)
    tracker.observe("b", 0)
    tracker.observe("a", 0)  # a duplicate still counts as seen
    tracker.observe("c", 0)
    assert "a" in tracker and "b" not in tracker and "c" in tracker


def test_reset_and_stats_do_not_refresh_recency() -> None:
    tracker = SequenceTracker(max_sources=2)
    tracker.observe("a", 0)
    tracker.observe("b", 0)
    tracker.reset("a")
    tracker.stats("a")
    tracker.observe("c", 0)
    assert "a" not in tracker and "b" in tracker


def test_many_sources_stay_bounded() -> None:
    tracker = SequenceTracker(max_sources=100)
    for i in range(10_000):
        tracker.observe(f"app@h:{i}", 0)
    assert len(tracker) == 100
    assert tracker.evictions == 9_900
    assert f"app@h:{9_999}" in tracker and "app@h:0" not in tracker


@pytest.mark.parametrize("bad", [0, -1])
def test_max_sources_must_be_positive(bad: int) -> None:
    with pytest.raises(ValueError, match="max_sources"):
        SequenceTracker(max_sources=bad)


def test_max_sources_of_one() -> None:
    tracker = SequenceTracker(max_sources=1)
    tracker.observe("a", 0)
    tracker.observe("a", 1)
    assert tracker.observe("b", 0).first
    assert tracker.observe("a", 2).first
    assert tracker.evictions == 2 and len(tracker) == 1
