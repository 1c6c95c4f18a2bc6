"""The one clock the adapters read: wall-clock nanoseconds that never go backwards.

Spans need epoch time, durations need a monotonic clock; anchoring monotonic time to the wall
clock once gives both, so an NTP step never yields a negative duration.
"""

from __future__ import annotations

import time
from typing import Final

ANCHOR_NS: Final = time.time_ns() - time.monotonic_ns()
"""Add time.monotonic_ns() to this for the epoch time; hot paths inline it."""

_monotonic_ns: Final = time.monotonic_ns


def now_ns() -> int:
    return ANCHOR_NS + _monotonic_ns()
