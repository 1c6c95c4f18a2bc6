"""The most recent connections and their transactions, for the status page's waterfall.

It is an exporter of the span sink, not a Tracker sink: it receives the facts the span sink
already queues (each finished Transaction, and a ConnectionFact when a connection's span ends)
in the export worker thread, in batches, after sampling. So the request path pays nothing for
it, and every connection it shows has a trace an exporter received.

Transactions of a connection that is still live wait in a bounded `pending` table; the
connection moves to the `finished` ring when its ConnectionFact arrives. Every bound drops the
oldest entries first.
"""

from __future__ import annotations

import threading
from collections import OrderedDict, deque
from collections.abc import Sequence
from typing import NamedTuple

from lwsobs.core.model import Transaction, Wsi
from lwsobs.sinks.spans.builder import ConnectionFact

Fact = Transaction | ConnectionFact


class Recorded(NamedTuple):
    """One connection as recorded: `fact` is None while it is live (its span not over)."""

    wsi: Wsi
    fact: ConnectionFact | None
    txns: tuple[Transaction, ...]  # the newest ones, at most max_transactions, in order
    seen: int  # transactions recorded for it, including those beyond the bound


class _Entry:
    __slots__ = ("seen", "txns")

    def __init__(self, max_transactions: int) -> None:
        self.txns: deque[Transaction] = deque(maxlen=max_transactions)
        self.seen = 0


class RecentConnections:
    """Keeps `max_connections` finished connections and up to `max_pending` live ones."""

    def __init__(
        self,
        max_connections: int = 200,
        max_transactions: int = 32,
        max_pending: int = 512,
    ) -> None:
        self.max_transactions = max_transactions
        self.max_pending = max_pending
        self._finished: deque[Recorded] = deque(maxlen=max_connections)
        self._pending: OrderedDict[Wsi, _Entry] = OrderedDict()
        self._lock = threading.Lock()
        self.evicted = 0  # live connections whose transactions were forgotten (pending full)

    # -- the export worker -------------------------------------------------------------------

    def export(self, facts: Sequence[Fact]) -> bool:
        pending = self._pending
        with self._lock:
            for fact in facts:
                if isinstance(fact, ConnectionFact):
                    self._finish(fact)
                    continue
                entry = pending.get(fact.wsi)
                if entry is None:
                    entry = self._open(fact.wsi)
                else:
                    pending.move_to_end(fact.wsi)
                entry.txns.append(fact)
                entry.seen += 1
        return True

    def _open(self, wsi: Wsi) -> _Entry:
        """A new pending entry for `wsi`; the oldest one goes when there are too many."""
        pending = self._pending
        entry = pending[wsi] = _Entry(self.max_transactions)
        if len(pending) > self.max_pending:
            pending.popitem(last=False)
            self.evicted += 1
        return entry

    def _finish(self, fact: ConnectionFact) -> None:
        """The connection's span ended: it moves, with its transactions, to the finished ring."""
        entry = self._pending.pop(fact.wsi, None)
        txns = tuple(entry.txns) if entry is not None else ()
        seen = entry.seen if entry is not None else 0
        self._finished.append(Recorded(fact.wsi, fact, txns, seen))

    def shutdown(self) -> None:
        pass

    # -- readers (any thread) ----------------------------------------------------------------

    def finished(self, limit: int) -> list[Recorded]:
        """The newest `limit` finished connections, newest first."""
        with self._lock:
            newest = list(self._finished)[-limit:] if limit > 0 else []
        newest.reverse()
        return newest

    def live(self, limit: int) -> list[Recorded]:
        """Up to `limit` live connections with recorded transactions, most recently active first.

        A connection whose span already ended is left out: its ConnectionFact is on its way.
        """
        out: list[Recorded] = []
        with self._lock:
            for wsi in reversed(self._pending):
                if len(out) >= limit:
                    break
                if wsi.span_ended:
                    continue
                entry = self._pending[wsi]
                out.append(Recorded(wsi, None, tuple(entry.txns), entry.seen))
        return out

    @property
    def sizes(self) -> tuple[int, int]:
        """(finished, pending) entries held now."""
        return len(self._finished), len(self._pending)
