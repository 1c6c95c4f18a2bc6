"""`instrument(app)`: the one call that makes an aiohttp application observable."""

from __future__ import annotations

from aiohttp import web

from lwsobs.observer import Observer, default_observer
from lwsobs.sources.aiohttp_server import ServerInstrumentation, instrument_server
from lwsobs.web_api import add_metrics_route

_INSTRUMENTED = web.AppKey("lwsobs_instrumentation", ServerInstrumentation)


def _has_route(app: web.Application, path: str) -> bool:
    return any(resource.canonical == path for resource in app.router.resources())


def instrument(
    app: web.Application,
    observer: Observer | None = None,
    *,
    source: str = "aiohttp",
    metrics_path: str | None = "/metrics",
) -> ServerInstrumentation:
    """Observe every connection, listening socket and request of `app`. Call before it starts.

    With no observer, the process-wide one is used: configured by OTEL_* / LWSOBS_* variables
    and registered in prometheus_client's default registry. `/metrics` is added unless the app
    already routes that path (or `metrics_path` is None).
    """
    if _INSTRUMENTED in app:
        raise RuntimeError("this application is already instrumented by lwsobs")
    observer = observer or default_observer()
    instrumentation = ServerInstrumentation(observer, source)
    instrument_server(app, instrumentation)
    app[_INSTRUMENTED] = instrumentation

    async def start_observer(_: web.Application) -> None:
        observer.start()

    async def stop_observer(_: web.Application) -> None:
        await observer.stop()

    app.on_startup.append(start_observer)
    app.on_cleanup.append(stop_observer)
    if metrics_path is not None and not _has_route(app, metrics_path):
        add_metrics_route(app, observer, metrics_path)
    return instrumentation
