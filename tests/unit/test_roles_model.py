"""The closed label sets, code_class, and the derived properties of the records."""

from __future__ import annotations

import pytest

from lwsobs.core.model import Context, Transaction, Wsi
from lwsobs.core.roles import (
    CLIENT_ROLES,
    SERVER_ROLES,
    SUSPECT_RULES,
    AbandonReason,
    EndReason,
    LeakRule,
    Role,
    code_class,
)


@pytest.mark.parametrize(
    ("status", "expected"),
    [
        (None, "none"),
        (-1, "none"),
        (0, "none"),
        (99, "none"),
        (100, "1xx"),
        (101, "1xx"),
        (199, "1xx"),
        (200, "2xx"),
        (204, "2xx"),
        (299, "2xx"),
        (300, "3xx"),
        (399, "3xx"),
        (400, "4xx"),
        (404, "4xx"),
        (499, "4xx"),
        (500, "5xx"),
        (503, "5xx"),
        (599, "5xx"),
        (600, "none"),
        (999, "none"),
        (10**9, "none"),
    ],
)
def test_code_class(status: int | None, expected: str) -> None:
    assert code_class(status) == expected


def test_code_class_is_a_closed_set() -> None:
    values = {code_class(s) for s in range(-10, 1000)} | {code_class(None)}
    assert values == {"none", "1xx", "2xx", "3xx", "4xx", "5xx"}


def test_label_values() -> None:
    assert [r.value for r in Role] == [
        "listen",
        "h1-server",
        "h2-server",
        "h2-stream",
        "ws-server",
        "h1-client",
        "h2-client",
        "ws-client",
        "raw",
        "internal",
    ]
    assert [r.value for r in LeakRule] == [
        "context_destroyed",
        "identity_reused",
        "finalized",
        "idle",
        "source_lost",
        "evicted",
        "unreleased",
        "session_closed",
        "session_collected",
    ]
    assert [r.value for r in EndReason] == ["destroyed", "shutdown", "leaked", "abandoned"]
    assert [r.value for r in AbandonReason] == ["crashed", "exited", "expired"]
    suspects = {LeakRule.IDLE, LeakRule.SOURCE_LOST, LeakRule.EVICTED, LeakRule.UNRELEASED}
    assert suspects == SUSPECT_RULES
    assert SERVER_ROLES.isdisjoint(CLIENT_ROLES)
    assert Role.WS_SERVER in SERVER_ROLES and Role.WS_CLIENT in CLIENT_ROLES
    assert Role.LISTEN not in SERVER_ROLES | CLIENT_ROLES
    assert Role("h1-server") is Role.H1_SERVER
    assert f"{Role.H2_STREAM}" == "h2-stream"  # StrEnum: formats as its value


def a_txn(arrived: int, start: int, end: int | None) -> Transaction:
    wsi = Wsi(7, Context("lws", "ctx"), Role.H2_STREAM, 0, None, None, None, None)
    txn = Transaction(wsi, 3, 0, arrived, start, "GET", "/", None)
    txn.end_ns = end
    return txn


@pytest.mark.parametrize(
    ("arrived", "start", "end", "queue", "duration"),
    [
        (100, 100, None, 0, 0),
        (100, 150, None, 50, 50),  # open: arrival to start
        (100, 150, 400, 50, 300),
        (100, 100, 100, 0, 0),
        (200, 150, 400, 0, 200),  # arrival after start never gives a negative queue
        (100, 150, 50, 50, 0),  # an end before arrival never gives a negative duration
    ],
)
def test_transaction_queue_and_duration(
    arrived: int, start: int, end: int | None, queue: int, duration: int
) -> None:
    txn = a_txn(arrived, start, end)
    assert txn.queue_ns == queue
    assert txn.duration_ns == duration


def test_transaction_takes_the_role_of_its_wsi_at_creation() -> None:
    txn = a_txn(0, 0, None)
    assert txn.role is Role.H2_STREAM
    txn.wsi.role = Role.WS_SERVER
    assert txn.role is Role.H2_STREAM


def test_wsi_properties() -> None:
    ctx = Context("aiohttp", "app")
    wsi = Wsi(42, ctx, Role.H1_SERVER, 5, ("127.0.0.1", 80), None, None, None)
    assert wsi.id == "aiohttp/42"
    assert repr(wsi) == "Wsi(aiohttp/42, h1-server)"
    assert (wsi.live, wsi.span_ended, wsi.span_end_ns) == (True, False, None)
    wsi.leak = "idle"  # a suspect: still live, its span ended when it was flagged
    wsi.extra.suspected_ns = 9
    assert (wsi.live, wsi.span_ended, wsi.span_end_ns) == (True, True, 9)
    wsi.end_ns = 10
    assert (wsi.live, wsi.span_ended, wsi.span_end_ns) == (False, True, 9)


def test_wsi_times_are_stored_relative_to_the_context_epoch() -> None:
    ctx = Context("aiohttp", "app", epoch_ns=1_700_000_000_000_000_000)
    wsi = Wsi(1, ctx, Role.H1_SERVER, 1_700_000_000_000_000_500, None, None, None, None)
    assert wsi._created == wsi._last == 500
    assert wsi.created_ns == wsi.last_ns == 1_700_000_000_000_000_500
    wsi.last_ns = 1_700_000_000_000_000_900
    assert (wsi._last, wsi.last_ns) == (900, 1_700_000_000_000_000_900)


def test_rare_fields_cost_nothing_until_used() -> None:
    ctx = Context("a", "b")
    plain = Wsi(1, ctx, Role.H1_SERVER, 0, None, None, None, None)
    assert plain._extra is None and plain.parent is None and plain.attrs is None
    child = Wsi(2, ctx, Role.H2_STREAM, 0, None, None, plain, {"lws.vhost": "v"})
    assert child.parent is plain and child.attrs == {"lws.vhost": "v"}


def test_records_have_slots() -> None:
    ctx = Context("a", "b")
    wsi = Wsi(1, ctx, Role.RAW, 0, None, None, None, None)
    txn = Transaction(wsi, 1, 0, 0, 0, None, None, None)
    for obj in (ctx, wsi, txn):
        assert not hasattr(obj, "__dict__")
    with pytest.raises(AttributeError):
        ctx.unexpected = 1  # type: ignore[attr-defined]
    with pytest.raises(AttributeError):
        wsi.unexpected = 1  # type: ignore[attr-defined]
    with pytest.raises(AttributeError):
        txn.unexpected = 1  # type: ignore[attr-defined]
