"""open / bind / drop / touch / upgrade / destroy, with the exact sink calls each one makes."""

from __future__ import annotations

import pytest

from lwsobs.core.model import Context, Transaction, Wsi
from lwsobs.core.policy import NS
from lwsobs.core.roles import EndReason, LeakRule, Role
from lwsobs.core.tracker import Tracker
from tests.unit.recording import T0, RecordingSink, active, live_sizes, make

MS = 1_000_000


def open_h1(tracker: Tracker, now: int = T0) -> tuple[Context, Wsi]:
    ctx = tracker.context("aiohttp", "app")
    return ctx, tracker.open(ctx, Role.H1_SERVER, now, peer=("127.0.0.11", 5000))


# -- open ----------------------------------------------------------------------------------------


def test_open_creates_a_live_wsi_and_reports_it() -> None:
    tracker, rec = make()
    ctx = tracker.context("aiohttp", "app")
    parent = tracker.open(ctx, Role.H2_SERVER, T0)
    attrs = {"lws.vhost": "default"}
    wsi = tracker.open(
        ctx, Role.H2_STREAM, T0 + 5, peer="1.2.3.4:5", local=("::1", 80), parent=parent, attrs=attrs
    )
    assert rec.take() == [("wsi_opened", (parent,)), ("wsi_opened", (wsi,))]
    assert (parent.serial, wsi.serial) == (1, 2)
    assert wsi.context is ctx
    assert wsi.role is Role.H2_STREAM
    assert wsi.created_ns == wsi.last_ns == T0 + 5
    assert wsi.peer == "1.2.3.4:5"
    assert wsi.local == ("::1", 80)
    assert wsi.parent is parent
    assert wsi.attrs is attrs
    assert wsi.transactions == 0
    assert wsi.txn is None
    assert wsi.events is None
    assert wsi.end_ns is None and wsi.end_reason is None and wsi.leak is None
    assert wsi.span_end_ns is None and not wsi.span_ended
    assert wsi.live
    assert wsi.id == "aiohttp/2"
    assert ctx.live == {Role.H2_SERVER: {parent}, Role.H2_STREAM: {wsi}}
    assert ctx.active_transactions == {}
    assert tracker.live_count() == 2
    assert set(tracker.live_wsis()) == {parent, wsi}


def test_serials_are_unique_across_contexts() -> None:
    tracker, _ = make()
    a = tracker.open(tracker.context("aiohttp", "a"), Role.H1_SERVER, T0)
    b = tracker.open(tracker.context("lws", "b"), Role.H1_SERVER, T0)
    c = tracker.open(tracker.context("aiohttp", "a"), Role.H1_SERVER, T0)
    assert [a.serial, b.serial, c.serial] == [1, 2, 3]
    assert [a.id, b.id, c.id] == ["aiohttp/1", "lws/2", "aiohttp/3"]


# -- the basic lifecycle, step by step -------------------------------------------------------------


def test_basic_lifecycle_step_by_step() -> None:
    tracker, rec = make()
    ctx, wsi = open_h1(tracker)
    assert rec.take() == [("wsi_opened", (wsi,))]
    assert live_sizes(tracker) == {"h1-server": 1}
    assert active(tracker) == {}

    # first request: arrived 2 ms before handling began
    t1 = T0 + 10 * MS
    txn = tracker.bind(wsi, t1, arrived=t1 - 2 * MS, method="GET", path="/a", traceparent=None)
    assert isinstance(txn, Transaction)
    assert rec.take() == []  # bind reports nothing: only finished facts go to sinks
    assert (wsi.txn, wsi.transactions) == (txn, 1)
    assert wsi.last_ns == t1
    assert (txn.index, txn.serial) == (0, 1)
    assert txn.wsi is wsi
    assert txn.role is Role.H1_SERVER
    assert txn.arrived_ns == t1 - 2 * MS
    assert txn.start_ns == t1
    assert txn.queue_ns == 2 * MS
    assert txn.duration_ns == 2 * MS  # not ended yet: arrival to start
    assert (txn.method, txn.path, txn.traceparent) == ("GET", "/a", None)
    assert (txn.end_ns, txn.status, txn.route, txn.error) == (None, None, None, None)
    assert ctx.active_transactions == {Role.H1_SERVER: 1}

    t2 = t1 + 30 * MS
    assert tracker.drop(wsi, t2, status=200, route="/a") is txn
    assert rec.take() == [("transaction_ended", (txn,))]
    assert (txn.end_ns, txn.status, txn.route, txn.error) == (t2, 200, "/a", None)
    assert txn.duration_ns == 32 * MS
    assert txn.queue_ns == 2 * MS
    assert wsi.txn is None
    assert wsi.last_ns == t2
    assert ctx.active_transactions == {Role.H1_SERVER: 0}
    assert live_sizes(tracker) == {"h1-server": 1}

    # second request on the same wsi (keep-alive): index 1, no queue wait
    t3 = t2 + 100 * MS
    txn2 = tracker.bind(wsi, t3, method="POST", path="/b")
    assert txn2 is not None
    assert (txn2.index, txn2.serial, txn2.arrived_ns, txn2.queue_ns) == (1, 2, t3, 0)
    assert wsi.transactions == 2
    t4 = t3 + 5 * MS
    tracker.drop(wsi, t4, status=404, error="not_found")
    assert rec.take() == [("transaction_ended", (txn2,))]
    assert (txn2.status, txn2.error, txn2.route) == (404, "not_found", None)

    t5 = t4 + NS
    assert tracker.destroy(wsi, t5) is True
    assert rec.take() == [("wsi_span_ended", (wsi,)), ("wsi_destroyed", (wsi,))]
    assert wsi.end_ns == t5
    assert wsi.span_end_ns == t5
    assert (wsi.end_reason, EndReason.DESTROYED.value) == ("destroyed", "destroyed")
    assert wsi.transactions == 2
    assert wsi.last_ns == t4  # destroy is not activity
    assert not wsi.live and wsi.span_ended
    assert wsi.leak is None
    assert ctx.live == {Role.H1_SERVER: set()}
    assert ctx.active_transactions == {Role.H1_SERVER: 0}
    assert tracker.live_count() == 0
    assert list(tracker.live_wsis()) == []


def test_transaction_serials_are_global_and_indexes_per_wsi() -> None:
    tracker, _ = make()
    _, a = open_h1(tracker)
    _, b = open_h1(tracker)
    got = []
    for wsi in (a, b, a, a, b):
        txn = tracker.bind(wsi, T0)
        assert txn is not None
        tracker.drop(wsi, T0)
        got.append((wsi.serial, txn.serial, txn.index))
    assert got == [(1, 1, 0), (2, 2, 0), (1, 3, 1), (1, 4, 2), (2, 5, 1)]


def test_active_transactions_are_counted_per_role_and_context() -> None:
    tracker, _ = make()
    ctx = tracker.context("aiohttp", "app")
    other = tracker.context("aiohttp", "other")
    a = tracker.open(ctx, Role.H1_SERVER, T0)
    b = tracker.open(ctx, Role.H1_SERVER, T0)
    c = tracker.open(ctx, Role.H2_STREAM, T0)
    d = tracker.open(other, Role.H1_SERVER, T0)
    for wsi in (a, b, c, d):
        tracker.bind(wsi, T0)
    assert ctx.active_transactions == {Role.H1_SERVER: 2, Role.H2_STREAM: 1}
    assert other.active_transactions == {Role.H1_SERVER: 1}
    tracker.drop(b, T0)
    tracker.destroy(c, T0)
    assert ctx.active_transactions == {Role.H1_SERVER: 1, Role.H2_STREAM: 0}


# -- bind ------------------------------------------------------------------------------------------


def test_bind_while_a_transaction_is_open_supersedes_it() -> None:
    tracker, rec = make()
    ctx, wsi = open_h1(tracker)
    rec.take()
    first = tracker.bind(wsi, T0 + 1)
    second = tracker.bind(wsi, T0 + 7, method="GET")
    assert first is not None and second is not None and first is not second
    assert rec.take() == [("transaction_ended", (first,))]
    assert (first.end_ns, first.status, first.route, first.error) == (
        T0 + 7,
        None,
        None,
        "superseded",
    )
    assert wsi.txn is second
    assert (second.index, wsi.transactions) == (1, 2)
    assert ctx.active_transactions == {Role.H1_SERVER: 1}


@pytest.mark.parametrize(
    ("arrived", "expected_arrived", "expected_queue"),
    [
        (None, T0, 0),
        (T0, T0, 0),
        (T0 - 1, T0 - 1, 1),
        (T0 - 3 * NS, T0 - 3 * NS, 3 * NS),
        (T0 + 1, T0, 0),  # arrived after now: clamped to now
        (T0 + 10 * NS, T0, 0),
    ],
)
def test_bind_arrival_time(arrived: int | None, expected_arrived: int, expected_queue: int) -> None:
    tracker, _ = make()
    _, wsi = open_h1(tracker, T0 - 10 * NS)
    txn = tracker.bind(wsi, T0, arrived=arrived)
    assert txn is not None
    assert txn.arrived_ns == expected_arrived
    assert txn.start_ns == T0
    assert txn.queue_ns == expected_queue


def test_bind_and_drop_on_a_destroyed_wsi_are_ignored() -> None:
    tracker, rec = make()
    ctx, wsi = open_h1(tracker)
    tracker.destroy(wsi, T0 + 1)
    rec.take()
    assert tracker.bind(wsi, T0 + 2) is None
    assert tracker.drop(wsi, T0 + 3, status=200) is None
    assert rec.take() == []
    assert wsi.transactions == 0
    assert wsi.txn is None
    assert wsi.last_ns == T0
    assert ctx.active_transactions == {}


def test_drop_without_an_open_transaction_returns_none() -> None:
    tracker, rec = make()
    ctx, wsi = open_h1(tracker)
    rec.take()
    assert tracker.drop(wsi, T0 + 1, status=200) is None
    tracker.bind(wsi, T0 + 2)
    tracker.drop(wsi, T0 + 3)
    rec.take()
    assert tracker.drop(wsi, T0 + 4) is None  # a second drop of the same transaction
    assert rec.take() == []
    assert wsi.last_ns == T0 + 3
    assert ctx.active_transactions == {Role.H1_SERVER: 0}


def test_drop_earlier_than_last_activity_does_not_move_last_ns_back() -> None:
    tracker, _ = make()
    _, wsi = open_h1(tracker)
    tracker.bind(wsi, T0 + 10)
    tracker.touch(wsi, T0 + 20)
    tracker.drop(wsi, T0 + 15)
    assert wsi.last_ns == T0 + 20


# -- touch -----------------------------------------------------------------------------------------


@pytest.mark.parametrize(("at", "expected"), [(T0 + 5, T0 + 5), (T0, T0), (T0 - 5, T0)])
def test_touch_only_moves_last_ns_forward(at: int, expected: int) -> None:
    tracker, rec = make()
    _, wsi = open_h1(tracker)
    rec.take()
    tracker.touch(wsi, at)
    assert wsi.last_ns == expected
    assert rec.take() == []


# -- upgrade ---------------------------------------------------------------------------------------


def test_upgrade_ends_the_open_transaction_with_101_and_moves_the_wsi() -> None:
    tracker, rec = make()
    ctx, wsi = open_h1(tracker)
    txn = tracker.bind(wsi, T0 + 1, method="GET", path="/ws")
    assert txn is not None
    rec.take()
    tracker.upgrade(wsi, Role.WS_SERVER, T0 + 2)
    assert rec.take() == [
        ("transaction_ended", (txn,)),
        ("role_changed", (wsi, Role.H1_SERVER)),
    ]
    assert (txn.end_ns, txn.status, txn.error) == (T0 + 2, 101, None)
    assert txn.role is Role.H1_SERVER  # the role the transaction ran in
    assert wsi.role is Role.WS_SERVER
    assert wsi.txn is None
    assert wsi.last_ns == T0 + 2
    assert wsi.events == [("upgraded", T0 + 2, {"lws.role.previous": "h1-server"})]
    assert ctx.live == {Role.H1_SERVER: set(), Role.WS_SERVER: {wsi}}
    assert ctx.active_transactions == {Role.H1_SERVER: 0}
    assert live_sizes(tracker) == {"ws-server": 1}

    tracker.destroy(wsi, T0 + 3)
    assert rec.take() == [("wsi_span_ended", (wsi,)), ("wsi_destroyed", (wsi,))]
    assert ctx.live == {Role.H1_SERVER: set(), Role.WS_SERVER: set()}


def test_upgrade_with_a_custom_status_and_no_open_transaction() -> None:
    tracker, rec = make()
    _, wsi = open_h1(tracker)
    rec.take()
    tracker.upgrade(wsi, Role.H2_SERVER, T0 + 1, status=200)  # no txn: status unused
    assert rec.take() == [("role_changed", (wsi, Role.H1_SERVER))]
    txn = tracker.bind(wsi, T0 + 2)
    assert txn is not None and txn.role is Role.H2_SERVER
    tracker.upgrade(wsi, Role.H1_SERVER, T0 + 3, status=200)
    assert txn.status == 200
    assert rec.take() == [("transaction_ended", (txn,)), ("role_changed", (wsi, Role.H2_SERVER))]
    assert wsi.events == [
        ("upgraded", T0 + 1, {"lws.role.previous": "h1-server"}),
        ("upgraded", T0 + 3, {"lws.role.previous": "h2-server"}),
    ]


def test_upgrade_to_the_same_role_is_a_no_op() -> None:
    tracker, rec = make()
    ctx, wsi = open_h1(tracker)
    tracker.bind(wsi, T0 + 1)
    rec.take()
    tracker.upgrade(wsi, Role.H1_SERVER, T0 + 2)
    assert rec.take() == []
    assert wsi.txn is not None
    assert wsi.events is None
    assert wsi.last_ns == T0 + 1
    assert ctx.active_transactions == {Role.H1_SERVER: 1}


def test_upgrade_of_an_ended_wsi_is_a_no_op() -> None:
    tracker, rec = make()
    ctx, wsi = open_h1(tracker)
    tracker.destroy(wsi, T0 + 1)
    rec.take()
    tracker.upgrade(wsi, Role.WS_SERVER, T0 + 2)
    assert rec.take() == []
    assert wsi.role is Role.H1_SERVER
    assert wsi.events is None
    assert ctx.live == {Role.H1_SERVER: set()}


# -- destroy ---------------------------------------------------------------------------------------


def test_destroy_with_an_open_transaction_aborts_it() -> None:
    tracker, rec = make()
    ctx, wsi = open_h1(tracker)
    txn = tracker.bind(wsi, T0 + 1)
    rec.take()
    assert tracker.destroy(wsi, T0 + 9) is True
    assert rec.take() == [
        ("transaction_ended", (txn,)),
        ("wsi_span_ended", (wsi,)),
        ("wsi_destroyed", (wsi,)),
    ]
    assert txn is not None
    assert (txn.end_ns, txn.status, txn.error) == (T0 + 9, None, "aborted")
    assert wsi.last_ns == T0 + 9  # ending the transaction was the last activity
    assert wsi.end_reason == "destroyed"
    assert ctx.active_transactions == {Role.H1_SERVER: 0}


def test_destroy_twice_returns_false_and_reports_nothing() -> None:
    tracker, rec = make()
    _, wsi = open_h1(tracker)
    assert tracker.destroy(wsi, T0 + 1) is True
    rec.take()
    assert tracker.destroy(wsi, T0 + 2) is False
    assert rec.take() == []
    assert wsi.end_ns == T0 + 1
    assert wsi.span_end_ns == T0 + 1


def test_destroy_while_the_context_is_closing_ends_as_shutdown() -> None:
    tracker, rec = make()
    ctx, wsi = open_h1(tracker)
    _, other = open_h1(tracker)
    foreign = tracker.open(tracker.context("aiohttp", "elsewhere"), Role.H1_SERVER, T0)
    tracker.context_closing(ctx)
    assert ctx.closing and not ctx.destroyed
    rec.take()
    tracker.destroy(wsi, T0 + 1)
    tracker.destroy(foreign, T0 + 1)
    assert rec.take() == [
        ("wsi_span_ended", (wsi,)),
        ("wsi_destroyed", (wsi,)),
        ("wsi_span_ended", (foreign,)),
        ("wsi_destroyed", (foreign,)),
    ]
    assert (wsi.end_reason, EndReason.SHUTDOWN.value) == ("shutdown", "shutdown")
    assert foreign.end_reason == "destroyed"  # closing is per context
    assert other.live


def test_sinks_are_called_in_registration_order_including_late_ones() -> None:
    first, second = RecordingSink(), RecordingSink()
    order: list[str] = []

    class Tagging(RecordingSink):
        def __init__(self, tag: str) -> None:
            super().__init__()
            self.tag = tag

        def wsi_opened(self, wsi: Wsi) -> None:
            order.append(self.tag)

    tracker = Tracker([first, Tagging("a")])
    ctx = tracker.context("aiohttp", "app")
    a = tracker.open(ctx, Role.RAW, T0)
    tracker.add_sink(second)
    tracker.add_sink(Tagging("b"))
    b = tracker.open(ctx, Role.RAW, T0)
    tracker.destroy(b, T0)
    assert order == ["a", "a", "b"]
    assert first.events() == ["wsi_opened", "wsi_opened", "wsi_span_ended", "wsi_destroyed"]
    assert second.take() == [
        ("wsi_opened", (b,)),
        ("wsi_span_ended", (b,)),
        ("wsi_destroyed", (b,)),
    ]
    assert a.live


def test_a_tracker_without_sinks_works() -> None:
    """`sinks` defaults to (): a Tracker built without sinks must still run every rule."""
    tracker = Tracker()
    ctx = tracker.context("aiohttp", "app")
    wsi = tracker.open(ctx, Role.H1_SERVER, T0)
    tracker.bind(wsi, T0 + 1)
    tracker.drop(wsi, T0 + 2, status=200)
    tracker.upgrade(wsi, Role.WS_SERVER, T0 + 3)
    assert tracker.destroy(wsi, T0 + 4) is True
    assert wsi.end_reason == "destroyed"
    assert tracker.live_count() == 0


class ProbeSink(RecordingSink):
    """Snapshots the state a sink can see at the moment of each callback."""

    def __init__(self) -> None:
        super().__init__()
        self.seen: list[tuple[str, object]] = []

    def transaction_ended(self, txn: Transaction) -> None:
        ctx = txn.wsi.context
        self.seen.append(
            (
                "transaction_ended",
                (txn.end_ns, txn.error, txn.wsi.txn, ctx.active_transactions[txn.role]),
            )
        )

    def wsi_flagged(self, wsi: Wsi, rule: str, certain: bool) -> None:
        in_table = wsi in wsi.context.live[wsi.role]
        self.seen.append(("wsi_flagged", (wsi.leak, wsi.end_reason, wsi.span_end_ns, in_table)))

    def wsi_span_ended(self, wsi: Wsi) -> None:
        self.seen.append(("wsi_span_ended", (wsi.span_end_ns, wsi.end_reason)))

    def wsi_destroyed(self, wsi: Wsi) -> None:
        in_table = wsi in wsi.context.live[wsi.role]
        self.seen.append(("wsi_destroyed", (wsi.end_ns, wsi.end_reason, in_table)))

    def role_changed(self, wsi: Wsi, old: Role) -> None:
        ctx = wsi.context
        self.seen.append(("role_changed", (old, wsi.role, wsi in ctx.live[wsi.role], wsi.txn)))


def test_facts_are_final_when_sinks_see_them() -> None:
    probe = ProbeSink()
    tracker = Tracker([probe])
    ctx = tracker.context("aiohttp", "app")
    a = tracker.open(ctx, Role.H1_SERVER, T0)
    tracker.bind(a, T0 + 1)
    tracker.destroy(a, T0 + 2)
    b = tracker.open(ctx, Role.H1_SERVER, T0)
    tracker.bind(b, T0 + 3)
    tracker.upgrade(b, Role.WS_SERVER, T0 + 4)
    c = tracker.open(ctx, Role.H1_SERVER, T0)
    tracker.bind(c, T0 + 5)
    tracker.flag(c, T0 + 6, LeakRule.FINALIZED)
    assert probe.seen == [
        ("transaction_ended", (T0 + 2, "aborted", None, 0)),
        ("wsi_span_ended", (T0 + 2, "destroyed")),
        ("wsi_destroyed", (T0 + 2, "destroyed", False)),
        ("transaction_ended", (T0 + 4, None, None, 0)),
        ("role_changed", (Role.H1_SERVER, Role.WS_SERVER, True, None)),
        ("transaction_ended", (T0 + 6, "leaked", None, 0)),
        ("wsi_flagged", ("finalized", "leaked", T0 + 6, False)),
        ("wsi_span_ended", (T0 + 6, "leaked")),
    ]
