"""The Tracker's per-request methods: bind, drop and _end_transaction.

They run for every HTTP transaction, so they live apart from the rest of the Tracker: this class
is their pure-Python reference, and lwsobs/core/_fastcore.c has a C twin of it (same fields,
same behaviour, tests/unit/test_fastcore.py compares them). Tracker derives from whichever
`TrackerBase` names: the C one when it is built (see lwsobs.core.fast).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from lwsobs.core.model import FASTCORE, Transaction, Wsi


class HotPath:
    """bind/drop/_end_transaction over the fields the Tracker sets in its __init__."""

    epoch_ns: int  # wsis store their times relative to this
    _txn_serial: int  # the last transaction serial handed out
    _on_txn: list[Any]  # the sinks' transaction_ended, called in order

    def bind(
        self,
        wsi: Wsi,
        now: int,
        arrived: int | None = None,
        method: str | None = None,
        path: str | None = None,
        traceparent: str | None = None,
    ) -> Transaction | None:
        """A transaction starts (HTTP_BIND_PROTOCOL / a request taken off the queue).

        `path` is the request target as received (query included; sinks strip what they must).
        `arrived` is when the request's bytes arrived; for pipelined requests it is earlier than
        `now` and the difference is the queue wait. A transaction still open is ended first,
        as 'superseded': on one h1 wsi transactions never overlap.
        """
        if wsi.end_ns is not None:
            return None
        if wsi.txn is not None:
            self._end_transaction(wsi, wsi.txn, now, None, None, "superseded")
        self._txn_serial += 1
        txn = Transaction(
            wsi,
            self._txn_serial,
            wsi.transactions,
            now if arrived is None or arrived > now else arrived,
            now,
            method,
            path,
            traceparent,
        )
        wsi.transactions += 1
        wsi.txn = txn
        rel = now - self.epoch_ns
        if rel > wsi._last:
            wsi._last = rel
        active = wsi.context.active_transactions
        active[wsi.role] = active.get(wsi.role, 0) + 1
        return txn

    def drop(
        self,
        wsi: Wsi,
        now: int,
        status: int | None = None,
        route: str | None = None,
        error: str | None = None,
    ) -> Transaction | None:
        """The current transaction ends (HTTP_DROP_PROTOCOL after a completed transaction)."""
        txn = wsi.txn
        if txn is None:
            return None
        self._end_transaction(wsi, txn, now, status, route, error)
        return txn

    def _end_transaction(
        self,
        wsi: Wsi,
        txn: Transaction,
        now: int,
        status: int | None,
        route: str | None,
        error: str | None,
    ) -> None:
        txn.end_ns = now
        txn.status = status
        txn.route = route
        txn.error = error
        wsi.txn = None
        rel = now - self.epoch_ns
        if rel > wsi._last:
            wsi._last = rel
        wsi.context.active_transactions[wsi.role] -= 1
        for cb in self._on_txn:
            cb(txn)


if TYPE_CHECKING:
    TrackerBase = HotPath
else:
    TrackerBase = HotPath if FASTCORE is None else FASTCORE.HotPath
