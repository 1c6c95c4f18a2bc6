"""HTTP handlers that show what the Observer knows: /metrics and the JSON /api views."""

from __future__ import annotations

from aiohttp import hdrs, web
from prometheus_client.aiohttp import make_aiohttp_handler
from prometheus_client.exposition import choose_encoder

from lwsobs.app.status import connections_json, status_json
from lwsobs.clock import now_ns
from lwsobs.observer import Observer
from lwsobs.sinks.metrics.exposition import render


def _limit(request: web.Request, default: int, maximum: int) -> int:
    raw = request.query.get("limit")
    if raw is None:
        return default
    try:
        value = int(raw)
    except ValueError:
        raise web.HTTPBadRequest(text=f"limit must be an integer, got {raw!r}\n") from None
    if not 1 <= value <= maximum:
        raise web.HTTPBadRequest(text=f"limit must be between 1 and {maximum}\n")
    return value


def add_metrics_route(app: web.Application, observer: Observer, path: str = "/metrics") -> None:
    """Prometheus text or OpenMetrics (with exemplars), chosen by the Accept header.

    The observer's own registry holds only the LwsobsCollector, which sinks.exposition renders
    directly; a `name[]` filter goes through prometheus_client's handler.
    """
    generic = make_aiohttp_handler(observer.registry)

    async def metrics(request: web.Request) -> web.StreamResponse:
        if "name[]" in request.query:
            return await generic(request)
        accept = ",".join(request.headers.getall(hdrs.ACCEPT, []))
        _, content_type = choose_encoder(accept)
        openmetrics = content_type.startswith("application/openmetrics-text")
        body = render(observer.collector, openmetrics).encode()
        response = web.Response(body=body, headers={"Content-Type": content_type})
        response.enable_compression()
        return response

    app.router.add_get(path, metrics)


def add_api_routes(app: web.Application, observer: Observer, prefix: str = "/api") -> None:
    async def wsis(request: web.Request) -> web.Response:
        return web.json_response(observer.live.wsis(now_ns(), _limit(request, 1000, 100_000)))

    async def leaks(request: web.Request) -> web.Response:
        return web.json_response(observer.live.leak_list(now_ns()))

    async def traces(request: web.Request) -> web.Response:
        limit = _limit(request, 50, 1000)
        if observer.spans is not None:
            await request.app.loop.run_in_executor(None, observer.spans.flush, 2.0)
        data = observer.recent.traces(limit) if observer.recent is not None else []
        stats = observer.spans.stats() if observer.spans is not None else None
        return web.json_response({"count": len(data), "export": stats, "traces": data})

    async def status(request: web.Request) -> web.Response:
        return web.json_response(status_json(observer, now_ns()))

    async def connections(request: web.Request) -> web.Response:
        limit = _limit(request, 40, 1000)
        return web.json_response(connections_json(observer, now_ns(), limit))

    app.router.add_get(f"{prefix}/wsis", wsis)
    app.router.add_get(f"{prefix}/leaks", leaks)
    app.router.add_get(f"{prefix}/traces", traces)
    app.router.add_get(f"{prefix}/status", status)
    app.router.add_get(f"{prefix}/connections", connections)
