"""The lws decoder against the callback orders measured on libwebsockets 4.1.6.

Each scenario is the event sequence from docs/lws-lifecycle.md (its callback orders), fed as
wire-v1 events; the assertions are on the Tracker's table, transactions and leak flags.
"""

from __future__ import annotations

import random
from typing import Any

import pytest
from opentelemetry.sdk.trace.sampling import ALWAYS_ON

from lwsobs.core.ids import Ids
from lwsobs.core.model import Transaction, Wsi
from lwsobs.core.roles import Role
from lwsobs.core.sink import BaseSink
from lwsobs.core.tracker import Tracker
from lwsobs.sinks.spans.builder import SpanBuilder, snapshot
from lwsobs.sources.lws.decoder import LwsDecoder, normalise_peer
from lwsobs.sources.lws.wire import Event, source_label
from tests.reliability.consumers import table_is_consistent

T0 = 1_800_000_000_000_000_000
SRC = "testapp@host:4242"


class Recorder(BaseSink):
    def __init__(self) -> None:
        self.txns: list[Transaction] = []
        self.flags: list[tuple[Wsi, str, bool]] = []
        self.destroyed: list[Wsi] = []
        self.opened: list[Wsi] = []
        self.refused: list[Transaction] = []

    def wsi_opened(self, wsi: Wsi) -> None:
        self.opened.append(wsi)

    def transaction_ended(self, txn: Transaction) -> None:
        self.txns.append(txn)

    def wsi_flagged(self, wsi: Wsi, rule: str, certain: bool) -> None:
        self.flags.append((wsi, rule, certain))

    def wsi_destroyed(self, wsi: Wsi) -> None:
        self.destroyed.append(wsi)

    def transaction_refused(self, txn: Transaction) -> None:
        self.refused.append(txn)


class Script:
    """Feeds events with increasing seq and time, as one producer would."""

    def __init__(self, src: str = SRC) -> None:
        self.rec = Recorder()
        self.tracker = Tracker([self.rec])
        self.decoder = LwsDecoder(self.tracker)
        self.src = src
        self.seq = 0

    def __call__(self, r: int, wsi: str | None = None, **fields: Any) -> None:
        self.seq += 1
        fields.setdefault("ctx", "c1")
        self.decoder.feed(
            Event(v=1, src=self.src, seq=self.seq, t=T0 + self.seq * 1000, r=r, wsi=wsi, **fields)
        )

    def live(self) -> dict[str, int]:
        out: dict[str, int] = {}
        for wsi in self.tracker.live_wsis():
            out[wsi.role.value] = out.get(wsi.role.value, 0) + 1
        return out


def accept(s: Script, wsi: str, fd: int = 7, peer: str = "127.0.0.1:50000") -> None:
    s(17, "listen1", afd=fd, peer=peer, vh="default")
    s(29, wsi, fd=-1)
    s(19, wsi, fd=fd)


def test_keep_alive_server_connection_has_one_transaction_per_request() -> None:
    s = Script()
    accept(s, "a1")
    for i, uri in enumerate(["/one", "/two", "/three"]):
        s(18, "a1", uri=uri)
        if i:
            s(50, "a1", why="no mount hit")
        s(49, "a1")
        s(12, "a1", uri=uri)
        s(50, "a1", why="lws_http_transaction_completed")
        s(49, "a1")
    assert s.live() == {"listen": 1, "h1-server": 1}
    s(50, "a1", why="__lws_close_free_wsi")
    s(5, "a1")
    s(30, "a1")
    assert s.live() == {"listen": 1}
    assert [t.path for t in s.rec.txns] == ["/one", "/two", "/three"]
    (conn,) = [w for w in s.rec.destroyed if w.role is Role.H1_SERVER]
    assert conn.transactions == 3 and conn.peer == "127.0.0.1:50000"
    assert conn.attrs is None or conn.attrs.get("lws.vhost") in (None, "default")
    assert not s.rec.flags


def test_connection_close_ends_the_transaction_at_closed_http() -> None:
    s = Script()
    accept(s, "a1")
    s(18, "a1", uri="/x")
    s(49, "a1")
    s(12, "a1", uri="/x")
    s(50, "a1", why="__lws_close_free_wsi")
    s(5, "a1")
    s(30, "a1")
    (txn,) = s.rec.txns
    assert txn.path == "/x" and txn.error is None


def test_websocket_upgrade_moves_the_wsi_to_ws_server() -> None:
    s = Script()
    accept(s, "w1")
    s(86, "w1", upg="websocket")
    s(49, "w1")
    s(20, "w1", sub="echo")
    s(0, "w1")
    assert s.live() == {"listen": 1, "ws-server": 1}
    (upgrade,) = s.rec.txns
    assert upgrade.status == 101
    s(6, "w1")
    s(78, "w1", why="__lws_close_free_wsi")
    s(4, "w1")
    s(30, "w1")
    assert s.live() == {"listen": 1}
    assert not s.rec.flags


def test_rejected_subprotocol_is_not_a_leak() -> None:
    s = Script()
    accept(s, "w1")
    s(86, "w1", upg="websocket")
    s(30, "w1")
    assert s.live() == {"listen": 1}
    (txn,) = s.rec.txns
    assert txn.error == "aborted"
    assert not s.rec.flags


def test_client_get_is_an_h1_client_with_its_status() -> None:
    s = Script()
    s(85, "k1", pcol="cli")
    s(19, "k1")
    s(29, "k1")
    s(24, "k1", uri="/remote")
    s(2, "k1")
    s(44, "k1", status=200)
    s(46, "k1")
    s(47, "k1")
    s(76, "k1", why="__lws_close_free_wsi")
    s(45, "k1")
    s(30, "k1")
    (client,) = s.rec.destroyed
    assert client.role is Role.H1_CLIENT
    (txn,) = s.rec.txns
    assert txn.status == 200
    assert not s.rec.flags and s.live() == {}


def test_refused_client_connection_destroy_without_create() -> None:
    s = Script()
    s(85, "k1")
    s(19, "k1")
    s(1, "k1", err="connection refused")
    s(76, "k1", why="__lws_close_free_wsi")
    s(30, "k1")
    assert s.live() == {} and not s.rec.flags
    assert [w.role for w in s.rec.destroyed] == [Role.H1_CLIENT]


def test_lws41_dns_failure_lone_85_and_pointer_reuse_is_not_a_leak() -> None:
    s = Script()
    s(85, "k1")  # getaddrinfo failed inside the connect call: nothing more for this wsi
    s(85, "k1")  # the next connect reuses the pointer
    s(19, "k1")
    s(29, "k1")
    s(30, "k1")
    s(-4)  # context destroyed
    assert not s.rec.flags
    assert s.decoder.stats["client_connect_failed_silently"] == 1
    assert len(s.rec.opened) == 1


def test_redirect_second_create_on_the_same_pointer_is_the_same_wsi() -> None:
    s = Script()
    s(85, "k1")
    s(19, "k1")
    s(29, "k1")
    s(104, "k1")
    s(76, "k1", why="client_reset")
    s(85, "k1")
    s(29, "k1")
    s(44, "k1", status=200)
    s(47, "k1")
    s(30, "k1")
    assert len(s.rec.opened) == 1 and not s.rec.flags


def test_h2_server_streams_are_children_of_their_network_wsi() -> None:
    s = Script()
    accept(s, "n1")
    for stream in ("s1", "s2"):
        s(29, stream, fd=-1)
    s(18, "s1", nwsi="n1", uri="/a")
    s(18, "s2", nwsi="n1", uri="/b")
    assert s.live() == {"listen": 1, "h2-server": 1, "h2-stream": 2}
    for stream in ("s1", "s2"):
        s(50, stream, why="lws_http_transaction_completed")
        s(5, stream)
        s(30, stream)
    s(5, "n1")
    s(30, "n1")
    streams = [w for w in s.rec.destroyed if w.role is Role.H2_STREAM]
    network = next(w for w in s.rec.destroyed if w.role is Role.H2_SERVER)
    assert [w.parent for w in streams] == [network, network]
    assert [t.path for t in s.rec.txns] == ["/a", "/b"]
    assert not s.rec.flags


def test_h2_client_stream_and_bare_destroy_of_its_network_wsi() -> None:
    s = Script()
    s(85, "n1")
    s(19, "n1")
    s(29, "n1")
    s(29, "st1")
    s(24, "st1", nwsi="n1", uri="/h2")
    s(44, "st1", status=204)
    s(47, "st1")
    s(45, "st1")
    s(30, "st1")
    s(30, "n1")  # the network wsi idles out with a bare WSI_DESTROY
    roles = sorted(w.role.value for w in s.rec.destroyed)
    assert roles == ["h2-client", "h2-stream"]
    assert [t.status for t in s.rec.txns] == [204]
    assert not s.rec.flags


def test_fake_wsi_reasons_are_never_tracked() -> None:
    s = Script()
    s(27, "fake1", fake=True)
    s(71, "fake1", fake=True)
    s(28, "fake1")
    assert s.live() == {} and s.rec.opened == []


def test_listen_wsi_ends_with_a_bare_destroy_at_teardown() -> None:
    s = Script()
    accept(s, "a1")
    s(5, "a1")
    s(30, "a1")
    s(-3)
    s(30, "listen1")
    s(-4)
    assert s.live() == {} and not s.rec.flags


def test_context_destroyed_with_live_wsis_flags_certain_leaks() -> None:
    s = Script()
    accept(s, "a1")
    s(-3)
    s(30, "listen1")
    s(-4)
    assert [(w.role, rule, certain) for w, rule, certain in s.rec.flags] == [
        (Role.H1_SERVER, "context_destroyed", True)
    ]
    assert s.live() == {}


def test_create_on_a_live_server_pointer_flags_the_old_wsi() -> None:
    s = Script()
    accept(s, "a1", fd=7)
    accept(s, "a1", fd=8)  # lws reused the pointer: the first never got WSI_DESTROY
    assert [(rule, certain) for _, rule, certain in s.rec.flags] == [("identity_reused", True)]
    assert s.live() == {"listen": 1, "h1-server": 1}


def test_adopt_bail_asymmetry_is_not_a_leak() -> None:
    s = Script()
    s(29, "x1")  # created, then freed by lws without WSI_DESTROY (adoption failed)
    s(-4)
    assert not s.rec.flags and s.rec.opened == []


def test_silent_source_makes_suspects_and_lost_lines_make_them_uncertain() -> None:
    s = Script()
    accept(s, "a1")
    s.decoder.lines_lost(SRC, 3)
    s.decoder.source_silent(SRC, T0 + 10**12)
    flagged = {(w.role, rule, certain) for w, rule, certain in s.rec.flags}
    assert flagged == {
        (Role.H1_SERVER, "source_lost", False),
        (Role.LISTEN, "source_lost", False),
    }
    assert all(w.attrs and w.attrs["lws.leak.uncertain"] for w, _, _ in s.rec.flags)


def test_hello_again_under_the_same_src_abandons_the_old_process() -> None:
    s = Script()
    s(-1, lws="4.1.6", pid=1)
    accept(s, "a1")
    old = list(s.tracker.live_wsis())
    s.seq = 0
    s(-1, lws="4.1.6", pid=2)  # the process was killed and came back under the same name
    accept(s, "a1")
    assert s.rec.flags == []  # a process that died did not leak
    assert sorted((w.role.value, w.end_reason) for w in old) == [
        ("h1-server", "abandoned"),
        ("listen", "abandoned"),
    ]
    assert all(w.attrs and w.attrs["lws.abandoned.reason"] == "exited" for w in old)
    assert s.live() == {"listen": 1, "h1-server": 1}


def test_bye_ends_every_context() -> None:
    s = Script()
    accept(s, "a1")
    s(17, "l2", afd=3, ctx="c2")
    s(-5)
    assert s.live() == {}
    assert len(s.rec.flags) == 3


def test_source_label_is_the_program_name_and_bounded() -> None:
    assert source_label("myapp@host:4242") == "myapp"
    assert source_label("weird name!@x") == "weird_name_"
    assert len(source_label("x" * 64)) == 32


def test_a_listen_wsi_that_accepted_nothing_appears_at_its_bare_destroy() -> None:
    s = Script()
    s(-1, lws="4.1.6", pid=1)
    s(-3)
    s(30, "l9")
    s(-4)
    (listen,) = s.rec.destroyed
    assert listen.role is Role.LISTEN and listen.created_ns == T0 + 2000  # its context: -3
    assert not s.rec.flags and s.decoder.stats["listen_seen_at_destroy"] == 1


# -- found on real lws 4.1.6 (tests/integration/test_lws_client.py, test_lws_h2.py) --------------


def test_lws416_redirect_ends_the_first_transaction_and_reconnects_the_same_wsi() -> None:
    """The order lws 4.1.6 really sends: the DROP before the reconnect says lws_client_reset."""
    s = Script()
    s(85, "k1", pcol="client", fd=-1)
    s(19, "k1", fd=7, peer="127.0.0.1")
    s(29, "k1", fd=7)
    s(24, "k1", fd=7)
    s(104, "k1", fd=7)  # 302 with Location
    s(76, "k1", fd=7, why="lws_client_reset")
    s(85, "k1", fd=-1)  # rebinding: no 19 on the redirect's connect
    s(29, "k1", fd=8)  # the second WSI_CREATE on the same pointer
    s(24, "k1", fd=8)
    s(2, "k1", fd=8)
    s(44, "k1", fd=8, status=200, peer="127.0.0.1")
    s(46, "k1", fd=8)
    s(48, "k1", fd=8)
    s(47, "k1", fd=8)
    s(-3)
    s(76, "k1", fd=8, why="__lws_close_free_wsi")
    s(45, "k1", fd=8)
    s(30, "k1", fd=-1)
    s(-4)
    (client,) = s.rec.opened
    assert client.role is Role.H1_CLIENT and client.transactions == 2
    assert [t.status for t in s.rec.txns] == [None, 200]
    assert [t.error for t in s.rec.txns] == [None, None]
    assert s.rec.destroyed == [client] and not s.rec.flags
    assert s.decoder.stats["client_recreated"] == 0


def test_lone_85s_are_counted_as_failed_connects_even_the_last_one() -> None:
    s = Script()
    s(85, "k1", fd=-1)  # the http GET: getaddrinfo failed inside the connect call
    s(85, "k1", fd=-1)  # the ws connect reused the pointer and failed the same way
    s(-4)
    assert s.decoder.stats["client_connect_failed_silently"] == 2
    assert not s.rec.opened and not s.rec.flags


def test_a_lone_85_pointer_taken_by_an_accepted_connection_is_a_server_wsi() -> None:
    s = Script()
    s(85, "k1", fd=-1)
    accept(s, "k1")
    s(18, "k1", uri="/")
    s(50, "k1", why="lws_http_transaction_completed")
    s(5, "k1")
    s(30, "k1")
    assert [w.role for w in s.rec.opened] == [Role.LISTEN, Role.H1_SERVER]
    assert s.decoder.stats["client_connect_failed_silently"] == 1
    assert len(s.rec.txns) == 1 and not s.rec.flags


@pytest.mark.parametrize(
    ("shim", "normalised"),
    [
        ("127.0.0.1:50000", "127.0.0.1:50000"),
        ("127.0.0.1", "127.0.0.1"),
        ("[::ffff:127.0.0.1]:50000", "127.0.0.1:50000"),
        ("::ffff:127.0.0.1", "127.0.0.1"),
        ("::FFFF:192.0.2.3", "192.0.2.3"),
        ("[::1]:443", "[::1]:443"),
        ("::1", "::1"),
        ("[fe80::1:2]:80", "[fe80::1:2]:80"),
        ("[::ffff:1.2.3.4]", "1.2.3.4"),
        ("", None),
        (None, None),
    ],
)
def test_peer_text_is_normalised(shim: str | None, normalised: str | None) -> None:
    assert normalise_peer(shim) == normalised


def test_dual_stack_peers_of_17_and_19_join_and_give_span_attributes() -> None:
    s = Script()
    accept(s, "a1", fd=9, peer="[::ffff:127.0.0.1]:50000")
    s(19, "a1", fd=9, peer="::ffff:127.0.0.1")  # lws_get_peer_simple() on a v6 socket
    s(5, "a1")
    s(30, "a1")
    conn = next(w for w in s.rec.destroyed if w.role is Role.H1_SERVER)
    assert conn.peer == "127.0.0.1:50000"
    assert s.decoder.stats["peer_mismatch"] == 0
    attrs = SpanBuilder(Ids(1), ALWAYS_ON).connection(snapshot(conn)).attributes
    assert attrs["network.peer.address"] == "127.0.0.1"
    assert attrs["network.peer.port"] == 50000


def test_a_19_peer_that_disagrees_with_its_17_is_counted() -> None:
    s = Script()
    accept(s, "a1", fd=9, peer="127.0.0.1:50000")
    s(19, "a1", fd=9, peer="192.0.2.9")
    assert s.decoder.stats["peer_mismatch"] == 1


def test_ipv6_peer_keeps_address_and_port_apart_in_span_attributes() -> None:
    s = Script()
    s(17, "listen1", afd=7, peer="[fe80::1:2]:80")
    s(29, "a1", fd=-1)
    s(19, "a1", fd=7, peer="fe80::1:2")
    s(30, "a1")
    conn = next(w for w in s.rec.destroyed if w.role is Role.H1_SERVER)
    attrs = SpanBuilder(Ids(1), ALWAYS_ON).connection(snapshot(conn)).attributes
    assert (attrs["network.peer.address"], attrs["network.peer.port"]) == ("fe80::1:2", 80)
    assert s.decoder.stats["peer_mismatch"] == 0


# -- a lost client WSI_DESTROY, then an accept on its pointer --------------------------------------


def ws_client(s: Script, wsi: str) -> None:
    """A websocket client that connected and is up (lws 4.1.6 order)."""
    s(85, wsi, fd=-1)
    s(19, wsi, fd=8, peer="127.0.0.1")
    s(29, wsi, fd=8)
    s(24, wsi, fd=8)
    s(44, wsi, fd=8, status=101)
    s(2, wsi, fd=8)
    s(3, wsi, fd=8)


@pytest.mark.parametrize("lost", [True, False])
def test_an_accept_on_a_live_client_pointer_is_a_reuse_not_a_reconnect(lost: bool) -> None:
    """The client's 75 and 30 never arrived; the next accepted connection got its pointer.

    That accept's WSI_CREATE follows its 17: it is a server wsi, and the client a certain leak
    (identity_reused), marked uncertain exactly when lines were lost.
    """
    s = Script()
    ws_client(s, "k1")
    (client,) = s.rec.opened
    if lost:
        s.decoder.lines_lost(SRC, 2)  # the client's 75 and 30
    accept(s, "k1", fd=9, peer="127.0.0.1:50001")
    assert [(w, rule, certain) for w, rule, certain in s.rec.flags] == [
        (client, "identity_reused", True)
    ]
    assert client.role is Role.WS_CLIENT and not client.live
    assert bool((client.attrs or {}).get("lws.leak.uncertain")) is lost
    server = s.rec.opened[-1]
    assert server.role is Role.H1_SERVER and server.peer == "127.0.0.1:50001"
    s(18, "k1", fd=9, uri="/")
    s(50, "k1", fd=9, why="lws_http_transaction_completed")
    s(5, "k1", fd=9)
    s(30, "k1", fd=-1)
    assert s.rec.destroyed == [server] and [t.path for t in s.rec.txns if t.wsi is server] == ["/"]
    assert s.live() == {"listen": 1} and s.decoder.stats["client_recreated"] == 0


def test_a_redirect_reconnect_is_still_the_same_client_after_an_unrelated_accept() -> None:
    """A 17 whose WSI_CREATE came (another pointer) does not make the client's later
    reconnect on its own pointer an accept."""
    s = Script()
    s(85, "k1", fd=-1)
    s(19, "k1", fd=7, peer="127.0.0.1")
    s(29, "k1", fd=7)
    s(24, "k1", fd=7)
    s(104, "k1", fd=7)
    s(76, "k1", fd=7, why="lws_client_reset")
    s(85, "k1", fd=-1)
    accept(s, "a1", fd=9)
    s(29, "k1", fd=8)  # the redirect's reconnect
    s(44, "k1", fd=8, status=200)
    s(47, "k1", fd=8)
    s(30, "k1", fd=-1)
    assert not s.rec.flags
    assert [w.role for w in s.rec.opened] == [Role.H1_CLIENT, Role.LISTEN, Role.H1_SERVER]


def test_a_rejected_accept_does_not_turn_a_redirect_reconnect_into_an_accept() -> None:
    """A 17 that the app rejected has no WSI_CREATE of its own; when the next create is a
    redirecting client's reconnect (it has its socket: fd set), it is still that client."""
    s = Script()
    s(85, "k1", fd=-1)
    s(19, "k1", fd=7, peer="127.0.0.1")
    s(29, "k1", fd=7)
    s(24, "k1", fd=7)
    s(104, "k1", fd=7)
    s(76, "k1", fd=7, why="lws_client_reset")
    s(85, "k1", fd=-1)
    s(17, "L1", afd=9, peer="127.0.0.1:5555", fd=3)  # rejected: lws closes fd 9, no 29
    s(29, "k1", fd=8)  # the redirect's reconnect, right after the rejected 17
    s(24, "k1", fd=8)
    s(2, "k1", fd=8)
    s(44, "k1", fd=8, status=200)
    s(47, "k1", fd=8)
    s(30, "k1", fd=-1)
    assert not s.rec.flags
    assert [w.role for w in s.rec.opened] == [Role.H1_CLIENT, Role.LISTEN]
    (client, _) = s.rec.opened
    assert client.transactions == 2 and s.rec.destroyed == [client]


# -- lost lines make every later finding of the source uncertain -----------------------------------

HOUR = 3600 * 10**9
IDLE_LIMIT = 3900 * 10**9  # LeakPolicy's default for h1-server


def uncertain(wsi: Wsi) -> bool:
    return bool((wsi.attrs or {}).get("lws.leak.uncertain"))


@pytest.mark.parametrize("lost", [True, False])
def test_after_a_loss_idle_and_teardown_findings_are_uncertain(lost: bool) -> None:
    """A loss on a source the decoder knew only from untracked (fake-wsi) lines: the context it
    opens afterwards is uncertain, so the idle rule (run by the Tracker, not the decoder) and
    the teardown both mark their findings; without the loss neither does."""
    s = Script()
    s(27, "fake1", fake=True)  # PROTOCOL_INIT: the source is heard, nothing is tracked
    if lost:
        s.decoder.lines_lost(SRC, 1)
    accept(s, "a1")
    idle_server = s.rec.opened[-1]
    accept(s, "a2", fd=8)
    s(18, "a2", uri="/slow")  # a transaction in progress is never idle
    assert s.tracker.tick(T0 + IDLE_LIMIT + HOUR) == [idle_server]
    assert uncertain(idle_server) is lost  # when sinks see the finding, not only later
    s(-4)
    rules = [(w.role, rule, certain) for w, rule, certain in s.rec.flags]
    assert rules == [
        (Role.H1_SERVER, "idle", False),
        (Role.LISTEN, "context_destroyed", True),
        (Role.H1_SERVER, "context_destroyed", True),
    ]
    assert [uncertain(w) for w, _, _ in s.rec.flags] == [lost, lost, lost]


def test_a_loss_makes_the_contexts_already_open_uncertain_too() -> None:
    s = Script()
    accept(s, "a1")  # context c1, before the loss
    s.decoder.lines_lost(SRC, 5)
    s(17, "l2", ctx="c2", afd=3)  # context c2, after it
    (ctx1, ctx2) = {w.context for w in s.rec.opened}
    assert ctx1.uncertain and ctx2.uncertain
    s.decoder.source_silent(SRC, T0 + HOUR)
    assert len(s.rec.flags) == 3 and all(uncertain(w) for w, _, _ in s.rec.flags)


def test_a_restart_starts_certain_again() -> None:
    s = Script()
    s(-1, pid=1)
    s.decoder.lines_lost(SRC, 1)
    s.seq = 0
    s(-1, pid=2)  # the new process lost nothing
    accept(s, "a1")
    s(-4)
    assert len(s.rec.flags) == 2 and not any(uncertain(w) for w, _, _ in s.rec.flags)


# -- at most max_sources sources -------------------------------------------------------------------


def sources(max_sources: int) -> tuple[Script, list[str]]:
    s = Script()
    s.decoder = LwsDecoder(s.tracker, max_sources=max_sources)
    return s, [f"app{i}@host:{i}" for i in range(10)]


def test_a_new_source_beyond_the_limit_first_pushes_out_one_without_contexts() -> None:
    s, names = sources(3)
    s.src = names[0]
    accept(s, "a1")  # live, and heard first
    s.src = names[1]
    accept(s, "a1")
    s(-4)  # its only context is gone
    s.src = names[2]
    accept(s, "a1")
    s.src = names[3]
    s(-1, pid=3)  # the fourth source: names[1] goes, although names[0] was heard longer ago
    assert s.decoder.source_count == 3
    assert s.decoder.stats["sources_forgotten"] == 1 and s.decoder.stats["sources_evicted"] == 0
    flagged_before = len(s.rec.flags)
    s.src = names[0]
    s(30, "a1")  # names[0] still knows its wsi: a plain destroy, no bare listen wsi
    assert s.rec.destroyed[-1].role is Role.H1_SERVER and len(s.rec.flags) == flagged_before
    assert s.decoder.stats["listen_seen_at_destroy"] == 0


def test_when_every_source_has_live_wsis_the_least_recently_heard_becomes_suspect() -> None:
    s, names = sources(2)
    s.src = names[0]
    accept(s, "a1")
    s(18, "a1", uri="/open")
    s.src = names[1]
    accept(s, "a1")
    s.src = names[0]
    s(16, "a1")  # names[0] is heard again: names[1] is now the least recently heard
    s.src = names[2]
    accept(s, "a1")
    assert s.decoder.source_count == 2 and s.decoder.stats["sources_evicted"] == 1
    gone = [w for w in s.rec.opened if w.context.name.startswith(names[1])]
    assert [(w.role, rule, certain) for w, rule, certain in s.rec.flags] == [
        (Role.LISTEN, "source_lost", False),
        (Role.H1_SERVER, "source_lost", False),
    ]
    assert [w for w, _, _ in s.rec.flags] == gone
    assert all(not w.live and w.leak == "source_lost" for w in gone)
    assert all(w.context.destroyed for w in gone)
    assert s.live() == {"listen": 2, "h1-server": 2}  # names[0] and names[2], untouched
    assert s.tracker.live_total == 4 and list(s.tracker.suspect_wsis()) == []
    assert s.decoder.stats["unclassified_at_teardown"] == 0


def test_a_source_pushed_out_is_met_again_as_a_new_one() -> None:
    s, names = sources(1)
    s.src = names[0]
    accept(s, "a1")
    s.decoder.lines_lost(names[0], 1)
    s.src = names[1]
    accept(s, "a1")
    assert s.decoder.stats["sources_evicted"] == 1
    assert all(uncertain(w) for w, _, _ in s.rec.flags)  # its loss still counts for it
    s.src = names[0]
    accept(s, "a1")  # back: a fresh state (names[1] makes room in turn)
    assert s.decoder.source_count == 1 and s.decoder.stats["sources_evicted"] == 2
    assert s.live() == {"listen": 1, "h1-server": 1}


def test_the_source_limit_must_be_positive() -> None:
    with pytest.raises(ValueError, match="max_sources"):
        LwsDecoder(Tracker(), max_sources=0)


def test_many_sources_keep_the_decoder_and_the_table_bounded() -> None:
    s, _ = sources(50)
    for n in range(2000):
        s.src = f"prog{n}@host:{n}"
        s(-1, pid=n)
        accept(s, "a1")
        if n % 2:
            s(-5)  # half of them say BYE
    assert s.decoder.source_count <= 50
    assert s.tracker.live_total <= 2 * 50
    assert sum(1 for _ in s.tracker.contexts) <= 50
    # a source that said BYE leaves at once; each other one is kept or was pushed out
    assert s.decoder.stats["sources_evicted"] + s.decoder.source_count == 1000
    assert s.decoder.stats["sources_forgotten"] == 0


@pytest.mark.parametrize("seed", range(20))
def test_the_source_orders_stay_in_step_with_the_sources_whatever_the_events(seed: int) -> None:
    """Random events of 6 sources under a limit of 3: HELLOs, BYEs, context ends, accepts,
    destroys, losses. The orders that choose whom to push out name exactly the sources kept,
    least recently heard first (the idle one: exactly those without contexts, in the same
    order), and the table stays sound."""
    rnd = random.Random(seed)
    s, names = sources(3)
    heard: list[str] = []  # every name, least recently heard first
    for _ in range(400):
        s.src = rnd.choice(names[:6])
        ctx = rnd.choice(["c1", "c2"])
        step = rnd.randrange(7)
        if step == 0:
            s(-1, pid=rnd.randrange(3))
        elif step == 1:
            s(-5)
        elif step == 2:
            s(-4, ctx=ctx)
        elif step == 3:
            s.decoder.lines_lost(s.src, 1)
        elif step == 4:
            s(30, rnd.choice(["a1", "a2"]), ctx=ctx)
        else:
            accept(s, rnd.choice(["a1", "a2"]))
        heard = [name for name in heard if name != s.src] + [s.src]
        d = s.decoder
        assert d.source_count <= 3
        assert list(d._heard) == [name for name in heard if name in d._sources]
        idle = {src for src, state in d._sources.items() if not state.contexts}
        assert list(d._idle) == [name for name in heard if name in idle]
        assert table_is_consistent(s.tracker)
    assert s.decoder.stats["sources_evicted"] > 0 and s.decoder.stats["sources_forgotten"] > 0
