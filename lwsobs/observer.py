"""The Observer wires one Tracker to its sinks, the Prometheus collector and the exporters.

One Observer per process is the norm (`default_observer()`); the service builds its own from
its command line. Sources attach to it; it owns the background work (idle ticks, span export).
"""

from __future__ import annotations

import asyncio
import atexit
import contextlib
import logging
import random
from collections import deque
from collections.abc import Callable

from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace.sampling import _get_from_env_or_default
from prometheus_client import REGISTRY, CollectorRegistry

from lwsobs.clock import now_ns
from lwsobs.config import Config
from lwsobs.core.ids import Ids
from lwsobs.core.model import Wsi
from lwsobs.core.roles import LeakRule
from lwsobs.core.tracker import Tracker
from lwsobs.sinks.leak_log import LeakLog
from lwsobs.sinks.live import LiveView
from lwsobs.sinks.metrics.collector import LwsobsCollector, table_bounds
from lwsobs.sinks.metrics.sink import MetricsSink
from lwsobs.sinks.spans.builder import SpanBuilder
from lwsobs.sinks.spans.otlp_exporter import OtlpExporter
from lwsobs.sinks.spans.recent_connections import RecentConnections
from lwsobs.sinks.spans.recent_traces import RecentTraces
from lwsobs.sinks.spans.sink import FactExporter, SpanSink

log = logging.getLogger("lwsobs")


def make_resource(service_name: str) -> Resource:
    """OTEL_SERVICE_NAME / OTEL_RESOURCE_ATTRIBUTES win; `service_name` is only the fallback."""
    resource = Resource.create()
    if str(resource.attributes.get("service.name", "")).startswith("unknown_service"):
        resource = resource.merge(Resource({"service.name": service_name}))
    return resource


class Observer:
    def __init__(self, config: Config | None = None, *, register_global: bool = False) -> None:
        self.config = config = config or Config.from_env()
        self.tracker = Tracker(
            policy=config.policy,
            epoch_ns=now_ns(),
            max_wsis=config.max_wsis,
            max_sources=config.max_source_labels,
        )
        self.ids = Ids(
            random.SystemRandom().getrandbits(64), join_traceparent=config.join_traceparent
        )
        self.metrics = MetricsSink()
        self.live = LiveView(self.tracker)
        self.recent: RecentTraces | None = None
        self.connections: RecentConnections | None = None  # the status page's waterfall
        self.spans: SpanSink | None = None
        self.tracker.add_sink(self.metrics)
        self.tracker.add_sink(self.live)
        self.leak_log = LeakLog()
        self.tracker.add_sink(self.leak_log)
        self.collector = LwsobsCollector(self.tracker, self.metrics)
        self.collector.extra.append(lambda: table_bounds(self.tracker))
        if config.spans:
            builder = SpanBuilder(self.ids, _get_from_env_or_default())
            self.collector.sampling = builder  # exemplars point only at kept traces
            exporters: list[FactExporter] = []
            if config.recent_traces:
                self.recent = RecentTraces(builder, max_traces=config.recent_traces)
                exporters.append(self.recent)
            if config.recent_connections:
                self.connections = RecentConnections(config.recent_connections)
                exporters.append(self.connections)
            if config.otlp:
                resource = make_resource(config.service_name)
                exporters.append(
                    OtlpExporter(builder, dict(resource.attributes), config.otlp_config)
                )
            self.spans = SpanSink(
                builder,
                exporters,
                max_queue=config.span_queue,
                batch_size=config.span_batch,
                delay_s=config.span_delay_s,
            )
            self.tracker.add_sink(self.spans)
            self.collector.extra.append(self.spans.families)
        self.registry = CollectorRegistry(auto_describe=False)
        self.registry.register(self.collector)
        if register_global:
            REGISTRY.register(self.collector)
        self._finalized: deque[Wsi] = deque()
        self._closers: list[Callable[[int], None]] = []
        self._tick_task: asyncio.Task[None] | None = None
        self._users = 0
        self.closed = False

    # -- wiring for sources ------------------------------------------------------------------

    def add_closer(self, closer: Callable[[int], None]) -> None:
        """`closer(now)` runs when lwsobs stops, before remaining spans end as shutdown."""
        self._closers.append(closer)

    def finalized(self, wsi: Wsi) -> None:
        """A connection object was collected while its wsi was live; thread-safe."""
        self._finalized.append(wsi)

    # -- background work ---------------------------------------------------------------------

    def tick(self, now: int | None = None) -> None:
        now = now_ns() if now is None else now
        while self._finalized:
            self.tracker.flag(self._finalized.popleft(), now, LeakRule.FINALIZED)
        self.tracker.tick(now)
        self.leak_log.flush()

    async def _tick_forever(self) -> None:
        while True:
            await asyncio.sleep(self.config.tick_s)
            try:
                self.tick()
            except Exception:
                log.exception("idle tick failed")

    def start(self) -> None:
        """Start the span worker and, inside a running loop, the idle ticker. Idempotent."""
        self._users += 1
        if self.spans is not None:
            self.spans.start()
        if self._tick_task is None or self._tick_task.done():
            self._tick_task = asyncio.get_running_loop().create_task(self._tick_forever())

    async def stop(self) -> None:
        """One user is done (an app cleaned up): stop ticking when the last one goes, flush."""
        self._users = max(0, self._users - 1)
        if self._users == 0 and self._tick_task is not None:
            self._tick_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._tick_task
            self._tick_task = None
        if self.spans is not None:
            await asyncio.get_running_loop().run_in_executor(None, self.spans.flush)

    def close(self) -> None:
        """lwsobs stops: sources judge their own contexts, the rest ends as shutdown, flush."""
        if self.closed:
            return
        self.closed = True
        now = now_ns()
        self.tick(now)
        for closer in self._closers:
            try:
                closer(now)
            except Exception:
                log.exception("closing a source failed")
        self.tracker.shutdown(now)
        self.leak_log.flush()
        if self.spans is not None:
            self.spans.shutdown()


_default: Observer | None = None


def default_observer() -> Observer:
    """The process-wide Observer, configured from the environment, closed at exit."""
    global _default
    if _default is None:
        _default = Observer(register_global=True)
        atexit.register(_default.close)
    return _default
