"""Run the configured ingest transports and the silence clock for as long as the service runs.

Not wired into the service yet: the lws decoder (the EventConsumer) is being written. Hooking
it in takes three lines in `lwsobs.app.service.build_app`, before the app starts:

    pipeline = IngestPipeline(decoder, silence_limit_s=observer.config.silence_s)
    observer.collector.extra.append(pipeline.families)  # the lwsobs_ingest_* metrics
    attach_ingest(app, pipeline, observer.config)

`attach_ingest` adds `POST /v1/events` (with the configured token and body limit) and a cleanup
context that runs `run_ingest` between the app's startup and cleanup: the UDP and unix receivers
start with the app (a bind error fails the start-up, and `lwsobs serve` exits 1) and close with
it, the unix socket file included. Everything runs on the app's event loop, so the consumer is
never called from two threads. Without an aiohttp app (a test, another loop):

    async with run_ingest(pipeline, config) as running:
        running.udp.address  # the bound (host, port)
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from dataclasses import dataclass

from aiohttp import web

from lwsobs.clock import now_ns
from lwsobs.config import Config
from lwsobs.sources.lws.http import add_ingest_route
from lwsobs.sources.lws.pipeline import IngestPipeline
from lwsobs.sources.lws.udp import DatagramReceiver, start_udp
from lwsobs.sources.lws.unix import UnixReceiver, start_unix

log = logging.getLogger("lwsobs.ingest")


@dataclass
class RunningIngest:
    """The receivers `run_ingest` started (None when configured off)."""

    udp: DatagramReceiver | None
    unix: UnixReceiver | None


@contextlib.asynccontextmanager
async def run_ingest(
    pipeline: IngestPipeline, config: Config, *, tick_s: float | None = None
) -> AsyncIterator[RunningIngest]:
    """Start the configured datagram receivers and the silence tick; stop them all on exit.

    `tick_s` (default `config.tick_s`) is how often `pipeline.tick` looks for silent sources.
    """
    loop = asyncio.get_running_loop()
    async with contextlib.AsyncExitStack() as stack:
        udp = unix = None
        if config.udp is not None:
            udp = await start_udp(pipeline, config.udp.host, config.udp.port)
            stack.callback(udp.close)
        if config.unix is not None:
            unix = await start_unix(pipeline, config.unix)
            stack.callback(unix.close)
        task = loop.create_task(_tick_forever(pipeline, tick_s or config.tick_s))
        stack.push_async_callback(_cancel, task)
        yield RunningIngest(udp, unix)


async def _tick_forever(pipeline: IngestPipeline, every_s: float) -> None:
    """Silence checks, and a report of consumer failures (at most one log line per tick)."""
    reported = 0
    while True:
        await asyncio.sleep(every_s)
        try:
            pipeline.tick(now_ns())
        except Exception:
            log.exception("ingest tick failed")
        if pipeline.consumer_errors > reported:
            log.error(
                "ingest: the event consumer failed %d times since the last report; the last:",
                pipeline.consumer_errors - reported,
                exc_info=pipeline.last_error,
            )
            reported = pipeline.consumer_errors


async def _cancel(task: asyncio.Task[None]) -> None:
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task


def attach_ingest(app: web.Application, pipeline: IngestPipeline, config: Config) -> None:
    """Add POST /v1/events and run the datagram transports for the app's lifetime."""
    add_ingest_route(app, pipeline, token=config.ingest_token, max_body=config.ingest_max_body)

    async def transports(app: web.Application) -> AsyncIterator[None]:
        log.info(
            "lwsobs ingest: POST /v1/events %s",
            "requires the bearer token (LWSOBS_INGEST_TOKEN)"
            if config.ingest_token
            else "is open to whoever reaches the HTTP port (set LWSOBS_INGEST_TOKEN to require "
            "a bearer token)",
        )
        async with run_ingest(pipeline, config):
            yield

    app.cleanup_ctx.append(transports)
