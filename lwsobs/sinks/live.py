"""The live view: JSON-ready pictures of live wsis and flagged leaks for /api/wsis, /api/leaks."""

from __future__ import annotations

from collections import deque
from itertools import islice
from typing import Any

from lwsobs.core.model import Peer, Wsi
from lwsobs.core.policy import NS
from lwsobs.core.roles import SUSPECT_RULES
from lwsobs.core.sink import BaseSink
from lwsobs.core.tracker import Tracker


def format_peer(peer: Peer) -> str | None:
    if isinstance(peer, tuple) and len(peer) >= 2:
        host = str(peer[0])
        return f"[{host}]:{peer[1]}" if ":" in host else f"{host}:{peer[1]}"
    if isinstance(peer, str):
        return peer
    return None


def wsi_json(wsi: Wsi, now: int) -> dict[str, Any]:
    return {
        "id": wsi.id,
        "role": wsi.role.value,
        "source": wsi.context.source,
        "context": wsi.context.name,
        "age_s": round((now - wsi.created_ns) / NS, 3),
        "idle_s": round((now - wsi.last_ns) / NS, 3),
        "transactions": wsi.transactions,
        "in_transaction": wsi.txn is not None,
        "peer": format_peer(wsi.peer),
        "local": format_peer(wsi.local),
        "parent": None if wsi.parent is None else wsi.parent.id,
        "suspect": wsi.leak,
    }


class LiveView(BaseSink):
    """Remembers the most recent flagged wsis (the live table itself is the Tracker's)."""

    def __init__(self, tracker: Tracker, max_leaks: int = 1000) -> None:
        self.tracker = tracker
        self.leaks: deque[Wsi] = deque(maxlen=max_leaks)

    def wsi_flagged(self, wsi: Wsi, rule: str, certain: bool) -> None:
        self.leaks.append(wsi)

    def wsis(self, now: int, limit: int = 1000) -> dict[str, Any]:
        items = sorted(islice(self.tracker.live_wsis(), limit * 4), key=lambda w: w.serial)
        return {
            "count": self.tracker.live_count(),
            "wsis": [wsi_json(w, now) for w in items[:limit]],
        }

    def leak_list(self, now: int) -> dict[str, Any]:
        out = []
        for wsi in reversed(self.leaks):
            item = wsi_json(wsi, now)
            rule = wsi.leak or ""
            item.update(
                rule=rule,
                certain=rule not in SUSPECT_RULES,
                flagged_age_s=round(((wsi.span_end_ns or now) - wsi.created_ns) / NS, 3),
                live=wsi.live,
                resolved=rule in SUSPECT_RULES and wsi.end_reason not in (None, "leaked"),
            )
            if wsi.attrs:  # e.g. where an aiohttp client connection was acquired (lws.acquired.*)
                item["attributes"] = dict(wsi.attrs)
            out.append(item)
        return {"count": len(out), "leaks": out}
