"""An OTLP/HTTP trace receiver on one fixed loopback port that can misbehave on demand.

- `ok`, `hang` (accepts the request and never answers while hanging; 503 once released) and
  `slow` (answers correctly after `delay_s`) are tests/otlp_receiver.py's own modes;
- `refuse`: nothing listens on the port (connections refused; open ones are cut), which needs
  the fixed port this class keeps across restarts of its listener.
"""

from __future__ import annotations

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
        self.mode: Fault = "ok"
        self.receiver = OtlpReceiver(port=self.port, delay_s=delay_s)
        self.receiver.set_mode("ok")
        self._runner: web.AppRunner | None = None

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1/traces"

    @property
    def spans(self) -> int:
        return len(self.receiver.spans)

    @property
    def hanging(self) -> int:
        """Requests held right now."""
        return self.receiver.hanging

    async def _listen(self) -> None:
        app = web.Application(client_max_size=64 * 1024 * 1024)
        app.router.add_post("/v1/traces", self.receiver._handle)
        self._runner = web.AppRunner(app, access_log=None, shutdown_timeout=0.5)
        await self._runner.setup()
        await web.TCPSite(self._runner, "127.0.0.1", self.port, reuse_address=True).start()

    async def _stop(self) -> None:
        if self._runner is not None:
            self.receiver.set_mode("ok")  # release what hangs before the listener goes
            await self._runner.cleanup()
            self._runner = None

    async def set_mode(self, mode: Fault) -> None:
        if mode == "refuse":
            await self._stop()
        elif self._runner is None:
            await self._listen()
        self.receiver.set_mode("ok" if mode == "refuse" else mode)
        self.mode = mode


@asynccontextmanager
async def faulty_otlp(delay_s: float = 0.2) -> AsyncIterator[FaultyOtlp]:
    server = FaultyOtlp(delay_s)
    await server.set_mode("ok")
    try:
        yield server
    finally:
        await server._stop()
