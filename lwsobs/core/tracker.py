"""The Tracker: the wsi table and every lifecycle and leak rule, as plain method calls.

It never reads a clock or does I/O: callers pass `now` (nanoseconds since the epoch) and the
Tracker hands finished facts to its sinks. Sources hold the Wsi handles `open` returns, so the hot
path never looks anything up by key.

Its memory is bounded whatever producers do: at most `max_wsis` wsis are live (beyond it the
oldest live wsi is evicted, flagged with the rule `evicted`, O(1) per wsi), at most
`max_sources` source names become label values (the rest are folded into "other" and counted),
and ended wsis are not kept alive by the idle wheel or the eviction order (both are compacted
once more than half their entries are stale, which costs O(1) per ended wsi on average).
"""

from __future__ import annotations

import heapq
from collections import deque
from collections.abc import Iterable, Iterator, Sequence
from typing import Any, Final

from lwsobs.core.model import Context, Peer, Transaction, Wsi
from lwsobs.core.policy import NS, LeakPolicy
from lwsobs.core.roles import SUSPECT_RULES, AbandonReason, EndReason, LeakRule, Role
from lwsobs.core.sink import BaseSink, Sink

DEFAULT_MAX_WSIS: Final = 1_000_000
"""Live wsis at most (about 300 MB); a producer that never destroys cannot grow past it."""
DEFAULT_MAX_SOURCES: Final = 100
"""Distinct source label values at most; later sources are counted under OTHER_SOURCE."""
OTHER_SOURCE: Final = "other"
_STALE_SLACK: Final = 4096  # stale entries tolerated before a compaction is worth its pass
_FOLDED_MEMORY: Final = 65536  # folded source names remembered, to count each one once
_EVICTED: Final = LeakRule.EVICTED.value


class Tracker:
    """Owns the live wsi table; the only writer of Context, Wsi and Transaction records."""

    def __init__(
        self,
        sinks: Sequence[Sink] = (),
        policy: LeakPolicy | None = None,
        *,
        epoch_ns: int = 0,
        max_wsis: int | None = DEFAULT_MAX_WSIS,
        max_sources: int | None = DEFAULT_MAX_SOURCES,
    ) -> None:
        """`epoch_ns`: a time near the start (say, when the tracker is built); wsis store
        their times relative to it, which keeps each live wsi smaller. `max_wsis` and
        `max_sources` bound the table and the source labels (None: unbounded)."""
        if max_wsis is not None and max_wsis < 1:
            raise ValueError(f"max_wsis must be at least 1, got {max_wsis}")
        if max_sources is not None and max_sources < 0:
            raise ValueError(f"max_sources must be >= 0, got {max_sources}")
        self.policy = policy or LeakPolicy()
        self.epoch_ns = epoch_ns
        self.max_wsis = max_wsis
        self._cap = max_wsis or 0
        self.max_sources = max_sources
        self._contexts: dict[tuple[str, str], Context] = {}
        self._sources: set[str] = set()  # source names that are label values of their own
        self._folded: set[str] = set()  # source names counted as OTHER_SOURCE
        self.sources_folded = 0  # distinct source names folded into OTHER_SOURCE
        self.live_total = 0  # wsis in the table, all contexts and roles
        self.evicted = 0  # wsis dropped to stay within max_wsis (suspects included)
        # Live wsis in creation order, for eviction; ended ones are skipped and compacted away.
        self._order: deque[Wsi] | None = deque() if max_wsis is not None else None
        self._serial = 0
        self._txn_serial = 0
        # Idle checking is a wheel of one-second slots: a tick visits only the slots that are due,
        # never the whole table.
        self._wheel: dict[int, list[Wsi]] = {}
        self._wheel_slots: list[int] = []
        self._wheel_entries = 0  # wsis in all slots (stale ones included)
        # Live wsis flagged as suspects, by context and role (their count is a gauge).
        self.suspects: dict[Context, dict[Role, set[Wsi]]] = {}
        self._sinks: list[Sink] = []
        self._bind_sinks()
        for sink in sinks:
            self.add_sink(sink)

    # -- wiring ------------------------------------------------------------------------------

    def add_sink(self, sink: Sink) -> None:
        self._sinks.append(sink)
        self._bind_sinks()

    def _bind_sinks(self) -> None:
        """Keep one list of bound methods per callback: the hot path just iterates it.

        A callback a sink inherits unchanged from BaseSink is left out, so no-op calls cost
        nothing.
        """

        def bound(name: str) -> list[Any]:
            return [
                getattr(s, name)
                for s in self._sinks
                # sinks written before a callback existed simply do not get it
                if getattr(type(s), name, None) not in (None, getattr(BaseSink, name))
            ]

        self._on_open = bound("wsi_opened")
        self._on_role = bound("role_changed")
        self._on_txn = bound("transaction_ended")
        self._on_flag = bound("wsi_flagged")
        self._on_span_end = bound("wsi_span_ended")
        self._on_destroy = bound("wsi_destroyed")
        self._on_left = bound("wsi_left")
        self._on_abandon = bound("wsi_abandoned")
        self._on_refuse = bound("transaction_refused")

    def context(self, source: str, name: str) -> Context:
        """The live context (source, name), created on first use.

        Its `source` (the label value) is `source`, or OTHER_SOURCE once `max_sources` other
        names have been seen: a producer cannot grow the label set without bound.
        """
        key = (source, name)
        ctx = self._contexts.get(key)
        if ctx is None or ctx.destroyed:
            ctx = Context(self._label(source), name, self.epoch_ns, origin=source)
            self._contexts[key] = ctx
        return ctx

    def _label(self, source: str) -> str:
        if self.max_sources is None or source in self._sources:
            return source
        if len(self._sources) < self.max_sources:
            self._sources.add(source)
            return source
        if source not in self._folded:
            # remembered to count each name once (as far as a bounded memory allows)
            if len(self._folded) >= _FOLDED_MEMORY:
                self._folded.clear()
            self._folded.add(source)
            self.sources_folded += 1
        return OTHER_SOURCE

    @property
    def contexts(self) -> Iterable[Context]:
        return self._contexts.values()

    # -- lifecycle ---------------------------------------------------------------------------

    def open(
        self,
        context: Context,
        role: Role,
        now: int,
        *,
        peer: Peer = None,
        local: Peer = None,
        parent: Wsi | None = None,
        attrs: dict[str, Any] | None = None,
    ) -> Wsi:
        """A wsi was created: WSI_CREATE, an accepted connection, a socket starting to listen.

        With the table full (`max_wsis`), the oldest live wsi is evicted first.
        """
        if self.live_total >= self._cap and self._order is not None:
            self._evict_oldest(now)
        self._serial += 1
        wsi = Wsi(self._serial, context, role, now, peer, local, parent, attrs)
        live = context.live.get(role)
        if live is None:
            live = context.live[role] = set()
        live.add(wsi)
        self.live_total += 1
        order = self._order
        if order is not None:
            order.append(wsi)
        limit = self.policy.idle_limit_ns(role)
        if limit is not None:
            self._schedule(wsi, now + limit)
        for cb in self._on_open:
            cb(wsi)
        return wsi

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

    def touch(self, wsi: Wsi, now: int) -> None:
        """Activity that is not a transaction boundary (websocket frames, h2 pings)."""
        rel = now - self.epoch_ns
        if rel > wsi._last:
            wsi._last = rel

    def upgrade(self, wsi: Wsi, role: Role, now: int, *, status: int = 101) -> None:
        """The wsi changes role (h1-server -> ws-server); its open transaction ends here.

        The websocket session that follows is part of the connection, not one long transaction.
        """
        if wsi.end_ns is not None or wsi.role == role:
            return
        if wsi.txn is not None:
            self._end_transaction(wsi, wsi.txn, now, status, None, None)
        old = wsi.role
        ctx = wsi.context
        ctx.live[old].discard(wsi)
        live = ctx.live.get(role)
        if live is None:
            live = ctx.live[role] = set()
        live.add(wsi)
        suspects = self.suspects.get(ctx)
        if suspects is not None and wsi in suspects.get(old, ()):
            suspects[old].discard(wsi)
            suspects.setdefault(role, set()).add(wsi)
        wsi.role = role
        wsi.last_ns = now
        self._add_event(wsi, "upgraded", now, {"lws.role.previous": old.value})
        old_limit = self.policy.idle_limit_ns(old)
        new_limit = self.policy.idle_limit_ns(role)
        if new_limit is not None and (old_limit is None or new_limit < old_limit):
            # The pending entry would come too late (or never); a duplicate is dropped by tick.
            self._schedule(wsi, now + new_limit)
        for cb in self._on_role:
            cb(wsi, old)

    def destroy(self, wsi: Wsi, now: int) -> bool:
        """WSI_DESTROY / connection_lost: the wsi is gone. Returns False if it already ended.

        A wsi destroyed while its context is closing ends as 'shutdown'. A suspect that gets
        destroyed after all leaves the suspects (the suspicion is resolved).
        """
        if wsi.end_ns is not None:
            return False
        if wsi.txn is not None:
            self._end_transaction(wsi, wsi.txn, now, None, None, "aborted")
        reason = EndReason.SHUTDOWN if wsi.context.closing else EndReason.DESTROYED
        self._remove(wsi, now, reason)
        if wsi.leak is None:  # a suspect's span already ended when it was flagged
            self._end_span(wsi, now)
        for cb in self._on_destroy:
            cb(wsi)
        return True

    def abandon(self, wsi: Wsi, now: int, reason: AbandonReason) -> bool:
        """The wsi's producer process is gone: the wsi ends with it, as `abandoned`.

        No leak verdict: a crashed or exited app did not leak, its wsis died with it. A suspect
        (silent source) that is abandoned keeps its flag; its span already ended. Returns False
        if the wsi had already ended.
        """
        if wsi.end_ns is not None:
            return False
        if wsi.txn is not None:
            self._end_transaction(wsi, wsi.txn, now, None, None, "abandoned")
        self._remove(wsi, now, EndReason.ABANDONED)
        extra = wsi.extra
        if extra.attrs is None:
            extra.attrs = {}
        extra.attrs["lws.abandoned.reason"] = reason.value
        for cb in self._on_abandon:
            cb(wsi, reason.value)
        if wsi.leak is None:
            self._end_span(wsi, now)
        return True

    def refused(self, wsi: Wsi, now: int, status: int) -> Transaction | None:
        """A request the producer answered itself, with no callback of its own (lws refusing
        the second request of a pipelined burst with 403): a transaction that starts and ends
        now with `status`, marked `refused`. Only on a wsi with no transaction open."""
        if wsi.end_ns is not None or wsi.txn is not None:
            return None
        txn = self.bind(wsi, now)
        if txn is None:
            return None
        self._end_transaction(wsi, txn, now, status, None, "refused")
        for cb in self._on_refuse:
            cb(txn)
        return txn

    def annotate(self, wsi: Wsi, key: str, value: Any) -> None:
        """Set a span attribute of the wsi learnt after it opened (a pointer, a target)."""
        extra = wsi.extra
        if extra.attrs is None:
            extra.attrs = {}
        extra.attrs[key] = value

    def carried(self, network: Wsi) -> None:
        """A transaction began on one of `network`'s streams (h2): the connection carries it,
        so its transaction count (span attribute, per-wsi histogram) includes it."""
        network.transactions += 1

    def flag(self, wsi: Wsi, now: int, rule: LeakRule) -> bool:
        """A leak rule fired for `wsi`. Each wsi is flagged (and counted) at most once.

        Certain rules end the wsi: it is gone and leaves the live table. Suspect rules keep it
        live (it may still be destroyed) but end its span so the trace shows it now. A suspect
        later found certain leaves the table without being counted twice.
        """
        if wsi.end_ns is not None:
            return False
        certain = rule not in SUSPECT_RULES
        if wsi.leak is not None:
            if certain:
                if wsi.txn is not None:
                    self._end_transaction(wsi, wsi.txn, now, None, None, "leaked")
                self._remove(wsi, now, EndReason.LEAKED)
            return False
        wsi.leak = rule.value
        if wsi.context.uncertain:
            self.mark_uncertain(wsi)
        if certain:
            if wsi.txn is not None:
                self._end_transaction(wsi, wsi.txn, now, None, None, "leaked")
            self._remove(wsi, now, EndReason.LEAKED)
        else:
            self.suspects.setdefault(wsi.context, {}).setdefault(wsi.role, set()).add(wsi)
            self._add_event(wsi, "leak_suspected", now, {"lws.leak.rule": rule.value})
            wsi.extra.suspected_ns = now  # its span ends now although it is still live
        for cb in self._on_flag:
            cb(wsi, rule.value, certain)
        self._end_span(wsi, now)
        return True

    def evict(self, wsi: Wsi, now: int) -> bool:
        """Drop a live wsi from the table without a verdict on it: it is forgotten, not judged.

        It is flagged `evicted` (a suspect: counted, listed, logged, its span ends with the
        rule) unless it was already a suspect, whose flag stands. Returns False if it had ended.
        """
        if wsi.end_ns is not None:
            return False
        if wsi.txn is not None:
            self._end_transaction(wsi, wsi.txn, now, None, None, "evicted")
        first = wsi.leak is None
        if first:
            wsi.leak = _EVICTED
            if wsi.context.uncertain:
                self.mark_uncertain(wsi)
        self._remove(wsi, now, EndReason.LEAKED)
        self.evicted += 1
        if first:
            for cb in self._on_flag:
                cb(wsi, _EVICTED, False)
            self._end_span(wsi, now)
        return True

    def _evict_oldest(self, now: int) -> None:
        order = self._order
        while order:
            wsi = order.popleft()
            if wsi.end_ns is None:
                self.evict(wsi, now)  # may compact (replace) the order: return at once
                return

    def context_closing(self, context: Context) -> None:
        """A graceful shutdown of the context began: wsis destroyed from now on end as shutdown."""
        context.closing = True

    def context_destroyed(self, context: Context, now: int, *, graceful: bool) -> list[Wsi]:
        """The context is gone (lws_context_destroy returned, a server stopped).

        After a graceful shutdown the wsis still live end as 'shutdown' and nothing is flagged;
        otherwise each is a certain leak. Returns the wsis that were still live.
        """
        leftovers = self._leftovers(context)
        if graceful:
            context.closing = True
            for wsi in leftovers:
                self.destroy(wsi, now)
        else:
            for wsi in leftovers:
                self.flag(wsi, now, LeakRule.CONTEXT_DESTROYED)
        self._close_context(context)
        return leftovers

    def context_abandoned(self, context: Context, now: int, reason: AbandonReason) -> list[Wsi]:
        """The process behind the context is gone: every live wsi is abandoned (no verdict)
        and the context ends. Returns the wsis that were still live."""
        leftovers = self._leftovers(context)
        for wsi in leftovers:
            self.abandon(wsi, now, reason)
        self._close_context(context)
        return leftovers

    @staticmethod
    def _leftovers(context: Context) -> list[Wsi]:
        """The context's live wsis, oldest first: the order they are ended in."""
        leftovers = [w for live in context.live.values() for w in live]
        leftovers.sort(key=lambda w: w.serial)
        return leftovers

    def _close_context(self, context: Context) -> None:
        """The context is over: no suspects of its own, and a new one may take its name."""
        context.destroyed = True
        self.suspects.pop(context, None)
        key = (context.origin, context.name)
        if self._contexts.get(key) is context:
            del self._contexts[key]

    def shutdown(self, now: int) -> None:
        """lwsobs itself stops gracefully: every open span ends as 'shutdown', nothing flagged."""
        for ctx in list(self._contexts.values()):
            self.context_destroyed(ctx, now, graceful=True)

    def tick(self, now: int) -> list[Wsi]:
        """Run the idle rule for the wheel slots that are due. Returns the wsis it flagged."""
        flagged: list[Wsi] = []
        visited: set[Wsi] = set()  # a wsi scheduled twice (after an upgrade) is judged once
        due_slot = now // NS
        while True:
            slots = self._wheel_slots  # re-read: a flag below may compact the wheel
            if not slots or slots[0] > due_slot:
                break
            bucket = self._wheel.pop(heapq.heappop(slots))
            self._wheel_entries -= len(bucket)
            for wsi in bucket:
                if wsi.end_ns is not None or wsi.leak is not None or wsi in visited:
                    continue
                visited.add(wsi)
                limit = self.policy.idle_limit_ns(wsi.role)
                if limit is None:
                    continue
                if wsi.txn is not None:
                    self._schedule(wsi, now + limit)
                elif wsi.last_ns + limit > now:
                    self._schedule(wsi, wsi.last_ns + limit)
                elif self.flag(wsi, now, LeakRule.IDLE):
                    flagged.append(wsi)
        return flagged

    # -- queries -----------------------------------------------------------------------------

    def live_wsis(self) -> Iterator[Wsi]:
        for ctx in self._contexts.values():
            for live in ctx.live.values():
                yield from live

    def live_count(self) -> int:
        return self.live_total

    def suspect_wsis(self) -> Iterator[Wsi]:
        for by_role in self.suspects.values():
            for wsis in by_role.values():
                yield from wsis

    # -- internals ---------------------------------------------------------------------------

    def _remove(self, wsi: Wsi, now: int, reason: EndReason) -> None:
        ctx = wsi.context
        ctx.live[wsi.role].discard(wsi)
        self._forget_suspect(wsi)
        wsi.end_ns = now
        wsi.end_reason = reason.value
        self.live_total -= 1
        for cb in self._on_left:
            cb(wsi)
        # Ended wsis stay referenced by the wheel (until their slot is due, an hour for h1)
        # and the eviction order: drop them once they outnumber the live ones.
        keep = 2 * self.live_total + _STALE_SLACK
        if self._wheel_entries > keep:
            self._compact_wheel()
        order = self._order
        if order is not None and len(order) > keep:
            self._order = deque(w for w in order if w.end_ns is None)

    def _compact_wheel(self) -> None:
        """Keep only the entries tick could still act on (live, not yet flagged)."""
        wheel: dict[int, list[Wsi]] = {}
        entries = 0
        for slot, bucket in self._wheel.items():
            kept = [w for w in bucket if w.end_ns is None and w.leak is None]
            if kept:
                wheel[slot] = kept
                entries += len(kept)
        self._wheel = wheel
        self._wheel_slots = list(wheel)
        heapq.heapify(self._wheel_slots)
        self._wheel_entries = entries

    def _forget_suspect(self, wsi: Wsi) -> None:
        by_role = self.suspects.get(wsi.context)
        if by_role is not None:
            wsis = by_role.get(wsi.role)
            if wsis is not None:
                wsis.discard(wsi)

    def _end_span(self, wsi: Wsi, now: int) -> None:
        for cb in self._on_span_end:
            cb(wsi)

    @staticmethod
    def mark_uncertain(wsi: Wsi) -> None:
        """The verdict on `wsi` rests on a stream with lost lines (`lws.leak.uncertain`)."""
        extra = wsi.extra
        if extra.attrs is None:
            extra.attrs = {}
        extra.attrs["lws.leak.uncertain"] = True

    def _add_event(self, wsi: Wsi, name: str, now: int, attrs: dict[str, Any] | None) -> None:
        extra = wsi.extra
        if extra.events is None:
            extra.events = []
        extra.events.append((name, now, attrs))

    def _schedule(self, wsi: Wsi, deadline_ns: int) -> None:
        slot = deadline_ns // NS + 1
        bucket = self._wheel.get(slot)
        if bucket is None:
            self._wheel[slot] = [wsi]
            heapq.heappush(self._wheel_slots, slot)
        else:
            bucket.append(wsi)
        self._wheel_entries += 1
