"""Demo traffic: lwsobs drives realistic connections at itself so every feature shows at once.

Each round sends keep-alive requests, an HTTP/1.1 pipelined burst (several requests in one
write), a request carrying a traceparent, a 404, a 500 and now and then a malformed request and
a websocket session. An idle connection is left open past its role's idle limit so the leak
rule flags it; it is closed later, which resolves the suspicion. The client session itself is
instrumented (source "demo-client"), so the same traffic also shows as h1-client and ws-client
wsis with reused connections. The libwebsockets side of the
demo (a recorded lws app replayed at the service's own ingest) is lwsobs.app.demo_lws.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random

import aiohttp
from aiohttp import web

from lwsobs.instrument import instrument_client
from lwsobs.observer import Observer

log = logging.getLogger("lwsobs.demo")

DEMO_IDLE_LIMIT_S = 5.0
DEMO_CLIENT_SOURCE = "demo-client"


def pipelined_burst(host: str, paths: list[str]) -> bytes:
    """Requests written back to back; the last one closes the connection."""
    parts = []
    for i, path in enumerate(paths):
        close = "Connection: close\r\n" if i == len(paths) - 1 else ""
        parts.append(f"GET {path} HTTP/1.1\r\nHost: {host}\r\n{close}\r\n")
    return "".join(parts).encode()


async def send_raw(host: str, port: int, payload: bytes, timeout: float = 5.0) -> bytes:
    reader, writer = await asyncio.open_connection(host, port)
    try:
        writer.write(payload)
        await writer.drain()
        return await asyncio.wait_for(reader.read(-1), timeout)
    finally:
        writer.close()
        with contextlib.suppress(ConnectionError):
            await writer.wait_closed()


class DemoTraffic:
    def __init__(
        self,
        host: str,
        port: int,
        *,
        round_s: float = 1.0,
        idle_hold_s: float = 3 * DEMO_IDLE_LIMIT_S,
        observer: Observer | None = None,
    ) -> None:
        self.host = host
        self.port = port
        self.observer = observer
        self.round_s = round_s
        self.idle_hold_s = idle_hold_s
        self.rounds = 0
        self._idle: list[asyncio.StreamWriter] = []

    @property
    def base(self) -> str:
        return f"http://{self.host}:{self.port}"

    async def run(self) -> None:
        session = aiohttp.ClientSession()
        if self.observer is not None:
            instrument_client(session, self.observer, source=DEMO_CLIENT_SOURCE)
        async with session:
            await self._wait_until_up(session)
            idle_task = asyncio.create_task(self._idle_connections())
            try:
                while True:
                    try:
                        await self.round(session)
                    except (TimeoutError, aiohttp.ClientError, OSError) as exc:
                        log.info("demo round failed: %s", exc)
                    self.rounds += 1
                    await asyncio.sleep(self.round_s)
            finally:
                idle_task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await idle_task
                for writer in self._idle:
                    writer.close()

    async def _wait_until_up(self, session: aiohttp.ClientSession) -> None:
        for _ in range(100):
            try:
                async with session.get(f"{self.base}/healthz") as resp:
                    await resp.read()
                    return
            except (aiohttp.ClientError, OSError):
                await asyncio.sleep(0.05)

    async def round(self, session: aiohttp.ClientSession) -> None:
        # keep-alive: one pooled connection carries several transactions
        for _ in range(3):
            async with session.get(f"{self.base}/demo/hello") as resp:
                await resp.read()
        async with session.get(f"{self.base}/demo/slow") as resp:
            await resp.read()
        trace_id = f"{random.getrandbits(128):032x}"
        parent = f"{random.getrandbits(64):016x}"
        async with session.get(
            f"{self.base}/demo/hello", headers={"traceparent": f"00-{trace_id}-{parent}-01"}
        ) as resp:
            await resp.read()
        async with session.get(f"{self.base}/demo/missing") as resp:
            await resp.read()
        async with session.get(f"{self.base}/demo/error") as resp:
            await resp.read()
        # HTTP/1.1 pipelining: four requests in one write on a fresh connection
        await send_raw(
            self.host,
            self.port,
            pipelined_burst(
                f"{self.host}:{self.port}",
                ["/demo/hello", "/demo/slow?ms=20", "/demo/hello", "/demo/missing"],
            ),
        )
        if self.rounds % 5 == 0:
            await send_raw(self.host, self.port, b"BOGUS / HTTP/1.1\r\nHost: x\r\n\r\n")
        if self.rounds % 3 == 0:
            async with session.ws_connect(f"{self.base}/demo/ws") as ws:
                for i in range(3):
                    await ws.send_str(f"ping {i}")
                    await ws.receive()
                await asyncio.sleep(0.2)

    async def _idle_connections(self) -> None:
        """Open a connection that sends nothing, hold it past the idle limit, then close it."""
        while True:
            _, writer = await asyncio.open_connection(self.host, self.port)
            self._idle.append(writer)
            await asyncio.sleep(self.idle_hold_s)
            writer.close()
            self._idle.remove(writer)


def attach_demo(
    app: web.Application, host: str, port: int, observer: Observer | None = None
) -> None:
    """Run demo traffic from start-up until the app begins to shut down.

    With an observer, the demo's client session is instrumented by it (source "demo-client").
    """
    tasks: list[asyncio.Task[None]] = []

    async def start(_: web.Application) -> None:
        tasks.append(asyncio.create_task(DemoTraffic(host, port, observer=observer).run()))

    async def stop(_: web.Application) -> None:
        await cancel_all(tasks)

    app.on_startup.append(start)
    app.on_shutdown.append(stop)


async def cancel_all(tasks: list[asyncio.Task[None]]) -> None:
    """Cancel the demo's background tasks, wait until each has ended, and forget them."""
    for task in tasks:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
    tasks.clear()
