"""LiveView: the JSON shapes behind /api/wsis and /api/leaks."""

from __future__ import annotations

import json

import pytest

from lwsobs.core.model import Peer
from lwsobs.core.policy import NS
from lwsobs.core.roles import LeakRule, Role
from lwsobs.core.tracker import Tracker
from lwsobs.sinks.live import LiveView, format_peer, wsi_json
from tests.unit.recording import T0

MS = 1_000_000

WSI_KEYS = [
    "id",
    "role",
    "source",
    "context",
    "age_s",
    "idle_s",
    "transactions",
    "in_transaction",
    "peer",
    "local",
    "parent",
    "suspect",
]
LEAK_KEYS = [*WSI_KEYS, "rule", "certain", "flagged_age_s", "live", "resolved"]


def make_view(max_leaks: int = 1000) -> tuple[Tracker, LiveView]:
    tracker = Tracker()
    view = LiveView(tracker, max_leaks=max_leaks)
    tracker.add_sink(view)
    return tracker, view


@pytest.mark.parametrize(
    ("peer", "text"),
    [
        (("127.0.0.1", 8080), "127.0.0.1:8080"),
        (("::1", 443, 0, 0), "[::1]:443"),
        (("fe80::1%eth0", 80, 0, 2), "[fe80::1%eth0]:80"),
        ("127.0.0.11:9", "127.0.0.11:9"),
        ("/run/app.sock", "/run/app.sock"),
        (None, None),
        (("only-host",), None),
        ((), None),
    ],
)
def test_format_peer(peer: Peer, text: str | None) -> None:
    assert format_peer(peer) == text


def test_wsi_json_shape() -> None:
    tracker, _ = make_view()
    ctx = tracker.context("lws", "ctx")
    net = tracker.open(ctx, Role.H2_SERVER, T0, peer=("::1", 50000), local=("::1", 443))
    stream = tracker.open(ctx, Role.H2_STREAM, T0 + 100 * MS, parent=net)
    tracker.bind(stream, T0 + 200 * MS)
    item = wsi_json(stream, T0 + 1500 * MS)
    assert list(item) == WSI_KEYS
    assert item == {
        "id": "lws/2",
        "role": "h2-stream",
        "source": "lws",
        "context": "ctx",
        "age_s": 1.4,
        "idle_s": 1.3,
        "transactions": 1,
        "in_transaction": True,
        "peer": None,
        "local": None,
        "parent": "lws/1",
        "suspect": None,
    }
    assert wsi_json(net, T0 + 1234567 * 1000)["age_s"] == 1.235  # rounded to milliseconds
    assert wsi_json(net, T0)["peer"] == "[::1]:50000"
    assert wsi_json(net, T0)["local"] == "[::1]:443"
    json.dumps(item)


def test_wsis_lists_live_wsis_by_serial() -> None:
    tracker, view = make_view()
    a = tracker.context("aiohttp", "a")
    b = tracker.context("lws", "b")
    w1 = tracker.open(a, Role.LISTEN, T0, local=("0.0.0.0", 80))
    w2 = tracker.open(b, Role.H1_CLIENT, T0 + NS, peer="example.org:443")
    w3 = tracker.open(a, Role.H1_SERVER, T0 + 2 * NS, peer=("127.0.0.12", 4000))
    w4 = tracker.open(a, Role.H1_SERVER, T0 + 3 * NS)
    tracker.destroy(w3, T0 + 4 * NS)
    tracker.flag(w4, T0 + 5 * NS, LeakRule.IDLE)  # a suspect is still live
    out = view.wsis(T0 + 10 * NS)
    assert out["count"] == 3
    assert [w["id"] for w in out["wsis"]] == [w1.id, w2.id, w4.id]
    assert [w["suspect"] for w in out["wsis"]] == [None, None, "idle"]
    assert out["wsis"][0]["local"] == "0.0.0.0:80"
    assert out["wsis"][1]["peer"] == "example.org:443"
    assert out["wsis"][1]["age_s"] == 9.0
    json.dumps(out)


def test_wsis_limit_keeps_the_total_count() -> None:
    tracker, view = make_view()
    ctx = tracker.context("aiohttp", "a")
    wsis = [tracker.open(ctx, Role.H1_SERVER, T0) for _ in range(10)]
    out = view.wsis(T0, limit=3)
    assert out["count"] == 10
    assert len(out["wsis"]) == 3
    assert {w["id"] for w in out["wsis"]} <= {w.id for w in wsis}
    assert view.wsis(T0, limit=0) == {"count": 10, "wsis": []}


def test_wsis_when_empty() -> None:
    _, view = make_view()
    assert view.wsis(T0) == {"count": 0, "wsis": []}
    assert view.leak_list(T0) == {"count": 0, "leaks": []}


def test_leak_list_shape_newest_first() -> None:
    tracker, view = make_view()
    ctx = tracker.context("aiohttp", "app")
    certain = tracker.open(ctx, Role.H1_SERVER, T0, peer=("127.0.0.11", 1))
    suspect = tracker.open(ctx, Role.H1_SERVER, T0 + NS)
    resolved = tracker.open(ctx, Role.H2_STREAM, T0 + 2 * NS)
    tracker.flag(certain, T0 + 3 * NS, LeakRule.FINALIZED)
    tracker.flag(suspect, T0 + 4 * NS, LeakRule.IDLE)
    tracker.flag(resolved, T0 + 5 * NS, LeakRule.SOURCE_LOST)
    tracker.destroy(resolved, T0 + 6 * NS)
    out = view.leak_list(T0 + 10 * NS)
    assert out["count"] == 3
    leaks = out["leaks"]
    assert all(list(item) == LEAK_KEYS for item in leaks)
    assert [item["id"] for item in leaks] == [resolved.id, suspect.id, certain.id]
    r, s, c = leaks
    assert (r["rule"], r["certain"], r["live"], r["resolved"]) == (
        "source_lost",
        False,
        False,
        True,
    )
    assert r["flagged_age_s"] == 3.0  # from creation to the flag, not to the destroy
    assert r["suspect"] == "source_lost"
    assert (s["rule"], s["certain"], s["live"], s["resolved"]) == ("idle", False, True, False)
    assert s["flagged_age_s"] == 3.0
    assert (c["rule"], c["certain"], c["live"], c["resolved"]) == ("finalized", True, False, False)
    assert c["flagged_age_s"] == 3.0
    assert c["peer"] == "127.0.0.11:1"
    assert c["age_s"] == 10.0
    json.dumps(out)


def test_leak_list_keeps_the_most_recent() -> None:
    tracker, view = make_view(max_leaks=2)
    ctx = tracker.context("aiohttp", "app")
    wsis = [tracker.open(ctx, Role.H1_SERVER, T0) for _ in range(4)]
    for wsi in wsis:
        tracker.flag(wsi, T0 + NS, LeakRule.IDENTITY_REUSED)
    assert [item["id"] for item in view.leak_list(T0)["leaks"]] == [wsis[3].id, wsis[2].id]


def test_a_suspect_later_found_certain_is_not_resolved() -> None:
    """'resolved' means the suspect got its WSI_DESTROY after all, as MetricsSink counts it.

    A suspect that is later flagged certain (here: its context was torn down) ended as leaked;
    it must not be shown as resolved.
    """
    tracker, view = make_view()
    ctx = tracker.context("lws", "ctx")
    wsi = tracker.open(ctx, Role.H1_SERVER, T0)
    tracker.flag(wsi, T0 + NS, LeakRule.IDLE)
    tracker.context_destroyed(ctx, T0 + 2 * NS, graceful=False)
    assert wsi.end_reason == "leaked"
    (item,) = view.leak_list(T0 + 3 * NS)["leaks"]
    assert item["live"] is False
    assert item["resolved"] is False
