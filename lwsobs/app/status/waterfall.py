"""JSON rows for the waterfall: recent connections with their transactions on one time axis.

Times are milliseconds since the Unix epoch as floats (exact to well under a microsecond), so
the page can lay every row on a shared axis without big-integer arithmetic.
"""

from __future__ import annotations

from typing import Any

from lwsobs.core.ids import Ids
from lwsobs.core.model import Transaction
from lwsobs.core.roles import SUSPECT_RULES
from lwsobs.observer import Observer
from lwsobs.sinks.live import format_peer
from lwsobs.sinks.spans.recent_connections import Recorded

MAX_PATH = 200  # characters of a request path shown; the rest is cut


def _ms(ns: int | None) -> float | None:
    return None if ns is None else ns / 1e6


def _path(path: str | None) -> str | None:
    if path is None:
        return None
    bare = path.partition("?")[0]  # the query may carry secrets; spans leave it out too
    return bare if len(bare) <= MAX_PATH else bare[:MAX_PATH] + "…"


def transaction_json(txn: Transaction, ids: Ids, pipelined: bool) -> dict[str, Any]:
    """`pipelined`: the request arrived before the one ahead of it ended, so it waited."""
    return {
        "index": txn.index,
        "method": txn.method,
        "path": _path(txn.path),
        "route": txn.route,
        "status": txn.status,
        "error": txn.error,
        "arrived_ms": _ms(txn.arrived_ns),
        "start_ms": _ms(txn.start_ns),
        "end_ms": _ms(txn.end_ns),
        "queue_ms": txn.queue_ns / 1e6,
        "pipelined": pipelined,
        "trace_id": f"{ids.txn_trace(txn).trace_id:032x}",
    }


def _transactions(txns: tuple[Transaction, ...], ids: Ids) -> list[dict[str, Any]]:
    out = []
    previous: Transaction | None = None
    for txn in txns:
        pipelined = (
            previous is not None
            and previous.index == txn.index - 1
            and previous.end_ns is not None
            and txn.arrived_ns < previous.end_ns
        )
        out.append(transaction_json(txn, ids, pipelined))
        previous = txn
    return out


def connection_json(rec: Recorded, ids: Ids) -> dict[str, Any]:
    wsi, fact = rec.wsi, rec.fact
    leak = fact.leak if fact is not None else wsi.leak
    return {
        "id": wsi.id,
        "role": (fact.role if fact is not None else wsi.role).value,
        "source": wsi.context.source,
        "peer": format_peer(wsi.peer),
        "start_ms": _ms(wsi.created_ns),
        "end_ms": _ms(fact.span_end_ns) if fact is not None else None,
        "live": wsi.live,
        "end_reason": fact.end_reason if fact is not None else None,
        "leak": leak,
        "certain": None if leak is None else leak not in SUSPECT_RULES,
        "resolved": leak in SUSPECT_RULES and wsi.end_reason not in (None, "leaked"),
        "transactions": fact.transactions if fact is not None else wsi.transactions,
        "recorded": rec.seen,
        "trace_id": f"{ids.wsi_trace_id(wsi):032x}",
        "txns": _transactions(rec.txns, ids),
    }


def connections_json(observer: Observer, now: int, limit: int) -> dict[str, Any]:
    """Up to `limit` connections, oldest start first: live ones with recorded transactions
    (at most a quarter of the rows), then the newest finished ones."""
    ring = observer.connections
    rows: list[Recorded] = []
    if ring is not None:
        rows = ring.live(max(1, limit // 4))
        rows += ring.finished(limit - len(rows))
    ids = observer.ids
    data = [connection_json(rec, ids) for rec in rows]
    data.sort(key=lambda c: (c["start_ms"], c["id"]))
    return {
        "time_ms": now / 1e6,
        "enabled": ring is not None,
        "jaeger_ui": observer.config.jaeger_ui,
        "count": len(data),
        "connections": data,
    }
