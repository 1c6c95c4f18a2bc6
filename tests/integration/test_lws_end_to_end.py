"""A real libwebsockets app, preloaded with the shim, observed by lwsobs end to end.

The events the shim sends go through the live service path (UDP receiver -> IngestPipeline ->
LwsDecoder -> Tracker) and the assertions are on what a user sees: wsis by role, transactions,
leak flags and /metrics.
"""

from __future__ import annotations

import asyncio
import json
import re
import signal
import socket
import subprocess
import threading
import time
from typing import cast

import aiohttp

from lwsobs.app.service import PIPELINE, build_app
from lwsobs.config import Config, HostPort
from lwsobs.core.roles import Role
from lwsobs.observer import Observer
from lwsobs.sources.lws.decoder import LwsDecoder
from tests.conftest import eventually, free_port
from tests.conftest import run_app as run_service
from tests.integration.test_lws_h2 import Tee, until_context_gone
from tests.integration.test_shim import (
    APP_PLAIN,
    SHIM,
    built,  # noqa: F401 - the fixture that builds the shim and the test app
    drive,
    run_app,
)


def roles(observer: Observer, counter: str) -> dict[str, int]:
    sink = observer.metrics
    counts = sink.created if counter == "created" else sink.destroyed
    out: dict[str, int] = {}
    for (source, role), n in counts.items():
        if source == "lws_testapp_plain":
            out[role.value] = out.get(role.value, 0) + n
    return out


async def test_preloaded_lws_app_is_observed_through_the_service(built: None) -> None:  # noqa: F811
    udp = free_port()
    observer = Observer(Config(spans=True, udp=HostPort("127.0.0.1", udp)))
    async with run_service(build_app(observer)) as srv:
        loop = asyncio.get_running_loop()

        def traffic() -> None:
            with run_app(
                APP_PLAIN, f"udp://127.0.0.1:{udp}", preload=SHIM, client_self=True
            ) as app:
                drive(app)
                # still open when the app's context is destroyed: lws closes it, no leak
                still_open = socket.create_connection(("127.0.0.1", app.port))
                still_open.sendall(b"GET /slow HTTP/1.1\r\nHost: t\r\n")  # never finished
                time.sleep(0.3)
            still_open.close()

        await loop.run_in_executor(None, traffic)
        await eventually(lambda: roles(observer, "destroyed").get("listen", 0) >= 1, timeout=10)
        async with aiohttp.ClientSession() as session, session.get(srv.url + "/metrics") as resp:
            metrics = await resp.text()
    assert observer.spans is not None and observer.recent is not None
    observer.spans.flush()
    spans = [sp for t in observer.recent.traces(1000) for sp in t["spans"]]
    ours = "lws_testapp_plain/"
    lws_conns = [
        sp
        for sp in spans
        if sp["name"] == "wsi h1-server" and sp["attributes"]["lws.wsi.id"].startswith(ours)
    ]
    lws_txns = [
        sp
        for sp in spans
        if sp["attributes"].get("lws.wsi.id", "").startswith(ours)
        and not sp["name"].startswith("wsi ")
    ]
    assert lws_conns and lws_txns
    # every transaction span sits under the connection span of its own wsi
    for txn in lws_txns:
        parent = next(sp for sp in spans if sp["span_id"] == txn["parent_span_id"])
        assert parent["attributes"]["lws.wsi.id"] == txn["attributes"]["lws.wsi.id"]
        assert parent["start_ns"] <= txn["start_ns"] <= txn["end_ns"] <= parent["end_ns"]
    created = roles(observer, "created")
    destroyed = roles(observer, "destroyed")
    # accepted connections: keep-alive pair, close, 404, two raw GETs, a websocket, lws' clients
    assert created.get("h1-server", 0) >= 7, created
    assert created.get("listen") == 1 and destroyed.get("listen") == 1
    assert destroyed.get("ws-server", 0) >= 1, destroyed
    assert created.get("h1-client", 0) >= 1, created
    transactions = {
        (role.value, code_class): n
        for (source, role, code_class), n in observer.metrics.transactions.items()
        if source == "lws_testapp_plain"
    }
    assert (
        transactions.get(("h1-server", "none"), 0) + transactions.get(("h1-server", "2xx"), 0) >= 4
    )
    # a clean shutdown: every wsi got its WSI_DESTROY before the context went
    flagged = [(w.role.value, w.leak) for w in observer.live.leaks]
    assert flagged == [], flagged
    assert 'lwsobs_wsi_live{role="h1-server",source="lws_testapp_plain"} 0.0' in metrics
    assert 'lwsobs_ingest_rejected_total{reason="not_json",transport="udp"} 0.0' in metrics
    observer.close()


class DroppingRelay:
    """Forwards the shim's datagrams to the service, losing the WSI_DESTROY of one wsi.

    The victim is the first accepted server wsi (the WSI_CREATE after the first
    FILTER_NETWORK_CONNECTION); only its first WSI_DESTROY is dropped, since lws reuses
    pointers at once.
    """

    def __init__(self, target_port: int) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.settimeout(0.05)
        self.endpoint = f"udp://127.0.0.1:{self.sock.getsockname()[1]}"
        self.target = ("127.0.0.1", target_port)
        self.victim: str | None = None
        self.dropped = 0
        self._after_17 = False
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _keep(self, line: bytes) -> bool:
        try:
            event = json.loads(line)
        except ValueError:
            return True
        r, wsi = event.get("r"), event.get("wsi")
        if r == 17:
            self._after_17 = True
        elif r == 29 and self._after_17 and self.victim is None:
            self.victim = wsi
        elif r == 30 and wsi == self.victim and not self.dropped:
            self.dropped += 1
            return False
        if r != 17:
            self._after_17 = False
        return True

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                data = self.sock.recv(65535)
            except TimeoutError:
                continue
            kept = b"".join(line + b"\n" for line in data.splitlines() if self._keep(line))
            if kept:
                self.sock.sendto(kept, self.target)

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=2)
        self.sock.close()


async def test_a_lost_wsi_destroy_flags_exactly_that_wsi(built: None) -> None:  # noqa: F811
    udp = free_port()
    observer = Observer(Config(spans=False, udp=HostPort("127.0.0.1", udp)))
    relay = DroppingRelay(udp)
    try:
        async with run_service(build_app(observer)):
            loop = asyncio.get_running_loop()

            def traffic() -> None:
                with run_app(APP_PLAIN, relay.endpoint, preload=SHIM) as app:
                    drive(app)

            await loop.run_in_executor(None, traffic)
            await eventually(lambda: roles(observer, "destroyed").get("listen", 0) >= 1, timeout=10)
    finally:
        relay.close()
    assert relay.victim is not None and relay.dropped == 1
    flagged = [
        (w.role.value, w.leak, (w.attrs or {}).get("lws.wsi.ptr")) for w in observer.live.leaks
    ]
    assert len(flagged) == 1, flagged
    role, rule, ptr = flagged[0]
    assert role in ("h1-server", "ws-server") and ptr == relay.victim.removeprefix("0x").lstrip("0")
    assert rule in ("identity_reused", "context_destroyed")  # both certain
    assert not observer.tracker.live_count()
    observer.close()


def open_and_kill(udp: int, holder: list[socket.socket]) -> None:
    """The app accepts a connection (left open in `holder`), then is killed with SIGKILL."""
    with run_app(APP_PLAIN, f"udp://127.0.0.1:{udp}", preload=SHIM) as app:
        holder.append(socket.create_connection(("127.0.0.1", app.port)))
        time.sleep(0.5)  # accepted, announced
        app.proc.send_signal(signal.SIGKILL)
        app.proc.wait(timeout=5)


async def test_a_killed_app_leaves_suspects_after_the_silence_limit(built: None) -> None:  # noqa: F811
    """With no way to see the process (another host; here LWSOBS_PROCESS_CHECK=0), a killed
    app is only silent: its wsis become suspects after the silence limit, then expire."""
    udp = free_port()
    config = Config(
        spans=False,
        udp=HostPort("127.0.0.1", udp),
        silence_s=2.0,
        source_expiry_s=4.0,
        process_check=False,
        tick_s=0.2,
    )
    observer = Observer(config)
    async with run_service(build_app(observer)):
        loop = asyncio.get_running_loop()
        holder: list[socket.socket] = []

        await loop.run_in_executor(None, open_and_kill, udp, holder)
        app_live = [w for w in observer.tracker.live_wsis() if w.context.source != "lwsobs"]
        assert {w.role.value for w in app_live} >= {"listen", "h1-server"}
        await eventually(
            lambda: (
                {(w.role.value, w.leak) for w in observer.live.leaks}
                >= {("listen", "source_lost"), ("h1-server", "source_lost")}
            ),
            timeout=10,
        )
        # still suspects, still live: a silent process may only be stuck
        assert [w for w in observer.tracker.live_wsis() if w.context.source != "lwsobs"]
        await eventually(
            lambda: not [w for w in observer.tracker.live_wsis() if w.context.source != "lwsobs"],
            timeout=10,
        )
        for sock in holder:
            sock.close()
    suspects = [w for w in observer.live.leaks if w.leak == "source_lost"]
    assert all(w.context.source == "lws_testapp_plain" for w in suspects)
    assert {reason for (_, _, reason) in observer.metrics.abandoned} == {"expired"}
    observer.close()


async def test_a_killed_app_on_this_host_ends_at_once(built: None) -> None:  # noqa: F811
    """kill -9 and no restart: /proc says the pid is gone; its wsis are abandoned (exited)
    within a tick, never flagged, and the live counts return to the truth."""
    udp = free_port()
    observer = Observer(Config(spans=False, udp=HostPort("127.0.0.1", udp), tick_s=0.2))
    async with run_service(build_app(observer)):
        loop = asyncio.get_running_loop()
        holder: list[socket.socket] = []

        await loop.run_in_executor(None, open_and_kill, udp, holder)
        await eventually(
            lambda: not [w for w in observer.tracker.live_wsis() if w.context.source != "lwsobs"],
            timeout=5,
        )
        for sock in holder:
            sock.close()
    assert not observer.live.leaks
    got = {(role.value, reason): n for (_, role, reason), n in observer.metrics.abandoned.items()}
    assert got == {("listen", "exited"): 1, ("h1-server", "exited"): 1}, got
    observer.close()


async def test_pipelined_requests_from_h2load_each_get_a_transaction(built: None) -> None:  # noqa: F811
    udp = free_port()
    observer = Observer(Config(spans=False, udp=HostPort("127.0.0.1", udp)))
    async with run_service(build_app(observer)):
        loop = asyncio.get_running_loop()
        report: list[str] = []

        def traffic() -> None:
            with run_app(APP_PLAIN, f"udp://127.0.0.1:{udp}", preload=SHIM) as app:
                done = subprocess.run(
                    ["h2load", "--h1", "-n", "40", "-c", "2", "-m", "4", f"{app.url}/"],
                    capture_output=True,
                    text=True,
                    timeout=30,
                    check=False,
                )
                report.append(done.stdout)

        await loop.run_in_executor(None, traffic)
        await eventually(lambda: roles(observer, "destroyed").get("listen", 0) >= 1, timeout=10)
    (out,) = report
    succeeded = int(re.search(r"(\d+) succeeded", out).group(1))  # type: ignore[union-attr]
    assert succeeded > 0, out
    served = sum(
        n
        for (source, role, _), n in observer.metrics.transactions.items()
        if source == "lws_testapp_plain" and role is Role.H1_SERVER
    )
    # every request lws answered is one transaction on the connection that carried it
    assert served == succeeded == 40, (served, out)
    assert roles(observer, "created").get("h1-server") == 2
    assert not observer.live.leaks
    observer.close()


async def test_refused_lws_clients_are_destroyed_without_create_and_not_leaks(
    built: None,  # noqa: F811
) -> None:
    udp = free_port()
    observer = Observer(Config(spans=False, udp=HostPort("127.0.0.1", udp)))
    async with run_service(build_app(observer)):
        loop = asyncio.get_running_loop()
        nobody = free_port()  # nothing listens there: every connect is refused

        def traffic() -> None:
            with run_app(
                APP_PLAIN, f"udp://127.0.0.1:{udp}", "--client-port", str(nobody), preload=SHIM
            ):
                time.sleep(0.5)

        await loop.run_in_executor(None, traffic)
        await eventually(lambda: roles(observer, "destroyed").get("listen", 0) >= 1, timeout=10)
    created, destroyed = roles(observer, "created"), roles(observer, "destroyed")
    assert created.get("h1-client") == destroyed.get("h1-client") == 2, (created, destroyed)
    # the listen socket accepted nothing: it shows up only in its bare WSI_DESTROY
    assert created.get("listen") == destroyed.get("listen") == 1
    assert not observer.live.leaks
    assert not [w for w in observer.tracker.live_wsis() if w.context.source != "lwsobs"]
    observer.close()


async def test_dual_stack_listener_peers_are_the_ipv4_address(built: None) -> None:  # noqa: F811
    """An IPv6 listener sees IPv4 clients as ::ffff:a.b.c.d; the service shows a.b.c.d:port."""
    udp = free_port()
    observer = Observer(Config(spans=True, udp=HostPort("127.0.0.1", udp)))
    tee = Tee(udp)
    local: list[int] = []
    try:
        async with run_service(build_app(observer)) as srv:

            def traffic() -> None:
                with run_app(APP_PLAIN, tee.endpoint, "--dual-stack", preload=SHIM) as app:
                    with socket.create_connection(("127.0.0.1", app.port), timeout=5) as s:
                        local.append(s.getsockname()[1])
                        s.sendall(b"GET / HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n")
                        reply = b""
                        while chunk := s.recv(4096):
                            reply += chunk
                    assert reply.startswith(b"HTTP/1.1 200"), reply

            await asyncio.get_running_loop().run_in_executor(None, traffic)
            await until_context_gone(observer, "lws_testapp_plain")
            stats = cast(LwsDecoder, srv.app[PIPELINE].consumer).stats
        raw = tee.wait_for(lambda ev: bool(ev) and ev[-1].r == -5, timeout=2.0)
    finally:
        tee.close()
    (port,) = local
    # what the shim reports on a dual-stack listener (lws 4.1.6, AF_INET6 socket)
    assert [e.peer for e in raw if e.r == 17] == [f"[::ffff:127.0.0.1]:{port}"]
    assert [e.peer for e in raw if e.r == 19] == ["::ffff:127.0.0.1"]
    assert stats.get("peer_mismatch", 0) == 0
    assert observer.spans is not None and observer.recent is not None
    observer.spans.flush()
    (conn,) = [
        sp
        for t in observer.recent.traces(100)
        for sp in t["spans"]
        if sp["name"] == "wsi h1-server"
        and str(sp["attributes"]["lws.wsi.id"]).startswith("lws_testapp_plain/")
    ]
    assert conn["attributes"]["network.peer.address"] == "127.0.0.1"
    assert conn["attributes"]["network.peer.port"] == port
    assert not observer.live.leaks
    observer.close()
