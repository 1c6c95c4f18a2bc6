"""`instrument(app)` and `instrument_client(session)`: the one call that makes aiohttp observable.

`instrument_all_clients()` is the opt-in global switch for client sessions (also set by
LWSOBS_INSTRUMENT_CLIENTS=on for an instrumented app).
"""

from __future__ import annotations

from aiohttp import ClientSession, web

from lwsobs.app.web_api import add_metrics_route
from lwsobs.observer import Observer, default_observer
from lwsobs.sources.aiohttp.client import (
    DEFAULT_SOURCE,
    instrument_all,
    instrument_connector,
    uninstrument_all,
)
from lwsobs.sources.aiohttp.client_state import client_instrumentation
from lwsobs.sources.aiohttp.server import ServerInstrumentation, instrument_server

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
    if observer.config.instrument_clients:
        instrument_all_clients(observer)
    app.on_cleanup.append(stop_observer)
    if metrics_path is not None and not _has_route(app, metrics_path):
        add_metrics_route(app, observer, metrics_path)
    return instrumentation


def instrument_client(
    session: ClientSession,
    observer: Observer | None = None,
    *,
    source: str = DEFAULT_SOURCE,
) -> ClientSession:
    """Observe every connection `session` opens from now on; returns the session.

    Works on a session already created (its connector is hooked, nothing global is patched):
    `async with instrument_client(aiohttp.ClientSession()) as session: ...`. Connections it
    pooled before this call are used as before but not observed. Sessions sharing a connector
    are instrumented together. With no observer, the process-wide one is used.
    """
    if session.closed or session.connector is None:
        raise RuntimeError("cannot instrument a closed ClientSession")
    observer = observer or default_observer()
    instrument_connector(session.connector, client_instrumentation(observer, source))
    return session


def instrument_all_clients(
    observer: Observer | None = None, *, source: str = DEFAULT_SOURCE
) -> None:
    """Instrument every aiohttp.ClientSession created from now on (wraps its __init__)."""
    instrument_all(observer or default_observer(), source)


def uninstrument_all_clients() -> None:
    """Stop instrumenting new sessions; sessions already instrumented stay so."""
    uninstrument_all()
