"""Shared fixtures: a fresh Observer per test and a way to run an instrumented app on loopback."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass

import pytest
from aiohttp import web

from lwsobs.config import Config
from lwsobs.instrument import instrument
from lwsobs.observer import Observer


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
def config() -> Config:
    """Spans on, exported only to the in-memory store, fast export batches."""
    return Config(spans=True, otlp=False, span_delay_s=0.05)


@pytest.fixture
def observer(config: Config) -> Observer:
    obs = Observer(config)
    yield obs
    obs.close()


@dataclass
class Running:
    app: web.Application
    runner: web.AppRunner
    host: str
    port: int

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"


@asynccontextmanager
async def run_app(
    app: web.Application, *, port: int | None = None, cleanup: bool = True
) -> AsyncIterator[Running]:
    """Start `app` on 127.0.0.1 with a real AppRunner and TCPSite; clean up gracefully."""
    runner = web.AppRunner(app, access_log=None, shutdown_timeout=2.0)
    await runner.setup()
    port = port or free_port()
    site = web.TCPSite(runner, "127.0.0.1", port)
    await site.start()
    try:
        yield Running(app, runner, "127.0.0.1", port)
    finally:
        if cleanup:
            await runner.cleanup()


async def ws_echo(request: web.Request) -> web.WebSocketResponse:
    """A websocket route that sends every text message back (the test apps' /ws)."""
    resp = web.WebSocketResponse()
    await resp.prepare(request)
    async for msg in resp:
        await resp.send_str(msg.data)
    return resp


def hello_app(observer: Observer, **kwargs: object) -> web.Application:
    """A small app with a text route, a slow route and a websocket echo, instrumented."""
    app = web.Application()

    async def hello(request: web.Request) -> web.Response:
        return web.Response(text="hello")

    async def slow(request: web.Request) -> web.Response:
        await asyncio.sleep(float(request.query.get("s", "0.05")))
        return web.Response(text="slow")

    app.router.add_get("/hello", hello)
    app.router.add_get("/slow", slow)
    app.router.add_get("/ws", ws_echo)
    app.router.add_get("/items/{id}", hello)
    instrument(app, observer, **kwargs)  # type: ignore[arg-type]
    return app


async def eventually(check: Callable[[], bool], timeout: float = 5.0) -> None:
    """Poll `check` until it holds; fail with the timeout otherwise (no fixed sleeps)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not check():
        if loop.time() > deadline:
            raise AssertionError("condition not reached within timeout")
        await asyncio.sleep(0.01)
