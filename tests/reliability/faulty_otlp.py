"""An OTLP/HTTP trace receiver on one fixed loopback port that can misbehave on demand.

- `ok`: decodes and keeps spans (tests/otlp_receiver.py does the decoding);
- `refuse`: nothing listens on the port (connections refused; open ones are cut);
- `hang`: accepts the request and never answers while hanging (503 once released);
- `slow`: answers correctly after `delay_s`.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Literal

from aiohttp import web

from tests.conftest import free_port
from tests.otlp_receiver import OtlpReceiver

Fault = Literal["ok", "refuse", "hang", "slow"]


class FaultyOtlp:
    def __init__(self, delay_s: float = 0.2) -> None:
        self.port = free_port()
        self.delay_s = delay_s
        self.mode: Fault = "ok"
        self.receiver = OtlpReceiver(port=self.port)
        self.receiver._release.set()
        self.hanging = 0  # requests held right now
        self.held = 0  # requests answered late after hanging
        self._release = asyncio.Event()
        self._runner: web.AppRunner | None = None

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1/traces"

    @property
    def spans(self) -> int:
        return len(self.receiver.spans)

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        if self.mode == "hang":
            self.hanging += 1
            try:
                await self._release.wait()
            finally:
                self.hanging -= 1
            self.held += 1
            return web.Response(status=503, text="released after hanging\n")
        if self.mode == "slow":
            await asyncio.sleep(self.delay_s)
        return await self.receiver._handle(request)

    async def _listen(self) -> None:
        app = web.Application(client_max_size=64 * 1024 * 1024)
        app.router.add_post("/v1/traces", self._handle)
        self._runner = web.AppRunner(app, access_log=None, shutdown_timeout=0.5)
        await self._runner.setup()
        await web.TCPSite(self._runner, "127.0.0.1", self.port, reuse_address=True).start()

    async def _stop(self) -> None:
        if self._runner is not None:
            self._release.set()
            await self._runner.cleanup()
            self._runner = None

    async def set_mode(self, mode: Fault) -> None:
        if mode == "refuse":
            await self._stop()
        elif self._runner is None:
            await self._listen()
        if mode == "hang":
            self._release.clear()
        else:
            self._release.set()
        self.mode = mode


@asynccontextmanager
async def faulty_otlp(delay_s: float = 0.2) -> AsyncIterator[FaultyOtlp]:
    server = FaultyOtlp(delay_s)
    await server.set_mode("ok")
    try:
        yield server
    finally:
        await server._stop()
