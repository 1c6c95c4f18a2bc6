"""One benchmark server: `python bench/server.py CONFIG PORT`, hello-world on 127.0.0.1:PORT.

Each configuration runs in its own process so that nothing one of them patches or registers
(lwsobs' site hooks, the contrib instrumentor's Application swap, prometheus_client's default
registry) leaks into another. The runner sets the environment (LWSOBS_SPANS, OTEL_*); this file
only builds the app the way a user of each tool would. SIGINT/SIGTERM stop it gracefully; lwsobs
configurations then write what the observer saw to $LWSOBS_BENCH_STATS, after everything has
been flushed, so the runner can check that every span reached the receiver.
"""

from __future__ import annotations

import json
import logging
import os
import sys
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web

CONFIGS = (
    "plain",
    "lwsobs-metrics",
    "lwsobs-spans",
    "otel-contrib",
    "otel-middleware",
    "prom-middleware",
)

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
Shutdown = Callable[[], None]


async def hello(request: web.Request) -> web.Response:
    return web.Response(text="hello")


def route_of(request: web.Request) -> str:
    """The route template, as a bounded label/span-name value (what real middlewares use)."""
    resource = request.match_info.route.resource
    return resource.canonical if resource is not None else "unmatched"


def add_routes(app: web.Application) -> web.Application:
    app.router.add_get("/", hello)
    return app


def _sdk_tracer_provider(service: str) -> Any:
    """An SDK TracerProvider exporting over OTLP/HTTP as configured by OTEL_* (the runner)."""
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor

    provider = TracerProvider(resource=Resource.create({"service.name": service}))
    provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter()))
    return provider


def build_plain() -> tuple[web.Application, Shutdown | None]:
    return add_routes(web.Application()), None


def disable_parts(parts: str) -> None:
    """For bench/instructions.py --breakdown only: switch parts of lwsobs off to weigh them."""
    from lwsobs.core.tracker import Tracker

    def nothing(*args: Any, **kwargs: Any) -> None:
        return None

    if "bookkeeping" in parts:  # the hooks run, the core does nothing per request
        from lwsobs.build import build_kind

        if build_kind() != "interpreted":  # a compiled class cannot have methods replaced
            sys.exit("LWSOBS_BENCH_DISABLE=bookkeeping needs the interpreted build")
        Tracker.bind = Tracker.drop = nothing  # type: ignore[method-assign]
    if "hooks" in parts:  # no per-request hook at all: what is left is per connection
        remove_request_hooks()


def remove_request_hooks() -> None:
    """The instrumented handler with aiohttp's own data_received, log_access and request
    factory (also bench/hooks.py's `off`): what is left of lwsobs is per connection."""
    from lwsobs.sources.aiohttp.server import InstrumentedRequestHandler, RequestHandler

    handler: Any = InstrumentedRequestHandler
    handler.data_received = RequestHandler.data_received
    handler.log_access = RequestHandler.log_access
    init = handler.__init__

    def without_factory_hook(self: Any, *args: Any, **kwargs: Any) -> None:
        init(self, *args, **kwargs)
        self._request_factory = self._lwsobs_hooks.factory  # aiohttp's own again

    handler.__init__ = without_factory_hook


def build_lwsobs(spans_expected: bool) -> tuple[web.Application, Shutdown | None]:
    import lwsobs

    disable_parts(os.environ.get("LWSOBS_BENCH_DISABLE", ""))
    app = add_routes(web.Application())
    lwsobs.instrument(app)
    observer = lwsobs.default_observer()
    # Refuse to measure the wrong thing: the runner's environment decides spans on or off.
    if (observer.spans is not None) != spans_expected or (
        spans_expected and not observer.config.otlp
    ):
        sys.exit(
            f"lwsobs config mismatch: spans={observer.spans is not None} "
            f"otlp={observer.config.otlp}, expected spans={spans_expected} with OTLP"
        )
    return app, None


def build_otel_contrib() -> tuple[web.Application, Shutdown | None]:
    from opentelemetry.instrumentation.aiohttp_server import AioHttpServerInstrumentor

    provider = _sdk_tracer_provider("bench-otel-contrib")
    # The documented use: instrument() swaps web.Application for one that adds the middleware.
    AioHttpServerInstrumentor().instrument(tracer_provider=provider)
    return add_routes(web.Application()), provider.shutdown


def build_otel_middleware() -> tuple[web.Application, Shutdown | None]:
    from opentelemetry.trace import SpanKind

    provider = _sdk_tracer_provider("bench-otel-middleware")
    tracer = provider.get_tracer("bench.otel_middleware")

    @web.middleware
    async def one_span_per_request(request: web.Request, handler: Handler) -> web.StreamResponse:
        with tracer.start_as_current_span(
            f"{request.method} {route_of(request)}",
            kind=SpanKind.SERVER,
            attributes={"http.request.method": request.method, "url.path": request.path},
        ) as span:
            response = await handler(request)
            span.set_attribute("http.response.status_code", response.status)
            return response

    return add_routes(web.Application(middlewares=[one_span_per_request])), provider.shutdown


def build_prom_middleware() -> tuple[web.Application, Shutdown | None]:
    from prometheus_client import Counter, Histogram

    requests = Counter("http_requests_total", "HTTP requests", ("method", "route", "status_code"))
    duration = Histogram(
        "http_request_duration_seconds", "HTTP request duration", ("method", "route")
    )

    @web.middleware
    async def prometheus(request: web.Request, handler: Handler) -> web.StreamResponse:
        start = time.perf_counter()
        response = await handler(request)
        route = route_of(request)
        requests.labels(request.method, route, str(response.status)).inc()
        duration.labels(request.method, route).observe(time.perf_counter() - start)
        return response

    return add_routes(web.Application(middlewares=[prometheus])), None


def lwsobs_stats(config: str) -> dict[str, Any]:
    """What the observer saw and what its span sink did, read after close() flushed it all."""
    import lwsobs

    observer = lwsobs.default_observer()
    observer.close()  # idempotent; ends remaining spans and drains the exporter
    metrics = observer.metrics
    spans = observer.spans
    by_role: Counter[str] = Counter()
    for (_, role), n in metrics.created.items():
        by_role[str(role)] += n
    return {
        "config": config,
        "transactions": sum(metrics.transactions.values()),
        "wsis": sum(metrics.created.values()),
        "wsis_destroyed": sum(metrics.destroyed.values()),
        "wsis_by_role": dict(sorted(by_role.items())),
        "leaked": sum(metrics.leaked.values()),
        "spans": None
        if spans is None
        else {
            "exported": spans.exported,
            "dropped": sum(spans.dropped.values()),
            "dropped_by_reason": dict(spans.dropped),
            "sampled_out": spans.sampled_out,
            "queued": len(spans._queue),
        },
    }


BUILDERS: dict[str, Callable[[], tuple[web.Application, Shutdown | None]]] = {
    "plain": build_plain,
    "lwsobs-metrics": lambda: build_lwsobs(spans_expected=False),
    "lwsobs-spans": lambda: build_lwsobs(spans_expected=True),
    "otel-contrib": build_otel_contrib,
    "otel-middleware": build_otel_middleware,
    "prom-middleware": build_prom_middleware,
}


def main() -> None:
    if len(sys.argv) != 3 or sys.argv[1] not in BUILDERS:
        sys.exit(f"usage: server.py {{{','.join(CONFIGS)}}} PORT")
    config, port = sys.argv[1], int(sys.argv[2])
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    app, shutdown = BUILDERS[config]()
    # run_app turns SIGINT/SIGTERM into a graceful shutdown and runs the app's cleanup.
    web.run_app(app, host="127.0.0.1", port=port, access_log=None, print=None, shutdown_timeout=5.0)
    if shutdown is not None:
        shutdown()  # flush the SDK's BatchSpanProcessor before exit
    if config.startswith("lwsobs"):
        stats = lwsobs_stats(config)
        path = os.environ.get("LWSOBS_BENCH_STATS")
        if path:
            with open(path, "w") as f:
                json.dump(stats, f)


if __name__ == "__main__":
    main()
