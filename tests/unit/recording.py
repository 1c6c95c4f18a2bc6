"""A sink that records every Tracker callback, plus small helpers shared by the unit tests."""

from __future__ import annotations

from typing import Any

from lwsobs.core.model import Transaction, Wsi
from lwsobs.core.policy import NS, LeakPolicy
from lwsobs.core.roles import Role
from lwsobs.core.sink import Sink
from lwsobs.core.tracker import Tracker

T0 = 1_700_000_000 * NS
"""A fixed, epoch-like start time: every test drives the clock by hand from here."""

Call = tuple[str, tuple[Any, ...]]


class RecordingSink:
    """Implements all six Sink callbacks by appending (event, args) to `calls`."""

    def __init__(self) -> None:
        self.calls: list[Call] = []

    def wsi_opened(self, wsi: Wsi) -> None:
        self.calls.append(("wsi_opened", (wsi,)))

    def role_changed(self, wsi: Wsi, old: Role) -> None:
        self.calls.append(("role_changed", (wsi, old)))

    def transaction_ended(self, txn: Transaction) -> None:
        self.calls.append(("transaction_ended", (txn,)))

    def wsi_flagged(self, wsi: Wsi, rule: str, certain: bool) -> None:
        self.calls.append(("wsi_flagged", (wsi, rule, certain)))

    def wsi_span_ended(self, wsi: Wsi) -> None:
        self.calls.append(("wsi_span_ended", (wsi,)))

    def wsi_destroyed(self, wsi: Wsi) -> None:
        self.calls.append(("wsi_destroyed", (wsi,)))

    def take(self) -> list[Call]:
        """The calls recorded since the last take(), then forget them."""
        calls, self.calls = self.calls, []
        return calls

    def events(self) -> list[str]:
        return [name for name, _ in self.calls]


_: type[Sink] = RecordingSink  # mypy checks that RecordingSink satisfies the Sink protocol


def make(policy: LeakPolicy | None = None) -> tuple[Tracker, RecordingSink]:
    rec = RecordingSink()
    return Tracker([rec], policy), rec


def live_sizes(tracker: Tracker) -> dict[str, int]:
    """Non-empty live partitions of every context, as {role: count}."""
    out: dict[str, int] = {}
    for ctx in tracker.contexts:
        for role, wsis in ctx.live.items():
            if wsis:
                out[role.value] = out.get(role.value, 0) + len(wsis)
    return out


def active(tracker: Tracker) -> dict[str, int]:
    """Non-zero active transaction counts of every context, as {role: count}."""
    out: dict[str, int] = {}
    for ctx in tracker.contexts:
        for role, n in ctx.active_transactions.items():
            if n:
                out[role.value] = out.get(role.value, 0) + n
    return out


def suspects(tracker: Tracker) -> set[Wsi]:
    return set(tracker.suspect_wsis())
