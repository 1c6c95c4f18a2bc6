"""A histogram that is a list of integers, read by the Collector at scrape time.

Observing costs one binary search and two additions; no locks, no label lookups. The last
observation of each bucket may carry an exemplar object, resolved to trace ids only when scraped.
"""

from __future__ import annotations

from collections.abc import Sequence

LIFETIME_BUCKETS_S = (
    0.001,
    0.005,
    0.01,
    0.05,
    0.1,
    0.5,
    1.0,
    5.0,
    10.0,
    30.0,
    60.0,
    300.0,
    900.0,
    3600.0,
    14400.0,
    86400.0,
)
DURATION_BUCKETS_S = (
    0.0005,
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
    10.0,
    30.0,
)
TRANSACTIONS_BUCKETS = (0.0, 1.0, 2.0, 3.0, 5.0, 10.0, 20.0, 50.0, 100.0, 1000.0, 10000.0)


def bucket_of(bounds: tuple[float, ...], value: float) -> int:
    """The bucket `value` falls in: the first bound >= value, len(bounds) for +Inf.

    bisect_left's rule, written here so the compiled build runs it natively rather than calling
    the bisect module through a global lookup (twice per request).
    """
    lo = 0
    hi = len(bounds)
    while lo < hi:
        mid = (lo + hi) // 2
        if bounds[mid] < value:
            lo = mid + 1
        else:
            hi = mid
    return lo


class Histogram:
    """Per-bucket (non-cumulative) counts; bucket i counts v <= bounds[i], the last is +Inf."""

    __slots__ = ("bounds", "counts", "exemplars", "sum")

    def __init__(self, bounds: Sequence[float]) -> None:
        self.bounds: tuple[float, ...] = tuple(bounds)
        self.counts = [0] * (len(bounds) + 1)
        self.exemplars: list[tuple[object, float] | None] = [None] * (len(bounds) + 1)
        self.sum = 0.0

    def observe(self, value: float, exemplar: object = None) -> None:
        i = bucket_of(self.bounds, value)
        self.counts[i] += 1
        self.sum += value
        if exemplar is not None:
            self.exemplars[i] = (exemplar, value)

    @property
    def count(self) -> int:
        return sum(self.counts)

    def cumulative(self) -> list[tuple[str, int]]:
        """(le, cumulative count) pairs in exposition order, ending with +Inf."""
        out: list[tuple[str, int]] = []
        acc = 0
        for bound, n in zip(self.bounds, self.counts, strict=False):
            acc += n
            out.append((_format_le(bound), acc))
        acc += self.counts[-1]
        out.append(("+Inf", acc))
        return out


def _format_le(bound: float) -> str:
    return repr(float(bound))
