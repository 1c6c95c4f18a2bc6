"""The hand-written OTLP encoder, checked by decoding with the official protobuf classes."""

from __future__ import annotations

import pytest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import AnyValue
from opentelemetry.sdk.trace.sampling import ALWAYS_ON

from lwsobs.core.ids import Ids
from lwsobs.core.model import Transaction
from lwsobs.core.roles import Role
from lwsobs.core.tracker import Tracker
from lwsobs.sinks.spans import otlp_encode as enc
from lwsobs.sinks.spans.builder import SpanBuilder, SpanData, snapshot
from lwsobs.sinks.spans.otlp_facts import FactEncoder
from tests.otlp_receiver import decode_attributes, decode_request

T0 = 1_795_713_864_949_553_093
RESOURCE = enc.encode_resource({"service.name": "lwsobs", "n": 3})
SCOPE = enc.encode_scope("lwsobs", "0.1.0")


def decode(body: bytes) -> ExportTraceServiceRequest:
    return ExportTraceServiceRequest.FromString(body)


@pytest.mark.parametrize("value", [0, 1, 127, 128, 300, 2**31, 2**63 - 1, -1, -(2**63), -300])
def test_int_values_round_trip_including_negative_int64(value: int) -> None:
    assert AnyValue.FromString(enc.any_value(value)).int_value == value


@pytest.mark.parametrize(
    "value", ["", "ascii", "ünïcødé ✓", "x" * 123, "y" * 124, "z" * 5000, True, False, 1.5, -0.25]
)
def test_scalar_values_round_trip(value: object) -> None:
    encoded = enc.key_values({"k": value}, b"\x0a")
    assert decode_attributes(
        ExportTraceServiceRequest.FromString(
            enc.encode_request(enc.encode_resource({"k": value}), SCOPE, [])
        )
        .resource_spans[0]
        .resource.attributes
    ) == {"k": value}
    assert encoded == enc.encode_resource({"k": value})


def test_a_full_span_decodes_field_by_field() -> None:
    span = SpanData(
        0x4BF92F3577B34DA6A3CE929D0E0E4736,
        0x00F067AA0BA902B7,
        0x1122334455667788,
        "GET /items/{id}",
        2,
        T0,
        T0 + 5000,
        {"s": "v", "i": 42, "b": True, "f": 0.5},
        (("upgraded", T0 + 10, {"lws.role.previous": "h1-server"}),),
        ((7, 8, {"lws.link": "connection"}),),
        2,
        "boom",
    )
    request = decode(enc.encode_spans(RESOURCE, SCOPE, [span, span]))
    (resource_spans,) = request.resource_spans
    assert decode_attributes(resource_spans.resource.attributes) == {
        "service.name": "lwsobs",
        "n": 3,
    }
    (scope_spans,) = resource_spans.scope_spans
    assert (scope_spans.scope.name, scope_spans.scope.version) == ("lwsobs", "0.1.0")
    assert len(scope_spans.spans) == 2
    (got,) = decode_request(request)[:1]
    assert got.trace_id == f"{span.trace_id:032x}" and got.span_id == f"{span.span_id:016x}"
    assert got.parent_span_id == f"{span.parent_span_id:016x}"
    assert (got.name, got.kind) == ("GET /items/{id}", "SERVER")
    assert (got.start_ns, got.end_ns) == (T0, T0 + 5000)
    assert got.attributes == {"s": "v", "i": 42, "b": True, "f": 0.5}
    assert [(e.name, e.time_ns, e.attributes) for e in got.events] == [
        ("upgraded", T0 + 10, {"lws.role.previous": "h1-server"})
    ]
    assert [(link.trace_id, link.span_id, link.attributes) for link in got.links] == [
        (f"{7:032x}", f"{8:016x}", {"lws.link": "connection"})
    ]
    assert (got.status_code, got.status_message) == ("ERROR", "boom")
    raw = scope_spans.spans[0]
    assert raw.flags == 0x101  # sampled, and known not to have a remote parent


def test_a_root_span_has_no_parent_and_an_unset_status() -> None:
    span = SpanData(1, 2, 0, "wsi listen", 1, T0, T0 + 1, {})
    (got,) = decode_request(decode(enc.encode_spans(RESOURCE, SCOPE, [span])))
    assert got.parent_span_id is None and got.status_code == "UNSET" and got.kind == "INTERNAL"


def normalized(body: bytes) -> list[tuple[object, ...]]:
    """Spans as comparable tuples, attributes as dicts (their order is not significant)."""
    return [
        (
            s.trace_id,
            s.span_id,
            s.parent_span_id,
            s.name,
            s.kind,
            s.start_ns,
            s.end_ns,
            s.attributes,
            s.status_code,
            s.status_message,
            [(link.trace_id, link.span_id, link.attributes) for link in s.links],
            [(e.name, e.time_ns) for e in s.events],
        )
        for s in decode_request(decode(body))
    ]


def scenario(join: bool) -> tuple[SpanBuilder, list[Transaction | object]]:
    """Transactions of every shape the fast path has to get right, plus their connections."""
    tracker = Tracker()
    builder = SpanBuilder(Ids(7, join_traceparent=join), ALWAYS_ON)
    ctx = tracker.context("aiohttp", "server-1")
    facts: list[Transaction | object] = []
    shapes = [
        ("GET", "/hello?q=1", 200, "/hello", None),
        ("POST", "/items/7", 201, "/items/{id}", None),
        ("GET", "/missing", 404, None, None),
        ("GET", "/boom", 500, "/boom", None),
        (None, None, 400, None, "invalid_request"),
        ("GET", "/ws", 101, "/ws", None),
        ("GET", "/p/" + "é" * 200, 200, None, None),
        ("DELETE", "/slow", None, "/slow", "aborted"),
    ]
    for c in range(3):
        wsi = tracker.open(
            ctx, Role.H1_SERVER, T0 + c, peer=("127.0.0.1", 40000 + c), local=("127.0.0.1", 8080)
        )
        for i, (method, path, status, route, error) in enumerate(shapes * 20):
            start = T0 + 1000 * i + c
            parent = f"00-{'ab' * 16}-{'cd' * 8}-01" if i % 7 == 3 else None
            txn = tracker.bind(wsi, start + 500, start - 200 * (i % 3), method, path, parent)
            assert txn is not None
            tracker.drop(wsi, start + 900, status, route, error)
            facts.append(txn)
        tracker.destroy(wsi, T0 + 10**9)
        facts.append(snapshot(wsi))
    for fact in facts:
        assert builder.decide(fact)  # type: ignore[arg-type]
    return builder, facts


@pytest.mark.parametrize("join", [True, False])
def test_fast_path_encodes_exactly_what_the_generic_path_does(join: bool) -> None:
    builder, facts = scenario(join)
    fast = FactEncoder(builder, RESOURCE, SCOPE).encode(facts)  # type: ignore[arg-type]
    generic = enc.encode_spans(
        RESOURCE,
        SCOPE,
        [
            builder.transaction(f) if isinstance(f, Transaction) else builder.connection(f)  # type: ignore[arg-type]
            for f in facts
        ],
    )
    assert normalized(fast) == normalized(generic)
    assert len(normalized(fast)) == len(facts)


def test_query_strings_never_leave_in_url_path() -> None:
    builder, facts = scenario(True)
    spans = decode_request(decode(FactEncoder(builder, RESOURCE, SCOPE).encode(facts)))  # type: ignore[arg-type]
    assert {s.attributes.get("url.path") for s in spans} >= {"/hello"}
    assert not any("?" in str(s.attributes.get("url.path", "")) for s in spans)


def test_sampling_answers_are_kept_per_trace_and_the_oldest_forgotten_beyond_the_bound() -> None:
    """Nested transactions share their connection's answer, a joined one has its own, and past
    `remember` answers per table the oldest goes first (then exemplars stop pointing at it)."""
    tracker = Tracker()
    ctx = tracker.context("s", "c")
    builder = SpanBuilder(Ids(5, join_traceparent=True), ALWAYS_ON, remember=2)
    wsis = [tracker.open(ctx, Role.H1_SERVER, T0 + n) for n in range(3)]
    nested = tracker.bind(wsis[0], T0 + 10, T0 + 10, "GET", "/", None)
    assert nested is not None and not builder.known_kept(nested)
    assert builder.transaction_sampled(nested) and builder.known_kept(wsis[0])
    assert builder.known_kept(nested)  # the connection's answer
    tracker.drop(wsis[0], T0 + 11, 200)
    joined = tracker.bind(
        wsis[1], T0 + 12, T0 + 12, "GET", "/", "00-" + "ab" * 16 + "-" + "cd" * 8 + "-01"
    )
    assert joined is not None and builder.transaction_sampled(joined)
    assert builder.known_kept(joined) and not builder.known_kept(wsis[1])  # its own answer
    for wsi in wsis[1:]:
        assert builder.wsi_sampled(wsi)
    assert [builder.known_kept(w) for w in wsis] == [False, True, True]  # wsis[0] forgotten
    assert builder.known_kept(joined)  # the other table is bounded on its own
