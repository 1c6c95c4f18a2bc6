"""One log line per flagged wsi, so a leak is visible even with no telemetry backend.

Rate-limited: a flood of verdicts (a producer dying with 100,000 live wsis, a table at its
eviction cap) must not flood the log too. At most `per_second` lines are written per second of
flag time; the rest are summarised in one line per second by rule. The metrics count every one.
"""

from __future__ import annotations

import logging
from collections import Counter

from lwsobs.core.model import Wsi
from lwsobs.core.policy import NS
from lwsobs.core.sink import BaseSink
from lwsobs.sinks.live import format_peer

log = logging.getLogger("lwsobs.leaks")

DEFAULT_LINES_PER_SECOND = 20


class LeakLog(BaseSink):
    def __init__(self, per_second: int = DEFAULT_LINES_PER_SECOND) -> None:
        self.per_second = per_second
        self._second: int | None = None  # the second of flag time the count below is for
        self._logged = 0
        self.suppressed: Counter[str] = Counter()  # by rule, in the current second

    def wsi_flagged(self, wsi: Wsi, rule: str, certain: bool) -> None:
        now = wsi.span_end_ns if wsi.span_end_ns is not None else wsi.last_ns
        second = now // NS
        if second != self._second:
            self.flush()
            self._second, self._logged = second, 0
        if self._logged >= self.per_second:
            self.suppressed[rule] += 1
            return
        self._logged += 1
        attrs = wsi.attrs or {}
        acquired = ""  # an aiohttp client connection names the request that holds it
        if "lws.acquired.url" in attrs:
            acquired = " acquired={} {} at={}".format(
                attrs.get("lws.acquired.method"),
                attrs["lws.acquired.url"],
                attrs.get("lws.acquired.at", "unknown"),
            )
        log.warning(
            "%s wsi %s role=%s rule=%s age=%.3fs idle=%.3fs transactions=%d peer=%s%s",
            "leaked" if certain else "leak suspect",
            wsi.id,
            wsi.role.value,
            rule,
            (now - wsi.created_ns) / NS,
            (now - wsi.last_ns) / NS,
            wsi.transactions,
            format_peer(wsi.peer),
            acquired,
        )

    def flush(self) -> None:
        """Write the summary of what the limit held back (the observer calls it every tick)."""
        if not self.suppressed:
            return
        total = sum(self.suppressed.values())
        rules = ", ".join(f"{rule}={n}" for rule, n in sorted(self.suppressed.items()))
        log.warning(
            "%d more wsis flagged within one second and not logged one by one (%s); "
            "lwsobs_wsi_leaked_total counts every one, /api/leaks lists the latest",
            total,
            rules,
        )
        self.suppressed.clear()
