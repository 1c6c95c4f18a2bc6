"""HTTP/2 over TLS on real libwebsockets 4.1.6, observed end to end through the lwsobs service.

The test app serves TLS with ALPN "h2,http/1.1" (a fresh 2048-bit self-signed certificate);
h2load runs 20 requests as 4 concurrent streams on each of 2 connections, curl one more over
HTTP/2 and one over HTTP/1.1. A tee between the shim and the service keeps the raw callbacks,
so the test holds both the callback order lws really sends and the service's view of it.

The order observed on 4.1.6 (it matches docs/lws-lifecycle.md, "HTTP/2"):
  nwsi    17(L) 29 (fd -1) 19 (fd) ... 5 CLOSED_HTTP, 30 (fd still set)
  stream  29 (fd -1, no nwsi yet) 18 (nwsi set) 49 12 16.. 50 "__lws_close_free_wsi" (nwsi set)
          5 CLOSED_HTTP, 30 (both detached: no nwsi); never 17 or 19, never a keep-alive
          turnaround DROP; several streams' WSI_CREATEs come before their 18s, interleaved
          across network wsis, and a freed stream's pointer is soon reused by another stream.
"""

from __future__ import annotations

import asyncio
import re
import socket
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from lwsobs.app.service import build_app
from lwsobs.config import Config, HostPort
from lwsobs.observer import Observer
from lwsobs.sources.lws.wire import Event
from tests.conftest import eventually, free_port
from tests.conftest import run_app as run_service
from tests.integration.test_shim import (
    APP_ASAN,
    APP_PLAIN,
    ASAN_MARKERS,
    SHIM,
    Collector,
    built,  # noqa: F401 - the fixture that builds the shim and the test app
    check_clean_exit,
    curl,
    has_bye,
    is_subsequence,
    run_app,
)

WSI_CREATE, WSI_DESTROY = 29, 30
FILTER_NETWORK_CONNECTION, FILTER_HTTP_CONNECTION, SERVER_NEW_CLIENT_INSTANTIATED = 17, 18, 19
HTTP, CLOSED_HTTP, HTTP_DROP_PROTOCOL = 12, 5, 50
STREAM_ORDER = [29, 18, 49, 12, 16, 50, 5, 30]


class Tee(Collector):
    """Keeps every datagram of the shim (a Collector) and forwards it to the service."""

    def __init__(self, service_port: int) -> None:
        self.target = ("127.0.0.1", service_port)
        super().__init__()

    def _receive(self) -> None:
        while not self._stop.is_set():
            try:
                data = self.sock.recv(65535)
            except TimeoutError:
                continue
            self.sock.sendto(data, self.target)
            with self._lock:
                self.datagrams.append(data)


def certificate(directory: Path) -> tuple[Path, Path]:
    """A 2048-bit RSA self-signed certificate (OpenSSL 3 refuses the 1024-bit lws test one)."""
    cert, key = directory / "cert.pem", directory / "key.pem"
    done = subprocess.run(
        [
            *("openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1"),
            *("-subj", "/CN=127.0.0.1", "-keyout", str(key), "-out", str(cert)),
        ],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    return cert, key


def plain_text_refused(port: int) -> bool:
    """A plain HTTP request on the TLS port: lws fails the TLS accept and closes (or resets)."""
    with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
        s.sendall(b"GET / HTTP/1.1\r\nHost: t\r\n\r\n")
        try:
            reply = s.recv(4096)
        except ConnectionResetError:
            reply = b""
    return not reply.startswith(b"HTTP/")


def counts(observer: Observer, label: str, counter: str) -> dict[str, int]:
    """created / destroyed wsis of one source, by role."""
    sink = observer.metrics
    table = sink.created if counter == "created" else sink.destroyed
    out: dict[str, int] = {}
    for (source, role), n in table.items():
        if source == label:
            out[role.value] = out.get(role.value, 0) + n
    return out


async def until_context_gone(observer: Observer, label: str) -> None:
    """The service has applied CONTEXT_DESTROYED: leak rules ran, nothing of `label` is live.

    The listen wsi's WSI_DESTROY comes before CONTEXT_DESTROYED, and the context leaves the
    Tracker only at CONTEXT_DESTROYED (or BYE), so both together mean the teardown was seen.
    """
    await eventually(
        lambda: (
            counts(observer, label, "destroyed").get("listen", 0) >= 1
            and not any(ctx.source == label for ctx in observer.tracker.contexts)
        ),
        timeout=10,
    )


@dataclass(eq=False)
class Life:
    """One wsi pointer from its WSI_CREATE to its WSI_DESTROY (and, for an nwsi, its streams)."""

    wsi: str
    events: list[Event] = field(default_factory=list)
    network: Life | None = None  # a stream: the nwsi life its callbacks named
    streams: list[Life] = field(default_factory=list)

    @property
    def reasons(self) -> list[int]:
        return [e.r for e in self.events]


def lifetimes(events: list[Event]) -> list[Life]:
    """Split callbacks into lives (pointers are reused at once); link streams to their nwsi."""
    lives: list[Life] = []
    live: dict[str, Life] = {}
    for e in events:
        if e.r < 0 or e.wsi is None:
            continue
        if e.r == WSI_CREATE:
            assert e.wsi not in live, f"WSI_CREATE on live {e.wsi}"
            live[e.wsi] = Life(e.wsi)
            lives.append(live[e.wsi])
        life = live.get(e.wsi)
        if life is None:
            continue
        life.events.append(e)
        if e.nwsi is not None:
            network = live[e.nwsi]  # an nwsi outlives its streams
            assert life.network in (None, network), "a stream changed its network wsi"
            if life.network is None:
                life.network = network
                network.streams.append(life)
        if e.r == WSI_DESTROY:
            del live[e.wsi]
    assert not live, f"never destroyed: {sorted(live)}"
    return lives


def check_h2_callback_order(events: list[Event]) -> list[Life]:
    """The raw callbacks against the reference (2.4); returns the network wsis' lives."""
    lives = lifetimes(events)
    streams = [life for life in lives if life.network is not None]
    for life in streams:
        create, first = life.events[0], life.events[1]
        assert create.r == WSI_CREATE and create.fd == -1 and create.nwsi is None, create
        # the stream -> nwsi link shows at the first callback after WSI_CREATE, the 18
        assert first.r == FILTER_HTTP_CONNECTION and first.nwsi, life.reasons
        assert is_subsequence(STREAM_ORDER, life.reasons), life.reasons
        assert not {FILTER_NETWORK_CONNECTION, SERVER_NEW_CLIENT_INSTANTIATED} & set(life.reasons)
        # detached at the close: CLOSED_HTTP and WSI_DESTROY no longer name the nwsi
        closing = [e.nwsi for e in life.events if e.r in (CLOSED_HTTP, WSI_DESTROY)]
        assert closing == [None, None], life.reasons
        assert all(e.ssl is True and e.fd == -1 for e in life.events)
        drops = [e.why for e in life.events if e.r == HTTP_DROP_PROTOCOL]
        assert drops == ["__lws_close_free_wsi"], drops  # one request per stream
    networks = [life for life in lives if life.streams]
    for life in networks:
        assert life.network is None, "streams do not nest"
        assert life.reasons[:2] == [WSI_CREATE, SERVER_NEW_CLIENT_INSTANTIATED], life.reasons
        assert life.reasons[-2:] == [CLOSED_HTTP, WSI_DESTROY], life.reasons
        assert FILTER_HTTP_CONNECTION not in life.reasons, "an nwsi has no transactions"
    return networks


def spans_of(observer: Observer, label: str) -> list[dict[str, Any]]:
    assert observer.spans is not None and observer.recent is not None
    observer.spans.flush()
    return [
        sp
        for trace in observer.recent.traces(1000)
        for sp in trace["spans"]
        if str(sp["attributes"].get("lws.wsi.id", "")).startswith(f"{label}/")
    ]


@dataclass
class Mode:
    binary: Path
    args: tuple[str, ...]
    preload: Path | None
    env: dict[str, str]

    @property
    def label(self) -> str:
        return self.binary.name


MODES = {
    "preload": Mode(APP_PLAIN, (), SHIM, {}),
    "asan-linked": Mode(
        APP_ASAN, ("--linked",), None, {"ASAN_OPTIONS": "detect_leaks=1:exitcode=23"}
    ),
}


@pytest.fixture(params=sorted(MODES))
def mode(request: pytest.FixtureRequest) -> Iterator[Mode]:
    yield MODES[request.param]


async def test_h2_over_tls_streams_are_children_of_their_network_wsi(
    built: None,  # noqa: F811
    mode: Mode,
    tmp_path: Path,
) -> None:
    cert, key = certificate(tmp_path)
    udp = free_port()
    observer = Observer(Config(spans=True, udp=HostPort("127.0.0.1", udp)))
    tee = Tee(udp)
    report: list[str] = []
    try:
        async with run_service(build_app(observer)) as srv:

            def traffic() -> None:
                tls = ("--tls-cert", str(cert), "--tls-key", str(key))
                with run_app(
                    mode.binary,
                    tee.endpoint,
                    *mode.args,
                    *tls,
                    preload=mode.preload,
                    extra_env=mode.env,
                ) as app:
                    h2 = ("h2load", "-n", "20", "-c", "2", "-m", "4")
                    done = subprocess.run(
                        [*h2, f"https://127.0.0.1:{app.port}/"],
                        capture_output=True,
                        text=True,
                        timeout=30,
                        check=False,
                    )
                    report.append(done.stdout + done.stderr)
                    url = f"https://127.0.0.1:{app.port}/hello"
                    report.append(curl("--http2", "-k", "-w", " %{http_version}", url))
                    report.append(curl("--http1.1", "-k", "-w", " %{http_version}", url))
                    assert plain_text_refused(app.port)
                check_clean_exit(app)
                for marker in ASAN_MARKERS:
                    assert marker not in app.stderr, app.stderr

            await asyncio.get_running_loop().run_in_executor(None, traffic)
            await until_context_gone(observer, mode.label)
            async with (
                aiohttp.ClientSession() as session,
                session.get(srv.url + "/metrics") as resp,
            ):
                metrics = await resp.text()
        raw = tee.wait_for(has_bye, timeout=2.0)
    finally:
        tee.close()

    h2load, via_h2, via_h1 = report
    assert "Application protocol: h2" in h2load, h2load
    assert re.search(r"20 succeeded, 0 failed", h2load), h2load
    assert via_h2 == "hello\n 2" and via_h1 == "hello\n 1.1"

    # what lws really sent, against the reference
    networks = check_h2_callback_order(raw)
    assert sorted(len(n.streams) for n in networks) == [1, 10, 10]

    # the service's view: roles, transactions, gauges, leaks
    label = mode.label
    created, destroyed = counts(observer, label, "created"), counts(observer, label, "destroyed")
    # the h1 connection, the plain-text one and the 3 network wsis open as h1-server (the
    # accept); an nwsi becomes h2-server when its first stream is seen
    assert created == {"listen": 1, "h1-server": 5, "h2-stream": 21}, created
    assert destroyed == {"listen": 1, "h1-server": 2, "h2-server": 3, "h2-stream": 21}, destroyed
    upgrades = {
        (old.value, new.value): n
        for (source, old, new), n in observer.metrics.upgrades.items()
        if source == label
    }
    assert upgrades == {("h1-server", "h2-server"): 3}, upgrades
    txns = {
        (role.value, code_class): n
        for (source, role, code_class), n in observer.metrics.transactions.items()
        if source == label and n
    }
    # lws passes no response status to server callbacks: the shim's HTTP_STATUS carries it,
    # where the shim is preloaded (a linked app calls lws's lws_add_http_header_status itself)
    code = "2xx" if mode.preload is not None else "none"
    assert txns == {("h2-stream", code): 21, ("h1-server", code): 1}, txns
    assert not [w for w in observer.tracker.live_wsis() if w.context.source == label]
    assert not observer.live.leaks, [(w.role, w.leak) for w in observer.live.leaks]
    for role in ("h2-server", "h2-stream", "h1-server"):
        assert f'lwsobs_wsi_live{{role="{role}",source="{label}"}} 0.0' in metrics, role

    # spans: stream spans under their nwsi's span (one trace per network connection),
    # each transaction span under the span of its own stream
    spans = spans_of(observer, label)
    by_id = {sp["span_id"]: sp for sp in spans}
    nwsi_spans = [sp for sp in spans if sp["name"] == "wsi h2-server"]
    stream_spans = [sp for sp in spans if sp["name"] == "wsi h2-stream"]
    assert len(nwsi_spans) == 3 and len(stream_spans) == 21
    children: dict[str, int] = {}
    for stream in stream_spans:
        parent = by_id[stream["parent_span_id"]]
        assert parent["name"] == "wsi h2-server" and parent["trace_id"] == stream["trace_id"]
        assert parent["start_ns"] <= stream["start_ns"] <= stream["end_ns"] <= parent["end_ns"]
        assert stream["attributes"]["lws.ssl"] is True
        children[parent["span_id"]] = children.get(parent["span_id"], 0) + 1
    assert sorted(children.values()) == [1, 10, 10]
    for network in nwsi_spans:
        assert network["parent_span_id"] is None, "a network connection is its own trace"
        assert network["attributes"]["network.peer.address"] == "127.0.0.1"
        assert isinstance(network["attributes"]["network.peer.port"], int)
    # a network connection carries the transactions of its streams
    assert sorted(sp["attributes"]["lws.transactions"] for sp in nwsi_spans) == [1, 10, 10]
    txn_spans = [sp for sp in spans if not sp["name"].startswith("wsi ")]
    stream_txns = [sp for sp in txn_spans if by_id[sp["parent_span_id"]]["name"] == "wsi h2-stream"]
    assert len(stream_txns) == 21
    for txn in stream_txns:
        parent = by_id[txn["parent_span_id"]]
        assert parent["attributes"]["lws.wsi.id"] == txn["attributes"]["lws.wsi.id"]
        assert parent["trace_id"] == txn["trace_id"]
        assert parent["start_ns"] <= txn["start_ns"] <= txn["end_ns"] <= parent["end_ns"]
        assert txn["attributes"]["http.request.method"] == "GET"
    paths = sorted(str(sp["attributes"].get("url.path")) for sp in stream_txns)
    assert paths == ["/"] * 20 + ["/hello"]
    observer.close()
