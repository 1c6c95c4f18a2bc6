"""The C span path (lwsobs/sinks/_fastspan.c) against its pure-Python reference, piece by piece.

The one rule: with the fast path on, the span sink, the OTLP fact encoder and the recent-
connections ring give exactly what they give without it: the same bytes, the same sampling
decisions and counters, the same status-page records, the same exceptions. Both kinds of
Transaction are fed in (the core's C type when it is built, and the pure-Python class). These
tests fail (never skip) when the extension is not built: CI tests the fast path.
"""

from __future__ import annotations

import asyncio
import gc
import sys
import tracemalloc
from collections import OrderedDict, deque
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager, suppress
from types import ModuleType
from typing import Any, TypeVar

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.sdk.trace.sampling import (
    ALWAYS_OFF,
    ALWAYS_ON,
    Decision,
    ParentBased,
    Sampler,
    SamplingResult,
    TraceIdRatioBased,
)

from lwsobs.core import ids as ids_module
from lwsobs.core import model
from lwsobs.core.ids import Ids
from lwsobs.core.model import Wsi
from lwsobs.core.roles import LeakRule, Role
from lwsobs.core.tracker import Tracker
from lwsobs.sinks import otlp_encode as enc
from lwsobs.sinks import span_fastpath
from lwsobs.sinks.otlp_exporter import OtlpExporter
from lwsobs.sinks.otlp_facts import FactEncoder
from lwsobs.sinks.otlp_http import OtlpHttpConfig
from lwsobs.sinks.recent_connections import RecentConnections
from lwsobs.sinks.span_builder import ConnectionFact, SpanBuilder, snapshot
from lwsobs.sinks.spans import SpanSink
from tests.otlp_receiver import ReceivedSpan, decode_request, serve_otlp_receiver

T = TypeVar("T")
T0 = 1_795_713_864_949_553_093
RESOURCE = enc.encode_resource({"service.name": "lwsobs", "host.name": "h"})
SCOPE = enc.encode_scope("lwsobs", "0.1.0")
# The core's Transaction (a C type when lwsobs/core/_fastcore.c is built) and the pure one.
PURE_TRANSACTION: type = getattr(model, "PyTransaction", model.Transaction)
TXN_TYPES = list(dict.fromkeys([model.Transaction, PURE_TRANSACTION]))
TRACEPARENTS = [
    None,
    f"00-{'4b' * 16}-{'00f067aa0ba902b7'}-01",  # joins, sampled
    f"00-{'5c' * 16}-{'1122334455667788'}-00",  # joins, not sampled
    "00-not-a-traceparent",  # ignored: nested in its connection
]


def built() -> ModuleType:
    module = span_fastpath.built
    assert module is not None, "lwsobs.sinks._fastspan is not built: run pip install -e ."
    return module


@contextmanager
def fast_path(enabled: bool) -> Iterator[None]:
    """Objects built inside use the fast path (or not); the previous setting comes back."""
    built()
    previous = span_fastpath.fast() is not None
    assert span_fastpath.use_fast_path(enabled) is enabled
    try:
        yield
    finally:
        span_fastpath.use_fast_path(previous)


def made(enabled: bool, factory: Callable[[], T]) -> T:
    """`factory()` built with the fast path on or off, checked to have taken that path."""
    with fast_path(enabled):
        obj = factory()
    assert (getattr(obj, "_fast", None) is not None) is enabled
    return obj


def test_the_extension_is_built_and_switchable() -> None:
    module = built()
    with fast_path(True):
        assert span_fastpath.fast() is module
    with fast_path(False):
        assert span_fastpath.fast() is None


# -- the world the facts come from ------------------------------------------------------------


class World:
    """A Tracker with a few wsis of different kinds, to hang transactions on."""

    def __init__(self) -> None:
        self.tracker = Tracker()
        ctx = self.tracker.context("aiohttp", "server-1")
        other = self.tracker.context("lws-ünï", "ctx")
        h2 = self.tracker.open(other, Role.H2_SERVER, T0, peer="192.0.2.1:443")
        self.wsis: list[Wsi] = [
            self.tracker.open(ctx, Role.H1_SERVER, T0, peer=("127.0.0.1", 40000)),
            self.tracker.open(ctx, Role.H1_SERVER, T0 + 1, peer=("127.0.0.1", 40001)),
            self.tracker.open(ctx, Role.H1_CLIENT, T0 + 2, local=("127.0.0.1", 5555)),
            self.tracker.open(other, Role.H2_STREAM, T0 + 3, parent=h2),
            h2,
        ]

    def connection(self, i: int) -> ConnectionFact:
        wsi = self.wsis[i % len(self.wsis)]
        if wsi.span_ended:
            return snapshot(wsi)
        if i % 2:
            self.tracker.flag(wsi, T0 + 10**9, LeakRule.IDLE)  # a suspect: its span ends
        else:
            self.tracker.destroy(wsi, T0 + 10**9)
        return snapshot(wsi)


def transaction(txn_type: type, wsi: Wsi, spec: dict[str, Any]) -> Any:
    txn = txn_type(
        wsi,
        spec["serial"],
        spec["index"],
        spec["arrived"],
        spec["start"],
        spec["method"],
        spec["path"],
        spec["traceparent"],
    )
    txn.end_ns = spec["end"]
    txn.status = spec["status"]
    txn.route = spec["route"]
    txn.error = spec["error"]
    return txn


# Values at the edges of what the encoder writes: varint sizes, the 124-byte inline string
# limit, 64-bit times and serials, unicode, queries, lone surrogates.
VARINT_EDGES = [0, 1, 127, 128, 16383, 16384, 2**21 - 1, 2**21, 2**28, 2**35, 2**56, 2**63 - 1]
PATHS = [
    None,
    "",
    "/",
    "?",
    "/hello?q=1&secret=2",
    "/ünï/cødé?x=✓",
    "/p/" + "é" * 200,
    "/x" + "?" * 3,
    "/surrogate/\ud800?q",
    *("/" + "p" * n for n in (121, 122, 123, 124, 125, 126, 127, 128, 16400)),
    *("/" + "q" * n + "?tail" for n in (122, 123, 124)),
]
ROUTES = [None, "", "/", "/hello", "/items/{id}", "/ünï/{name}", "/" + "r" * 130, "/\udfff"]
METHODS = [None, "GET", "POST", "DELETE", "PROPFIND", "GÉT"]
STATUSES = [None, 100, 101, 200, 204, 404, 499, 500, 503, 599, 600, 2**40]
ERRORS = [None, "aborted", "superseded", "invalid_request", "timeout ⏱", "\ud800"]


@st.composite
def txn_specs(draw: st.DrawFn, wild: bool = False) -> dict[str, Any]:
    """One transaction's values; `wild` adds values beyond what OTLP decoders accept."""
    serials = [1, 2, 2**31, 2**32, 2**63 - 1, 2**63, 2**64 - 1, 2**64, 2**70 + 3]
    indexes = [*VARINT_EDGES, -1, -(2**63)]
    if wild:
        serials += [0, -1, -(2**80)]
        indexes += [2**63, 2**64 - 1, 2**64, 2**70]
    start = draw(st.one_of(st.integers(0, 2**64 - 1), st.sampled_from([T0, 2**63, 2**64 - 1])))
    waited = draw(st.one_of(st.sampled_from(VARINT_EDGES), st.integers(-(2**40), 2**40)))
    arrived = min(max(start - waited, 0), 2**64 - 1)
    duration = draw(st.one_of(st.none(), st.integers(0, 2**40)))
    end = None if duration is None else min(start + duration, 2**64 - 1)
    return {
        "serial": draw(st.one_of(st.sampled_from(serials), st.integers(1, 2**64))),
        "index": draw(st.one_of(st.sampled_from(indexes), st.integers(0, 2**40))),
        "arrived": arrived,
        "start": start,
        "end": end,
        "method": draw(st.sampled_from(METHODS)),
        "path": draw(st.one_of(st.sampled_from(PATHS), st.text(max_size=300))),
        "traceparent": draw(st.sampled_from(TRACEPARENTS)),
        "status": draw(st.sampled_from(STATUSES)),
        "route": draw(st.sampled_from(ROUTES)),
        "error": draw(st.sampled_from(ERRORS)),
    }


@st.composite
def batches(draw: st.DrawFn, wild: bool = False) -> list[tuple[int, dict[str, Any] | None]]:
    """(wsi index, transaction values) per fact; None values make a connection fact."""
    items = st.tuples(st.integers(0, 4), st.one_of(txn_specs(wild), txn_specs(wild), st.none()))
    return draw(st.lists(items, max_size=40))


def facts_of(
    world: World, txn_type: type, batch: Sequence[tuple[int, dict[str, Any] | None]]
) -> list[Any]:
    return [
        world.connection(i) if spec is None else transaction(txn_type, world.wsis[i], spec)
        for i, spec in batch
    ]


def encoders(ids: Ids) -> tuple[FactEncoder, FactEncoder]:
    builder = SpanBuilder(ids, ALWAYS_ON)
    fast = made(True, lambda: FactEncoder(builder, RESOURCE, SCOPE))
    pure = made(False, lambda: FactEncoder(builder, RESOURCE, SCOPE))
    return fast, pure


def outcome(encode: Callable[[], bytes]) -> bytes | type[BaseException]:
    try:
        return encode()
    except Exception as exc:
        return type(exc)


def generic(builder: SpanBuilder, facts: Sequence[Any]) -> list[ReceivedSpan]:
    """The spans the generic path (SpanBuilder -> SpanData -> encode_span) encodes, decoded."""
    spans = [
        builder.connection(f) if isinstance(f, ConnectionFact) else builder.transaction(f)
        for f in facts
    ]
    body = enc.encode_spans(RESOURCE, SCOPE, spans)
    return decode_request(ExportTraceServiceRequest.FromString(body))


# -- the encoder ------------------------------------------------------------------------------


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(batches(), st.integers(0, 2**64 - 1), st.booleans())
def test_encoder_writes_the_bytes_of_the_pure_encoder_and_the_spans_of_the_generic_path(
    batch: list[tuple[int, dict[str, Any] | None]], salt: int, join: bool
) -> None:
    fast, pure = encoders(Ids(salt, join_traceparent=join))
    for txn_type in TXN_TYPES:
        facts = facts_of(World(), txn_type, batch)
        body = fast.encode(facts)
        assert body == pure.encode(facts)
        decoded = decode_request(ExportTraceServiceRequest.FromString(body))
        assert decoded == generic(fast.builder, facts)
        assert body == fast.encode(facts)  # the caches it filled change nothing


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(batches(wild=True), st.integers(-(2**70), 2**70), st.booleans())
def test_encoder_matches_the_pure_encoder_for_any_values_or_raises_the_same(
    batch: list[tuple[int, dict[str, Any] | None]], salt: int, join: bool
) -> None:
    fast, pure = encoders(Ids(salt, join_traceparent=join))
    for txn_type in TXN_TYPES:
        facts = facts_of(World(), txn_type, batch)
        assert outcome(lambda: fast.encode(facts)) == outcome(lambda: pure.encode(facts))  # noqa: B023


@pytest.mark.parametrize(
    "field, value",
    [
        ("arrived_ns", -1),
        ("arrived_ns", 2**64),
        ("start_ns", "soon"),
        ("end_ns", 2**64),
        ("end_ns", -5),
        ("end_ns", 1.5),
        ("index", "first"),
        ("serial", None),
        ("path", b"/bytes"),
        ("method", 7),
        ("status", "200"),
        ("wsi", None),
    ],
)
@pytest.mark.parametrize("txn_type", TXN_TYPES)
def test_a_bad_value_raises_what_the_pure_encoder_raises(
    txn_type: type, field: str, value: object
) -> None:
    fast, pure = encoders(Ids(7))
    world = World()
    spec = {
        "serial": 9,
        "index": 0,
        "arrived": T0,
        "start": T0 + 10,
        "end": T0 + 20,
        "method": "GET",
        "path": "/",
        "traceparent": None,
        "status": 200,
        "route": "/",
        "error": None,
    }
    good = transaction(txn_type, world.wsis[0], spec)
    bad = transaction(txn_type, world.wsis[0], spec)
    setattr(bad, field, value)
    expected = outcome(lambda: pure.encode([good, bad]))
    assert outcome(lambda: fast.encode([good, bad])) == expected
    assert outcome(lambda: fast.encode([good])) == pure.encode([good])  # and it carries on


def test_a_fact_without_the_attributes_raises_attribute_error_either_way() -> None:
    for join in (True, False):
        for encoder in encoders(Ids(7, join_traceparent=join)):
            with pytest.raises(AttributeError):
                encoder.encode([object()])


def test_a_failing_connection_fragment_propagates() -> None:
    fast, pure = encoders(Ids(7))
    world = World()
    wsi = world.wsis[0]
    txn = world.tracker.bind(wsi, T0 + 5, None, "GET", "/")
    world.tracker.drop(wsi, T0 + 6, 200, "/")
    wsi.context = None  # type: ignore[assignment]  # wsi.id now raises
    assert outcome(lambda: fast.encode([txn])) is AttributeError
    assert outcome(lambda: pure.encode([txn])) is AttributeError


def test_encoder_serves_only_the_ids_scheme_it_knows() -> None:
    class OtherIds(Ids):
        def txn_span_id(self, txn: Any) -> int:
            return 42

    builder = SpanBuilder(OtherIds(7), ALWAYS_ON)
    with fast_path(True):
        encoder = FactEncoder(builder, RESOURCE, SCOPE)
    assert encoder._fast is None  # derived ids differ: the pure path serves it
    world = World()
    txn = world.tracker.bind(world.wsis[0], T0 + 5, None, "GET", "/")
    world.tracker.drop(world.wsis[0], T0 + 6, 200, "/")
    (span,) = decode_request(ExportTraceServiceRequest.FromString(encoder.encode([txn])))
    assert span.span_id == f"{42:016x}"


def ended(world: World, wsi: Wsi, at: int, path: str = "/") -> Any:
    txn = world.tracker.bind(wsi, at + 5, at, "GET", path)
    world.tracker.drop(wsi, at + 9, 200, "/")
    return txn


@pytest.mark.parametrize("enabled", [True, False])
def test_connection_fragments_outlive_their_batch_by_one_batch_only(enabled: bool) -> None:
    encoder = made(enabled, lambda: FactEncoder(SpanBuilder(Ids(5), ALWAYS_ON), RESOURCE, SCOPE))
    world = World()
    wsi = world.wsis[0]
    before = sys.getrefcount(wsi)
    txns = [ended(world, wsi, T0 + i * 10) for i in range(3)]
    reference = made(False, lambda: FactEncoder(encoder.builder, RESOURCE, SCOPE))
    for i in range(3):  # the next batches reuse the fragments: the same bytes
        assert encoder.encode(txns[i:]) == reference.encode(txns[i:])
    del txns
    assert sys.getrefcount(wsi) == before + 2  # in each encoder's fragments of the last batch
    encoder.encode([])
    reference.encode([])
    assert sys.getrefcount(wsi) == before


class Nested(FactEncoder):
    """Encodes again from inside a callback of the encoder (another thread could, too)."""

    def _span(self, fact: Any, conns: dict[Any, tuple[bytes, bytes, bytes]]) -> bytes:
        assert self.encode([]) == enc.encode_request(RESOURCE, SCOPE, [])
        return super()._span(fact, conns)


def test_encode_may_run_again_inside_itself() -> None:
    builder = SpanBuilder(Ids(5), ALWAYS_ON)
    world = World()
    facts = [ended(world, world.wsis[i % 3], T0 + 10 * i) for i in range(20)]
    facts.insert(10, world.connection(4))  # encoded by the callback, mid-batch
    fast = made(True, lambda: Nested(builder, RESOURCE, SCOPE))
    pure = made(False, lambda: FactEncoder(builder, RESOURCE, SCOPE))
    assert fast.encode(facts) == pure.encode(facts)


# Transaction look-alikes: the C path reads fields by offset only from a type it has checked,
# and through getattr otherwise, so each must give exactly the pure path's bytes.


class Props:
    """Fields as properties over a dict: every read goes through getattr."""

    def __init__(self, txn: Any) -> None:
        self._values = {name: getattr(txn, name) for name in PURE_TRANSACTION.__slots__}

    def __getattr__(self, name: str) -> Any:
        try:
            return self.__dict__["_values"][name]
        except KeyError:
            raise AttributeError(name) from None

    def __setattr__(self, name: str, value: Any) -> None:
        if name == "_values":
            object.__setattr__(self, name, value)
        else:
            self._values[name] = value


class Sub(PURE_TRANSACTION):  # type: ignore[misc, valid-type]
    __slots__ = ("note",)


class Counting(PURE_TRANSACTION):  # type: ignore[misc, valid-type]
    """Overrides __getattribute__: the C path must not read around it."""

    __slots__ = ()
    reads = 0

    def __getattribute__(self, name: str) -> Any:
        type(self).reads += 1
        if name == "method":
            return "OVERRIDDEN"
        return super().__getattribute__(name)


def copy_as(cls: type, txn: Any) -> Any:
    out = cls.__new__(cls)
    for name in PURE_TRANSACTION.__slots__:
        object.__setattr__(out, name, getattr(txn, name))
    return out


@pytest.mark.parametrize("join", [True, False])
def test_look_alike_transactions_encode_as_the_pure_path_does(join: bool) -> None:
    fast, pure = encoders(Ids(3, join_traceparent=join))
    world = World()
    originals = []
    for i, (method, path) in enumerate([("GET", "/a?b"), ("PUT", "/ü"), (None, None)]):
        wsi = world.wsis[i]
        txn = world.tracker.bind(wsi, T0 + 100 * i + 50, T0 + 100 * i, method, path)
        world.tracker.drop(wsi, T0 + 100 * i + 90, 200 + i, "/r")
        originals.append(txn)
    mixed = [Props(t) for t in originals] + [copy_as(Sub, t) for t in originals]
    mixed += [copy_as(Counting, t) for t in originals] + originals
    mixed += [copy_as(Sub, t) for t in originals] + [Props(t) for t in originals]
    Counting.reads = 0
    assert fast.encode(mixed) == pure.encode(mixed)
    assert Counting.reads > 0
    assert b"OVERRIDDEN" in fast.encode(mixed)


class Alien:
    """Slots of its own, but `method` is the pure Transaction's slot descriptor: reading it
    raises TypeError (it is not a Transaction), and the C path must not read that offset."""

    __slots__ = tuple(name for name in PURE_TRANSACTION.__slots__ if name != "method")
    method = PURE_TRANSACTION.__dict__["method"]


def test_a_borrowed_slot_descriptor_is_not_read_by_offset() -> None:
    fast, pure = encoders(Ids(3))
    world = World()
    alien = Alien()
    # its path is where the descriptor's offset points, and holds the method's value: a read
    # by offset would find the shape of `txn` cached and encode without a word
    txn = ended(world, world.wsis[0], T0, path="GET")
    assert fast.encode([txn]) == pure.encode([txn])
    for name in Alien.__slots__:
        setattr(alien, name, getattr(txn, name))
    with pytest.raises(TypeError):
        pure.encode([alien])
    with pytest.raises(TypeError):
        fast.encode([alien])


def test_a_type_changed_after_use_is_read_afresh() -> None:
    class Mutable(PURE_TRANSACTION):  # type: ignore[misc, valid-type]
        __slots__ = ()

    fast, pure = encoders(Ids(3))
    world = World()
    txn = world.tracker.bind(world.wsis[0], T0 + 50, T0, "GET", "/")
    world.tracker.drop(world.wsis[0], T0 + 90, 200, "/")
    facts = [copy_as(Mutable, txn)]
    assert fast.encode(facts) == pure.encode(facts)
    Mutable.method = property(lambda self: "PATCH")  # type: ignore[attr-defined]
    Mutable.path = property(lambda self: "/changed?x")  # type: ignore[attr-defined]
    body = fast.encode(facts)
    assert body == pure.encode(facts)
    assert b"PATCH" in body and b"/changed" in body


# -- ids ----------------------------------------------------------------------------------------


@given(
    st.one_of(
        st.integers(-(2**80), 2**80),
        st.sampled_from([0, 1, 2**63, 2**64 - 1, 2**64, -1, -(2**64), 2**200 + 5]),
    )
)
def test_mix64_is_the_pure_mixer(x: int) -> None:
    assert built().mix64(x) == ids_module.mix64(x)


def test_mix64_refuses_what_is_not_an_int() -> None:
    with pytest.raises(TypeError):
        built().mix64(1.0)


# -- sampling -----------------------------------------------------------------------------------


class Flaky(Sampler):
    """Decides by trace id, and fails for some traces (a broken sampler must be survived)."""

    def should_sample(self, parent_context: Any, trace_id: int, *args: Any, **kw: Any) -> Any:
        if trace_id % 7 == 0:
            raise RuntimeError("sampler failure")
        decision = Decision.RECORD_AND_SAMPLE if trace_id % 3 else Decision.DROP
        return SamplingResult(decision)

    def get_description(self) -> str:
        return "Flaky"


SAMPLERS: list[Callable[[], Sampler]] = [
    lambda: ALWAYS_ON,
    lambda: ALWAYS_OFF,
    lambda: ParentBased(ALWAYS_ON),
    lambda: ParentBased(TraceIdRatioBased(0.5)),
    lambda: TraceIdRatioBased(0.3),
    Flaky,
]


class Keep:
    """An exporter that keeps every batch it is handed."""

    def __init__(self) -> None:
        self.batches: list[list[Any]] = []

    def export(self, facts: Sequence[Any]) -> bool:
        self.batches.append(list(facts))
        return True

    def shutdown(self) -> None:
        pass


def fact_key(fact: Any) -> tuple[Any, ...]:
    if isinstance(fact, ConnectionFact):
        return ("wsi", fact.wsi.serial, fact.span_end_ns)
    return ("txn", fact.serial, fact.wsi.serial, fact.sampled)


def sample_run(
    enabled: bool, sampler: Callable[[], Sampler], join: bool, seed: int
) -> tuple[Any, ...]:
    """A scenario through Tracker -> SpanSink (no thread: flush drains in place)."""
    keep = Keep()
    builder = SpanBuilder(Ids(seed, join_traceparent=join), sampler())
    sink = made(enabled, lambda: SpanSink(builder, [keep], batch_size=16, max_queue=10_000))
    tracker = Tracker([sink])
    ctx = tracker.context("s", "c")
    h2 = tracker.open(ctx, Role.H2_SERVER, T0)
    wsis = [tracker.open(ctx, Role.H1_SERVER, T0 + i) for i in range(6)]
    wsis += [tracker.open(ctx, Role.H2_STREAM, T0 + 9, parent=h2) for _ in range(3)]
    txns = []
    for i in range(150):
        wsi = wsis[(i * 7 + seed) % len(wsis)]
        parent = TRACEPARENTS[(i + seed) % len(TRACEPARENTS)] if i % 5 == 0 else None
        txn = tracker.bind(wsi, T0 + 1000 * i + 500, T0 + 1000 * i, "GET", f"/{i}", parent)
        tracker.drop(wsi, T0 + 1000 * i + 900, 200, "/{i}")
        txns.append(txn)
        if i % 31 == 0:
            txn.sampled = bool(i % 2)  # already decided (by an earlier look): kept as is
        if i % 40 == 39:
            sink.flush()
    for wsi in wsis[:4]:
        tracker.destroy(wsi, T0 + 10**9)
    sink.flush()
    return (
        [[fact_key(f) for f in batch] for batch in keep.batches],
        sink.exported,
        sink.sampled_out,
        dict(sink.dropped),
        [t.sampled for t in txns],
        [w.sampled for w in [*wsis, h2]],
    )


@pytest.mark.parametrize("join", [True, False])
@pytest.mark.parametrize("sampler", SAMPLERS)
@pytest.mark.parametrize("seed", [1, 2, 3])
def test_sampling_in_c_keeps_and_counts_what_the_pure_sampling_does(
    sampler: Callable[[], Sampler], join: bool, seed: int
) -> None:
    fast = sample_run(True, sampler, join, seed)
    pure = sample_run(False, sampler, join, seed)
    assert fast == pure
    _, exported, sampled_out, dropped, _, _ = fast
    assert exported + sampled_out + dropped.get("build_error", 0) == 150 + 4


def test_sampling_takes_exactly_the_facts_asked_for_and_propagates_errors() -> None:
    module = built()
    world = World()
    queue: deque[Any] = deque()
    for i in range(5):
        txn = world.tracker.bind(world.wsis[0], T0 + i, None, "GET", "/")
        world.tracker.drop(world.wsis[0], T0 + i, 200, "/")
        queue.append(txn)

    def refuse(fact: Any) -> bool:
        raise KeyError("no")

    with pytest.raises(KeyError):
        module.sample(queue, 2, True, refuse, ConnectionFact)  # undecided: refuse is asked
    assert len(queue) == 4  # the one it failed on is gone, nothing else
    world.wsis[0].sampled = True
    kept, out = module.sample(queue, 3, True, refuse, ConnectionFact)
    assert len(kept) == 3 and out == 0 and len(queue) == 1
    with pytest.raises(IndexError):
        module.sample(queue, 2, True, refuse, ConnectionFact)
    with pytest.raises(TypeError):
        module.sample(queue, 2, True)  # type: ignore[call-arg]


# -- the push -----------------------------------------------------------------------------------


def test_the_push_queues_wakes_and_drops_as_the_pure_push_does() -> None:
    world = World()
    facts = []
    for i in range(12):
        txn = world.tracker.bind(world.wsis[i % 3], T0 + i, None, "GET", "/")
        world.tracker.drop(world.wsis[i % 3], T0 + i, 200, "/")
        facts.append(txn)
    builder = SpanBuilder(Ids(1), ALWAYS_ON)
    runs = []
    for enabled in (True, False):
        sink = made(enabled, lambda: SpanSink(builder, [], max_queue=5, batch_size=3))
        if enabled:
            assert isinstance(sink.transaction_ended, built().Pusher)
        trace = []
        for i, fact in enumerate(facts):
            if i == 8:
                sink.max_queue = 7  # raised at run time: the C push sees it too
                sink.batch_size = 6
            sink.transaction_ended(fact)
            trace.append((len(sink._queue), sink._wake.is_set(), sink.dropped["queue_full"]))
            if sink._wake.is_set():
                sink._wake.clear()
        sink.wsi_span_ended(world.wsis[4])
        runs.append((trace, list(sink._queue)[:7], sink.dropped["queue_full"]))
    assert runs[0] == runs[1]
    assert runs[0][2] == 12 + 1 - 7


def test_the_pusher_checks_its_arguments_and_propagates_errors() -> None:
    module = built()
    queue: deque[Any] = deque()

    def boom(*args: Any) -> None:
        raise ValueError("boom")

    push = module.Pusher(queue, 1, 1, boom, boom)
    with pytest.raises(ValueError):
        push("a")  # the queue reaches batch_size: wake raises
    assert list(queue) == ["a"]
    with pytest.raises(ValueError):
        push("b")  # the queue is full: overflow raises
    assert list(queue) == ["a"]
    with pytest.raises(TypeError):
        push()
    with pytest.raises(TypeError):
        push("a", "b")
    with pytest.raises(TypeError):
        push(fact="a")
    with pytest.raises(TypeError):
        module.Pusher(queue, 1, 1, None, boom)
    with pytest.raises(AttributeError):
        module.Pusher(object(), 1, 1, boom, boom)


class PushesWhileExporting(Keep):
    """Facts arrive while a batch is being exported (the request thread runs meanwhile)."""

    def __init__(self, arrive: Callable[[], None]) -> None:
        super().__init__()
        self.arrive = arrive

    def export(self, facts: Sequence[Any]) -> bool:
        if not self.batches:
            self.arrive()
        return super().export(facts)


@pytest.mark.parametrize("enabled", [True, False])
def test_a_drain_sends_what_was_queued_not_what_arrives_meanwhile(enabled: bool) -> None:
    world = World()
    builder = SpanBuilder(Ids(1), ALWAYS_ON)

    def arrive() -> None:
        for i in range(3):
            ended(world, world.wsis[0], T0 + 100 + 10 * i)

    exporter = PushesWhileExporting(arrive)
    sink = made(enabled, lambda: SpanSink(builder, [exporter], batch_size=100))
    world.tracker.add_sink(sink)
    for i in range(5):
        ended(world, world.wsis[1], T0 + 10 * i)
    sink._drain(everything=True)  # what the worker does when its timer fires
    assert [len(b) for b in exporter.batches] == [5]  # not a second request for three spans
    assert len(sink._queue) == 3
    assert sink.flush()  # without a worker, a flush drains everything
    assert [len(b) for b in exporter.batches] == [5, 3] and sink.exported == 8


class CountingEncoder(FactEncoder):
    spans = 0

    def _span(self, fact: Any, conns: dict[Any, tuple[bytes, bytes, bytes]]) -> bytes:
        type(self).spans += 1
        return super()._span(fact, conns)


def python_calls(enabled: bool) -> tuple[int, int, int]:
    """(sampling decisions, ring entries opened, spans encoded) made in Python for 50 plain
    transactions on two connections."""
    world = World()
    builder = SpanBuilder(Ids(1), ALWAYS_ON)
    CountingEncoder.spans = 0
    encoder = made(enabled, lambda: CountingEncoder(builder, RESOURCE, SCOPE))
    ring = made(enabled, lambda: RecentConnections())
    sink = made(enabled, lambda: SpanSink(builder, [ring], batch_size=1000))
    decided: list[Any] = []
    opened: list[Any] = []
    decide, open_entry = sink._decide, ring._open
    sink._decide = lambda fact: decided.append(fact) or decide(fact)  # type: ignore[method-assign]
    ring._open = lambda wsi: opened.append(wsi) or open_entry(wsi)  # type: ignore[method-assign]
    world.tracker.add_sink(sink)
    txns = [ended(world, world.wsis[i % 2], T0 + 10 * i) for i in range(50)]
    sink.flush()
    encoder.encode(txns)
    return len(decided), len(opened), CountingEncoder.spans


def test_python_is_asked_only_about_the_unusual_facts() -> None:
    """The point of the C path: a plain transaction of a decided trace runs no Python."""
    assert python_calls(True) == (2, 2, 0)  # once per trace, once per connection, no span
    assert python_calls(False) == (50, 2, 50)


# -- the recent-connections ring ----------------------------------------------------------------


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    st.lists(st.tuples(st.integers(0, 5), st.booleans()), max_size=80),
    st.integers(1, 8),
    st.integers(0, 4),
    st.integers(0, 4),
    st.integers(1, 5),
)
def test_the_ring_records_what_the_pure_ring_records(
    ops: list[tuple[int, bool]],
    batch: int,
    max_connections: int,
    max_transactions: int,
    max_pending: int,
) -> None:
    tracker = Tracker()
    ctx = tracker.context("s", "c")
    wsis = [tracker.open(ctx, Role.H1_SERVER, T0 + i) for i in range(6)]
    facts: list[Any] = []
    for i, (w, ends) in enumerate(ops):
        wsi = wsis[w]
        if ends:
            facts.append(snapshot(wsi))
        else:
            txn = tracker.bind(wsi, T0 + i, None, "GET", f"/{i}")
            tracker.drop(wsi, T0 + i, 200, "/")
            if txn is not None:
                facts.append(txn)
    if max_connections == 0:  # deque(maxlen=0) keeps nothing; still a valid bound
        max_connections = 1
    rings = [
        made(
            enabled,
            lambda: RecentConnections(max_connections, max(1, max_transactions), max_pending),
        )
        for enabled in (True, False)
    ]
    for ring in rings:
        for start in range(0, len(facts), batch):
            assert ring.export(facts[start : start + batch]) is True
    fast, pure = rings
    assert fast.finished(100) == pure.finished(100)
    assert fast.live(100) == pure.live(100)
    assert (fast.evicted, fast.sizes) == (pure.evicted, pure.sizes)


def test_the_ring_propagates_errors_and_stays_usable() -> None:
    ring = made(True, lambda: RecentConnections())
    with pytest.raises(AttributeError):
        ring.export([object()])
    world = World()
    txn = world.tracker.bind(world.wsis[0], T0, None, "GET", "/")
    world.tracker.drop(world.wsis[0], T0 + 1, 200, "/")
    assert ring.export([txn]) is True
    [live] = ring.live(5)
    assert live.txns == (txn,) and live.seen == 1
    with pytest.raises(TypeError):
        built().record(OrderedDict(), [txn], None, None, ConnectionFact)  # None is no callable


# -- reference counts and memory ----------------------------------------------------------------


def assert_flat(step: Callable[[], None], iterations: int, watched: Sequence[object]) -> None:
    """Run `step` many times: neither traced memory (a leaked new object) nor the reference
    count of a long-lived object (True, a cached fragment, a fact) may grow with the count."""
    for _ in range(100):
        step()
    gc.collect()
    tracemalloc.start()
    try:
        step()
        gc.collect()
        before = tracemalloc.get_traced_memory()[0]
        counts = refcounts(*watched)
        for _ in range(iterations):
            step()
        gc.collect()
        after = tracemalloc.get_traced_memory()[0]
        grown = [n - c for n, c in zip(refcounts(*watched), counts, strict=True)]
    finally:
        tracemalloc.stop()
    assert after - before < 64 * 1024, f"grew by {after - before} bytes over {iterations} runs"
    assert max(grown) < iterations // 2, f"references grew by {grown} over {iterations} runs"


def refcounts(*objects: object) -> list[int]:
    return [sys.getrefcount(o) for o in objects]


def leak_facts(world: World, builder: SpanBuilder) -> list[Any]:
    """Facts taking every path: fast, joined, connection, and the fallbacks (a lone surrogate
    in the path, an index beyond 64 bits)."""
    facts: list[Any] = []
    for i in range(100):
        wsi = world.wsis[i % 4]
        parent = TRACEPARENTS[1] if i % 25 == 0 else None
        txn = world.tracker.bind(wsi, T0 + i * 10 + 5, T0 + i * 10, "GET", "/i/1?q=ü", parent)
        world.tracker.drop(wsi, T0 + i * 10 + 9, 404 if i % 9 else 500, "/i/{id}")
        facts.append(txn)
        assert builder.decide(txn)
    facts.append(world.connection(0))
    spec = {
        "serial": 2**64 + 1,
        "index": 2**64,
        "arrived": T0,
        "start": T0 + 1,
        "end": None,
        "method": "GET",
        "path": "/\\ud800",
        "traceparent": None,
        "status": None,
        "route": None,
        "error": "x",
    }
    facts.append(transaction(PURE_TRANSACTION, world.wsis[1], spec))
    return facts


def exercise_every_entry_point(builder: SpanBuilder, facts: list[Any]) -> None:
    """About 100,000 facts through each entry point, then 10,000 failing calls of each."""
    module = built()
    encoder = made(True, lambda: FactEncoder(builder, RESOURCE, SCOPE))

    def encode() -> None:
        assert encoder.encode(facts)

    encode()
    watched = [True, False, None, 0, 1, ConnectionFact, Role.H1_SERVER, *facts[:3], *facts[-2:]]
    watched += [facts[0].method, facts[0].route, facts[0].wsi, *encoder._shapes.values()]
    assert_flat(encode, 1000, watched)
    queue: deque[Any] = deque()
    push = module.Pusher(queue, 10**6, 10**6, lambda: None, lambda fact: None)

    def push_and_sample() -> None:
        for fact in facts:
            push(fact)
        kept, out = module.sample(queue, len(facts), True, builder.decide, ConnectionFact)
        assert kept == facts and out == 0 and not queue

    assert_flat(push_and_sample, 1000, watched)
    ring = made(True, lambda: RecentConnections(max_connections=4, max_pending=8))

    def record() -> None:
        assert ring.export(facts)

    assert_flat(record, 1000, watched)
    decide = builder.decide

    def failing() -> None:
        for call in (
            lambda: encoder.encode([facts[0], object()]),
            lambda: module.sample(deque(facts[:3]), 5, True, decide, ConnectionFact),
            lambda: ring.export([facts[0], object()]),
            lambda: module.Pusher(deque(), 0, 1, decide, decide)(object()),
        ):
            with suppress(AttributeError, IndexError, TypeError):
                call()

    assert_flat(failing, 10_000, watched)


def test_no_reference_or_memory_leaks_on_any_path() -> None:
    world = World()
    builder = SpanBuilder(Ids(11), ParentBased(ALWAYS_ON))
    facts = leak_facts(world, builder)
    watched = (facts[0].method, facts[0].route, facts[0].path, world.wsis[0], facts[0])
    watched += (facts[-1], facts[-2], ConnectionFact, Role.H1_SERVER)
    gc.collect()
    before = refcounts(*watched)
    # what holds facts or keys on purpose (caches, the ring, the queue) is gone once it returns
    exercise_every_entry_point(builder, facts)
    gc.collect()
    assert refcounts(*watched) == before


# -- end to end: the same spans arrive over OTLP/HTTP -------------------------------------------


async def export_run(enabled: bool, endpoint: str) -> tuple[list[Any], dict[str, Any]]:
    builder = SpanBuilder(Ids(99), ParentBased(ALWAYS_ON))
    with fast_path(enabled):
        exporter = OtlpExporter(
            builder, {"service.name": "fastspan"}, OtlpHttpConfig(endpoint=endpoint)
        )
        ring = RecentConnections()
        sink = SpanSink(builder, [ring, exporter], batch_size=64, delay_s=0.05)
    assert (exporter.encoder._fast is not None) is enabled
    tracker = Tracker([sink])
    sink.start()
    ctx = tracker.context("e2e", "server")
    wsis = [
        tracker.open(ctx, Role.H1_SERVER, T0 + c, peer=("127.0.0.1", 4000 + c)) for c in range(5)
    ]
    for i in range(500):
        wsi = wsis[i % 5]
        parent = TRACEPARENTS[1] if i % 50 == 0 else None
        tracker.bind(wsi, T0 + 1000 * i + 300, T0 + 1000 * i, "GET", f"/p/{i}?k=v", parent)
        tracker.drop(wsi, T0 + 1000 * i + 800, 200 if i % 10 else 503, "/p/{n}")
    for wsi in wsis[:3]:
        tracker.destroy(wsi, T0 + 10**9)
    await asyncio.get_running_loop().run_in_executor(None, sink.shutdown)
    records = [(r.wsi.serial, [t.serial for t in r.txns], r.seen) for r in ring.finished(10)]
    records += [(r.wsi.serial, [t.serial for t in r.txns], r.seen) for r in ring.live(10)]
    return records, sink.stats()


async def test_the_same_spans_arrive_over_otlp_with_or_without_the_fast_path() -> None:
    received = []
    for enabled in (True, False):
        async with serve_otlp_receiver() as receiver:
            records, stats = await export_run(enabled, receiver.endpoint)
            spans = sorted(receiver.spans, key=lambda s: (s.trace_id, s.span_id))
            received.append((spans, records, stats))
    (fast_spans, fast_records, fast_stats), (pure_spans, pure_records, pure_stats) = received
    assert len(fast_spans) == 503 and fast_stats["exported"] == 503
    assert fast_stats == pure_stats and not fast_stats["dropped"]
    assert fast_spans == pure_spans
    assert fast_records == pure_records
