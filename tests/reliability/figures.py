"""Figures the reliability tests measure, printed as one table at the end of the run.

Tests never assert a timing; they record what they measured here (and print it, for -s), and
conftest.py prints the table in pytest's terminal summary, so every CI log carries the numbers
docs/reliability.md quotes.
"""

from __future__ import annotations

import os
import resource
import statistics

FIGURES: dict[str, str] = {}


def record(name: str, value: object) -> None:
    """Keep `value` under `name` (the last one wins) and print it for a -s run."""
    FIGURES[name] = str(value)
    print(f"[reliability] {name}: {value}")


def percentile(samples: list[float], p: float) -> float:
    """The p-th percentile (0..100) by the nearest-rank method; 0.0 for no samples."""
    if not samples:
        return 0.0
    ordered = sorted(samples)
    rank = max(1, min(len(ordered), round(p / 100 * len(ordered) + 0.5)))
    return ordered[rank - 1]


def latency_summary(samples_s: list[float]) -> str:
    ms = [s * 1000 for s in samples_s]
    return (
        f"n={len(ms)} p50={percentile(ms, 50):.1f} ms p99={percentile(ms, 99):.1f} ms "
        f"max={max(ms, default=0.0):.1f} ms mean={statistics.fmean(ms) if ms else 0.0:.1f} ms"
    )


def rss_bytes(pid: int | None = None) -> int:
    """Resident set size now, from /proc (this process by default)."""
    with open(f"/proc/{pid or os.getpid()}/statm") as f:
        return int(f.read().split()[1]) * resource.getpagesize()


def table() -> list[str]:
    if not FIGURES:
        return []
    width = max(len(name) for name in FIGURES)
    return [f"{name:<{width}}  {value}" for name, value in sorted(FIGURES.items())]
