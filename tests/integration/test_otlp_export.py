"""The OTLP export, checked on the wire: real protobuf from the real exporter to a real receiver.

Every test builds its Observer from the environment (OTEL_* / LWSOBS_* set with monkeypatch
before construction, since the exporter and the sampler read them then), runs an instrumented
aiohttp app on 127.0.0.1, talks to it over raw sockets and decodes what arrives at the OTLP/HTTP
receiver in tests/otlp_receiver.py.
"""

from __future__ import annotations

import asyncio
import os
import signal
import sys
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path

import aiohttp
import pytest

from lwsobs.config import Config
from lwsobs.observer import Observer
from tests.conftest import eventually, free_port, hello_app, run_app
from tests.otlp_receiver import OtlpReceiver, ReceivedSpan, serve_otlp_receiver

LWSOBS = Path(sys.executable).with_name("lwsobs")
TRACEPARENT_TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"
TRACEPARENT_SPAN_ID = "00f067aa0ba902b7"
TRACEPARENT = f"00-{TRACEPARENT_TRACE_ID}-{TRACEPARENT_SPAN_ID}-01"

MakeObserver = Callable[..., Observer]


# -- fixtures ------------------------------------------------------------------------------------


@pytest.fixture
async def otlp_receiver() -> AsyncIterator[OtlpReceiver]:
    async with serve_otlp_receiver() as receiver:
        yield receiver


@pytest.fixture
def clean_env(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """No OTEL_* / LWSOBS_* setting leaks in from the environment running the tests."""
    for name in list(os.environ):
        if name.startswith(("OTEL_", "LWSOBS_")):
            monkeypatch.delenv(name)
    monkeypatch.setenv("NO_PROXY", "127.0.0.1,localhost")
    yield


@pytest.fixture
async def make_observer(
    otlp_receiver: OtlpReceiver, monkeypatch: pytest.MonkeyPatch, clean_env: None
) -> AsyncIterator[MakeObserver]:
    """Build Observer(Config.from_env()) exporting to the receiver; extra env as keywords.

    Closing happens in a worker thread: the exporter posts synchronously to the receiver,
    which answers from this very event loop.
    """
    observers: list[Observer] = []

    def make(**env: str) -> Observer:
        monkeypatch.setenv("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", otlp_receiver.endpoint)
        monkeypatch.setenv("OTEL_BSP_SCHEDULE_DELAY", "50")
        monkeypatch.setenv("OTEL_EXPORTER_OTLP_TRACES_TIMEOUT", "5")
        for name, value in env.items():
            monkeypatch.setenv(name, value)
        observer = Observer(Config.from_env())
        observers.append(observer)
        return observer

    yield make
    loop = asyncio.get_running_loop()
    for observer in observers:
        await loop.run_in_executor(None, observer.close)


async def close_observer(observer: Observer) -> None:
    await asyncio.get_running_loop().run_in_executor(None, observer.close)


# -- raw HTTP/1.1 on loopback ------------------------------------------------------------------


def http_request(path: str, *, close: bool = False, headers: dict[str, str] | None = None) -> bytes:
    lines = [f"GET {path} HTTP/1.1", "Host: 127.0.0.1"]
    lines += [f"{name}: {value}" for name, value in (headers or {}).items()]
    if close:
        lines.append("Connection: close")
    return ("\r\n".join(lines) + "\r\n\r\n").encode("ascii")


async def read_response(reader: asyncio.StreamReader) -> tuple[int, bytes]:
    """One HTTP/1.1 response with a Content-Length body: (status, body)."""
    head = (await reader.readuntil(b"\r\n\r\n")).decode("latin-1")
    status_line, *header_lines = head.split("\r\n")
    headers = {}
    for line in header_lines:
        name, sep, value = line.partition(":")
        if sep:
            headers[name.strip().lower()] = value.strip()
    body = await reader.readexactly(int(headers.get("content-length", "0")))
    return int(status_line.split()[1]), body


async def exchange(host: str, port: int, payload: bytes, responses: int) -> tuple[int, list[int]]:
    """Send `payload` in ONE write on a new connection, read `responses`, then EOF.

    Returns the client's local port (the server's network.peer.port) and the statuses.
    """
    reader, writer = await asyncio.open_connection(host, port)
    try:
        client_port = int(writer.get_extra_info("sockname")[1])
        writer.write(payload)
        await writer.drain()
        statuses = [(await read_response(reader))[0] for _ in range(responses)]
        assert await reader.read() == b"", "the server should close after Connection: close"
    finally:
        writer.close()
        await writer.wait_closed()
    return client_port, statuses


# -- span selection ------------------------------------------------------------------------------


def connection_spans(spans: list[ReceivedSpan], client_port: int) -> list[ReceivedSpan]:
    return [
        s
        for s in spans
        if s.name == "wsi h1-server" and s.attributes.get("network.peer.port") == client_port
    ]


def transaction_spans(spans: list[ReceivedSpan], conn: ReceivedSpan) -> list[ReceivedSpan]:
    wsi_id = conn.attributes["lws.wsi.id"]
    return [
        s
        for s in spans
        if s is not conn
        and "lws.pipeline.index" in s.attributes
        and s.attributes.get("lws.wsi.id") == wsi_id
    ]


def has_connection_with(
    client_port: int, transactions: int
) -> Callable[[list[ReceivedSpan]], bool]:
    def check(spans: list[ReceivedSpan]) -> bool:
        conns = connection_spans(spans, client_port)
        return len(conns) == 1 and len(transaction_spans(spans, conns[0])) >= transactions

    return check


# -- tests ---------------------------------------------------------------------------------------


async def test_pipelined_requests_become_connection_and_transaction_spans(
    make_observer: MakeObserver, otlp_receiver: OtlpReceiver
) -> None:
    observer = make_observer()
    async with run_app(hello_app(observer)) as srv:
        payload = (
            http_request("/hello") + http_request("/items/7") + http_request("/hello", close=True)
        )
        client_port, statuses = await exchange(srv.host, srv.port, payload, responses=3)
        assert statuses == [200, 200, 200]
        await otlp_receiver.wait_for_spans(has_connection_with(client_port, 3))
    spans = await otlp_receiver.wait_for_spans(
        lambda spans: any(
            s.name == "wsi listen" and s.attributes.get("server.port") == srv.port for s in spans
        )
    )

    # exactly one h1-server connection span: this one
    conns = [s for s in spans if s.name == "wsi h1-server"]
    assert len(conns) == 1
    conn = conns[0]
    assert conn.kind == "SERVER"
    assert conn.parent_span_id is None
    assert conn.attributes["lws.role"] == "h1-server"
    assert conn.attributes["network.peer.address"] == "127.0.0.1"
    assert conn.attributes["network.peer.port"] == client_port
    assert conn.attributes["server.port"] == srv.port
    assert conn.attributes["lws.transactions"] == 3
    assert conn.attributes["lws.leaked"] is False
    assert conn.attributes["lws.end.reason"] == "destroyed"
    assert conn.status_code == "UNSET"
    assert conn.start_ns < conn.end_ns

    txns = transaction_spans(spans, conn)
    assert len(txns) == 3
    txns.sort(key=lambda s: s.attributes["lws.pipeline.index"])
    assert [t.attributes["lws.pipeline.index"] for t in txns] == [0, 1, 2]
    # Span start is the arrival of the request's bytes (one read for all three here), handling
    # starts in pipeline order, and responses end in pipeline order.
    starts = [t.start_ns for t in txns]
    handled = [t.start_ns + t.attributes["lws.pipeline.queue_wait_ns"] for t in txns]
    ends = [t.end_ns for t in txns]
    assert starts == sorted(starts)
    assert handled[0] < handled[1] < handled[2]
    assert ends[0] < ends[1] < ends[2]
    waits = [t.attributes["lws.pipeline.queue_wait_ns"] for t in txns]
    assert all(w >= 0 for w in waits)
    assert waits[2] > waits[0]

    expected = [("/hello", "/hello"), ("/items/7", "/items/{id}"), ("/hello", "/hello")]
    for txn, (path, route) in zip(txns, expected, strict=True):
        assert txn.trace_id == conn.trace_id
        assert txn.parent_span_id == conn.span_id
        assert txn.span_id != conn.span_id
        assert txn.kind == "SERVER"
        assert txn.links == []
        assert conn.start_ns <= txn.start_ns <= txn.end_ns <= conn.end_ns
        assert txn.name == f"GET {route}"
        attrs = txn.attributes
        assert attrs["http.request.method"] == "GET"
        assert attrs["url.path"] == path
        assert attrs["http.route"] == route
        assert attrs["http.response.status_code"] == 200
        assert attrs["lws.wsi.id"] == conn.attributes["lws.wsi.id"]
        assert txn.status_code == "UNSET"
    assert len({t.span_id for t in txns}) == 3

    listen = [s for s in spans if s.name == "wsi listen"]
    assert len(listen) == 1
    assert listen[0].kind == "INTERNAL"
    assert listen[0].attributes["lws.role"] == "listen"
    assert listen[0].attributes["server.port"] == srv.port
    assert listen[0].attributes["lws.leaked"] is False
    assert listen[0].trace_id != conn.trace_id
    assert listen[0].start_ns <= conn.start_ns and conn.end_ns <= listen[0].end_ns


async def test_traceparent_joins_caller_trace_and_links_connection(
    make_observer: MakeObserver, otlp_receiver: OtlpReceiver
) -> None:
    observer = make_observer()
    async with run_app(hello_app(observer)) as srv:
        payload = http_request("/hello", close=True, headers={"traceparent": TRACEPARENT})
        client_port, statuses = await exchange(srv.host, srv.port, payload, responses=1)
        assert statuses == [200]
        spans = await otlp_receiver.wait_for_spans(has_connection_with(client_port, 1))
    conn = connection_spans(spans, client_port)[0]
    (txn,) = transaction_spans(spans, conn)
    assert txn.trace_id == TRACEPARENT_TRACE_ID
    assert txn.parent_span_id == TRACEPARENT_SPAN_ID
    assert conn.trace_id != TRACEPARENT_TRACE_ID
    assert [(link.trace_id, link.span_id) for link in txn.links] == [(conn.trace_id, conn.span_id)]
    assert txn.attributes["lws.wsi.id"] == conn.attributes["lws.wsi.id"]
    assert txn.attributes["url.path"] == "/hello"


@pytest.mark.parametrize(
    ("mode", "traceparent"),
    [
        ("nest", TRACEPARENT),
        ("join", f"00-{'0' * 32}-{TRACEPARENT_SPAN_ID}-01"),  # all-zero trace id: invalid
        ("join", f"00-{TRACEPARENT_TRACE_ID}-{TRACEPARENT_SPAN_ID}"),  # no flags: invalid
    ],
    ids=["nest-mode", "join-mode-zero-trace-id", "join-mode-truncated"],
)
async def test_transaction_nests_under_connection_unless_traceparent_joined(
    make_observer: MakeObserver, otlp_receiver: OtlpReceiver, mode: str, traceparent: str
) -> None:
    observer = make_observer(LWSOBS_TRACEPARENT=mode)
    async with run_app(hello_app(observer)) as srv:
        payload = http_request("/hello", close=True, headers={"traceparent": traceparent})
        client_port, _ = await exchange(srv.host, srv.port, payload, responses=1)
        spans = await otlp_receiver.wait_for_spans(has_connection_with(client_port, 1))
    conn = connection_spans(spans, client_port)[0]
    (txn,) = transaction_spans(spans, conn)
    assert txn.trace_id == conn.trace_id != TRACEPARENT_TRACE_ID
    assert txn.parent_span_id == conn.span_id
    assert txn.links == []


async def test_gzip_compressed_export_decodes_on_the_wire(
    make_observer: MakeObserver, otlp_receiver: OtlpReceiver
) -> None:
    observer = make_observer(OTEL_EXPORTER_OTLP_TRACES_COMPRESSION="gzip")
    async with run_app(hello_app(observer)) as srv:
        payload = http_request("/hello") + http_request("/items/9", close=True)
        client_port, _ = await exchange(srv.host, srv.port, payload, responses=2)
        spans = await otlp_receiver.wait_for_spans(has_connection_with(client_port, 2))
    conn = connection_spans(spans, client_port)[0]
    paths = sorted(t.attributes["url.path"] for t in transaction_spans(spans, conn))
    assert paths == ["/hello", "/items/9"]
    assert otlp_receiver.requests
    assert {r.content_encoding for r in otlp_receiver.requests} == {"gzip"}
    assert {r.content_type for r in otlp_receiver.requests} == {"application/x-protobuf"}
    assert otlp_receiver.rejected == 0


@pytest.mark.parametrize(
    ("env", "service_name"),
    [({}, "lwsobs"), ({"OTEL_SERVICE_NAME": "my-svc"}, "my-svc")],
    ids=["default", "OTEL_SERVICE_NAME"],
)
async def test_service_name_resource_attribute(
    make_observer: MakeObserver,
    otlp_receiver: OtlpReceiver,
    env: dict[str, str],
    service_name: str,
) -> None:
    observer = make_observer(**env)
    async with run_app(hello_app(observer)) as srv:
        client_port, _ = await exchange(
            srv.host, srv.port, http_request("/hello", close=True), responses=1
        )
        await otlp_receiver.wait_for_spans(has_connection_with(client_port, 1))
    spans = await otlp_receiver.wait_for_spans(
        lambda spans: any(s.name == "wsi listen" for s in spans)
    )
    assert {s.resource.get("service.name") for s in spans} == {service_name}
    assert {s.scope_name for s in spans} == {"lwsobs"}


async def test_ratio_sampler_zero_exports_nothing_and_counts_sampled_out(
    make_observer: MakeObserver, otlp_receiver: OtlpReceiver
) -> None:
    observer = make_observer(OTEL_TRACES_SAMPLER="traceidratio", OTEL_TRACES_SAMPLER_ARG="0")

    def sampled_out() -> float:
        return observer.registry.get_sample_value("lwsobs_spans_sampled_out_total") or 0.0

    async with run_app(hello_app(observer)) as srv:
        payload = http_request("/hello") + http_request("/hello", close=True)
        await exchange(srv.host, srv.port, payload, responses=2)
        await exchange(srv.host, srv.port, http_request("/items/1", close=True), responses=1)
        await eventually(lambda: sampled_out() > 0)
    # 3 transactions + 2 connections + 1 listening socket, every one of them sampled out
    await eventually(lambda: sampled_out() == 6)
    await close_observer(observer)
    assert sampled_out() == 6
    assert observer.registry.get_sample_value("lwsobs_spans_exported_total") == 0
    assert otlp_receiver.spans == []
    assert otlp_receiver.requests == []
    assert otlp_receiver.rejected == 0


async def test_every_span_is_counted_and_exported(
    make_observer: MakeObserver, otlp_receiver: OtlpReceiver
) -> None:
    observer = make_observer()
    async with run_app(hello_app(observer)) as srv:
        client_ports = []
        # connection 1: one request
        port, _ = await exchange(srv.host, srv.port, http_request("/hello", close=True), 1)
        client_ports.append(port)
        # connection 2: two sequential keep-alive requests, then the client closes
        reader, writer = await asyncio.open_connection(srv.host, srv.port)
        client_ports.append(int(writer.get_extra_info("sockname")[1]))
        for path in ("/hello", "/items/2"):
            writer.write(http_request(path))
            await writer.drain()
            assert (await read_response(reader))[0] == 200
        writer.close()
        await writer.wait_closed()
        # connection 3: three pipelined requests in one write
        payload = http_request("/items/3") + http_request("/hello") + http_request("/slow?s=0")
        port, _ = await exchange(
            srv.host, srv.port, payload + http_request("/hello", close=True), 4
        )
        client_ports.append(port)
    requests, connections, listen_sockets = 1 + 2 + 4, 3, 1
    expected = requests + connections + listen_sockets

    await otlp_receiver.wait_for_spans(lambda spans: len(spans) >= expected)
    await close_observer(observer)
    spans = otlp_receiver.spans
    assert len(spans) == expected
    assert len({(s.trace_id, s.span_id) for s in spans}) == expected
    assert sorted(
        s.attributes["network.peer.port"] for s in spans if s.name == "wsi h1-server"
    ) == sorted(client_ports)
    assert sum(1 for s in spans if s.name == "wsi listen") == listen_sockets
    assert sum(1 for s in spans if "lws.pipeline.index" in s.attributes) == requests
    assert observer.spans is not None
    assert observer.spans.exported == expected
    assert observer.spans.sampled_out == 0
    assert sum(observer.spans.dropped.values()) == 0
    assert observer.registry.get_sample_value("lwsobs_spans_exported_total") == expected
    assert sum(r.span_count for r in otlp_receiver.requests) == expected
    assert otlp_receiver.rejected == 0


async def test_lwsobs_serve_sigterm_ends_open_connection_as_shutdown(
    otlp_receiver: OtlpReceiver, clean_env: None, tmp_path: Path
) -> None:
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OTEL_", "LWSOBS_"))}
    env.update(
        OTEL_EXPORTER_OTLP_TRACES_ENDPOINT=otlp_receiver.endpoint,
        OTEL_BSP_SCHEDULE_DELAY="50",
        OTEL_EXPORTER_OTLP_TRACES_TIMEOUT="5",
        NO_PROXY="127.0.0.1,localhost",
    )
    log_path = tmp_path / "lwsobs.log"
    with log_path.open("wb") as log_file:
        proc = await asyncio.create_subprocess_exec(
            str(LWSOBS),
            "serve",
            "--udp",
            "off",
            "--port",
            str(port),
            env=env,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=log_file,
            stderr=asyncio.subprocess.STDOUT,
        )
    base = f"http://127.0.0.1:{port}"
    writer: asyncio.StreamWriter | None = None
    try:
        async with aiohttp.ClientSession() as session:
            loop = asyncio.get_running_loop()
            deadline = loop.time() + 15
            while True:
                assert proc.returncode is None, log_path.read_text()
                try:
                    async with session.get(f"{base}/healthz") as resp:
                        if resp.status == 200:
                            break
                except aiohttp.ClientConnectionError:
                    pass
                assert loop.time() < deadline, "lwsobs did not answer /healthz in time"
                await asyncio.sleep(0.05)

            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            client_port = int(writer.get_extra_info("sockname")[1])
            writer.write(http_request("/demo/hello"))
            await writer.drain()
            status, body = await read_response(reader)
            assert status == 200
            assert body == b"hello from lwsobs\n"

            async with session.get(f"{base}/api/leaks") as resp:
                assert resp.status == 200
                leaks = await resp.json()
            assert leaks["count"] == 0
            assert leaks["leaks"] == []

        proc.send_signal(signal.SIGTERM)
        returncode = await asyncio.wait_for(proc.wait(), timeout=5)
        assert returncode == 0, log_path.read_text()
        assert await reader.read() == b"", "the server should have closed the keep-alive connection"

        spans = await otlp_receiver.wait_for_spans(has_connection_with(client_port, 1))
        (conn,) = connection_spans(spans, client_port)
        assert conn.kind == "SERVER"
        assert conn.attributes["lws.end.reason"] == "shutdown"
        assert conn.attributes["lws.leaked"] is False
        assert conn.attributes["lws.source"] == "lwsobs"
        assert conn.attributes["lws.transactions"] == 1
        assert conn.attributes["server.port"] == port
        assert conn.status_code == "UNSET"
        assert "error.type" not in conn.attributes
        (txn,) = transaction_spans(spans, conn)
        assert txn.trace_id == conn.trace_id
        assert txn.parent_span_id == conn.span_id
        assert txn.attributes["url.path"] == "/demo/hello"
        assert txn.attributes["http.route"] == "/demo/hello"
        assert txn.attributes["http.response.status_code"] == 200
        assert conn.start_ns <= txn.start_ns <= txn.end_ns <= conn.end_ns
        assert {s.resource.get("service.name") for s in spans} == {"lwsobs"}
        assert not any(s.attributes.get("lws.leaked") for s in spans if s.name.startswith("wsi "))
    finally:
        if writer is not None:
            writer.close()
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
