"""HTTP handlers that show what the Observer knows: /metrics and the JSON /api views."""

from __future__ import annotations

from aiohttp import web
from prometheus_client.aiohttp import make_aiohttp_handler

from lwsobs.clock import now_ns
from lwsobs.observer import Observer


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
    """Prometheus text or OpenMetrics (with exemplars), chosen by the Accept header."""
    app.router.add_get(path, make_aiohttp_handler(observer.registry))


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

    app.router.add_get(f"{prefix}/wsis", wsis)
    app.router.add_get(f"{prefix}/leaks", leaks)
    app.router.add_get(f"{prefix}/traces", traces)
