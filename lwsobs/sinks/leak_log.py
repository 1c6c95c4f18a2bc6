"""One log line per flagged wsi, so a leak is visible even with no telemetry backend."""

from __future__ import annotations

import logging

from lwsobs.core.model import Wsi
from lwsobs.core.policy import NS
from lwsobs.sinks.base import NullSink
from lwsobs.sinks.live import format_peer

log = logging.getLogger("lwsobs.leaks")


class LeakLog(NullSink):
    def wsi_flagged(self, wsi: Wsi, rule: str, certain: bool) -> None:
        now = wsi.span_end_ns if wsi.span_end_ns is not None else wsi.last_ns
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
