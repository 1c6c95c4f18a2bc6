"""The aiohttp client source over real sockets on 127.0.0.1, against real aiohttp servers.

This module also runs under the oldest supported aiohttp (test_aiohttp_client_compat.py), so it
uses only what aiohttp 3.10 already had.
"""

from __future__ import annotations

import asyncio
import gc
import logging
import socket
import sys
from collections.abc import AsyncIterator, Iterator
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from lwsobs import (
    instrument,
    instrument_all_clients,
    instrument_client,
    uninstrument_all_clients,
)
from lwsobs.config import Config
from lwsobs.observer import Observer
from lwsobs.sources.aiohttp.client import connector_state
from tests.conftest import eventually, free_port, hello_app, run_app, ws_echo

SOURCE = "aiohttp-client"
BIG = 1 << 20  # far past aiohttp's read buffer: the client stops reading, the body stays unread
SMALL_LIMIT_S = 0.2  # the acquire limit of the tests that wait for an `unreleased` suspect


@pytest.fixture
def config() -> Config:
    """Like conftest's, with an acquire limit no request here comes near (leak tests set theirs)."""
    return Config(spans=True, otlp=False, span_delay_s=0.05, client_acquire_limit_s=60.0)


@pytest.fixture
def short_observer() -> Iterator[Observer]:
    """An observer whose client connections are suspects once held for SMALL_LIMIT_S."""
    obs = Observer(
        Config(spans=True, otlp=False, span_delay_s=0.05, client_acquire_limit_s=SMALL_LIMIT_S)
    )
    yield obs
    obs.close()


def plain_app() -> web.Application:
    """An uninstrumented server: whatever lwsobs records here comes from the client side."""
    app = web.Application()

    async def hello(request: web.Request) -> web.Response:
        return web.Response(text=request.headers.get("traceparent", "none"))

    async def slow(request: web.Request) -> web.Response:
        await asyncio.sleep(float(request.query.get("s", "0.05")))
        return web.Response(text="slow")

    async def big(request: web.Request) -> web.Response:
        return web.Response(body=b"x" * BIG)

    app.router.add_get("/hello", hello)
    app.router.add_get("/slow", slow)
    app.router.add_get("/big", big)
    app.router.add_get("/ws", ws_echo)
    return app


@pytest.fixture
async def server() -> AsyncIterator[str]:
    async with run_app(plain_app()) as srv:
        yield srv.url


class ExceptionHandlerLog:
    """What aiohttp reports through the loop's exception handler (its only leak warnings)."""

    def __init__(self) -> None:
        self.messages: list[str] = []

    def __call__(self, loop: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
        self.messages.append(str(context.get("message")))


@pytest.fixture
async def aiohttp_reports() -> AsyncIterator[ExceptionHandlerLog]:
    loop = asyncio.get_running_loop()
    previous = loop.get_exception_handler()
    handler = ExceptionHandlerLog()
    loop.set_exception_handler(handler)
    yield handler
    loop.set_exception_handler(previous)


def sample(observer: Observer, name: str, **labels: str) -> float | None:
    return observer.registry.get_sample_value(name, {"source": SOURCE, **labels})


def live(observer: Observer, role: str = "h1-client") -> float | None:
    return sample(observer, "lwsobs_wsi_live", role=role)


def suspects(observer: Observer, role: str = "h1-client") -> float | None:
    return sample(observer, "lwsobs_wsi_leak_suspects", role=role)


def resolved(observer: Observer, rule: str) -> float | None:
    return sample(observer, "lwsobs_wsi_suspects_resolved_total", role="h1-client", rule=rule)


def spans_of(observer: Observer) -> list[dict[str, Any]]:
    assert observer.spans is not None and observer.recent is not None
    observer.spans.flush()
    return [s for t in observer.recent.traces(1000) for s in t["spans"]]


def client_connections(
    spans: list[dict[str, Any]], role: str = "h1-client"
) -> list[dict[str, Any]]:
    return [s for s in spans if s["name"] == f"wsi {role}"]


def children(spans: list[dict[str, Any]], parent: dict[str, Any]) -> list[dict[str, Any]]:
    found = [s for s in spans if s["parent_span_id"] == parent["span_id"]]
    return sorted(found, key=lambda s: s["start_ns"])


def line_after() -> int:
    """The caller's next line number: where a request in the test is started."""
    return sys._getframe(1).f_lineno + 1


# -- connections and transactions ------------------------------------------------------------------


async def test_three_requests_on_one_keep_alive_connection(observer: Observer, server: str) -> None:
    session = instrument_client(aiohttp.ClientSession(), observer)
    seen: list[str] = []
    async with session:
        for _ in range(3):
            async with session.get(f"{server}/hello?page=1") as resp:
                assert resp.status == 200
                seen.append(await resp.text())
            assert live(observer) == 1  # pooled between requests: one live wsi
    assert live(observer) == 0
    assert sample(observer, "lwsobs_wsi_created_total", role="h1-client") == 1
    assert sample(observer, "lwsobs_transactions_total", role="h1-client", code_class="2xx") == 3
    assert sample(observer, "lwsobs_wsi_transactions_count", role="h1-client") == 1
    assert sample(observer, "lwsobs_wsi_transactions_sum", role="h1-client") == 3

    spans = spans_of(observer)
    (conn,) = client_connections(spans)
    assert conn["kind"] == "CLIENT"
    assert conn["attributes"]["lws.transactions"] == 3
    assert conn["attributes"]["network.peer.address"] == "127.0.0.1"
    assert conn["attributes"]["network.peer.port"] == int(server.rsplit(":", 1)[1])
    assert conn["attributes"]["lws.leaked"] is False
    assert conn["attributes"]["lws.end.reason"] == "shutdown"  # ended by session.close()
    txns = children(spans, conn)
    assert len(txns) == 3
    assert {t["trace_id"] for t in txns} == {conn["trace_id"]}
    assert [t["attributes"]["lws.pipeline.index"] for t in txns] == [0, 1, 2]
    for txn in txns:
        assert txn["name"] == "GET"
        assert txn["attributes"]["url.path"] == "/hello"
        assert txn["attributes"]["http.response.status_code"] == 200
        assert conn["start_ns"] <= txn["start_ns"] <= txn["end_ns"] <= conn["end_ns"]
    # each request carried the traceparent of its own transaction span
    assert seen == [f"00-{t['trace_id']}-{t['span_id']}-01" for t in txns]


async def test_two_concurrent_requests_open_two_connections(
    observer: Observer, server: str
) -> None:
    async with instrument_client(aiohttp.ClientSession(), observer) as session:

        async def fetch() -> str:
            async with session.get(f"{server}/slow?s=0.1") as resp:
                return await resp.text()

        assert await asyncio.gather(fetch(), fetch()) == ["slow", "slow"]
        assert live(observer) == 2
    assert sample(observer, "lwsobs_wsi_created_total", role="h1-client") == 2
    spans = spans_of(observer)
    conns = client_connections(spans)
    assert len(conns) == 2
    assert len({c["attributes"]["network.local.port"] for c in conns}) == 2
    assert [len(children(spans, c)) for c in conns] == [1, 1]


async def test_refused_connect_is_a_wsi_created_and_destroyed(observer: Observer) -> None:
    nobody = free_port()  # nothing listens there
    async with instrument_client(aiohttp.ClientSession(), observer) as session:
        with pytest.raises(aiohttp.ClientConnectorError):
            await session.get(f"http://127.0.0.1:{nobody}/hello")
        assert live(observer) == 0
    assert sample(observer, "lwsobs_wsi_created_total", role="h1-client") == 1
    assert sample(observer, "lwsobs_wsi_destroyed_total", role="h1-client") == 1
    assert sample(observer, "lwsobs_client_connect_failed_total") == 1
    assert observer.live.leak_list(0)["count"] == 0
    spans = spans_of(observer)
    (conn,) = client_connections(spans)
    assert conn["attributes"]["error.type"] == "ClientConnectorError"
    assert conn["attributes"]["server.port"] == nobody
    assert conn["attributes"]["lws.leaked"] is False
    assert children(spans, conn) == []  # no connection, no transaction


async def test_dns_and_connect_time_are_recorded(observer: Observer, server: str) -> None:
    port = int(server.rsplit(":", 1)[1])
    connector = aiohttp.TCPConnector(family=socket.AF_INET)  # localhost as 127.0.0.1 only
    session = instrument_client(aiohttp.ClientSession(connector=connector), observer)
    async with session, session.get(f"http://localhost:{port}/hello") as resp:
        assert resp.status == 200
    (conn,) = client_connections(spans_of(observer))
    attrs = conn["attributes"]
    assert attrs["server.address"] == "localhost"
    assert attrs["network.peer.address"] == "127.0.0.1"
    assert isinstance(attrs["lws.dns.duration_ns"], int) and attrs["lws.dns.duration_ns"] >= 0
    assert isinstance(attrs["lws.connect.duration_ns"], int)
    # DNS and connect both happened inside the connection span, before it carried a request
    assert attrs["lws.dns.duration_ns"] + attrs["lws.connect.duration_ns"] <= (
        conn["end_ns"] - conn["start_ns"]
    )
    for phase in ("dns", "connect"):
        count = sample(observer, "lwsobs_client_connect_seconds_count", phase=phase)
        assert count == 1


async def test_websocket_moves_the_wsi_to_ws_client_and_is_no_leak(
    short_observer: Observer, server: str
) -> None:
    observer = short_observer
    session = instrument_client(aiohttp.ClientSession(), observer)
    async with session, session.ws_connect(f"{server}/ws") as ws:
        await ws.send_str("hi")
        assert (await ws.receive()).data == "hi"
        assert live(observer, "ws-client") == 1
        assert live(observer, "h1-client") == 0
        assert sample(observer, "lwsobs_transactions_active", role="ws-client") == 0
        # A body left unread on another session, acquired after the websocket: once it is
        # flagged, the websocket was held longer and still is no suspect.
        async with instrument_client(aiohttp.ClientSession(), observer) as other:
            resp = await other.get(f"{server}/big")
            await eventually(lambda: observer.live.leak_list(0)["count"] == 1)
            assert suspects(observer, "ws-client") == 0
            resp.release()
    await eventually(lambda: live(observer, "ws-client") == 0)
    assert (
        sample(observer, "lwsobs_wsi_upgrades_total", from_role="h1-client", to_role="ws-client")
        == 1
    )
    assert sample(observer, "lwsobs_transactions_total", role="h1-client", code_class="1xx") == 1
    spans = spans_of(observer)
    (conn,) = client_connections(spans, "ws-client")
    assert conn["attributes"]["lws.leaked"] is False
    (upgrade,) = children(spans, conn)
    assert upgrade["attributes"]["http.response.status_code"] == 101


# -- traces across client and server ---------------------------------------------------------------


async def test_an_instrumented_server_joins_the_clients_trace(observer: Observer) -> None:
    async with (
        run_app(hello_app(observer)) as srv,
        instrument_client(aiohttp.ClientSession(), observer) as session,
        session.get(f"{srv.url}/items/7") as resp,
    ):
        assert resp.status == 200
    txns = [s for s in spans_of(observer) if "lws.pipeline.index" in s["attributes"]]
    (client_txn,) = [s for s in txns if s["attributes"]["lws.role"] == "h1-client"]
    (server_txn,) = [s for s in txns if s["attributes"]["lws.role"] == "h1-server"]
    assert server_txn["trace_id"] == client_txn["trace_id"]
    assert server_txn["parent_span_id"] == client_txn["span_id"]
    assert server_txn["attributes"]["http.route"] == "/items/{id}"


async def test_a_callers_traceparent_is_continued(observer: Observer, server: str) -> None:
    trace_id, parent = "4bf92f3577b34da6a3ce929d0e0e4736", "00f067aa0ba902b7"
    async with instrument_client(aiohttp.ClientSession(), observer) as session:
        headers = {"traceparent": f"00-{trace_id}-{parent}-01"}
        async with session.get(f"{server}/hello", headers=headers) as resp:
            sent = await resp.text()
    (txn,) = [s for s in spans_of(observer) if s["trace_id"] == trace_id]
    assert txn["parent_span_id"] == parent
    assert sent == f"00-{trace_id}-{txn['span_id']}-01"


# -- leaks -----------------------------------------------------------------------------------------


async def test_unread_response_becomes_a_suspect_naming_where_it_was_acquired(
    short_observer: Observer,
    server: str,
    aiohttp_reports: ExceptionHandlerLog,
    caplog: pytest.LogCaptureFixture,
) -> None:
    observer = short_observer
    caplog.set_level(logging.WARNING, logger="lwsobs.leaks")
    async with instrument_client(aiohttp.ClientSession(), observer) as session:
        line = line_after()
        resp = await session.get(f"{server}/big?token=s3cret#frag")
        assert resp.status == 200
        await eventually(lambda: suspects(observer) == 1)
        assert aiohttp_reports.messages == []  # aiohttp itself says nothing about it
        (leak,) = observer.live.leak_list(0)["leaks"]
        assert (leak["rule"], leak["certain"], leak["live"]) == ("unreleased", False, True)
        assert leak["in_transaction"] is True
        assert leak["attributes"]["lws.acquired.url"] == f"{server}/big"
        assert any(
            "rule=unreleased" in r.getMessage()
            and r.getMessage().endswith(f" acquired=GET {server}/big at={__file__}:{line}")
            for r in caplog.records
        )
        (wsi,) = [w for w in observer.tracker.live_wsis() if w.id == leak["id"]]
        assert wsi.attrs is not None
        assert wsi.attrs["lws.acquired.method"] == "GET"
        assert wsi.attrs["lws.acquired.url"] == f"{server}/big"
        assert wsi.attrs["lws.acquired.at"] == f"{__file__}:{line}"

        resp.release()  # released after all: the suspicion is resolved, the connection closed
        await eventually(lambda: live(observer) == 0)
        assert suspects(observer) == 0
        assert resolved(observer, "unreleased") == 1
        (leak,) = observer.live.leak_list(0)["leaks"]
        assert leak["resolved"] is True
    (conn,) = client_connections(spans_of(observer))
    assert conn["status"] == "ERROR"
    assert conn["attributes"]["lws.leak.rule"] == "unreleased"
    assert conn["attributes"]["lws.acquired.url"] == f"{server}/big"
    assert conn["attributes"]["lws.acquired.at"] == f"{__file__}:{line}"


async def test_a_suspect_read_to_its_end_is_closed_not_pooled(short_observer: Observer) -> None:
    """Its span ended when it was flagged: it must not carry further requests."""
    observer = short_observer
    go_on = asyncio.Event()

    async def stream(request: web.Request) -> web.StreamResponse:
        resp = web.StreamResponse()
        resp.content_length = len(b"firstlast")  # a keep-alive response
        await resp.prepare(request)
        await resp.write(b"first")
        await go_on.wait()
        await resp.write(b"last")
        await resp.write_eof()
        return resp

    app = web.Application()
    app.router.add_get("/stream", stream)
    async with run_app(app) as srv, instrument_client(aiohttp.ClientSession(), observer) as c:
        resp = await c.get(f"{srv.url}/stream")
        await eventually(lambda: suspects(observer) == 1)
        go_on.set()
        assert await resp.read() == b"firstlast"  # read to the end: released by aiohttp
        await eventually(lambda: live(observer) == 0)
        assert resolved(observer, "unreleased") == 1
        (txn,) = [s for s in spans_of(observer) if "lws.pipeline.index" in s["attributes"]]
        assert txn["attributes"]["http.response.status_code"] == 200


async def test_session_closed_with_an_unread_response_is_a_certain_leak(
    observer: Observer, server: str
) -> None:
    session = instrument_client(aiohttp.ClientSession(), observer)
    line = line_after()
    resp = await session.get(f"{server}/big")
    async with session.get(f"{server}/hello") as ok:  # a second connection, pooled afterwards
        await ok.read()
    assert live(observer) == 2
    await session.close()
    assert live(observer) == 0
    assert sample(observer, "lwsobs_wsi_leaked_total", role="h1-client", rule="session_closed") == 1
    (leak,) = observer.live.leak_list(0)["leaks"]
    assert (leak["rule"], leak["certain"], leak["live"]) == ("session_closed", True, False)
    resp.release()  # too late: the session is gone
    spans = spans_of(observer)
    leaked, pooled = sorted(client_connections(spans), key=lambda s: s["start_ns"])
    assert leaked["attributes"]["lws.leak.rule"] == "session_closed"
    assert leaked["attributes"]["lws.acquired.at"] == f"{__file__}:{line}"
    (txn,) = children(spans, leaked)
    assert txn["attributes"]["error.type"] == "leaked"
    assert pooled["attributes"]["lws.leaked"] is False
    assert pooled["attributes"]["lws.end.reason"] == "shutdown"


async def test_session_collected_with_an_unread_response_is_a_certain_leak(
    observer: Observer, server: str, aiohttp_reports: ExceptionHandlerLog
) -> None:
    session = instrument_client(aiohttp.ClientSession(), observer)
    line = line_after()
    resp = await session.get(f"{server}/big")
    assert live(observer) == 1
    del resp, session  # never closed, never released

    def collected() -> bool:
        # Garbage only once the client stopped reading the body: until then the event loop
        # still holds the connection's transport.
        gc.collect()
        rule = "session_collected"
        return sample(observer, "lwsobs_wsi_leaked_total", role="h1-client", rule=rule) == 1

    await eventually(collected)
    assert live(observer) == 0
    (leak,) = observer.live.leak_list(0)["leaks"]
    assert (leak["rule"], leak["certain"]) == ("session_collected", True)
    # aiohttp's own finalizers do report this case, only through the loop's exception handler
    assert "Unclosed client session" in aiohttp_reports.messages
    (conn,) = client_connections(spans_of(observer))
    assert conn["attributes"]["lws.acquired.at"] == f"{__file__}:{line}"


# -- instrumenting -----------------------------------------------------------------------------


async def test_instrument_all_clients_instruments_sessions_created_afterwards(
    observer: Observer, server: str
) -> None:
    instrument_all_clients(observer, source="outbound")
    try:
        async with aiohttp.ClientSession() as session:
            async with session.get(f"{server}/hello") as resp:
                assert resp.status == 200
            assert connector_state(session.connector) is not None  # type: ignore[arg-type]
    finally:
        uninstrument_all_clients()
    async with aiohttp.ClientSession() as plain:
        assert connector_state(plain.connector) is None  # type: ignore[arg-type]
    labels = {"source": "outbound", "role": "h1-client"}
    assert observer.registry.get_sample_value("lwsobs_wsi_created_total", labels) == 1


async def test_instrumented_app_with_instrument_clients_on_instruments_sessions(
    server: str,
) -> None:
    observer = Observer(Config(spans=False, instrument_clients=True))
    app = web.Application()
    instrument(app, observer)  # LWSOBS_INSTRUMENT_CLIENTS=on
    try:
        async with aiohttp.ClientSession() as session, session.get(f"{server}/hello") as resp:
            assert resp.status == 200
    finally:
        uninstrument_all_clients()
        observer.close()
    assert sample(observer, "lwsobs_wsi_created_total", role="h1-client") == 1


async def test_instrumenting_twice_and_shared_connectors_keep_one_hook(
    observer: Observer, server: str
) -> None:
    connector = aiohttp.TCPConnector()
    first = instrument_client(aiohttp.ClientSession(connector=connector), observer)
    second = instrument_client(
        aiohttp.ClientSession(connector=connector, connector_owner=False), observer
    )
    instrument_client(first, observer)
    for session in (first, second):
        async with session.get(f"{server}/hello") as resp:
            await resp.read()
    await second.close()
    assert live(observer) == 1  # the shared pool is still open
    await first.close()
    assert live(observer) == 0
    assert sample(observer, "lwsobs_wsi_created_total", role="h1-client") == 1
    assert sample(observer, "lwsobs_transactions_total", role="h1-client", code_class="2xx") == 2
