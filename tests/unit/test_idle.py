"""The idle rule: the timer wheel behind tick(), LeakPolicy and parse_idle_limits."""

from __future__ import annotations

from dataclasses import dataclass, field

import pytest

from lwsobs.core.policy import DEFAULT_IDLE_LIMITS_S, NS, LeakPolicy, parse_idle_limits
from lwsobs.core.roles import LeakRule, Role
from lwsobs.core.tracker import Tracker
from tests.unit.recording import T0, make, suspects

H1_LIMIT = int(DEFAULT_IDLE_LIMITS_S[Role.H1_SERVER] or 0) * NS  # 3900 s


@dataclass(frozen=True)
class CountingPolicy(LeakPolicy):
    """Records every role the tracker asks a limit for: tick asks once per wsi it visits."""

    asked: list[Role] = field(default_factory=list)

    def idle_limit_ns(self, role: Role) -> int | None:
        self.asked.append(role)
        return super().idle_limit_ns(role)


def wheel_size(tracker: Tracker) -> int:
    return sum(len(bucket) for bucket in tracker._wheel.values())


def test_default_limits_cover_every_role() -> None:
    assert set(DEFAULT_IDLE_LIMITS_S) == set(Role)
    exempt = {role for role, limit in DEFAULT_IDLE_LIMITS_S.items() if limit is None}
    assert exempt == {Role.LISTEN, Role.WS_SERVER, Role.WS_CLIENT, Role.RAW, Role.INTERNAL}


# -- when a wsi is flagged -------------------------------------------------------------------------


def test_idle_wsi_is_flagged_only_after_its_limit() -> None:
    tracker, rec = make()
    ctx = tracker.context("aiohttp", "app")
    wsi = tracker.open(ctx, Role.H1_SERVER, T0)
    rec.take()
    for now in (T0, T0 + NS, T0 + H1_LIMIT - 1, T0 + H1_LIMIT):
        assert tracker.tick(now) == []
    assert (rec.take(), wsi.leak) == ([], None)
    # the wheel has one-second slots: the flag comes within a second after the limit
    assert tracker.tick(T0 + H1_LIMIT + NS) == [wsi]
    assert rec.take() == [
        ("wsi_flagged", (wsi, "idle", False)),
        ("wsi_span_ended", (wsi,)),
    ]
    assert (wsi.leak, LeakRule.IDLE.value) == ("idle", "idle")
    assert wsi.live
    assert wsi.span_end_ns == T0 + H1_LIMIT + NS
    assert wsi.events == [("leak_suspected", T0 + H1_LIMIT + NS, {"lws.leak.rule": "idle"})]
    assert suspects(tracker) == {wsi}
    # flagged once: later ticks leave it alone
    assert tracker.tick(T0 + 10 * H1_LIMIT) == []
    assert rec.take() == []


@pytest.mark.parametrize(
    ("role", "limit_s"),
    [
        (Role.H1_SERVER, 3900),
        (Role.H2_SERVER, 3900),
        (Role.H2_STREAM, 600),
        (Role.H1_CLIENT, 3900),
        (Role.H2_CLIENT, 3900),
    ],
)
def test_default_limit_per_role(role: Role, limit_s: int) -> None:
    tracker, _ = make()
    wsi = tracker.open(tracker.context("x", "y"), role, T0)
    assert tracker.tick(T0 + limit_s * NS) == []
    assert tracker.tick(T0 + (limit_s + 1) * NS) == [wsi]


@pytest.mark.parametrize(
    "role", [Role.LISTEN, Role.WS_SERVER, Role.WS_CLIENT, Role.RAW, Role.INTERNAL]
)
def test_exempt_roles_are_never_flagged_and_never_scheduled(role: Role) -> None:
    tracker, rec = make()
    tracker.open(tracker.context("x", "y"), role, T0)
    assert tracker._wheel == {} and tracker._wheel_slots == []
    assert tracker.tick(T0 + 10**7 * NS) == []
    assert rec.events() == ["wsi_opened"]


@pytest.mark.parametrize("activity", ["bind_drop", "touch", "drop"])
def test_activity_postpones_the_flag(activity: str) -> None:
    tracker, _ = make()
    wsi = tracker.open(tracker.context("x", "y"), Role.H1_SERVER, T0)
    at = T0 + 1000 * NS
    if activity == "bind_drop":
        tracker.bind(wsi, at)
        tracker.drop(wsi, at, status=200)
    elif activity == "touch":
        tracker.touch(wsi, at)
    else:  # a transaction bound at once and dropped later
        tracker.bind(wsi, T0)
        tracker.drop(wsi, at)
    assert wsi.last_ns == at
    assert tracker.tick(T0 + H1_LIMIT + NS) == []  # the original deadline passes
    assert tracker.tick(at + H1_LIMIT) == []
    assert tracker.tick(at + H1_LIMIT + NS) == [wsi]


def test_repeated_activity_keeps_a_wsi_clean() -> None:
    tracker, _ = make()
    wsi = tracker.open(tracker.context("x", "y"), Role.H2_STREAM, T0)  # 600 s limit
    for minute in range(1, 200):
        now = T0 + minute * 60 * NS
        tracker.touch(wsi, now)
        assert tracker.tick(now) == []
    assert wsi.leak is None
    assert wheel_size(tracker) == 1  # one pending check, however many ticks


def test_a_wsi_with_an_open_transaction_is_never_idle() -> None:
    tracker, _ = make()
    wsi = tracker.open(tracker.context("x", "y"), Role.H1_SERVER, T0)
    tracker.bind(wsi, T0)
    for k in range(1, 6):
        assert tracker.tick(T0 + k * (H1_LIMIT + NS)) == []
    assert wheel_size(tracker) == 1
    # once dropped, the clock starts from the drop
    end = T0 + 5 * (H1_LIMIT + NS) + 7 * NS
    tracker.drop(wsi, end)
    flagged: list[object] = []
    now = end
    while not flagged:
        now += NS
        flagged = list(tracker.tick(now))
    assert flagged == [wsi]
    assert end + H1_LIMIT < now <= end + H1_LIMIT + 2 * NS


def test_ended_wsis_are_skipped() -> None:
    tracker, rec = make()
    ctx = tracker.context("x", "y")
    destroyed = tracker.open(ctx, Role.H1_SERVER, T0)
    leaked = tracker.open(ctx, Role.H1_SERVER, T0)
    suspect = tracker.open(ctx, Role.H1_SERVER, T0)
    tracker.destroy(destroyed, T0 + 1)
    tracker.flag(leaked, T0 + 1, LeakRule.FINALIZED)
    tracker.flag(suspect, T0 + 1, LeakRule.SOURCE_LOST)
    rec.take()
    assert tracker.tick(T0 + 2 * H1_LIMIT) == []
    assert rec.take() == []
    assert suspect.leak == "source_lost"
    assert tracker._wheel == {} and tracker._wheel_slots == []


def test_upgrade_to_an_exempt_role_cancels_the_idle_rule() -> None:
    tracker, _ = make()
    wsi = tracker.open(tracker.context("x", "y"), Role.H1_SERVER, T0)
    tracker.upgrade(wsi, Role.WS_SERVER, T0 + 1)
    assert tracker.tick(T0 + 100 * H1_LIMIT) == []
    assert wsi.leak is None


def test_upgrade_from_an_exempt_role_to_a_limited_one_schedules_the_rule() -> None:
    tracker, _ = make()
    wsi = tracker.open(tracker.context("x", "y"), Role.RAW, T0)
    assert wheel_size(tracker) == 0
    up = T0 + 50 * NS
    tracker.upgrade(wsi, Role.H1_CLIENT, up)
    assert wheel_size(tracker) == 1
    assert tracker.tick(up + H1_LIMIT) == []
    assert tracker.tick(up + H1_LIMIT + NS) == [wsi]


def test_upgrade_to_a_role_with_a_shorter_limit_applies_the_new_limit() -> None:
    """LWSOBS_IDLE_LIMITS=ws-server=60: an upgraded websocket idle for 60 s is a suspect.

    Its pending check was scheduled for the h1-server deadline (3900 s); the new, shorter limit
    must take effect from the upgrade, not after the old deadline.
    """
    policy = LeakPolicy().with_limits({Role.WS_SERVER: 60.0})
    tracker, _ = make(policy)
    wsi = tracker.open(tracker.context("x", "y"), Role.H1_SERVER, T0)
    tracker.bind(wsi, T0)
    tracker.upgrade(wsi, Role.WS_SERVER, T0 + NS)
    assert tracker.tick(T0 + 61 * NS) == []
    assert tracker.tick(T0 + 62 * NS) == [wsi]


def test_a_role_limit_changed_by_upgrade_is_read_at_tick_time() -> None:
    policy = LeakPolicy().with_limits({Role.H1_SERVER: 10.0, Role.H2_SERVER: 20.0})
    tracker, _ = make(policy)
    wsi = tracker.open(tracker.context("x", "y"), Role.H1_SERVER, T0)
    tracker.upgrade(wsi, Role.H2_SERVER, T0)
    assert tracker.tick(T0 + 11 * NS) == []  # h1's deadline, but h2's limit applies
    assert tracker.tick(T0 + 21 * NS) == [wsi]


# -- cost: a tick visits only what is due ----------------------------------------------------------


def test_a_tick_before_any_deadline_visits_nothing() -> None:
    policy = CountingPolicy()
    tracker, _ = make(policy)
    ctx = tracker.context("x", "y")
    n = 5000
    for i in range(n):
        tracker.open(ctx, Role.H1_SERVER, T0 + i * 1000)
    slots = list(tracker._wheel_slots)
    assert wheel_size(tracker) == n
    policy.asked.clear()
    for k in range(0, 3800, 100):
        assert tracker.tick(T0 + k * NS) == []
    assert policy.asked == []  # no wsi was looked at
    assert tracker._wheel_slots == slots
    assert wheel_size(tracker) == n


def test_a_tick_visits_exactly_the_due_wsis() -> None:
    policy = CountingPolicy(LeakPolicy().with_limits({Role.H1_SERVER: 10.0}).idle_limits_s)
    tracker, _ = make(policy)
    ctx = tracker.context("x", "y")
    wsis = [tracker.open(ctx, Role.H1_SERVER, T0 + i * NS) for i in range(100)]
    policy.asked.clear()
    # wsi i is due in slot T0/NS + i + 11
    assert tracker.tick(T0 + 15 * NS) == wsis[:5]
    assert len(policy.asked) == 5
    policy.asked.clear()
    assert tracker.tick(T0 + 15 * NS + NS // 2) == []
    assert policy.asked == []
    assert tracker.tick(T0 + 20 * NS) == wsis[5:10]
    assert len(policy.asked) == 5
    assert wheel_size(tracker) == 90


def test_a_large_time_jump_flags_everything_due_in_one_tick() -> None:
    tracker, _ = make()
    ctx = tracker.context("x", "y")
    wsis = [tracker.open(ctx, Role.H1_SERVER, T0 + i * 7 * NS) for i in range(300)]
    busy = tracker.open(ctx, Role.H1_SERVER, T0)
    tracker.bind(busy, T0)
    jump = T0 + 10**6 * NS  # eleven days later
    flagged = tracker.tick(jump)
    assert sorted(flagged, key=lambda w: w.serial) == wsis
    assert all(w.span_end_ns == jump for w in wsis)
    assert busy.leak is None
    assert wheel_size(tracker) == 1  # only the busy wsi, rescheduled past the jump
    assert min(tracker._wheel_slots) > jump // NS
    assert tracker.tick(jump) == []


def test_a_tick_going_backwards_does_nothing() -> None:
    tracker, _ = make()
    wsi = tracker.open(tracker.context("x", "y"), Role.H1_SERVER, T0)
    assert tracker.tick(T0 + H1_LIMIT + NS) == [wsi]
    assert tracker.tick(T0) == []


# -- LeakPolicy ------------------------------------------------------------------------------------


def test_custom_policy_limits() -> None:
    policy = LeakPolicy({Role.WS_SERVER: 30.0, Role.H1_SERVER: None, Role.RAW: 0.5})
    assert policy.idle_limit_ns(Role.WS_SERVER) == 30 * NS
    assert policy.idle_limit_ns(Role.RAW) == NS // 2
    assert policy.idle_limit_ns(Role.H1_SERVER) is None
    assert policy.idle_limit_ns(Role.H2_STREAM) is None  # a role left out is exempt
    tracker, _ = make(policy)
    ctx = tracker.context("x", "y")
    ws = tracker.open(ctx, Role.WS_SERVER, T0)
    h1 = tracker.open(ctx, Role.H1_SERVER, T0)
    raw = tracker.open(ctx, Role.RAW, T0)
    assert tracker.tick(T0 + 2 * NS) == [raw]
    assert tracker.tick(T0 + 31 * NS) == [ws]
    assert tracker.tick(T0 + 10**6 * NS) == []
    assert h1.leak is None


def test_with_limits_overrides_without_mutating() -> None:
    base = LeakPolicy()
    policy = base.with_limits({Role.WS_SERVER: 60.0, Role.H1_SERVER: None})
    assert policy.idle_limit_ns(Role.WS_SERVER) == 60 * NS
    assert policy.idle_limit_ns(Role.H1_SERVER) is None
    assert policy.idle_limit_ns(Role.H2_STREAM) == 600 * NS
    assert base.idle_limit_ns(Role.WS_SERVER) is None
    assert base.idle_limit_ns(Role.H1_SERVER) == H1_LIMIT
    assert dict(LeakPolicy().idle_limits_s) == dict(DEFAULT_IDLE_LIMITS_S)


# -- parse_idle_limits ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("", {}),
        ("  ", {}),
        (",,", {}),
        ("h1-server=10", {Role.H1_SERVER: 10.0}),
        ("h1-server=10,ws-server=off", {Role.H1_SERVER: 10.0, Role.WS_SERVER: None}),
        (" h2-stream = 0.5 , listen = NONE ,", {Role.H2_STREAM: 0.5, Role.LISTEN: None}),
        ("raw=never", {Role.RAW: None}),
        ("ws-client=Off", {Role.WS_CLIENT: None}),
        ("internal=1e3", {Role.INTERNAL: 1000.0}),
        ("h1-client=1,h1-client=2", {Role.H1_CLIENT: 2.0}),  # the last one wins
    ],
)
def test_parse_idle_limits_valid(text: str, expected: dict[Role, float | None]) -> None:
    assert parse_idle_limits(text) == expected


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("h1-server", "idle limit 'h1-server' is not ROLE=SECONDS"),
        ("h1-server=1,ws", "idle limit 'ws' is not ROLE=SECONDS"),
        ("websocket=10", "unknown role 'websocket' (known: listen, h1-server,"),
        ("=10", "unknown role ''"),
        ("H1-SERVER=10", "unknown role 'H1-SERVER'"),
        ("h1-server=ten", "idle limit for h1-server must be seconds or 'off', got 'ten'"),
        ("h1-server=", "idle limit for h1-server must be seconds or 'off', got ''"),
        ("h1-server=0", "idle limit for h1-server must be positive, got 0.0"),
        ("h1-server=-5", "idle limit for h1-server must be positive, got -5.0"),
        ("h1-server=nan", "idle limit for h1-server must be positive, got nan"),
    ],
)
def test_parse_idle_limits_invalid(text: str, message: str) -> None:
    with pytest.raises(ValueError) as info:
        parse_idle_limits(text)
    assert str(info.value).startswith(message)
