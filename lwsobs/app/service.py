"""The lwsobs service: one aiohttp application that observes itself and shows what it knows."""

from __future__ import annotations

import asyncio
import random
import weakref

from aiohttp import WSCloseCode, WSMsgType, web

from lwsobs.app.status import CONTENT_SECURITY_POLICY, render_page
from lwsobs.app.web_api import add_api_routes
from lwsobs.clock import now_ns
from lwsobs.instrument import instrument
from lwsobs.observer import Observer
from lwsobs.sources.lws.decoder import LwsDecoder
from lwsobs.sources.lws.pipeline import IngestPipeline
from lwsobs.sources.lws.process import ProcessWatch
from lwsobs.sources.lws.receivers import attach_ingest


def build_app(observer: Observer, *, ingest: bool = True) -> web.Application:
    """The service app, instrumented with the same `instrument()` any aiohttp app uses.

    With `ingest`, libwebsockets producers feed it too: wire-v1 events over UDP, a unix
    datagram socket and POST /v1/events go through the IngestPipeline to the LwsDecoder.
    """
    app = web.Application()
    instrument(app, observer, source="lwsobs", metrics_path="/metrics")
    add_api_routes(app, observer)
    if ingest:
        config = observer.config
        decoder = LwsDecoder(
            observer.tracker,
            processes=ProcessWatch() if config.process_check else None,
            # counted from the last line heard, so from the silence on it is the rest
            expiry_s=max(0.0, config.source_expiry_s - config.silence_s),
        )
        pipeline = IngestPipeline(decoder, silence_limit_s=config.silence_s)
        observer.collector.extra.append(pipeline.families)
        observer.collector.extra.append(decoder.families)
        attach_ingest(app, pipeline, observer.config)
        app[PIPELINE] = pipeline
    app.router.add_get("/", index)
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/demo/hello", hello)
    app.router.add_get("/demo/slow", slow)
    app.router.add_get("/demo/error", error)
    app.router.add_get("/demo/ws", websocket_echo)
    app[OBSERVER] = observer
    app[WEBSOCKETS] = weakref.WeakSet()
    app.on_shutdown.append(close_websockets)
    return app


OBSERVER = web.AppKey("lwsobs_observer", Observer)
PIPELINE = web.AppKey("lwsobs_ingest_pipeline", IngestPipeline)
WEBSOCKETS = web.AppKey("lwsobs_websockets", weakref.WeakSet[web.WebSocketResponse])


async def index(request: web.Request) -> web.Response:
    """The status page: live wsis by role, the live table, leaks and a connection waterfall."""
    page = render_page(request.app[OBSERVER], now_ns())
    return web.Response(
        text=page,
        content_type="text/html",
        headers={
            "Content-Security-Policy": CONTENT_SECURITY_POLICY,
            "X-Content-Type-Options": "nosniff",
            "Cache-Control": "no-store",
        },
    )


async def healthz(request: web.Request) -> web.Response:
    observer = request.app[OBSERVER]
    return web.json_response(
        {"status": "ok", "live_wsis": observer.tracker.live_count(), "time_ns": now_ns()}
    )


async def hello(request: web.Request) -> web.Response:
    return web.Response(text="hello from lwsobs\n")


async def slow(request: web.Request) -> web.Response:
    raw = request.query.get("ms", "")
    ms = int(raw) if raw.isdigit() else random.randint(5, 80)
    await asyncio.sleep(min(ms, 2000) / 1000)
    return web.Response(text=f"slept {min(ms, 2000)} ms\n")


async def error(request: web.Request) -> web.Response:
    raise web.HTTPInternalServerError(text="a deliberate 500 for the demo\n")


async def websocket_echo(request: web.Request) -> web.WebSocketResponse:
    ws = web.WebSocketResponse()
    await ws.prepare(request)
    request.app[WEBSOCKETS].add(ws)
    async for msg in ws:
        if msg.type == WSMsgType.TEXT:
            await ws.send_str(msg.data)
        elif msg.type == WSMsgType.BINARY:
            await ws.send_bytes(msg.data)
    return ws


async def close_websockets(app: web.Application) -> None:
    """On shutdown, close open websockets: aiohttp would otherwise wait for each handler (up to
    its shutdown timeout) before the connections end as `shutdown`."""
    sockets = app[WEBSOCKETS]
    for ws in list(sockets):
        await ws.close(code=WSCloseCode.GOING_AWAY, message=b"server shutdown")
