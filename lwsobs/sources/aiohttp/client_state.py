"""What the aiohttp client hooks mean for the core: connections, transactions and leak rules.

`aiohttp_client.py` knows how aiohttp is hooked; this module knows what each hook means. A
ConnectorState is one instrumented pool (a session's connector): its context, the connections
requests hold now, and the leak rules on them. It holds no aiohttp object: the loop's timer and
the GC finalizer reach it, and must not keep an abandoned session alive.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import itertools
import logging
import threading
import weakref
from collections import deque
from collections.abc import Callable
from time import monotonic_ns
from typing import TYPE_CHECKING, Any, Protocol

from aiohttp.client_reqrep import ClientRequest
from yarl import URL

from lwsobs.clock import ANCHOR_NS, now_ns
from lwsobs.core.model import Wsi
from lwsobs.core.policy import NS
from lwsobs.core.roles import LeakRule, Role
from lwsobs.sources.aiohttp.client_metrics import client_metrics
from lwsobs.sources.aiohttp.client_site import Site, format_site

if TYPE_CHECKING:
    from lwsobs.observer import Observer

log = logging.getLogger("lwsobs.aiohttp.client")

_context_numbers = itertools.count(1)
_MAX_ERROR_TEXT = 256


class Conn(Protocol):
    """What the bookkeeping needs of a connection (aiohttp_client.InstrumentedResponseHandler)."""

    _lwsobs_state: ConnectorState | None
    _lwsobs_wsi: Wsi | None
    _lwsobs_status: int | None  # the status of the response parsed last
    _lwsobs_lost: bool  # connection_lost came before the wsi was opened
    transport: asyncio.Transport | None


class Attempt:
    """One connect attempt's times, shared by the connect and DNS hooks through a ContextVar."""

    __slots__ = ("dns_end", "dns_start", "start")

    def __init__(self, start: int) -> None:
        self.start = start
        self.dns_start: int | None = None
        self.dns_end: int | None = None


class Acquisition:
    """A connection held by a request: what a leak report names."""

    __slots__ = ("at_ns", "method", "site", "url")

    def __init__(self, at_ns: int, method: str, url: URL, site: Site | None) -> None:
        self.at_ns = at_ns
        self.method = method
        self.url = url  # a yarl URL refers to nothing else; formatted only for a leak
        self.site = site

    def describe(self) -> dict[str, Any]:
        attrs: dict[str, Any] = {
            "lws.acquired.method": self.method,
            # the query may carry secrets and is unbounded; credentials and fragment go too
            "lws.acquired.url": str(self.url.with_query(None).with_fragment(None).with_user(None)),
        }
        at = format_site(self.site)
        if at is not None:
            attrs["lws.acquired.at"] = at
        return attrs


class ClientInstrumentation:
    """Sessions instrumented for one (observer, source): shared settings and deferred work."""

    def __init__(self, observer: Observer, source: str) -> None:
        self.observer = observer
        self.tracker = observer.tracker
        self.ids = observer.ids
        # With spans on, requests carry the traceparent of their transaction span.
        self.builder = observer.spans.builder if observer.spans is not None else None
        self.source = source
        limit = observer.config.client_acquire_limit_s
        self.acquire_limit_ns = None if limit is None else int(limit * NS)
        self.metrics = client_metrics(observer)
        self.connectors: dict[ConnectorState, None] = {}  # open ones, in creation order
        self._deferred: deque[Callable[[], None]] = deque()
        self._started: asyncio.AbstractEventLoop | None = None
        observer.add_closer(self.close)

    def start_observer(self, loop: asyncio.AbstractEventLoop) -> None:
        """A client-only program has no app to start the observer: the first connect does."""
        if self._started is not loop and not self.observer.closed:
            self._started = loop
            self.observer.start()

    def defer(self, work: Callable[[], None], loop: asyncio.AbstractEventLoop) -> None:
        """Run `work` on the loop soon. Thread-safe: garbage collection calls it anywhere."""
        self._deferred.append(work)
        # A closed loop raises: then the next drain (or the closer) runs it.
        with contextlib.suppress(RuntimeError):
            loop.call_soon_threadsafe(self.drain)

    def drain(self) -> None:
        while self._deferred:
            work = self._deferred.popleft()
            try:
                work()
            except Exception:
                log.exception("deferred client bookkeeping failed")

    def close(self, now: int) -> None:
        """lwsobs stops: a session never closed leaves certain leaks, like a server would."""
        self.drain()
        for state in list(self.connectors):
            state.abandoned(now)
        _forget(self)


class ConnectorState:
    """One instrumented connector (a session's pool): its context and what is acquired now.

    It holds no aiohttp object (see the module docstring); connections point to it instead.
    """

    def __init__(self, inst: ClientInstrumentation, loop: asyncio.AbstractEventLoop) -> None:
        self.inst = inst
        self.tracker = inst.tracker
        self.context = inst.tracker.context(inst.source, f"client-{next(_context_numbers)}")
        self.loop = loop
        self.thread = threading.get_ident()
        self.acquired: dict[Wsi, Acquisition] = {}  # in acquisition order
        self.closed = False
        self.collected = False
        self._timer: asyncio.TimerHandle | None = None

    # -- connections -------------------------------------------------------------------------

    def _server_attrs(self, req: ClientRequest) -> dict[str, Any]:
        return {"server.address": req.url.raw_host or "", "server.port": req.port or 0}

    def connected(self, proto: Conn, attempt: Attempt, req: ClientRequest) -> None:
        """A new connection is up: its wsi starts when the connect attempt started."""
        if self.closed:
            return
        now = now_ns()
        source = self.context.source
        metrics = self.inst.metrics
        attrs = self._server_attrs(req)
        dns_start, dns_end = attempt.dns_start, attempt.dns_end
        if dns_start is not None and dns_end is not None:
            attrs["lws.dns.duration_ns"] = dns_end - dns_start
            metrics.observe(source, "dns", dns_end - dns_start)
        connect_ns = now - (dns_end if dns_end is not None else attempt.start)
        attrs["lws.connect.duration_ns"] = connect_ns
        metrics.observe(source, "connect", connect_ns)
        transport = proto.transport
        wsi = self.tracker.open(
            self.context,
            Role.H1_CLIENT,
            attempt.start,
            peer=transport.get_extra_info("peername") if transport is not None else None,
            local=transport.get_extra_info("sockname") if transport is not None else None,
            attrs=attrs,
        )
        proto._lwsobs_state = self
        proto._lwsobs_wsi = wsi
        if proto._lwsobs_lost:  # it closed before the connect call returned
            self.tracker.destroy(wsi, now)

    def connect_failed(self, attempt: Attempt, req: ClientRequest, exc: BaseException) -> None:
        """A connect attempt failed: a wsi that lived from the attempt to the failure."""
        if self.closed:
            return
        attrs = self._server_attrs(req)
        attrs["error.type"] = type(exc).__qualname__
        attrs["lws.connect.error"] = str(exc)[:_MAX_ERROR_TEXT]
        wsi = self.tracker.open(self.context, Role.H1_CLIENT, attempt.start, attrs=attrs)
        self.tracker.destroy(wsi, now_ns())
        self.inst.metrics.connect_failed(self.context.source)

    def acquired_for(self, proto: Conn, req: ClientRequest, called: int, site: Site | None) -> None:
        """A request got its connection (new or pooled): the transaction starts."""
        wsi = proto._lwsobs_wsi
        if wsi is None or wsi.end_ns is not None or self.closed:
            return
        now = ANCHOR_NS + monotonic_ns()
        headers = req.headers
        # A pooled connection may have been waited for (the connector's limit): that wait is
        # the queue time. A new one was created for this request: its connect time is on the
        # connection span, not the transaction.
        txn = self.tracker.bind(
            wsi,
            now,
            called if wsi.created_ns < called else now,
            req.method,
            req.url.raw_path_qs,
            headers.get("traceparent"),
        )
        proto._lwsobs_status = None
        self.acquired[wsi] = Acquisition(now, req.method, req.url, site)
        builder = self.inst.builder
        if builder is not None and txn is not None:
            # The server joins the trace under this transaction span, sampled or not as this
            # side decided (the span sink asks the same sampler once, and keeps the answer).
            trace = self.inst.ids.txn_trace(txn)
            flags = "01" if builder.transaction_sampled(txn) else "00"
            headers["traceparent"] = f"00-{trace.trace_id:032x}-{trace.span_id:016x}-{flags}"
        limit = self.inst.acquire_limit_ns
        if self._timer is None and limit is not None:
            # Every acquisition has the same limit: a pending timer fires no later than this
            # one's deadline and reschedules itself for the next.
            self._timer = self.loop.call_later(limit / NS, self._check)

    def released(self, proto: Conn) -> bool:
        """The request let go of its connection. True: close it instead of pooling it.

        A suspect is closed: its span already ended, so it must not carry further requests,
        and its connection_lost resolves the suspicion.
        """
        wsi = proto._lwsobs_wsi
        if wsi is None or self.closed or self.collected:
            return False
        if threading.get_ident() != self.thread:
            return False  # a finalizer on another thread: connection_lost will end the wsi
        self.acquired.pop(wsi, None)
        if wsi.txn is not None:
            status = proto._lwsobs_status
            error = None if status is not None else "no_response"
            self.tracker.drop(wsi, ANCHOR_NS + monotonic_ns(), status, None, error)
        return wsi.leak == LeakRule.UNRELEASED and wsi.end_ns is None

    def upgraded(self, proto: Conn) -> None:
        """Websocket frames from now on: held by the websocket for its whole life, no leak."""
        wsi = proto._lwsobs_wsi
        if wsi is None or wsi.end_ns is not None:
            return
        now = now_ns()
        self.acquired.pop(wsi, None)
        self.tracker.drop(wsi, now, 101)
        self.tracker.upgrade(wsi, Role.WS_CLIENT, now)

    def lost(self, proto: Conn) -> None:
        wsi = proto._lwsobs_wsi
        if wsi is None:
            return
        self.inst.drain()  # a collected session's verdict comes before its connections close
        self.acquired.pop(wsi, None)
        self.tracker.destroy(wsi, now_ns())

    # -- leaks -------------------------------------------------------------------------------

    def _flag(self, wsi: Wsi, acquisition: Acquisition, now: int, rule: LeakRule) -> None:
        attrs = wsi.attrs
        if wsi.leak is None and wsi.end_ns is None and attrs is not None:
            attrs.update(acquisition.describe())  # before the flag ends the span
        self.tracker.flag(wsi, now, rule)

    def _check(self) -> None:
        """The timer: flag what was held past the limit, then wait for the next deadline."""
        self._timer = None
        limit = self.inst.acquire_limit_ns
        if self.closed or limit is None:
            return
        now = now_ns()
        next_due: int | None = None
        for wsi, acquisition in list(self.acquired.items()):
            if wsi.leak is not None or wsi.end_ns is not None:
                continue
            due = acquisition.at_ns + limit
            if due <= now:
                self._flag(wsi, acquisition, now, LeakRule.UNRELEASED)
            elif next_due is None or due < next_due:
                next_due = due
        if next_due is not None:
            self._timer = self.loop.call_later((next_due - now) / NS, self._check)

    def closing(self, from_finalizer: bool) -> None:
        """The connector closes: what is still acquired leaked (session_closed)."""
        if self.closed or self.collected:
            return
        if from_finalizer or threading.get_ident() != self.thread:
            self.connector_collected()  # BaseConnector.__del__ closes a collected pool
            return
        now = now_ns()
        for wsi, acquisition in list(self.acquired.items()):
            self._flag(wsi, acquisition, now, LeakRule.SESSION_CLOSED)
        self._finish(now, graceful=True)

    def connector_collected(self) -> None:
        """weakref.finalize of the connector; any thread, maybe inside another operation."""
        if self.closed or self.collected:
            return
        self.collected = True  # from now on the __del__ paths of aiohttp leave the tracker alone
        still = list(self.acquired.items())
        self.inst.defer(functools.partial(self._judge_collected, still), self.loop)

    def _judge_collected(self, still: list[tuple[Wsi, Acquisition]]) -> None:
        if self.closed:
            return
        now = now_ns()
        for wsi, acquisition in still:
            self._flag(wsi, acquisition, now, LeakRule.SESSION_COLLECTED)
        self._finish(now, graceful=True)

    def abandoned(self, now: int) -> None:
        """lwsobs stops with this session never closed: its live wsis are certain leaks."""
        if self.closed:
            return
        for wsi, acquisition in list(self.acquired.items()):
            self._flag(wsi, acquisition, now, LeakRule.CONTEXT_DESTROYED)
        self._finish(now, graceful=False)

    def _finish(self, now: int, *, graceful: bool) -> None:
        self.closed = True
        self.acquired.clear()
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self.tracker.context_destroyed(self.context, now, graceful=graceful)
        self.inst.connectors.pop(self, None)


# -- one ClientInstrumentation per (observer, source) ----------------------------------------

_registry: weakref.WeakKeyDictionary[Observer, dict[str, ClientInstrumentation]] = (
    weakref.WeakKeyDictionary()
)


def client_instrumentation(observer: Observer, source: str) -> ClientInstrumentation:
    """The one ClientInstrumentation per (observer, source)."""
    by_source = _registry.setdefault(observer, {})
    inst = by_source.get(source)
    if inst is None:
        inst = by_source[source] = ClientInstrumentation(observer, source)
    return inst


def _forget(inst: ClientInstrumentation) -> None:
    by_source = _registry.get(inst.observer)
    if by_source is not None and by_source.get(inst.source) is inst:
        del by_source[inst.source]
