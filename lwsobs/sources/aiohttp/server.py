"""The aiohttp server source: every connection, listening socket and request as core calls.

aiohttp has no connection signals (aiohttp#2685), so this hooks the low-level pieces:
- a RequestHandler subclass (one per TCP connection): connection_made/lost open and destroy the
  wsi, data_received stamps the arrival of each parsed request (for pipelining queue waits),
  the request factory binds a transaction when a request is taken off the queue, log_access
  (called for every request, parser 400s included) drops it, set_parser marks the websocket
  upgrade, and __del__ catches a connection object collected without its close callback;
- an aiohttp Server subclass that builds those handlers and marks graceful shutdown;
- the start/stop of aiohttp's sites, for the listening sockets (role `listen`).
Nothing here builds a span: it only calls the Tracker, which bumps integers and appends facts.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
from collections import deque
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

from aiohttp import web, web_protocol, web_runner
from aiohttp.web_protocol import RequestHandler
from aiohttp.web_server import Server
from mypy_extensions import mypyc_attr

from lwsobs.clock import now_ns
from lwsobs.core.model import Context, Wsi
from lwsobs.core.roles import Role
from lwsobs.core.tracker import Tracker

if TYPE_CHECKING:
    from lwsobs.observer import Observer

log = logging.getLogger("lwsobs.aiohttp")

# Read as an object: aiohttp types it as the pure-Python message tuple, while its C parser's
# message type is what runs (a compiled module would check the declared type).
_ERROR_MESSAGE: object = getattr(web_protocol, "ERROR")  # noqa: B009
# Called directly rather than through super(): these run for every read and every request.
_base_data_received = RequestHandler.data_received
_base_log_access = RequestHandler.log_access
_context_numbers = itertools.count(1)


class ServerInstrumentation:
    """What `instrument(app)` attaches: the observer, the source name, the server contexts."""

    def __init__(self, observer: Observer, source: str) -> None:
        self.observer = observer
        self.tracker = observer.tracker
        self.source = source
        # Route and traceparent only feed spans: without spans, requests skip finding them.
        self.detail = observer.spans is not None
        self.contexts: list[Context] = []
        observer.add_closer(self.close)

    def new_context(self) -> Context:
        ctx = self.tracker.context(self.source, f"server-{next(_context_numbers)}")
        self.contexts.append(ctx)
        return ctx

    def close(self, now: int) -> None:
        """lwsobs is stopping: a server never shut down gracefully leaves certain leaks."""
        for ctx in self.contexts:
            if not ctx.destroyed:
                self.tracker.context_destroyed(ctx, now, graceful=ctx.closing)
        self.contexts.clear()


def _route_of(request: Any) -> str | None:
    """The matched resource's canonical form (`/items/{id}`), never the raw path."""
    try:
        return str(request._match_info.route.resource.canonical)
    except AttributeError:  # a parser error has no match info; a sub-app route may lack one
        return None


class ConnectionHooks:
    """What the per-request hooks need for one connection, in one compiled object.

    The handler is a subclass of aiohttp's Python class, so each of its attributes is a
    dictionary lookup; this holds the wsi, the tracker and the pipelining state as fields, and
    its `make_request` is the connection's request factory itself (aiohttp calls it directly).
    """

    def __init__(self, tracker: Tracker, factory: Any, detail: bool) -> None:
        self.tracker = tracker
        self.factory = factory  # aiohttp's own request factory, called after the bind
        self.detail = detail  # route and traceparent only feed spans
        self.wsi: Wsi | None = None
        # (first message ordinal, last ordinal, arrival ns) per read that parsed messages
        self.arrivals: deque[tuple[int, int, int]] = deque()
        self.dequeued = 0

    def received(self, before: int, after: int) -> None:
        """A read parsed requests `before + 1 .. after`: they arrived now."""
        self.arrivals.append((before + 1, after, now_ns()))

    def make_request(
        self, message: Any, payload: Any, protocol: Any, writer: Any, task: Any
    ) -> Any:
        """aiohttp takes a request off its queue: the transaction starts (HTTP_BIND)."""
        now = now_ns()
        ordinal = self.dequeued = self.dequeued + 1
        arrived = now
        arrivals = self.arrivals
        while arrivals:
            first, last, at = arrivals[0]
            if last < ordinal:
                arrivals.popleft()
                continue
            if first <= ordinal:
                arrived = at
            break
        wsi = self.wsi
        if wsi is not None:
            if message is _ERROR_MESSAGE:
                self.tracker.bind(wsi, now, arrived)
            else:
                self.tracker.bind(
                    wsi,
                    now,
                    arrived,
                    message.method,
                    message.path,
                    message.headers.get("traceparent") if self.detail else None,
                )
        return self.factory(message, payload, protocol, writer, task)

    def responded(self, request: Any, response: Any) -> None:
        """A response was written (log_access): the transaction ends."""
        wsi = self.wsi
        if wsi is None:
            return
        txn = wsi.txn
        if txn is not None:
            self.tracker.drop(
                wsi,
                now_ns(),
                response.status,
                _route_of(request) if self.detail else None,
                None if txn.method is not None else "invalid_request",
            )


@mypyc_attr(native_class=False)  # a subclass of aiohttp's Python class: compiled methods only
class InstrumentedRequestHandler(RequestHandler):
    """One per TCP connection; the wsi's lifetime is this protocol's lifetime."""

    def __init__(self, manager: InstrumentedServer, **kwargs: Any) -> None:
        self._lwsobs_hooks: ConnectionHooks | None = None
        super().__init__(manager, **kwargs)
        self._lwsobs = manager
        factory = self._request_factory
        assert factory is not None  # set from the manager in RequestHandler.__init__
        hooks = self._lwsobs_hooks = ConnectionHooks(manager.tracker, factory, manager.detail)
        self._request_factory = hooks.make_request

    @property
    def _lwsobs_wsi(self) -> Wsi | None:
        hooks = self._lwsobs_hooks
        return None if hooks is None else hooks.wsi

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        manager = self._lwsobs
        hooks = self._lwsobs_hooks
        assert hooks is not None
        hooks.wsi = manager.tracker.open(
            manager.lwsobs_context,
            Role.H1_SERVER,
            now_ns(),
            peer=transport.get_extra_info("peername"),
            local=transport.get_extra_info("sockname"),
        )
        super().connection_made(transport)

    def connection_lost(self, exc: BaseException | None) -> None:
        wsi = self._lwsobs_wsi
        if wsi is not None:
            self._lwsobs.tracker.destroy(wsi, now_ns())
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        before = self._request_count
        _base_data_received(self, data)
        after = self._request_count
        if after != before:
            hooks = self._lwsobs_hooks
            if hooks is not None:
                hooks.received(before, after)

    def log_access(self, request: Any, response: Any, time: float | None) -> None:
        """Called for every request after its response was written: the transaction ends."""
        # aiohttp < 3.12 has no _logging_enabled; its log_access checks the access logger itself
        if getattr(self, "_logging_enabled", True):
            _base_log_access(self, request, response, time)
        hooks = self._lwsobs_hooks
        if hooks is not None:
            hooks.responded(request, response)

    def set_parser(self, parser: Any, *args: Any, **kwargs: Any) -> None:
        # aiohttp < 3.14 takes the parser alone; 3.14 adds data_received_cb
        super().set_parser(parser, *args, **kwargs)
        wsi = self._lwsobs_wsi
        if wsi is not None:
            tracker = self._lwsobs.tracker
            now = now_ns()
            tracker.drop(wsi, now, status=101, route=_route_of(self._current_request))
            tracker.upgrade(wsi, Role.WS_SERVER, now)

    def __del__(self) -> None:
        hooks = getattr(self, "_lwsobs_hooks", None)
        wsi = None if hooks is None else hooks.wsi
        if wsi is not None and wsi.end_ns is None:
            # GC may run on any thread: hand the verdict to the observer's next tick.
            self._lwsobs.instrumentation.observer.finalized(wsi)


@mypyc_attr(native_class=False)
class InstrumentedServer(Server):
    """The low-level aiohttp server of an instrumented app: one lwsobs context."""

    def __init__(
        self,
        handler: Any,
        *,
        instrumentation: ServerInstrumentation,
        **kwargs: Any,
    ) -> None:
        super().__init__(handler, **kwargs)
        self.instrumentation = instrumentation
        self.tracker = instrumentation.tracker
        self.detail = instrumentation.detail
        self.lwsobs_context = instrumentation.new_context()
        self._listen: dict[int, list[Wsi]] = {}

    def __call__(self) -> RequestHandler:
        handler_class = InstrumentedRequestHandler
        try:
            return handler_class(self, loop=self._loop, **self._kwargs)
        except TypeError:
            kwargs = {k: v for k, v in self._kwargs.items() if k in ("debug", "access_log_class")}
            log.warning("custom handler kwargs %r rejected, using %r", self._kwargs, kwargs)
            return handler_class(self, loop=self._loop, **kwargs)

    def pre_shutdown(self) -> None:
        self.tracker.context_closing(self.lwsobs_context)
        super().pre_shutdown()

    async def shutdown(self, timeout: float | None = None) -> None:
        self.tracker.context_closing(self.lwsobs_context)
        await super().shutdown(timeout)
        # Transports closed just now report connection_lost on the next loop turns.
        for _ in range(3):
            await asyncio.sleep(0)
        self.tracker.context_destroyed(self.lwsobs_context, now_ns(), graceful=True)

    def listen_started(self, site: web_runner.BaseSite) -> None:
        server = site._server
        sockets = getattr(server, "sockets", None) or ()
        now = now_ns()
        self._listen[id(site)] = [
            self.tracker.open(self.lwsobs_context, Role.LISTEN, now, local=sock.getsockname())
            for sock in sockets
        ]

    def listen_stopped(self, site: web_runner.BaseSite) -> None:
        now = now_ns()
        for wsi in self._listen.pop(id(site), ()):
            self.tracker.destroy(wsi, now)


def _instrumented_server(site: web_runner.BaseSite) -> InstrumentedServer | None:
    server = site._runner.server
    return server if isinstance(server, InstrumentedServer) else None


SiteMethod = Callable[[Any], Awaitable[None]]


def _wrap_start(start: SiteMethod) -> SiteMethod:
    async def start_and_observe(self: web_runner.BaseSite) -> None:
        await start(self)
        server = _instrumented_server(self)
        if server is not None:
            server.listen_started(self)

    start_and_observe.__lwsobs__ = True  # type: ignore[attr-defined]
    return start_and_observe


def _wrap_stop(stop: SiteMethod) -> SiteMethod:
    async def stop_and_observe(self: web_runner.BaseSite) -> None:
        server = _instrumented_server(self)
        await stop(self)
        if server is not None:
            server.listen_stopped(self)

    stop_and_observe.__lwsobs__ = True  # type: ignore[attr-defined]
    return stop_and_observe


def _patch_sites() -> None:
    """Listening sockets have no aiohttp signal: wrap the sites' start/stop once per process."""
    for cls in (web_runner.TCPSite, web_runner.UnixSite, web_runner.SockSite):
        if not getattr(cls.start, "__lwsobs__", False):
            setattr(cls, "start", _wrap_start(cls.start))  # noqa: B010
    base = web_runner.BaseSite
    if not getattr(base.stop, "__lwsobs__", False):
        setattr(base, "stop", _wrap_stop(base.stop))  # noqa: B010


def instrument_server(app: web.Application, instrumentation: ServerInstrumentation) -> None:
    """Make `app` build an InstrumentedServer when a runner sets it up."""
    _patch_sites()
    make_handler = app._make_handler

    def make_instrumented_handler(**kwargs: Any) -> Server:
        plain = make_handler(**kwargs)
        return InstrumentedServer(
            plain.request_handler,
            instrumentation=instrumentation,
            request_factory=plain.request_factory,
            handler_cancellation=plain.handler_cancellation,
            loop=plain._loop,
            **plain._kwargs,
        )

    # Application warns on unknown attributes only in debug mode; this one is deliberate.
    object.__setattr__(app, "_make_handler", make_instrumented_handler)
