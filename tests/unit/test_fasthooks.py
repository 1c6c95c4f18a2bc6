"""The C hooks (lwsobs/sources/_fasthooks.c) against the pure-Python ones, call by call.

The rule: fed the same bytes in the same pieces, with requests taken off the queue at the same
moments and the same clock, FastRequestHandler makes exactly the Tracker calls that the
pure-Python InstrumentedRequestHandler makes (same arguments, same order, same errors) and keeps
the same pipelining state. Here a real handler of a real instrumented app is driven directly,
the way its transport and RequestHandler.start() drive it, so every interleaving is exact;
tests/integration/test_fasthooks_server.py does the same over real sockets. These tests fail
(never skip) when the extension is not built.
"""

from __future__ import annotations

import asyncio
import gc
import logging
import os
import socket
import subprocess
import sys
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from types import SimpleNamespace
from typing import Any

import pytest
from aiohttp import web, web_protocol
from aiohttp.http_writer import StreamWriter
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from lwsobs.clock import ANCHOR_NS, now_ns
from lwsobs.config import Config
from lwsobs.core.model import Wsi
from lwsobs.core.roles import Role
from lwsobs.instrument import instrument
from lwsobs.observer import Observer
from lwsobs.sources import aiohttp_server
from lwsobs.sources.aiohttp_server import InstrumentedRequestHandler, RequestHandler, _route_of
from tests.fasthooks_support import Clock, configure, fast_handler, handler_classes, hooks

TRACEPARENT = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
GET = b"GET /hello?x=1 HTTP/1.1\r\nHost: t\r\ntraceparent: " + TRACEPARENT.encode() + b"\r\n\r\n"
POST = b"POST /items/7 HTTP/1.1\r\nHost: t\r\nContent-Length: 5\r\n\r\nabcde"
PLAIN = b"GET / HTTP/1.1\r\nHost: t\r\n\r\n"
BAD = b"NOT HTTP AT ALL\r\n\r\n"


class Recorder:
    """The observer's real Tracker, with every bind and drop written down (the wsi as 'wsi')."""

    def __init__(self, tracker: Any) -> None:
        self.tracker = tracker
        self.calls: list[tuple[Any, ...]] = []

    def _plain(self, args: tuple[Any, ...]) -> tuple[Any, ...]:
        return tuple("wsi" if isinstance(a, Wsi) else a for a in args)

    def bind(self, *args: Any) -> Any:
        self.calls.append(("bind", *self._plain(args)))
        return self.tracker.bind(*args)

    def drop(self, *args: Any) -> Any:
        self.calls.append(("drop", *self._plain(args)))
        return self.tracker.drop(*args)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.tracker, name)


@dataclass
class Bare:
    """A handler of a real instrumented app with a live wsi and a real socket it never reads
    itself: the test is its transport (data_received) and its RequestHandler.start() (take,
    finish)."""

    handler: Any
    recorder: Recorder
    log: list[str] = field(default_factory=list)

    def feed(self, data: bytes) -> None:
        self.handler.data_received(data)

    def feed_tail(self, data: bytes) -> None:
        """Requests parsed outside data_received, so never stamped: what aiohttp >= 3.14's
        finish_response does with the bytes behind a declined upgrade (the same three lines)."""
        parser = getattr(self.handler, "_parser", None) or self.handler._request_parser
        messages, _, _ = parser.feed_data(data)
        for msg, payload in messages:
            self.handler._request_count += 1
            self.handler._messages.append((msg, payload))

    def take(self) -> Any:
        """What start() does with the next parsed message: the request factory builds it."""
        message, payload = self.handler._messages.popleft()
        if isinstance(message, web_protocol._ErrInfo):
            message = web_protocol.ERROR  # as RequestHandler.start() does
        loop = asyncio.get_running_loop()
        writer = StreamWriter(self.handler, loop)
        return self.handler._request_factory(
            message, payload, self.handler, writer, asyncio.current_task()
        )

    def finish(self, request: Any, status: int = 200) -> None:
        loop = asyncio.get_running_loop()
        self.handler.log_access(request, web.Response(status=status), loop.time())

    def state(self) -> tuple[int, list[tuple[int, int, int]]]:
        """(requests taken, pending arrival stamps), from the deque or from the RequestHook."""
        handler = self.handler
        if type(handler) is InstrumentedRequestHandler:
            return handler._lwsobs_dequeued, list(handler._lwsobs_arrivals)
        hook = handler._lwsobs_state
        assert type(hook) is hooks().RequestHook and handler._request_factory is hook
        return hook.dequeued, list(hook.arrivals)


class ListHandler(logging.Handler):
    def __init__(self, out: list[str]) -> None:
        super().__init__()
        self.out = out

    def emit(self, record: logging.LogRecord) -> None:
        self.out.append(record.getMessage())


@asynccontextmanager
async def loopback_transport() -> AsyncIterator[asyncio.BaseTransport]:
    """The server side of a real TCP connection on 127.0.0.1, for a handler to own: aiohttp's
    requests read their peer from it. Nothing is ever sent on it."""
    listener = socket.create_server(("127.0.0.1", 0))
    client = socket.create_connection(listener.getsockname())
    accepted, _ = listener.accept()
    listener.close()
    loop = asyncio.get_running_loop()
    transport, _ = await loop.connect_accepted_socket(asyncio.Protocol, accepted)
    try:
        yield transport
    finally:
        transport.close()
        client.close()


@asynccontextmanager
async def bare(
    handler_class: type[Any], *, detail: bool = False, access_log: bool = False
) -> AsyncIterator[Bare]:
    observer = Observer(Config(spans=detail, otlp=False))
    app = web.Application()
    instrumentation = instrument(app, observer, metrics_path=None)
    recorder = Recorder(instrumentation.tracker)
    instrumentation.tracker = recorder  # type: ignore[assignment]
    log: list[str] = []
    logger = logging.getLogger(f"lwsobs.test.access.{id(log)}")
    logger.propagate = False
    logger.setLevel(logging.INFO)
    logger.addHandler(ListHandler(log))
    runner = web.AppRunner(app, access_log=logger if access_log else None)
    await runner.setup()
    server = runner.server
    assert isinstance(server, aiohttp_server.InstrumentedServer)
    handler = handler_class(server, loop=asyncio.get_running_loop(), **server._kwargs)
    assert type(handler) is handler_class
    wsi = observer.tracker.open(server.lwsobs_context, Role.H1_SERVER, now_ns())
    handler._lwsobs_wsi = wsi
    try:
        async with loopback_transport() as transport:
            handler.transport = transport  # what connection_made sets, without start()'s task
            yield Bare(handler, recorder, log)
    finally:
        observer.tracker.destroy(wsi, now_ns())
        await runner.cleanup()
        observer.close()


# -- the extension is there and wired in -----------------------------------------------------


@pytest.mark.usefixtures("restore_handler_switch")
def test_fast_path_is_built_and_in_use() -> None:
    fast = fast_handler()
    assert fast.__mro__[1] is InstrumentedRequestHandler
    assert aiohttp_server.use_fast_path(True) is True
    assert aiohttp_server._handler_class is fast
    assert aiohttp_server.use_fast_path(False) is False
    assert aiohttp_server._handler_class is InstrumentedRequestHandler
    # the hooks are method descriptors of the class itself, so CPython specialises their calls
    for name in ("data_received", "log_access"):
        assert type(vars(fast)[name]).__name__ == "method_descriptor"
        assert vars(fast)[name].__objclass__ is fast
    assert fast._lwsobs_state_type is hooks().RequestHook


def test_environment_switch_starts_pure() -> None:
    code = (
        "from lwsobs.sources import aiohttp_server as a; "
        "print(a.FAST_HANDLER is not None, a._handler_class.__name__)"
    )
    for value, expected in (("1", "InstrumentedRequestHandler"), ("0", "FastRequestHandler")):
        env = {**os.environ, "LWSOBS_PURE_PYTHON": value}
        out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)
        assert out.returncode == 0, out.stderr
        assert out.stdout.split() == ["True", expected]


def test_slots_are_read_by_offset_on_the_exact_type() -> None:
    offsets = hooks().offsets()
    for name in ("_request_count", "_lwsobs_wsi", "_lwsobs_state"):
        assert 0 < offsets[name] < fast_handler().__basicsize__, name
    assert len(set(offsets.values())) == len(offsets)
    # aiohttp >= 3.12 has _logging_enabled; older ones log whenever an access logger is set
    has_flag = hasattr(RequestHandler, "_logging_enabled")
    assert (offsets["_logging_enabled"] > 0) is has_flag


def test_configure_refuses_a_handler_without_the_slots() -> None:
    class NotAHandler:
        pass

    with pytest.raises(TypeError, match="_request_count"):
        hooks().configure(
            NotAHandler,
            ANCHOR_NS,
            web_protocol.ERROR,
            aiohttp_server._base_data_received,
            aiohttp_server._base_log_access,
            None,
        )
    with pytest.raises(TypeError):
        hooks().configure(fast_handler(), "0", None, len, len, None)
    with pytest.raises(TypeError):
        hooks().configure(fast_handler(), 0, None, len, len, 5)
    with pytest.raises(TypeError):
        hooks().RequestHook(None, object(), False)
    assert hooks().offsets()["_request_count"] > 0  # a refused configure changed nothing


class Sentinel:
    """Something a weakref can watch, placed in a reference cycle through a RequestHook."""


def test_a_cycle_through_a_request_hook_is_collected() -> None:
    """The hook tells the collector what it holds (factory, tracker, bind, drop), so a cycle
    through it is found and freed; one it did not report would leak."""
    import weakref

    gone = []
    for holder in ("factory", "tracker"):
        sentinel = Sentinel()
        box: list[Any] = [sentinel]
        tracker = SimpleNamespace(bind=len, drop=len, box=box)
        if holder == "factory":
            hook = hooks().RequestHook(lambda *a, box=box: box, tracker, False)
        else:
            hook = hooks().RequestHook(len, tracker, False)
        box.append(hook)  # sentinel's box -> hook -> (factory or tracker) -> box
        assert hook.bind is len and hook.drop is len
        watch = weakref.ref(sentinel)
        del sentinel, box, tracker, hook
        gc.collect()
        gone.append(watch() is None)
    assert gone == [True, True]


# -- differential: the same program, the same calls --------------------------------------------


class Tail(bytes):
    """A program step: bytes parsed without a read (Bare.feed_tail)."""


# A program is a list of steps: bytes are fed as one read; "take" takes the next parsed message
# off the queue (request factory); "finish" ends the oldest taken request (log_access).
Step = bytes | str


async def run_program(
    handler_class: type[Any],
    program: list[Step],
    clock: Clock,
    *,
    detail: bool,
    access_log: bool = False,
) -> list[Any]:
    """Everything observable, step by step: Tracker calls, pipelining state, errors, log lines."""
    clock.reads = 0
    seen: list[Any] = []
    async with bare(handler_class, detail=detail, access_log=access_log) as b:
        taken: list[Any] = []
        for step in program:
            try:
                if isinstance(step, Tail):
                    b.feed_tail(step)
                elif isinstance(step, bytes):
                    b.feed(step)
                elif step == "take":
                    if b.handler._messages:
                        taken.append(b.take())
                elif step == "finish" and taken:
                    request = taken.pop(0)
                    b.finish(request, 404 if request.path.startswith("/items") else 200)
            except Exception as exc:  # the same error from both paths is part of the contract
                seen.append(("raised", type(exc).__name__, str(exc)))
            seen.append((step, b.state(), list(b.recorder.calls)))
        seen.append(("log", b.log))
    return seen


async def both_agree(
    program: list[Step], clock: Clock, *, detail: bool, access_log: bool = False
) -> list[Any]:
    results = {
        name: await run_program(cls, program, clock, detail=detail, access_log=access_log)
        for name, cls in handler_classes().items()
    }
    assert results["fast"] == results["pure"]
    assert results["fast-subclass"] == results["pure"]
    return results["pure"]


def calls_of(result: list[Any]) -> list[Any]:
    return result[-2][2]


TAKE_FINISH: list[Step] = ["take", "finish"]
PROGRAMS: dict[str, list[Step]] = {
    "one at a time": [GET, *TAKE_FINISH, PLAIN, *TAKE_FINISH],
    "three pipelined in one read": [GET + PLAIN + GET, *TAKE_FINISH, "take", "take", "finish"],
    "a request split across reads": [GET[:7], GET[7:30], GET[30:], *TAKE_FINISH],
    "two and a half, then the rest": [GET + POST + PLAIN[:10], "take", PLAIN[10:], "take", "take"],
    "body in pieces parses nothing new": [POST[:60], POST[60:63], POST[63:], *TAKE_FINISH],
    "ten reads before the first take": [*[PLAIN] * 10, *TAKE_FINISH * 10],
    "reads and takes interleaved past the inline ring": [
        *[PLAIN] * 4,
        *["take"] * 2,
        *[PLAIN] * 3,
        *["take"] * 5,
        *["finish"] * 7,
        PLAIN,
        *TAKE_FINISH,
    ],
    "a malformed request": [PLAIN, *TAKE_FINISH, BAD, *TAKE_FINISH],
    "finish without take": ["finish", GET, "finish", *TAKE_FINISH, "finish"],
    "an empty read": [b"", PLAIN, b"", *TAKE_FINISH],
    # the unstamped request is taken while a later read's stamp is pending: it gets `now`
    "a request parsed without a read": [PLAIN, Tail(PLAIN), PLAIN, *TAKE_FINISH * 3],
}


@pytest.mark.parametrize("detail", [False, True], ids=["metrics", "spans"])
@pytest.mark.parametrize("name", PROGRAMS)
async def test_programs_make_the_same_calls(name: str, detail: bool, clock: Clock) -> None:
    result = await both_agree(PROGRAMS[name], clock, detail=detail)
    assert any(call[0] == "bind" for call in calls_of(result))


async def test_pipelined_requests_get_their_reads_stamp(clock: Clock) -> None:
    """What the agreement means: the third request of a read waits from that read's stamp."""
    result = await both_agree(PROGRAMS["three pipelined in one read"], clock, detail=True)
    anchor = ANCHOR_NS
    calls = calls_of(result)
    binds = [c for c in calls if c[0] == "bind"]
    # clock reads: 1 the read, 2 the first take, 3 its finish, 4 and 5 the next takes, ...
    assert [b[2:4] for b in binds] == [
        (anchor + 2000, anchor + 1000),
        (anchor + 4000, anchor + 1000),
        (anchor + 5000, anchor + 1000),
    ]
    assert binds[0][4:] == ("GET", "/hello?x=1", TRACEPARENT)
    assert binds[1][4:] == ("GET", "/", None)
    drops = [c for c in calls if c[0] == "drop"]
    assert drops[0] == ("drop", "wsi", anchor + 3000, 200, None, None)


async def test_a_request_no_read_stamped_waits_from_its_take(clock: Clock) -> None:
    result = await both_agree(PROGRAMS["a request parsed without a read"], clock, detail=False)
    binds = [c for c in calls_of(result) if c[0] == "bind"]
    # clock reads: 1 and 2 the two reads, 3 the first take, 4 its finish, 5 the second take
    assert [b[3] - ANCHOR_NS for b in binds] == [1000, 5000, 2000]
    assert binds[1][2] == binds[1][3]  # arrived is now: no queue wait


async def test_metrics_only_skips_traceparent_and_route(clock: Clock) -> None:
    result = await both_agree([GET, "take", "finish"], clock, detail=False)
    bind, drop = calls_of(result)
    assert bind[4:] == ("GET", "/hello?x=1", None)
    assert drop[4:] == (None, None)


async def test_malformed_request_binds_without_method_and_drops_as_invalid(clock: Clock) -> None:
    result = await both_agree([BAD, "take", "finish"], clock, detail=True)
    bind, drop = calls_of(result)
    assert len(bind) == 4  # tracker.bind(wsi, now, arrived): no method, path or traceparent
    assert drop[-1] == "invalid_request"


async def test_access_log_runs_on_both_paths_when_enabled(clock: Clock) -> None:
    program: list[Step] = [GET, "take", "finish", PLAIN, "take", "finish"]
    result = await both_agree(program, clock, detail=False)
    assert result[-1] == ("log", [])
    logged = await both_agree(program, clock, detail=False, access_log=True)
    assert len(logged[-1][1]) == 2 and '"GET /hello?x=1 HTTP/1.1" 200' in logged[-1][1][0]
    assert calls_of(logged) == calls_of(result)


REQUESTS = st.sampled_from([GET, POST, PLAIN, b"GET /items/3 HTTP/1.1\r\nHost: t\r\n\r\n"])


@st.composite
def programs(draw: st.DrawFn) -> list[Step]:
    """Requests (a malformed one last, sometimes) cut into random reads, with takes and
    finishes in between."""
    stream = b"".join(draw(st.lists(REQUESTS, min_size=1, max_size=7)))
    if draw(st.booleans()):
        stream += BAD
    cuts = sorted(draw(st.lists(st.integers(0, len(stream)), max_size=8)))
    pieces = [stream[a:b] for a, b in zip([0, *cuts], [*cuts, len(stream)], strict=True)]
    program: list[Step] = []
    for piece in pieces:
        program.append(piece)
        program += draw(st.lists(st.sampled_from(["take", "finish"]), max_size=3))
    return [*program, *["take", "finish"] * 9]


@settings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(program=programs(), detail=st.booleans())
def test_generated_programs_make_the_same_calls(
    program: list[Step], detail: bool, clock: Clock
) -> None:
    asyncio.run(both_agree(program, clock, detail=detail))


# -- the C route lookup is _route_of -----------------------------------------------------------


def _ns(**kwargs: Any) -> SimpleNamespace:
    return SimpleNamespace(**kwargs)


class Raising:
    @property
    def canonical(self) -> str:
        raise KeyError("canonical")


ROUTE_INPUTS = {
    "no match info": object(),
    "no route": _ns(_match_info=_ns()),
    "no resource": _ns(_match_info=_ns(route=_ns(resource=None))),
    "a template": _ns(_match_info=_ns(route=_ns(resource=_ns(canonical="/items/{id}")))),
    "not a str": _ns(_match_info=_ns(route=_ns(resource=_ns(canonical=5)))),
}


@pytest.mark.parametrize("request_", ROUTE_INPUTS.values(), ids=ROUTE_INPUTS.keys())
def test_route_of_agrees(request_: Any) -> None:
    assert hooks().route_of(request_) == _route_of(request_)


def test_route_of_lets_other_errors_through() -> None:
    request = _ns(_match_info=_ns(route=_ns(resource=Raising())))
    with pytest.raises(KeyError):
        _route_of(request)
    with pytest.raises(KeyError):
        hooks().route_of(request)


# -- keyword arguments, as a Python method would take them -------------------------------------


async def test_hooks_take_keyword_arguments(clock: Clock) -> None:
    programs = []
    for keywords in (False, True):
        clock.reads = 0
        async with bare(fast_handler(), detail=True) as b:
            if keywords:
                b.handler.data_received(data=GET)
            else:
                b.handler.data_received(GET)
            message, payload = b.handler._messages.popleft()
            task = asyncio.current_task()
            writer = StreamWriter(b.handler, asyncio.get_running_loop())
            factory = b.handler._request_factory
            if keywords:
                request = factory(
                    message, payload=payload, protocol=b.handler, writer=writer, task=task
                )
                b.handler.log_access(request=request, response=web.Response(), time=None)
            else:
                request = factory(message, payload, b.handler, writer, task)
                b.handler.log_access(request, web.Response(), None)
            assert request.path == "/hello"
            programs.append(b.recorder.calls)
    assert programs[0] == programs[1] and len(programs[0]) == 2


async def test_hooks_refuse_wrong_arguments_like_python() -> None:
    async with bare(fast_handler()) as b:
        handler = b.handler
        factory = handler._request_factory
        wrong: list[Callable[[], Any]] = [
            lambda: handler.data_received(),
            lambda: handler.data_received(PLAIN, PLAIN),
            lambda: handler.data_received(datum=PLAIN),
            lambda: handler.data_received(PLAIN, data=PLAIN),
            lambda: handler.log_access(None, None),
            lambda: handler.log_access(None, None, None, time=None),
            lambda: factory(1, 2, 3, 4),
            lambda: factory(1, 2, 3, 4, 5, 6),
            lambda: factory(1, 2, 3, 4, five=5),
        ]
        for call in wrong:
            with pytest.raises(TypeError):
                call()
        assert b.recorder.calls == [] and b.state() == (0, [])


# -- reference counts and memory: loops that would show any leak -------------------------------

LOOPS = 100_000
# The real Tracker may keep a few references to a wsi it schedules (its idle wheel); a leak in
# the hooks would add one per call, so a growth below this bound is the Tracker's, never ours.
TRACKER_HOLDS = 100


def settled_blocks() -> int:
    gc.collect()
    return sys.getallocatedblocks()


def refcounts(objects: list[Any]) -> list[int]:
    gc.collect()  # garbage from before the snapshot must not be released during the loop
    return [sys.getrefcount(x) for x in objects]


async def cycle_objects(detail: bool) -> None:
    """Every C hook, LOOPS times, around a real handler and Tracker: nothing grows.

    The observer is metrics-only (a span sink would rightly queue every transaction); `detail`
    goes to the RequestHook, so the spans-only lookups (traceparent, route) still run.
    """
    async with bare(fast_handler(), detail=False) as b:
        handler = b.handler
        tracker = b.recorder.tracker
        b.feed(GET)  # a real message for the request the factory returns
        message, payload = handler._messages.popleft()
        hook = hooks().RequestHook(lambda *args: request, tracker, detail)
        handler._lwsobs_state = handler._request_factory = hook
        handler._request_count = 0  # ordinals as seen by this new hook
        loop = asyncio.get_running_loop()
        writer = StreamWriter(handler, loop)
        request = web.BaseRequest(message, payload, handler, writer, None, loop)  # type: ignore[arg-type]
        response = web.Response()
        wsi = handler._lwsobs_wsi
        exact = [handler, hook, tracker, request, response, message, payload, GET]

        def one() -> None:
            handler.data_received(GET)
            msg, body = handler._messages.popleft()
            assert hook(msg, body, handler, None, None) is request
            handler.log_access(request, response, None)

        for _ in range(100):
            one()
        refs, wsi_refs, blocks = refcounts(exact), sys.getrefcount(wsi), settled_blocks()
        for _ in range(LOOPS):
            one()
        assert refcounts(exact) == refs
        assert sys.getrefcount(wsi) - wsi_refs < TRACKER_HOLDS
        assert settled_blocks() - blocks < 200
        # the last read's stamp stays until a later request passes it, as on the pure path
        assert hook.dequeued == LOOPS + 100
        assert [a[:2] for a in hook.arrivals] == [(LOOPS + 100, LOOPS + 100)]
        assert wsi.transactions == LOOPS + 100 and wsi.txn is None
        assert [call[0] for call in b.recorder.calls] == []  # the recorder was bypassed


async def test_request_cycles_leak_nothing_metrics_only() -> None:
    await cycle_objects(detail=False)


async def test_request_cycles_leak_nothing_with_spans_detail() -> None:
    await cycle_objects(detail=True)


ERROR_LOOPS = 10_000


def raises_every_time(
    call: Callable[[], Any], error: type[BaseException], exact: list[Any], wsi: Any
) -> None:
    """`call` raises `error` ERROR_LOOPS times without a reference or a block left behind."""
    for _ in range(10):
        with pytest.raises(error):
            call()
    refs, wsi_refs, blocks = refcounts(exact), sys.getrefcount(wsi), settled_blocks()
    for _ in range(ERROR_LOOPS):
        try:
            call()
        except error:
            pass
        else:
            raise AssertionError(f"{call} did not raise {error}")
    assert refcounts(exact) == refs
    assert sys.getrefcount(wsi) - wsi_refs < TRACKER_HOLDS
    assert settled_blocks() - blocks < 200


class Boom(Exception):
    pass


def boom(*args: Any) -> Any:
    raise Boom("boom")


def feed_fresh(handler: Any, data: bytes) -> None:
    """data_received on an empty queue (a failing stamp still leaves the parsed message)."""
    handler._messages.clear()
    handler.data_received(data)


async def test_errors_propagate_and_leak_nothing() -> None:
    async with bare(fast_handler(), detail=False) as b:
        handler, tracker = b.handler, b.recorder.tracker
        b.feed(GET)
        message, payload = handler._messages.popleft()
        response = web.Response()
        wsi = handler._lwsobs_wsi
        ok = hooks().RequestHook(lambda *args: "request", tracker, True)
        handler._lwsobs_state = ok
        exact = [handler, tracker, message, payload, response, ok]

        def fails(call: Callable[[], Any], error: type[BaseException]) -> None:
            raises_every_time(call, error, exact, wsi)

        # aiohttp's own data_received fails: a str is no bytes
        fails(lambda: handler.data_received("GET / HTTP/1.1"), TypeError)
        # the wsi is no Wsi: the real Tracker.bind fails on it
        handler._lwsobs_wsi = "not a wsi"
        fails(lambda: ok(message, payload, handler, None, None), AttributeError)
        handler._lwsobs_wsi = wsi
        # the message is no message; the protocol is no handler
        fails(lambda: ok((1, 2), payload, handler, None, None), AttributeError)
        fails(lambda: ok(message, payload, object(), None, None), AttributeError)
        # aiohttp's factory fails (after the bind)
        failing = hooks().RequestHook(boom, tracker, True)
        fails(lambda: failing(message, payload, handler, None, None), Boom)
        tracker.drop(wsi, now_ns())
        # a transaction is open: the response has no status, or the route lookup fails
        ok(message, payload, handler, None, None)
        assert wsi.txn is not None
        fails(lambda: handler.log_access(None, object(), None), AttributeError)
        bad_route = _ns(_match_info=_ns(route=_ns(resource=Raising())))
        fails(lambda: handler.log_access(bad_route, response, None), KeyError)
        # the state slot holds something else
        handler._lwsobs_state = 5
        fails(lambda: handler.log_access(None, response, None), TypeError)
        fails(lambda: feed_fresh(handler, PLAIN), TypeError)
        handler._lwsobs_state = ok
        # the clock fails (only a test clock can)
        configure(boom)
        try:
            fails(lambda: feed_fresh(handler, PLAIN), Boom)
            fails(lambda: ok(message, payload, handler, None, None), Boom)
            fails(lambda: handler.log_access(None, response, None), Boom)
        finally:
            configure(None)
        # after all that, the open transaction still ends normally
        handler.log_access(None, response, None)
        assert wsi.txn is None


def outcomes(calls: list[Callable[[], Any]]) -> list[str]:
    seen = []
    for call in calls:
        try:
            call()
            seen.append("ok")
        except Exception as exc:
            seen.append(type(exc).__name__)
    return seen


async def errors_of(handler_class: type[Any]) -> list[str]:
    async with bare(handler_class, detail=True) as b:
        handler = b.handler
        seen = outcomes(
            [
                lambda: handler.data_received("GET / HTTP/1.1"),
                lambda: b.finish(b.take()) if b.feed(PLAIN) is None else None,
                lambda: handler.log_access(None, object(), None),  # no transaction: no status read
            ]
        )
        b.feed(PLAIN)
        b.take()
        return seen + outcomes(
            [
                lambda: handler.log_access(None, object(), None),
                lambda: handler.log_access(None, web.Response(), None),
            ]
        )


@pytest.mark.usefixtures("clock")
async def test_errors_are_the_pure_paths_errors() -> None:
    """Where both paths can fail the same way, they raise the same error."""
    pure = await errors_of(InstrumentedRequestHandler)
    assert pure == ["TypeError", "ok", "ok", "AttributeError", "ok"]
    assert await errors_of(fast_handler()) == pure
    assert await errors_of(handler_classes()["fast-subclass"]) == pure


# -- response.status without its Python frame ---------------------------------------------------
# The C log_access reads `_status` itself for a response whose class finds aiohttp's own
# StreamResponse.status property (a getter returning self._status); anything else is read as
# `status`. Every case below must give the pure path's status, or its error.


class Overridden(web.Response):
    @property
    def status(self) -> int:
        return 299


class OwnLookup(web.Response):
    def __getattribute__(self, name: str) -> Any:
        return 297 if name == "status" else super().__getattribute__(name)


async def dropped_statuses(
    handler_class: type[Any], responses: list[Callable[[], Any]]
) -> list[Any]:
    """The status each response's log_access drops its transaction with, or the error."""
    out: list[Any] = []
    async with bare(handler_class) as b:
        for response in responses:
            b.feed(PLAIN)
            request = b.take()
            try:
                b.handler.log_access(request, response(), 0.0)
            except AttributeError as exc:
                out.append(f"AttributeError: {exc}")
                b.recorder.tracker.drop(b.handler._lwsobs_wsi, now_ns())
                continue
            out.append(b.recorder.calls[-1][3])  # ("drop", "wsi", now, status, route, error)
    return out


@pytest.mark.parametrize("name", ["pure", "fast", "fast-subclass"])
async def test_status_is_what_the_response_class_says(name: str) -> None:
    class Later(web.Response):
        pass

    def redefine() -> Any:
        Later.status = property(lambda self: 298)  # type: ignore[assignment,method-assign]
        return Later(status=202)

    statuses = await dropped_statuses(
        handler_classes()[name],
        [
            lambda: web.Response(status=404),
            lambda: web.StreamResponse(status=503),
            Overridden,
            lambda: Later(status=201),
            redefine,  # a class changed after its responses were read
            lambda: Later(status=202),
            OwnLookup,
            lambda: SimpleNamespace(status=203),  # not a response at all
            lambda: web.Response.__new__(web.Response),  # never initialised: no _status
            lambda: web.Response(status=200),
        ],
    )
    assert statuses == [
        404,
        503,
        299,
        201,
        298,
        298,
        297,
        203,
        "AttributeError: 'Response' object has no attribute '_status'",
        200,
    ]


def status_getter_calls(handler: Any, response: Any) -> int:
    """How many times aiohttp's status getter runs while log_access ends a transaction."""
    code = web.StreamResponse.__dict__["status"].fget.__code__
    frames: list[Any] = []
    sys.setprofile(
        lambda frame, event, arg: frames.append(frame.f_code) if event == "call" else None
    )
    try:
        handler.log_access(None, response, 0.0)
    finally:
        sys.setprofile(None)
    return frames.count(code)


@pytest.mark.usefixtures("clock")
async def test_the_c_path_reads_status_without_running_its_getter() -> None:
    assert aiohttp_server._status_property() is web.StreamResponse.__dict__["status"]
    for name, runs in (("pure", 1), ("fast", 0), ("fast-subclass", 0)):
        async with bare(handler_classes()[name]) as b:
            b.feed(PLAIN)
            b.take()
            assert status_getter_calls(b.handler, web.Response(status=201)) == runs, name
            assert b.recorder.calls[-1][3] == 201
    hooks().configure_status(None)  # switched off: the getter runs
    try:
        async with bare(fast_handler()) as b:
            b.feed(PLAIN)
            b.take()
            assert status_getter_calls(b.handler, web.Response(status=201)) == 1
    finally:
        hooks().configure_status(aiohttp_server._status_property())


async def test_a_status_getter_changed_after_configure_runs_again() -> None:
    def getter(self: Any) -> Any:
        return self._status

    class Own:
        status = property(getter)

        def __init__(self, status: int) -> None:
            self._status = status

    hooks().configure_status(Own.status)
    try:
        async with bare(fast_handler()) as b:
            for expected in (204, 296):
                b.feed(PLAIN)
                b.take()
                b.handler.log_access(None, Own(204), 0.0)
                assert b.recorder.calls[-1][3] == expected
                getter.__code__ = (lambda self: 296).__code__
    finally:
        hooks().configure_status(aiohttp_server._status_property())


def test_configure_status_takes_a_property_of_a_function_or_none(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    with pytest.raises(TypeError):
        hooks().configure_status(5)
    with pytest.raises(TypeError):
        hooks().configure_status(property(len))
    # aiohttp's own property is used only while it is the plain getter of `_status`
    monkeypatch.setattr(web.StreamResponse, "status", property(lambda self: self._status + 1))
    assert aiohttp_server._status_property() is None
    monkeypatch.setattr(web.StreamResponse, "status", property(lambda self: self._status))
    assert aiohttp_server._status_property() is web.StreamResponse.__dict__["status"]
