"""The integer-list Histogram: le bucket semantics, +Inf, cumulative(), sum and exemplars."""

from __future__ import annotations

import pytest

from lwsobs.sinks.metrics.histogram import (
    DURATION_BUCKETS_S,
    LIFETIME_BUCKETS_S,
    TRANSACTIONS_BUCKETS,
    Histogram,
)

BOUNDS = (0.1, 1.0, 10.0)


@pytest.mark.parametrize("bounds", [LIFETIME_BUCKETS_S, DURATION_BUCKETS_S, TRANSACTIONS_BUCKETS])
def test_bucket_bounds_are_strictly_increasing(bounds: tuple[float, ...]) -> None:
    assert list(bounds) == sorted(set(bounds))


def test_a_new_histogram_is_empty() -> None:
    h = Histogram(BOUNDS)
    assert h.counts == [0, 0, 0, 0]
    assert h.exemplars == [None, None, None, None]
    assert h.count == 0
    assert h.sum == 0.0
    assert h.cumulative() == [("0.1", 0), ("1.0", 0), ("10.0", 0), ("+Inf", 0)]


@pytest.mark.parametrize(
    ("value", "bucket"),
    [
        (-5.0, 0),
        (0.0, 0),
        (0.1, 0),  # equal to a bound: that bucket (le)
        (0.1000001, 1),
        (0.5, 1),
        (1.0, 1),
        (1, 1),
        (1.0000001, 2),
        (10.0, 2),
        (10.0000001, 3),
        (1e12, 3),
        (float("inf"), 3),
    ],
)
def test_observe_picks_the_le_bucket(value: float, bucket: int) -> None:
    h = Histogram(BOUNDS)
    h.observe(value)
    expected = [0, 0, 0, 0]
    expected[bucket] = 1
    assert h.counts == expected
    assert h.count == 1
    assert h.sum == value


@pytest.mark.parametrize("bounds", [LIFETIME_BUCKETS_S, DURATION_BUCKETS_S, TRANSACTIONS_BUCKETS])
def test_every_bound_lands_in_its_own_bucket(bounds: tuple[float, ...]) -> None:
    h = Histogram(bounds)
    for b in bounds:
        h.observe(b)
    assert h.counts == [1] * len(bounds) + [0]
    assert [n for _, n in h.cumulative()] == [*range(1, len(bounds) + 1), len(bounds)]


def test_cumulative_sum_and_count() -> None:
    h = Histogram(BOUNDS)
    for v in (0.05, 0.1, 0.2, 3.0, 3.0, 10.0, 11.0, 500.0):
        h.observe(v)
    assert h.counts == [2, 1, 3, 2]
    assert h.cumulative() == [("0.1", 2), ("1.0", 3), ("10.0", 6), ("+Inf", 8)]
    assert h.count == 8
    assert h.sum == pytest.approx(527.35)


def test_le_labels_are_float_reprs() -> None:
    h = Histogram(TRANSACTIONS_BUCKETS)
    assert [le for le, _ in h.cumulative()] == [
        "0.0",
        "1.0",
        "2.0",
        "3.0",
        "5.0",
        "10.0",
        "20.0",
        "50.0",
        "100.0",
        "1000.0",
        "10000.0",
        "+Inf",
    ]
    assert Histogram((1, 2)).cumulative()[0] == ("1.0", 0)  # integer bounds render as floats


def test_exemplars_are_the_last_observation_per_bucket() -> None:
    h = Histogram(BOUNDS)
    a, b, c, d = object(), object(), object(), object()
    h.observe(0.05, a)
    h.observe(0.07, b)
    h.observe(5.0, c)
    h.observe(5.5)  # no exemplar: keeps the previous one
    h.observe(99.0, d)
    assert h.exemplars == [(b, 0.07), None, (c, 5.0), (d, 99.0)]
    assert h.counts == [2, 0, 2, 1]


def test_empty_bounds_have_only_inf() -> None:
    h = Histogram(())
    h.observe(3.0, "x")
    assert h.cumulative() == [("+Inf", 1)]
    assert h.exemplars == [("x", 3.0)]
