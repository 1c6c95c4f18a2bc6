"""The aiohttp server source over real sockets on 127.0.0.1."""

from __future__ import annotations

import asyncio
import gc
import socket
from typing import Any

import aiohttp
from aiohttp import web

from lwsobs.observer import Observer
from tests.conftest import eventually, free_port, hello_app, run_app


def live(observer: Observer, role: str, source: str = "aiohttp") -> float | None:
    return observer.registry.get_sample_value("lwsobs_wsi_live", {"role": role, "source": source})


def sample(observer: Observer, name: str, source: str = "aiohttp", **labels: str) -> float | None:
    return observer.registry.get_sample_value(name, {"source": source, **labels})


def spans_of(observer: Observer) -> list[dict[str, Any]]:
    assert observer.spans is not None and observer.recent is not None
    observer.spans.flush()
    return [s for t in observer.recent.traces(1000) for s in t["spans"]]


async def read_responses(reader: asyncio.StreamReader) -> bytes:
    return await asyncio.wait_for(reader.read(), 5)


async def test_three_pipelined_requests_make_one_connection_span_with_three_children(
    observer: Observer,
) -> None:
    async with run_app(hello_app(observer)) as srv:
        reader, writer = await asyncio.open_connection(srv.host, srv.port)
        client_port = writer.get_extra_info("sockname")[1]
        writer.write(
            b"GET /hello HTTP/1.1\r\nHost: t\r\n\r\n"
            b"GET /slow?s=0.02 HTTP/1.1\r\nHost: t\r\n\r\n"
            b"GET /items/7?x=1 HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n"
        )
        body = await read_responses(reader)
        writer.close()
        assert body.count(b"HTTP/1.1 200 OK") == 3
        await eventually(lambda: live(observer, "h1-server") == 0)

    spans = spans_of(observer)
    conns = [s for s in spans if s["name"] == "wsi h1-server"]
    assert len(conns) == 1
    conn = conns[0]
    assert conn["attributes"]["lws.transactions"] == 3
    assert conn["attributes"]["network.peer.port"] == client_port
    assert conn["attributes"]["server.port"] == srv.port
    assert conn["attributes"]["lws.leaked"] is False
    children = sorted(
        (s for s in spans if s["parent_span_id"] == conn["span_id"]),
        key=lambda s: s["start_ns"],
    )
    assert [s["attributes"]["lws.pipeline.index"] for s in children] == [0, 1, 2]
    assert [s["attributes"]["url.path"] for s in children] == ["/hello", "/slow", "/items/7"]
    assert children[2]["attributes"]["http.route"] == "/items/{id}"
    assert all(s["trace_id"] == conn["trace_id"] for s in children)
    assert all(conn["start_ns"] <= s["start_ns"] <= s["end_ns"] <= conn["end_ns"] for s in children)
    # the third request waited behind the slow second one: its queue wait covers that sleep
    waits = [s["attributes"]["lws.pipeline.queue_wait_ns"] for s in children]
    assert waits[2] >= 20_000_000 > waits[0]


async def test_live_gauge_follows_an_open_connection(observer: Observer) -> None:
    async with run_app(hello_app(observer)) as srv:
        assert live(observer, "listen") == 1
        assert live(observer, "h1-server") is None
        async with aiohttp.ClientSession() as session:
            async with session.get(f"{srv.url}/hello") as resp:
                assert resp.status == 200
            # the pooled connection stays open: one live h1-server wsi
            assert live(observer, "h1-server") == 1
        await eventually(lambda: live(observer, "h1-server") == 0)
        assert (
            sample(
                observer,
                "lwsobs_wsi_created_total",
                role="h1-server",
            )
            == 1
        )
        assert (
            sample(
                observer,
                "lwsobs_wsi_destroyed_total",
                role="h1-server",
            )
            == 1
        )
    assert live(observer, "listen") == 0


async def test_listen_gauge_counts_each_listening_socket(observer: Observer) -> None:
    app = hello_app(observer)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    sites = [web.TCPSite(runner, "127.0.0.1", free_port()) for _ in range(2)]
    for site in sites:
        await site.start()
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock_site = web.SockSite(runner, sock)
    await sock_site.start()
    try:
        assert live(observer, "listen") == 3
        await sites[0].stop()
        assert live(observer, "listen") == 2
    finally:
        await runner.cleanup()
    assert live(observer, "listen") == 0
    listen_spans = [s for s in spans_of(observer) if s["name"] == "wsi listen"]
    assert len(listen_spans) == 3
    assert {s["kind"] for s in listen_spans} == {"INTERNAL"}


async def test_websocket_upgrade_moves_the_wsi_to_ws_server(observer: Observer) -> None:
    async with run_app(hello_app(observer)) as srv:
        async with aiohttp.ClientSession() as session, session.ws_connect(f"{srv.url}/ws") as ws:
            await ws.send_str("hi")
            assert (await ws.receive()).data == "hi"
            assert live(observer, "ws-server") == 1
            assert live(observer, "h1-server") == 0
            # the websocket session is not an open HTTP transaction
            active = "lwsobs_transactions_active"
            assert (
                sample(
                    observer,
                    active,
                    role="h1-server",
                )
                == 0
            )
            assert (
                sample(
                    observer,
                    active,
                    role="ws-server",
                )
                == 0
            )
        await eventually(lambda: live(observer, "ws-server") == 0)
    assert (
        sample(
            observer,
            "lwsobs_wsi_upgrades_total",
            from_role="h1-server",
            to_role="ws-server",
        )
        == 1
    )
    assert (
        sample(
            observer,
            "lwsobs_transactions_total",
            role="h1-server",
            code_class="1xx",
        )
        == 1
    )
    spans = spans_of(observer)
    (conn,) = [s for s in spans if s["name"].startswith("wsi ") and "ws-server" in s["name"]]
    assert [e["name"] for e in conn["events"]] == ["upgraded"]
    (upgrade,) = [s for s in spans if s["parent_span_id"] == conn["span_id"]]
    assert upgrade["attributes"]["http.response.status_code"] == 101
    # the transaction ended at the upgrade, long before the connection did
    assert upgrade["end_ns"] <= conn["events"][0]["time_ns"] < conn["end_ns"]


async def test_malformed_request_is_recorded_as_a_400_transaction(observer: Observer) -> None:
    async with run_app(hello_app(observer)) as srv:
        reader, writer = await asyncio.open_connection(srv.host, srv.port)
        writer.write(b"NOT HTTP AT ALL\r\n\r\n")
        body = await read_responses(reader)
        writer.close()
        assert body.split(b"\r\n", 1)[0].endswith(b" 400 Bad Request")
        await eventually(lambda: live(observer, "h1-server") == 0)
    assert (
        sample(
            observer,
            "lwsobs_transactions_total",
            role="h1-server",
            code_class="4xx",
        )
        == 1
    )
    (txn,) = [s for s in spans_of(observer) if s["attributes"].get("error.type")]
    assert txn["attributes"]["http.response.status_code"] == 400
    assert txn["attributes"]["error.type"] == "invalid_request"


async def test_traceparent_joins_the_callers_trace_and_links_the_connection(
    observer: Observer,
) -> None:
    trace_id, parent = "4bf92f3577b34da6a3ce929d0e0e4736", "00f067aa0ba902b7"
    async with run_app(hello_app(observer)) as srv, aiohttp.ClientSession() as session:
        headers = {"traceparent": f"00-{trace_id}-{parent}-01"}
        async with session.get(f"{srv.url}/hello", headers=headers) as resp:
            assert resp.status == 200
    spans = spans_of(observer)
    (txn,) = [s for s in spans if s["trace_id"] == trace_id]
    (conn,) = [s for s in spans if s["name"] == "wsi h1-server"]
    assert txn["parent_span_id"] == parent
    assert txn["links"] == [{"trace_id": conn["trace_id"], "span_id": conn["span_id"]}]


async def test_metrics_endpoint_is_added_and_negotiates_openmetrics(observer: Observer) -> None:
    async with run_app(hello_app(observer)) as srv, aiohttp.ClientSession() as session:
        async with session.get(f"{srv.url}/metrics") as resp:
            text = await resp.text()
            assert resp.headers["Content-Type"].startswith("text/plain")
        assert 'lwsobs_wsi_live{role="listen",source="aiohttp"} 1.0' in text
        headers = {"Accept": "application/openmetrics-text; version=1.0.0"}
        for _ in range(3):
            async with session.get(f"{srv.url}/hello") as resp:
                await resp.read()
        assert observer.spans is not None
        observer.spans.flush()
        async with session.get(f"{srv.url}/metrics", headers=headers) as resp:
            om = await resp.text()
            assert resp.headers["Content-Type"].startswith("application/openmetrics-text")
        assert om.rstrip().endswith("# EOF")
        # sampled transactions leave trace-id exemplars on the duration histogram
        assert "lwsobs_transaction_duration_seconds_bucket" in om
        assert '# {span_id="' in om and 'trace_id="' in om


async def test_idle_connection_is_flagged_once_and_resolved_when_closed(
    observer: Observer,
) -> None:
    async with run_app(hello_app(observer)) as srv:
        reader, writer = await asyncio.open_connection(srv.host, srv.port)
        await eventually(lambda: live(observer, "h1-server") == 1)
        (wsi,) = [w for w in observer.tracker.live_wsis() if w.role == "h1-server"]
        limit = observer.tracker.policy.idle_limit_ns(wsi.role)
        assert limit is not None
        # the idle rule is judged by the core from explicit time: tick past the limit
        observer.tick(wsi.created_ns + limit + 2_000_000_000)
        observer.tick(wsi.created_ns + limit + 4_000_000_000)
        assert sample(observer, "lwsobs_wsi_leaked_total", role="h1-server", rule="idle") == 1
        assert (
            sample(
                observer,
                "lwsobs_wsi_leak_suspects",
                role="h1-server",
            )
            == 1
        )
        assert live(observer, "h1-server") == 1  # a suspect is still live
        leaks = observer.live.leak_list(wsi.created_ns)["leaks"]
        assert [(x["id"], x["rule"], x["certain"]) for x in leaks] == [(wsi.id, "idle", False)]
        writer.close()
        await eventually(lambda: live(observer, "h1-server") == 0)
        assert (
            sample(
                observer,
                "lwsobs_wsi_leak_suspects",
                role="h1-server",
            )
            == 0
        )
        assert (
            sample(
                observer,
                "lwsobs_wsi_suspects_resolved_total",
                role="h1-server",
                rule="idle",
            )
            == 1
        )
        del reader
    (conn,) = [s for s in spans_of(observer) if s["name"] == "wsi h1-server"]
    assert conn["status"] == "ERROR"
    assert conn["attributes"]["lws.leaked"] is True
    assert conn["attributes"]["lws.leak.rule"] == "idle"


async def test_graceful_shutdown_ends_open_connections_as_shutdown(observer: Observer) -> None:
    async with run_app(hello_app(observer)) as srv:
        reader, writer = await asyncio.open_connection(srv.host, srv.port)
        writer.write(b"GET /hello HTTP/1.1\r\nHost: t\r\n\r\n")
        await reader.readuntil(b"hello")
        assert live(observer, "h1-server") == 1
    # the runner cleaned up with the client still connected
    assert live(observer, "h1-server") == 0
    assert not observer.live.leaks
    (conn,) = [s for s in spans_of(observer) if s["name"] == "wsi h1-server"]
    assert conn["attributes"]["lws.end.reason"] == "shutdown"
    assert conn["attributes"]["lws.leaked"] is False
    writer.close()


async def test_server_abandoned_without_shutdown_leaves_certain_leaks(observer: Observer) -> None:
    """lwsobs stops while an instrumented server was never shut down: context_destroyed."""
    app = hello_app(observer)
    async with run_app(app, cleanup=False) as srv:
        _, writer = await asyncio.open_connection(srv.host, srv.port)
        await eventually(lambda: live(observer, "h1-server") == 1)
        observer.close()
        assert live(observer, "h1-server") == 0
        leaks = observer.live.leak_list(0)["leaks"]
        assert {(x["role"], x["rule"], x["certain"]) for x in leaks} == {
            ("h1-server", "context_destroyed", True),
            ("listen", "context_destroyed", True),
        }
        writer.close()
        await srv.runner.cleanup()


def test_connection_object_collected_without_close_callback_is_flagged(
    observer: Observer,
) -> None:
    """An event loop closed without cleanup: the connection protocol is collected unclosed."""
    loop = asyncio.new_event_loop()
    port = free_port()

    async def start() -> web.AppRunner:
        runner = web.AppRunner(hello_app(observer), access_log=None)
        await runner.setup()
        await web.TCPSite(runner, "127.0.0.1", port).start()
        return runner

    runner = loop.run_until_complete(start())
    client = socket.create_connection(("127.0.0.1", port))

    async def accepted() -> None:
        await eventually(lambda: live(observer, "h1-server") == 1)

    loop.run_until_complete(accepted())
    loop.close()  # no runner.cleanup(): connection_lost never comes, tasks stay pending
    del runner
    gc.collect()
    gc.collect()
    observer.tick()
    client.close()
    flagged = {(x["role"], x["rule"]) for x in observer.live.leak_list(0)["leaks"]}
    assert ("h1-server", "finalized") in flagged
    assert live(observer, "h1-server") == 0
