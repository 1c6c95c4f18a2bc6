"""flag (certain and suspect rules), context teardown and shutdown."""

from __future__ import annotations

import pytest

from lwsobs.core.model import Context, Wsi
from lwsobs.core.roles import SUSPECT_RULES, EndReason, LeakRule, Role
from lwsobs.core.tracker import Tracker
from lwsobs.sinks.metrics.sink import MetricsSink
from tests.unit.recording import T0, RecordingSink, active, live_sizes, make, suspects

CERTAIN = [
    LeakRule.CONTEXT_DESTROYED,
    LeakRule.IDENTITY_REUSED,
    LeakRule.FINALIZED,
    LeakRule.SESSION_CLOSED,
    LeakRule.SESSION_COLLECTED,
]
SUSPECT = [LeakRule.IDLE, LeakRule.SOURCE_LOST, LeakRule.EVICTED, LeakRule.UNRELEASED]


def open_h1(tracker: Tracker, now: int = T0) -> tuple[Context, Wsi]:
    ctx = tracker.context("aiohttp", "app")
    return ctx, tracker.open(ctx, Role.H1_SERVER, now)


def test_the_rule_sets_partition_the_rules() -> None:
    assert set(CERTAIN) | set(SUSPECT) == set(LeakRule)
    assert set(SUSPECT) == SUSPECT_RULES


# -- certain rules ---------------------------------------------------------------------------------


@pytest.mark.parametrize("rule", CERTAIN)
def test_certain_flag_ends_the_wsi(rule: LeakRule) -> None:
    tracker, rec = make()
    ctx, wsi = open_h1(tracker)
    rec.take()
    assert tracker.flag(wsi, T0 + 5, rule) is True
    assert rec.take() == [("wsi_flagged", (wsi, rule.value, True)), ("wsi_span_ended", (wsi,))]
    assert wsi.leak == rule.value
    assert wsi.end_ns == wsi.span_end_ns == T0 + 5
    assert (wsi.end_reason, EndReason.LEAKED.value) == ("leaked", "leaked")
    assert not wsi.live and wsi.span_ended
    assert ctx.live == {Role.H1_SERVER: set()}
    assert wsi.events is None  # no leak_suspected event for certain rules
    assert suspects(tracker) == set()


@pytest.mark.parametrize("rule", CERTAIN)
def test_certain_flag_with_an_open_transaction_ends_it_as_leaked(rule: LeakRule) -> None:
    tracker, rec = make()
    ctx, wsi = open_h1(tracker)
    txn = tracker.bind(wsi, T0 + 1)
    rec.take()
    tracker.flag(wsi, T0 + 5, rule)
    assert rec.take() == [
        ("transaction_ended", (txn,)),
        ("wsi_flagged", (wsi, rule.value, True)),
        ("wsi_span_ended", (wsi,)),
    ]
    assert txn is not None
    assert (txn.end_ns, txn.status, txn.error) == (T0 + 5, None, "leaked")
    assert wsi.txn is None
    assert ctx.active_transactions == {Role.H1_SERVER: 0}


@pytest.mark.parametrize("rule", CERTAIN)
def test_a_wsi_flagged_certain_ignores_later_calls(rule: LeakRule) -> None:
    tracker, rec = make()
    _, wsi = open_h1(tracker)
    tracker.flag(wsi, T0 + 5, rule)
    rec.take()
    for again in LeakRule:
        assert tracker.flag(wsi, T0 + 6, again) is False
    assert tracker.destroy(wsi, T0 + 7) is False
    assert tracker.bind(wsi, T0 + 8) is None
    tracker.upgrade(wsi, Role.WS_SERVER, T0 + 9)
    assert rec.take() == []
    assert wsi.leak == rule.value
    assert wsi.end_ns == T0 + 5
    assert wsi.role is Role.H1_SERVER


# -- suspect rules ---------------------------------------------------------------------------------


@pytest.mark.parametrize("rule", SUSPECT)
def test_suspect_flag_keeps_the_wsi_live_and_ends_its_span(rule: LeakRule) -> None:
    tracker, rec = make()
    ctx, wsi = open_h1(tracker)
    rec.take()
    assert tracker.flag(wsi, T0 + 5, rule) is True
    assert rec.take() == [("wsi_flagged", (wsi, rule.value, False)), ("wsi_span_ended", (wsi,))]
    assert wsi.leak == rule.value
    assert wsi.live and wsi.end_ns is None and wsi.end_reason is None
    assert wsi.span_end_ns == T0 + 5 and wsi.span_ended
    assert wsi.events == [("leak_suspected", T0 + 5, {"lws.leak.rule": rule.value})]
    assert ctx.live == {Role.H1_SERVER: {wsi}}
    assert tracker.suspects == {ctx: {Role.H1_SERVER: {wsi}}}
    assert suspects(tracker) == {wsi}


def test_suspect_flag_with_an_open_transaction_leaves_it_open() -> None:
    tracker, rec = make()
    ctx, wsi = open_h1(tracker)
    txn = tracker.bind(wsi, T0 + 1)
    rec.take()
    tracker.flag(wsi, T0 + 5, LeakRule.SOURCE_LOST)
    assert rec.events() == ["wsi_flagged", "wsi_span_ended"]
    assert wsi.txn is txn
    assert ctx.active_transactions == {Role.H1_SERVER: 1}


@pytest.mark.parametrize("first", SUSPECT)
@pytest.mark.parametrize("second", SUSPECT)
def test_a_wsi_is_flagged_as_suspect_at_most_once(first: LeakRule, second: LeakRule) -> None:
    tracker, rec = make()
    _, wsi = open_h1(tracker)
    tracker.flag(wsi, T0 + 5, first)
    rec.take()
    assert tracker.flag(wsi, T0 + 6, second) is False
    assert rec.take() == []
    assert wsi.leak == first.value
    assert wsi.span_end_ns == T0 + 5
    assert wsi.live
    assert wsi.events is not None and len(wsi.events) == 1
    assert suspects(tracker) == {wsi}


@pytest.mark.parametrize("first", SUSPECT)
@pytest.mark.parametrize("second", CERTAIN)
def test_a_suspect_later_flagged_certain_leaves_without_a_second_flag(
    first: LeakRule, second: LeakRule
) -> None:
    tracker, rec = make()
    ctx, wsi = open_h1(tracker)
    tracker.flag(wsi, T0 + 5, first)
    rec.take()
    assert tracker.flag(wsi, T0 + 9, second) is False
    assert rec.take() == []
    assert not wsi.live
    assert wsi.end_ns == T0 + 9
    assert wsi.end_reason == "leaked"
    assert wsi.span_end_ns == T0 + 5  # the span ended when it was first flagged
    assert wsi.leak == first.value  # counted once, under its first rule
    assert ctx.live == {Role.H1_SERVER: set()}
    assert suspects(tracker) == set()
    assert tracker.flag(wsi, T0 + 10, second) is False


def test_a_suspect_with_an_open_transaction_later_flagged_certain_ends_the_transaction() -> None:
    """A suspect can still carry a transaction (source_lost, or a bind after an idle flag).

    When it is then found to be a certain leak it leaves the table; its transaction must end
    too (as 'leaked', like a wsi flagged certain directly), or the active-transactions gauge
    keeps counting it forever and the transaction span never ends.
    """
    tracker, rec = make()
    ctx, wsi = open_h1(tracker)
    tracker.flag(wsi, T0 + 5, LeakRule.IDLE)
    txn = tracker.bind(wsi, T0 + 6)  # it was alive after all...
    assert txn is not None
    rec.take()
    tracker.flag(wsi, T0 + 9, LeakRule.IDENTITY_REUSED)  # ...until its pointer was reused
    assert rec.take() == [("transaction_ended", (txn,))]
    assert (txn.end_ns, txn.error) == (T0 + 9, "leaked")
    assert wsi.txn is None
    assert ctx.active_transactions == {Role.H1_SERVER: 0}


@pytest.mark.parametrize("rule", SUSPECT)
def test_a_suspect_later_destroyed_is_resolved(rule: LeakRule) -> None:
    metrics = MetricsSink()
    rec = RecordingSink()
    tracker = Tracker([rec, metrics])
    ctx, wsi = open_h1(tracker)
    tracker.bind(wsi, T0 + 1)
    tracker.drop(wsi, T0 + 2, status=200)
    tracker.flag(wsi, T0 + 5, rule)
    rec.take()
    assert tracker.destroy(wsi, T0 + 9) is True
    # the span already ended at the flag: no second wsi_span_ended
    assert rec.take() == [("wsi_destroyed", (wsi,))]
    assert wsi.end_ns == T0 + 9
    assert wsi.span_end_ns == T0 + 5
    assert wsi.end_reason == "destroyed"
    assert wsi.leak == rule.value
    assert suspects(tracker) == set()
    assert tracker.suspects == {ctx: {Role.H1_SERVER: set()}}
    assert ctx.live == {Role.H1_SERVER: set()}
    assert dict(metrics.resolved) == {("aiohttp", Role.H1_SERVER, rule.value): 1}
    assert dict(metrics.leaked) == {("aiohttp", Role.H1_SERVER, rule.value): 1}
    assert dict(metrics.destroyed) == {("aiohttp", Role.H1_SERVER): 1}


def test_a_suspect_with_an_open_transaction_later_destroyed_aborts_it() -> None:
    tracker, rec = make()
    ctx, wsi = open_h1(tracker)
    txn = tracker.bind(wsi, T0 + 1)
    tracker.flag(wsi, T0 + 5, LeakRule.SOURCE_LOST)
    rec.take()
    tracker.destroy(wsi, T0 + 9)
    assert rec.take() == [("transaction_ended", (txn,)), ("wsi_destroyed", (wsi,))]
    assert txn is not None and txn.error == "aborted"
    assert ctx.active_transactions == {Role.H1_SERVER: 0}


def test_a_plain_destroy_is_not_counted_as_resolved() -> None:
    metrics = MetricsSink()
    tracker = Tracker([metrics])
    _, wsi = open_h1(tracker)
    tracker.destroy(wsi, T0 + 1)
    assert dict(metrics.resolved) == {}


def test_an_upgraded_suspect_moves_between_suspect_roles() -> None:
    tracker, rec = make()
    ctx, wsi = open_h1(tracker)
    tracker.flag(wsi, T0 + 5, LeakRule.IDLE)
    rec.take()
    tracker.upgrade(wsi, Role.WS_SERVER, T0 + 6)
    assert rec.take() == [("role_changed", (wsi, Role.H1_SERVER))]
    assert tracker.suspects == {ctx: {Role.H1_SERVER: set(), Role.WS_SERVER: {wsi}}}
    tracker.destroy(wsi, T0 + 7)
    assert suspects(tracker) == set()


def test_suspects_are_kept_per_context_and_role() -> None:
    tracker, _ = make()
    a_ctx = tracker.context("aiohttp", "a")
    b_ctx = tracker.context("lws", "b")
    a1 = tracker.open(a_ctx, Role.H1_SERVER, T0)
    a2 = tracker.open(a_ctx, Role.H2_STREAM, T0)
    b1 = tracker.open(b_ctx, Role.H1_CLIENT, T0)
    for wsi in (a1, a2, b1):
        tracker.flag(wsi, T0 + 1, LeakRule.SOURCE_LOST)
    assert tracker.suspects == {
        a_ctx: {Role.H1_SERVER: {a1}, Role.H2_STREAM: {a2}},
        b_ctx: {Role.H1_CLIENT: {b1}},
    }


# -- context teardown ------------------------------------------------------------------------------


def scenario(tracker: Tracker) -> tuple[Context, Wsi, Wsi, Wsi, Wsi]:
    """A context with a listener, an idle wsi, a wsi mid-request and an idle suspect."""
    ctx = tracker.context("lws", "ctx")
    listen = tracker.open(ctx, Role.LISTEN, T0)
    idle = tracker.open(ctx, Role.H1_SERVER, T0 + 1)
    busy = tracker.open(ctx, Role.H1_SERVER, T0 + 2)
    tracker.bind(busy, T0 + 3)
    suspect = tracker.open(ctx, Role.H1_CLIENT, T0 + 4)
    tracker.flag(suspect, T0 + 5, LeakRule.IDLE)
    return ctx, listen, idle, busy, suspect


def test_context_destroyed_not_graceful_flags_every_live_wsi() -> None:
    tracker, rec = make()
    ctx, listen, idle, busy, suspect = scenario(tracker)
    gone = tracker.open(ctx, Role.H1_SERVER, T0 + 5)
    tracker.destroy(gone, T0 + 6)
    txn = busy.txn
    rec.take()
    left = tracker.context_destroyed(ctx, T0 + 10, graceful=False)
    assert left == [listen, idle, busy, suspect]  # by serial, the destroyed one excluded
    rule = LeakRule.CONTEXT_DESTROYED.value
    assert rec.take() == [
        ("wsi_flagged", (listen, rule, True)),
        ("wsi_span_ended", (listen,)),
        ("wsi_flagged", (idle, rule, True)),
        ("wsi_span_ended", (idle,)),
        ("transaction_ended", (txn,)),
        ("wsi_flagged", (busy, rule, True)),
        ("wsi_span_ended", (busy,)),
        # the suspect was counted already: it leaves silently
    ]
    for wsi in (listen, idle, busy, suspect):
        assert not wsi.live
        assert wsi.end_ns == T0 + 10
        assert wsi.end_reason == "leaked"
    assert [w.leak for w in (listen, idle, busy, suspect)] == [rule, rule, rule, "idle"]
    assert suspect.span_end_ns == T0 + 5
    assert ctx.destroyed
    assert not ctx.closing
    assert ctx not in tracker.suspects
    assert list(tracker.contexts) == []
    assert tracker.live_count() == 0


def test_context_destroyed_graceful_ends_every_live_wsi_as_shutdown() -> None:
    tracker, rec = make()
    ctx, listen, idle, busy, suspect = scenario(tracker)
    txn = busy.txn
    rec.take()
    left = tracker.context_destroyed(ctx, T0 + 10, graceful=True)
    assert left == [listen, idle, busy, suspect]
    assert rec.take() == [
        ("wsi_span_ended", (listen,)),
        ("wsi_destroyed", (listen,)),
        ("wsi_span_ended", (idle,)),
        ("wsi_destroyed", (idle,)),
        ("transaction_ended", (txn,)),
        ("wsi_span_ended", (busy,)),
        ("wsi_destroyed", (busy,)),
        ("wsi_destroyed", (suspect,)),
    ]
    assert txn is not None and txn.error == "aborted"
    for wsi in (listen, idle, busy, suspect):
        assert wsi.end_ns == T0 + 10
        assert wsi.end_reason == "shutdown"
    assert [w.leak for w in (listen, idle, busy)] == [None, None, None]
    assert ctx.destroyed and ctx.closing
    assert ctx not in tracker.suspects
    assert list(tracker.contexts) == []


@pytest.mark.parametrize("graceful", [True, False])
def test_context_destroyed_with_nothing_live(graceful: bool) -> None:
    tracker, rec = make()
    ctx = tracker.context("aiohttp", "app")
    assert tracker.context_destroyed(ctx, T0, graceful=graceful) == []
    assert rec.take() == []
    assert ctx.destroyed
    assert list(tracker.contexts) == []


def test_context_returns_the_same_context_until_it_is_destroyed() -> None:
    tracker, _ = make()
    ctx = tracker.context("aiohttp", "app")
    assert tracker.context("aiohttp", "app") is ctx
    assert tracker.context("aiohttp", "other") is not ctx
    assert tracker.context("lws", "app") is not ctx
    assert (ctx.source, ctx.name, ctx.closing, ctx.destroyed) == ("aiohttp", "app", False, False)
    assert repr(ctx) == "Context('aiohttp', 'app')"
    tracker.context_destroyed(ctx, T0, graceful=True)
    fresh = tracker.context("aiohttp", "app")
    assert fresh is not ctx
    assert (fresh.closing, fresh.destroyed, fresh.live) == (False, False, {})
    assert tracker.context("aiohttp", "app") is fresh
    assert set(tracker.contexts) == {
        tracker.context("aiohttp", "other"),
        tracker.context("lws", "app"),
        fresh,
    }


def test_destroying_a_stale_context_keeps_its_successor_registered() -> None:
    tracker, _ = make()
    old = tracker.context("aiohttp", "app")
    old.destroyed = True  # as a source might see it: destroyed but not yet unregistered
    new = tracker.context("aiohttp", "app")
    assert new is not old
    tracker.context_destroyed(old, T0, graceful=False)
    assert tracker.context("aiohttp", "app") is new
    assert list(tracker.contexts) == [new]


def test_shutdown_ends_everything_as_shutdown_and_flags_nothing() -> None:
    tracker, rec = make()
    ctx, listen, idle, busy, suspect = scenario(tracker)
    other = tracker.context("aiohttp", "app")
    ws = tracker.open(other, Role.WS_SERVER, T0 + 5)
    rec.take()
    tracker.shutdown(T0 + 100)
    calls = rec.take()
    assert [name for name, _ in calls].count("wsi_flagged") == 0
    assert {args[0] for name, args in calls if name == "wsi_destroyed"} == {
        listen,
        idle,
        busy,
        suspect,
        ws,
    }
    for wsi in (listen, idle, busy, suspect, ws):
        assert wsi.end_ns == T0 + 100
        assert wsi.end_reason == "shutdown"
    assert ctx.destroyed and other.destroyed
    assert list(tracker.contexts) == []
    assert tracker.live_count() == 0
    assert tracker.suspects == {}
    assert live_sizes(tracker) == {} and active(tracker) == {}
    tracker.shutdown(T0 + 200)  # idempotent
    assert rec.take() == []
