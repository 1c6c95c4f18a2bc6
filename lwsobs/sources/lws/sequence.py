"""Per-source sequence tracking: which lines to apply, how many were lost, how many repeated.

UDP and unix datagrams drop silently and may reorder, so every producer numbers its lines (`seq`,
+1 per line it tried to send). The tracker keeps the last applied `seq` of each source: a jump
forward counts the missing lines as lost, a line at or below it is a duplicate or a reorder and is
counted, never applied twice (wire-v1, "Sequence gaps"). Memory is bounded: beyond `max_sources`
the least recently seen source is evicted.

The caller owns the protocol around it:
- on HELLO (a producer starting, possibly a restart under the same `src` with `seq` back at 0),
  call `reset(src)` *before* `observe`, or the new process's lines look like duplicates until
  its `seq` passes the old one;
- on BYE, call `observe` first (its `seq` still counts for gaps), then `forget(src)`.
"""

from __future__ import annotations

from collections import OrderedDict
from enum import StrEnum
from typing import Final, NamedTuple

DEFAULT_MAX_SOURCES: Final = 4096


class Action(StrEnum):
    """What to do with an observed line."""

    APPLY = "apply"  # in order, after a gap, or the first line known for its source
    DUPLICATE = "duplicate"  # at or below the last applied seq: count it, do not apply it


class Verdict(NamedTuple):
    """The judgement on one line.

    `lost` is the number of lines missing just before this one (0 unless a gap). `first` is true
    when no earlier `seq` was known for the source (new, reset, forgotten or evicted): no gap can
    be measured then, so a first `seq` above 0 is not counted as lost (the service may simply
    have started after the producer), and the caller decides whether that makes it uncertain.
    """

    action: Action
    lost: int = 0
    first: bool = False

    @property
    def apply(self) -> bool:
        return self.action is Action.APPLY


class SourceStats(NamedTuple):
    """Counters of one remembered source; `last_seq` is None right after a reset."""

    last_seq: int | None
    lost: int
    duplicates: int


_IN_ORDER: Final = Verdict(Action.APPLY)
_FIRST: Final = Verdict(Action.APPLY, first=True)
_DUPLICATE: Final = Verdict(Action.DUPLICATE)


class SourceRun:
    """The remembered state of one source; `SequenceTracker.run` lends it to a hot loop."""

    __slots__ = ("duplicates", "last", "last_mono", "last_t", "lost")

    def __init__(self) -> None:
        self.last: int | None = None
        self.last_t: int | None = None  # the producer's clocks on the last applied line
        self.last_mono: int | None = None
        self.lost = 0
        self.duplicates = 0


class SequenceTracker:
    """Last applied `seq` per source, with totals that survive resets, forgets and evictions."""

    def __init__(self, max_sources: int = DEFAULT_MAX_SOURCES) -> None:
        if max_sources < 1:
            raise ValueError(f"max_sources must be at least 1, got {max_sources}")
        self.max_sources = max_sources
        self._sources: OrderedDict[str, SourceRun] = OrderedDict()  # least recently seen first
        self.lost = 0  # sum of all gaps
        self.duplicates = 0  # lines at or below their source's last seq
        self.evictions = 0  # sources dropped to stay within max_sources

    def observe(self, src: str, seq: int, t: int | None = None, mono: int | None = None) -> Verdict:
        """Judge line `seq` of `src` and remember it if applied (with its `t` and `mono`)."""
        state = self._sources.get(src)
        if state is None:
            if len(self._sources) >= self.max_sources:
                self._sources.popitem(last=False)
                self.evictions += 1
            state = self._sources[src] = SourceRun()
        else:
            self._sources.move_to_end(src)
        last = state.last
        if last is None or seq > last:
            state.last_t = t
            state.last_mono = mono
        if last is None:
            state.last = seq
            return _FIRST
        if seq == last + 1:
            state.last = seq
            return _IN_ORDER
        if seq > last:
            gap = seq - last - 1
            state.last = seq
            state.lost += gap
            self.lost += gap
            return Verdict(Action.APPLY, gap)
        state.duplicates += 1
        self.duplicates += 1
        return _DUPLICATE

    def run(self, src: str) -> SourceRun | None:
        """The state of `src`, for a caller that applies its next lines in order by itself.

        Advancing `last` (with `last_t`, `last_mono`) by exactly one per line is what `observe`
        would do for them (the source is already the most recently seen, unless another source
        was observed in between: then call `observe` again). It saves a call per line.
        """
        state = self._sources.get(src)
        return None if state is None or state.last is None else state

    def reset(self, src: str) -> None:
        """Forget the last `seq` of `src` (not its counters); call it on HELLO, before observe."""
        state = self._sources.get(src)
        if state is not None:
            state.last = None

    def forget(self, src: str) -> None:
        """Drop `src` entirely (counters too; the totals keep them); call it after observing BYE."""
        self._sources.pop(src, None)

    def is_behind(self, src: str, seq: int, t: int, mono: int | None) -> bool:
        """True if line `seq` is at or below the last applied one *and* was made before it.

        That is a straggler of the process already heard, not a restart: a restarted
        producer's lines are made later (by CLOCK_MONOTONIC when both lines carry `mono`, which
        no clock step moves, else by `t`).
        """
        state = self._sources.get(src)
        if state is None or state.last is None or seq > state.last:
            return False
        if mono is not None and state.last_mono is not None:
            return mono < state.last_mono
        return state.last_t is not None and t < state.last_t

    def stats(self, src: str) -> SourceStats | None:
        state = self._sources.get(src)
        return None if state is None else SourceStats(state.last, state.lost, state.duplicates)

    def __len__(self) -> int:
        return len(self._sources)

    def __contains__(self, src: object) -> bool:
        return src in self._sources
