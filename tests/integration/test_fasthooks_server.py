"""The C hooks over real sockets: the same traffic makes the same Tracker calls on both paths.

A real instrumented aiohttp app on 127.0.0.1 is driven by a real aiohttp client and by raw
sockets (pipelining, a malformed request), once per handler class, with the same fake clock; the
Tracker calls each run recorded must be identical. tests/unit/test_fasthooks.py compares the
paths read by read; this proves the whole aiohttp flow (its request loop, websockets, errors)
still calls them the same way.
"""

from __future__ import annotations

import asyncio
import gc
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from lwsobs.config import Config
from lwsobs.core.model import Wsi
from lwsobs.instrument import instrument
from lwsobs.observer import Observer
from lwsobs.sources import aiohttp_server
from tests.conftest import eventually, run_app, ws_echo
from tests.fasthooks_support import Clock, fast_handler, handler_classes, hooks

TRACEPARENT = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"


class Recorder:
    """The real Tracker, with binds and drops written down; wsis named in order of appearance."""

    def __init__(self, tracker: Any) -> None:
        self.tracker = tracker
        self.calls: list[tuple[Any, ...]] = []
        self.wsis: list[Wsi] = []

    def _plain(self, args: tuple[Any, ...]) -> tuple[Any, ...]:
        out = []
        for arg in args:
            if isinstance(arg, Wsi):
                if arg not in self.wsis:
                    self.wsis.append(arg)
                arg = f"wsi{self.wsis.index(arg)}"
            out.append(arg)
        return tuple(out)

    def bind(self, *args: Any, **kwargs: Any) -> Any:
        self.calls.append(("bind", *self._plain(args), *sorted(kwargs.items())))
        return self.tracker.bind(*args, **kwargs)

    def drop(self, *args: Any, **kwargs: Any) -> Any:
        plain = self._plain(args)
        if kwargs:  # set_parser (the websocket upgrade, Python on both paths): the real clock
            plain = (plain[0], "now_ns()", *plain[2:])
        self.calls.append(("drop", *plain, *sorted(kwargs.items())))
        return self.tracker.drop(*args, **kwargs)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.tracker, name)


def app_for(observer: Observer) -> tuple[web.Application, Recorder]:
    app = web.Application()

    async def hello(request: web.Request) -> web.Response:
        return web.Response(text="hello")

    async def echo(request: web.Request) -> web.Response:
        return web.Response(body=await request.read())

    app.router.add_get("/hello", hello)
    app.router.add_get("/items/{id}", hello)
    app.router.add_post("/echo", echo)
    app.router.add_get("/ws", ws_echo)
    instrumentation = instrument(app, observer, metrics_path=None)
    recorder = Recorder(instrumentation.tracker)
    instrumentation.tracker = recorder  # type: ignore[assignment]
    return app, recorder


async def raw(host: str, port: int, data: bytes, responses: int) -> bytes:
    reader, writer = await asyncio.open_connection(host, port)
    writer.write(data)
    got = b""
    while got.count(b"HTTP/1.1 ") < responses:
        chunk = await asyncio.wait_for(reader.read(65536), 5)
        if not chunk:
            break
        got += chunk
    writer.close()
    await writer.wait_closed()
    return got


async def traffic(handler_class: type[Any], clock: Clock, *, spans: bool) -> list[Any]:
    """One server with `handler_class`, the same requests every time: the recorded calls."""
    clock.reads = 0
    aiohttp_server._handler_class = handler_class
    observer = Observer(Config(spans=spans, otlp=False))
    app, recorder = app_for(observer)
    try:
        async with run_app(app) as srv:
            async with aiohttp.ClientSession() as session:
                headers = {"traceparent": TRACEPARENT}
                for path in ("/hello?x=1", "/items/7", "/missing"):
                    async with session.get(srv.url + path, headers=headers) as resp:
                        await resp.read()
                async with session.post(srv.url + "/echo", data=b"x" * 5000) as resp:
                    assert await resp.read() == b"x" * 5000
                async with session.ws_connect(srv.url + "/ws") as ws:
                    await ws.send_str("hi")
                    assert (await ws.receive()).data == "hi"
            pipelined = b"".join(
                f"GET {p} HTTP/1.1\r\nHost: t\r\n\r\n".encode() for p in ("/hello", "/items/1")
            )
            last = b"GET /hello HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n"
            body = await raw(srv.host, srv.port, pipelined + last, 3)
            assert body.count(b"HTTP/1.1 200 OK") == 3
            body = await raw(srv.host, srv.port, b"NOT HTTP AT ALL\r\n\r\n", 1)
            assert b" 400 " in body
            await eventually(lambda: observer.tracker.live_total == 1)  # the listening socket
    finally:
        observer.close()
    return recorder.calls


@pytest.mark.parametrize("spans", [False, True], ids=["metrics", "spans"])
@pytest.mark.usefixtures("restore_handler_switch")
async def test_real_traffic_makes_the_same_calls_on_both_paths(spans: bool, clock: Clock) -> None:
    handlers = handler_classes()
    calls = {name: await traffic(cls, clock, spans=spans) for name, cls in handlers.items()}
    assert calls["fast"] == calls["pure"]
    assert calls["fast-subclass"] == calls["pure"]
    pure = calls["pure"]
    # 3 GETs, a POST and the websocket upgrade on the client's pooled connection, then the
    # 3 pipelined requests, then the malformed one
    binds = [c for c in pure if c[0] == "bind"]
    assert [c[1] for c in binds] == ["wsi0"] * 5 + ["wsi1"] * 3 + ["wsi2"]
    assert len({c[3] for c in binds[5:8]}) == 1  # one read, one arrival stamp for all three
    assert len(binds[8]) == 4  # bind(wsi, now, arrived): no method, path or traceparent
    drops = [c for c in pure if c[0] == "drop" and c[2] != "now_ns()"]  # log_access's drops
    routes = ["/hello", "/items/{id}", None, "/echo", "/hello", "/items/{id}", "/hello", None]
    assert [c[4] for c in drops] == (routes if spans else [None] * len(routes))
    assert [c[3] for c in drops] == [200, 200, 404, 200, 200, 200, 200, 400]
    assert drops[-1][5] == "invalid_request"
    traceparents = [c[6] for c in binds[:3]]
    assert traceparents == ([TRACEPARENT] * 3 if spans else [None] * 3)


@pytest.mark.usefixtures("restore_handler_switch")
async def test_connections_keep_their_path_when_the_switch_moves() -> None:
    """use_fast_path() applies to new connections; an open one keeps its hooks and works."""
    observer = Observer(Config(spans=False))
    app, recorder = app_for(observer)
    try:
        aiohttp_server.use_fast_path(False)
        async with run_app(app) as srv, aiohttp.ClientSession() as session:
            async with session.get(srv.url + "/hello") as resp:
                assert resp.status == 200
            aiohttp_server.use_fast_path(True)
            async with aiohttp.ClientSession() as other:
                async with other.get(srv.url + "/hello") as resp:
                    assert resp.status == 200
                async with session.get(srv.url + "/hello") as resp:  # the pure connection
                    assert resp.status == 200
                server = srv.runner.server
                assert server is not None
                kinds = sorted(type(h).__name__ for h in server.connections)
                assert kinds == ["FastRequestHandler", "InstrumentedRequestHandler"]
    finally:
        observer.close()
    binds = [c[1] for c in recorder.calls if c[0] == "bind"]
    drops = [c[1] for c in recorder.calls if c[0] == "drop"]
    assert binds == drops == ["wsi0", "wsi1", "wsi0"]


@pytest.mark.usefixtures("restore_handler_switch")
async def test_fast_handler_holds_no_cycle_of_its_own() -> None:
    """The RequestHook never references its handler (aiohttp passes it in), so a closed
    connection's handler goes with its last reference, and __del__ still sees it go."""
    aiohttp_server.use_fast_path(True)
    observer = Observer(Config(spans=False))
    app, _ = app_for(observer)
    try:
        async with run_app(app) as srv, aiohttp.ClientSession() as session:
            async with session.get(srv.url + "/hello") as resp:
                assert resp.status == 200
            server = srv.runner.server
            assert server is not None
            (handler,) = server.connections
            assert type(handler) is fast_handler()
            hook = handler._lwsobs_state
            assert type(hook) is hooks().RequestHook and handler._request_factory is hook
            referents = gc.get_referents(hook)
            assert handler not in referents
            assert hook.tracker in referents and hook.factory in referents
    finally:
        observer.close()
