"""The aiohttp client source: every connection an instrumented ClientSession opens is a wsi.

aiohttp's TraceConfig signals carry no connection identity and there is no close signal
(aiohttp#2685), so this hooks the session's connector *instance* (no class or module global is
patched unless `instrument_all_clients` is asked for). Every hook exists in aiohttp 3.10 to 3.14
(set_parser gained an argument in 3.14: it is passed through):

| hook on the connector                          | core call                                     |
|------------------------------------------------|-----------------------------------------------|
| `_create_connection` (`_resolve_host` timed)   | open(h1-client), backdated to the start of    |
|                                                | the connect, with DNS and connect time; a     |
|                                                | failed connect is opened and destroyed at once|
| `_factory` builds InstrumentedResponseHandler: |                                               |
|   `connection_lost`                            | destroy                                       |
|   `set_parser` (websocket frames from now on)  | drop(101), upgrade(ws-client)                 |
| `connect` (a request acquires a connection)    | bind(method, path); outgoing `traceparent`    |
| `_release` (response read, released, closed)   | drop(status)                                  |
| a timer per connector                          | held past the limit: flag(unreleased), suspect|
| `_close` (session.close())                     | flag(session_closed) what is still acquired,  |
|                                                | then context_destroyed(graceful)              |
| weakref.finalize(connector)                    | flag(session_collected), deferred to the loop |

What each hook means for the core (and the leak rules) is in client_state.py. A leak names
where its connection was acquired: method, URL without query, and the user's source line, taken
(client_site.py) when the request acquires it.
"""

from __future__ import annotations

import contextvars
import functools
import logging
import sys
import weakref
from collections.abc import Callable
from time import monotonic_ns
from typing import TYPE_CHECKING, Any

from aiohttp.client_proto import ResponseHandler
from aiohttp.client_reqrep import ClientRequest
from aiohttp.connector import BaseConnector, Connection

from lwsobs.clock import ANCHOR_NS, now_ns
from lwsobs.core.model import Wsi
from lwsobs.sources.aiohttp.client_site import caller_site
from lwsobs.sources.aiohttp.client_state import (
    Attempt,
    ClientInstrumentation,
    ConnectorState,
    client_instrumentation,
)

if TYPE_CHECKING:
    from lwsobs.observer import Observer

log = logging.getLogger("lwsobs.aiohttp.client")

DEFAULT_SOURCE = "aiohttp-client"


_ATTEMPT: contextvars.ContextVar[Attempt | None] = contextvars.ContextVar(
    "lwsobs_connect_attempt", default=None
)


class InstrumentedResponseHandler(ResponseHandler):
    """aiohttp's client protocol, one per connection: the wsi lives as long as it is connected."""

    __slots__ = ("_lwsobs_lost", "_lwsobs_state", "_lwsobs_status", "_lwsobs_wsi")

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self._lwsobs_state: ConnectorState | None = None
        self._lwsobs_wsi: Wsi | None = None
        # The status of the response parsed last: a small body is read to its end, and the
        # connection released, before aiohttp's ClientResponse even sets its status.
        self._lwsobs_status: int | None = None
        self._lwsobs_lost = False
        super().__init__(*args, **kwargs)

    def feed_data(self, data: Any, *args: Any) -> None:
        """The parser hands over a (message, payload) pair: one per response head."""
        if type(data) is tuple and data:
            self._lwsobs_status = getattr(data[0], "code", None)
        super().feed_data(data, *args)

    def connection_lost(self, exc: BaseException | None) -> None:
        # aiohttp first: a body read until EOF completes (and is released) in here.
        super().connection_lost(exc)
        state = self._lwsobs_state
        if state is None:
            self._lwsobs_lost = True
            return
        try:
            state.lost(self)
        except Exception:
            log.exception("lwsobs: client connection_lost bookkeeping failed")

    def set_parser(self, *args: Any, **kwargs: Any) -> None:
        super().set_parser(*args, **kwargs)
        state = self._lwsobs_state
        if state is not None:
            try:
                state.upgraded(self)
            except Exception:
                log.exception("lwsobs: client upgrade bookkeeping failed")


# -- wiring ------------------------------------------------------------------------------------


def connector_state(connector: BaseConnector) -> ConnectorState | None:
    state = vars(connector).get("_lwsobs_state")
    return state if isinstance(state, ConnectorState) else None


def instrument_connector(
    connector: BaseConnector, inst: ClientInstrumentation
) -> ConnectorState | None:
    """Hook `connector`'s instance (idempotent). None if its protocol factory is not aiohttp's."""
    state = connector_state(connector)
    if state is not None:
        return state
    if connector.closed:
        raise RuntimeError("the session's connector is closed")
    factory = getattr(connector, "_factory", None)
    if not (isinstance(factory, functools.partial) and factory.func is ResponseHandler):
        log.warning("lwsobs: %r builds its own protocols; not instrumented", connector)
        return None
    state = ConnectorState(inst, connector._loop)
    make: Callable[..., ResponseHandler] = InstrumentedResponseHandler
    connector._factory = functools.partial(make, *factory.args, **factory.keywords)
    _hook(connector, state)
    weakref.finalize(connector, state.connector_collected).atexit = False
    inst.connectors[state] = None
    vars(connector)["_lwsobs_state"] = state
    return state


def _hook(connector: BaseConnector, state: ConnectorState) -> None:
    """Wrap the connector's methods on the instance; each wrapper calls the original."""
    inst = state.inst
    original_connect = connector.connect
    original_create = connector._create_connection
    original_release = connector._release
    original_close = connector._close
    original_resolve = getattr(connector, "_resolve_host", None)

    async def connect(req: ClientRequest, *args: Any, **kwargs: Any) -> Connection:
        called = ANCHOR_NS + monotonic_ns()
        site = caller_site()
        conn = await original_connect(req, *args, **kwargs)
        proto = conn.protocol
        if isinstance(proto, InstrumentedResponseHandler) and proto._lwsobs_state is state:
            try:
                state.acquired_for(proto, req, called, site)
            except Exception:
                log.exception("lwsobs: client acquire bookkeeping failed")
        return conn

    async def create_connection(req: ClientRequest, *args: Any, **kwargs: Any) -> Any:
        inst.drain()
        inst.start_observer(state.loop)
        attempt = Attempt(now_ns())
        token = _ATTEMPT.set(attempt)
        try:
            proto = await original_create(req, *args, **kwargs)
        except BaseException as exc:
            try:
                state.connect_failed(attempt, req, exc)
            except Exception:
                log.exception("lwsobs: client connect-failure bookkeeping failed")
            raise
        finally:
            _ATTEMPT.reset(token)
        if isinstance(proto, InstrumentedResponseHandler):
            try:
                state.connected(proto, attempt, req)
            except Exception:
                log.exception("lwsobs: client connect bookkeeping failed")
        return proto

    async def resolve_host(*args: Any, **kwargs: Any) -> Any:
        assert original_resolve is not None
        attempt = _ATTEMPT.get()
        if attempt is None:
            return await original_resolve(*args, **kwargs)
        attempt.dns_start = now_ns()
        try:
            return await original_resolve(*args, **kwargs)
        finally:
            attempt.dns_end = now_ns()

    def release(key: Any, protocol: ResponseHandler, *args: Any, **kwargs: Any) -> None:
        if isinstance(protocol, InstrumentedResponseHandler) and protocol._lwsobs_state is state:
            try:
                if state.released(protocol):
                    kwargs["should_close"] = True
            except Exception:
                log.exception("lwsobs: client release bookkeeping failed")
        original_release(key, protocol, *args, **kwargs)

    def close(*args: Any, **kwargs: Any) -> Any:
        try:
            # BaseConnector.__del__ closes a collected pool: that is no session.close()
            state.closing(from_finalizer=sys._getframe(1).f_code.co_name == "__del__")
        except Exception:
            log.exception("lwsobs: client close bookkeeping failed")
        return original_close(*args, **kwargs)

    hooks: dict[str, Callable[..., Any]] = {
        "connect": connect,
        "_create_connection": create_connection,
        "_release": release,
        "_close": close,
    }
    if original_resolve is not None:
        hooks["_resolve_host"] = resolve_host
    vars(connector).update(hooks)


# -- every session -----------------------------------------------------------------------------

_all_clients: tuple[Observer, str] | None = None
_original_session_init: Callable[..., None] | None = None


def instrument_all(observer: Observer, source: str) -> None:
    """Instrument every ClientSession created from now on (wraps ClientSession.__init__)."""
    global _all_clients, _original_session_init
    from aiohttp import ClientSession

    _all_clients = (observer, source)
    if _original_session_init is not None:
        return
    original = ClientSession.__init__

    @functools.wraps(original)
    def init_and_instrument(self: ClientSession, *args: Any, **kwargs: Any) -> None:
        original(self, *args, **kwargs)
        config = _all_clients
        connector = self.connector
        if config is not None and connector is not None:
            try:
                instrument_connector(connector, client_instrumentation(*config))
            except Exception:
                log.exception("lwsobs: could not instrument a ClientSession")

    _original_session_init = original
    setattr(ClientSession, "__init__", init_and_instrument)  # noqa: B010


def uninstrument_all() -> None:
    """Undo instrument_all for sessions created from now on; instrumented ones stay so."""
    global _all_clients, _original_session_init
    from aiohttp import ClientSession

    _all_clients = None
    if _original_session_init is not None:
        setattr(ClientSession, "__init__", _original_session_init)  # noqa: B010
        _original_session_init = None
