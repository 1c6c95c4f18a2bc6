"""The lws decoder on what lws 4.3 to 5.0 and the current shim add to 4.1.6's callbacks.

Each scenario is the event order recorded from real builds (docs/lws-lifecycle.md, "Other
versions"): LISTEN announcements, lws tags on bare destroys, HTTP_STATUS (also for requests lws
refuses itself), h2 streams counted on their connection, and the client request fields.
"""

from __future__ import annotations

from lwsobs.core.roles import Role
from lwsobs.sources.lws.tags import TagKind, tag_kind
from tests.reliability.consumers import table_is_consistent
from tests.unit.test_lws_decoder import Script as DecoderScript

SRC = "minimal-http-server@box:4242"


class Script(DecoderScript):
    """test_lws_decoder's producer script, as the lws file server of these scenarios."""

    def __init__(self) -> None:
        super().__init__(SRC)


def accept(s: Script, listen: str, wsi: str, fd: int = 7, port: int = 7681) -> None:
    s(17, listen, afd=fd, peer="127.0.0.1:50000", vh="default", port=port)
    s(29, wsi, fd=-1)
    s(19, wsi, fd=fd, peer="127.0.0.1")


# -- tags ------------------------------------------------------------------------------------------


def test_tags_name_what_lws_created() -> None:
    assert tag_kind("[wsicli|3|GET/h1/default/127.0.0.1]") is TagKind.CLIENT
    assert tag_kind("[wsiSScli|1|x]") is TagKind.CLIENT
    assert tag_kind("[wsisrv|0|default|ipv4]") is TagKind.ACCEPTED
    assert tag_kind("[mux|2|h2]") is TagKind.STREAM
    assert tag_kind("[wsi|0|listen|default||7681]") is TagKind.LISTEN
    assert tag_kind("[wsi|1|pipe]") is TagKind.INTERNAL
    assert tag_kind("[4242|wsicli|3|GET]") is TagKind.CLIENT  # with the proxy build's pid
    assert tag_kind("[vh|0|default]") is None
    assert tag_kind("[wsi|5|other]") is None
    assert tag_kind("") is None and tag_kind(None) is None


def test_a_client_ending_with_a_bare_destroy_is_a_client_not_a_listen_socket() -> None:
    s = Script()
    s(30, "cli1", tag="[wsicli|0|GET/h1/default/warmcat.com]")
    assert [w.role for w in s.rec.destroyed] == [Role.H1_CLIENT]
    assert s.decoder.stats["h1-client_seen_at_destroy"] == 1
    assert s.decoder.stats["listen_seen_at_destroy"] == 0


def test_the_event_pipe_is_internal() -> None:
    s = Script()
    s(30, "pipe", tag="[wsi|1|pipe]")
    assert [w.role for w in s.rec.destroyed] == [Role.INTERNAL]


# -- listen sockets --------------------------------------------------------------------------------


def test_listen_sockets_are_live_from_their_announcement() -> None:
    """lws 5.0 (and 4.3+ with several vhosts): sockets that never accept are live too."""
    s = Script()
    s(-6, vh="default", port=7681, n=2)  # IPv4 and IPv6
    s(-6, vh="second", port=7682, n=1)
    assert s.live() == {"listen": 3}
    accept(s, "l4", "a1", port=7681)
    assert s.live() == {"listen": 3, "h1-server": 1}  # the 17 claimed an announced one
    s(30, "a1")
    s(30, "l4", vh="default", port=7681, tag="[wsi|0|listen|default||7681]")
    s(30, "l6", vh="default", port=7681, tag="[wsi|2|listen|default||7681]")
    s(30, "l2", vh="second", port=7682)
    assert s.live() == {}
    assert s.decoder.stats["listen_seen_at_destroy"] == 0
    assert [w.role for w in s.rec.destroyed].count(Role.LISTEN) == 3
    s(-4)
    assert s.rec.flags == []
    assert table_is_consistent(s.tracker)


def test_lws_41_announces_one_socket_per_port() -> None:
    """4.1 gives no count, and a vhost sharing an earlier vhost's port announces it again."""
    s = Script()
    s(-6, vh="default", port=7681)
    s(-6, vh="localhost2", port=7681)
    assert s.live() == {"listen": 1}


def test_an_announced_socket_never_destroyed_is_a_leak_of_its_context() -> None:
    s = Script()
    s(-6, vh="default", port=7681, n=1)
    s(-4)
    assert [(w.role, rule, certain) for w, rule, certain in s.rec.flags] == [
        (Role.LISTEN, "context_destroyed", True)
    ]


def test_a_destroy_naming_another_port_does_not_claim_an_announced_socket() -> None:
    s = Script()
    s(-6, vh="default", port=7681, n=1)
    s(30, "lx", vh="other", port=9999)
    assert s.decoder.stats["listen_seen_at_destroy"] == 1
    assert s.live() == {"listen": 1}


def test_a_claimed_listen_socket_takes_its_pointer() -> None:
    s = Script()
    s(-6, vh="default", port=7681, n=1)
    accept(s, "lp", "a1")
    (listen,) = [w for w in s.tracker.live_wsis() if w.role is Role.LISTEN]
    assert listen.attrs is not None and listen.attrs["lws.wsi.ptr"] == "lp"


# -- response status and refused requests ----------------------------------------------------------


def test_the_response_status_of_a_server_transaction() -> None:
    s = Script()
    accept(s, "l1", "a1")
    s(18, "a1", uri="/missing", method="GET")
    s(-7, "a1", status=404)
    s(50, "a1", why="lws_http_transaction_completed")
    s(18, "a1", uri="/", method="GET")
    s(-7, "a1", status=200)
    s(15, "a1")
    assert [(t.path, t.status) for t in s.rec.txns] == [("/missing", 404), ("/", 200)]


def test_a_status_with_no_transaction_open_is_a_refused_request() -> None:
    """A pipelined burst: lws answers the second request 403 itself, with no callback."""
    s = Script()
    accept(s, "l1", "a1")
    s(18, "a1", uri="/", method="GET")
    s(-7, "a1", status=200)
    s(50, "a1", why="lws_http_transaction_completed")
    s(-7, "a1", status=403)
    s(30, "a1")
    assert [(t.status, t.error) for t in s.rec.txns] == [(200, None), (403, "refused")]
    assert len(s.rec.refused) == 1 and s.decoder.stats["transactions_refused"] == 1
    (conn,) = [w for w in s.rec.destroyed if w.role is Role.H1_SERVER]
    assert conn.transactions == 2


def test_a_status_for_an_unknown_wsi_is_counted_and_ignored() -> None:
    s = Script()
    s(-7, "nowhere", status=500)
    assert s.decoder.stats["status_unmatched"] == 1 and s.rec.txns == []


# -- h2 and upgrades -------------------------------------------------------------------------------


def test_h2_streams_count_on_their_connection() -> None:
    s = Script()
    accept(s, "l1", "n1", fd=9)
    for i in range(3):
        stream = f"s{i}"
        s(29, stream, fd=-1)
        s(18, stream, nwsi="n1", uri=f"/{i}", method="GET")
        s(-7, stream, status=200)
        s(15, stream, nwsi="n1")
        s(30, stream, nwsi="n1")
    s(30, "n1")
    (conn,) = [w for w in s.rec.destroyed if w.role is Role.H2_SERVER]
    assert conn.transactions == 3
    assert [t.status for t in s.rec.txns] == [200, 200, 200]


def test_the_upgrade_path_is_the_transaction_path() -> None:
    s = Script()
    accept(s, "l1", "a1")
    s(86, "a1", upg="websocket", uri="/chat")
    s(0, "a1")
    assert [(t.path, t.status) for t in s.rec.txns] == [("/chat", 101)]


# -- clients ---------------------------------------------------------------------------------------


def test_the_client_request_comes_from_its_first_line() -> None:
    s = Script()
    s(85, "c1", method="POST", uri="/api/items", addr="example.com", port=8443)
    s(105, "c1", peer="127.0.0.2")
    s(29, "c1", fd=5)
    s(24, "c1")
    s(44, "c1", status=201)
    s(47, "c1")
    s(30, "c1")
    (txn,) = s.rec.txns
    assert (txn.method, txn.path, txn.status) == ("POST", "/api/items", 201)
    (wsi,) = s.rec.destroyed
    assert wsi.attrs is not None
    assert (wsi.attrs["server.address"], wsi.attrs["server.port"]) == ("example.com", 8443)


def test_a_redirect_sends_the_next_request_to_its_location() -> None:
    s = Script()
    s(85, "c1", method="GET", uri="/old", addr="example.com", port=80)
    s(29, "c1", fd=5)
    s(24, "c1")
    s(104, "c1", uri="http://example.com/new?x=1", status=302)
    s(76, "c1", why="lws_client_reset")
    s(29, "c1", fd=6)
    s(24, "c1")
    s(44, "c1", status=200)
    s(47, "c1")
    assert [(t.path, t.status) for t in s.rec.txns] == [("/old", 302), ("/new?x=1", 200)]
