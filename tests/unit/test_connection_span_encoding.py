"""Connection spans written from fragments (connection_span.py) against the reference:
`encode_span(SpanBuilder.connection(fact))`, byte for byte.

Each fact meets the reference and two FactEncoders over one builder (a fresh one and one whose
caches earlier facts filled). Facts cover every role, every form of address, leaks, events and
wsi attributes of every type; the unusual ones must take the general path and come out the same,
or raise what the reference raises. The tests also check that the usual facts are really written
from fragments (else they would pass by always falling back).
"""

from __future__ import annotations

from collections.abc import Callable
from contextlib import suppress
from typing import Any, TypeVar

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.sdk.trace.sampling import ALWAYS_ON

from lwsobs.build import build_kind
from lwsobs.core.ids import Ids
from lwsobs.core.model import Context, Peer, Transaction, Wsi
from lwsobs.core.roles import CLIENT_ROLES, EndReason, LeakRule, Role
from lwsobs.sinks.spans import connection_span
from lwsobs.sinks.spans import otlp_encode as enc
from lwsobs.sinks.spans.builder import ConnectionFact, SpanBuilder
from lwsobs.sinks.spans.otlp_facts import FactEncoder
from lwsobs.sinks.spans.sink import SpanSink
from tests.otlp_receiver import decode_request

COMPILED = build_kind() == "compiled"


def record(make: Callable[[], R]) -> R | None:
    """`make()`, or None where the compiled build refuses a record that breaks its declared
    types (a TypeError as it is built): there is then nothing to encode. The interpreted build
    holds any value, and its encoders must still agree with the reference."""
    try:
        return make()
    except TypeError:
        assert COMPILED, "only the compiled build checks record types"
        return None


def outcome(encode: Any) -> bytes | type[BaseException]:
    """What `encode()` returns, or the type of what it raises."""
    try:
        result: bytes = encode()
    except Exception as exc:  # the reference's exception is part of the expected outcome
        return type(exc)
    return result


R = TypeVar("R")
T0 = 1_795_713_864_949_553_093
RESOURCE = enc.encode_resource({"service.name": "lwsobs", "host.name": "h"})
SCOPE = enc.encode_scope("lwsobs", "0.1.0")

Encoders = tuple[FactEncoder, FactEncoder]


def encoders(ids: Ids | None = None) -> Encoders:
    """Two encoders over one builder, the second with caches other facts filled."""
    builder = SpanBuilder(ids or Ids(7), ALWAYS_ON)
    fresh = FactEncoder(builder, RESOURCE, SCOPE)
    warm = FactEncoder(builder, RESOURCE, SCOPE)
    with suppress(Exception):
        warm.encode([fact(w) for w in ROLE_WSIS.values()])
    return fresh, warm


def reference(builder: SpanBuilder, facts: list[Any]) -> bytes:
    return enc.encode_request(
        RESOURCE, SCOPE, [enc.encode_span(builder.connection(f)) for f in facts]
    )


def check(facts: list[Any], pair: Encoders | None = None) -> bytes:
    """Both encoders write the reference's bytes (twice: warm caches change nothing)."""
    fresh, warm = pair or encoders()
    expected = reference(fresh.builder, facts)
    for _ in range(2):
        assert fresh.encode(facts) == expected
        assert warm.encode(facts) == expected
    return expected


class Counting(SpanBuilder):
    """Counts the spans built as SpanData (the general path) rather than from fragments."""

    def __init__(self, ids: Ids) -> None:
        self.slow = 0
        super().__init__(ids, ALWAYS_ON)

    def connection(self, fact: ConnectionFact) -> Any:
        self.slow += 1
        return super().connection(fact)

    def transaction(self, txn: Transaction) -> Any:
        self.slow += 1
        return super().transaction(txn)


def from_fragments(fact: ConnectionFact) -> bool:
    """Whether the encoder wrote `fact` from fragments, without building its SpanData."""
    builder = Counting(Ids(7))
    with suppress(Exception):
        FactEncoder(builder, RESOURCE, SCOPE).encode([fact])
    return builder.slow == 0


# -- the world the facts come from --------------------------------------------------------------


CONTEXT = Context("lws", "ctx-1", epoch_ns=T0 - 10**9)
NOT_A_WSI: Any = object()
_serials = iter(range(1000, 10**9))


def wsi(
    role: Role = Role.H1_SERVER,
    *,
    peer: Peer = None,
    local: Peer = None,
    parent: Wsi | None = None,
    attrs: dict[str, Any] | None = None,
    context: Context = CONTEXT,
    serial: int | None = None,
) -> Wsi:
    return Wsi(
        next(_serials) if serial is None else serial,
        context,
        role,
        T0,
        peer,
        local,
        parent,
        attrs,
    )


def fact(
    w: Wsi,
    *,
    role: Role | None = None,
    end: int = T0 + 5_000_000,
    transactions: Any = 3,
    end_reason: str | None = EndReason.DESTROYED.value,
    leak: str | None = None,
    events: tuple[Any, ...] = (),
) -> ConnectionFact:
    return ConnectionFact(
        w, w.role if role is None else role, end, transactions, end_reason, leak, events
    )


def decoded(body: bytes) -> dict[str, Any]:
    (span,) = decode_request(ExportTraceServiceRequest.FromString(body))
    return span.attributes


# -- every role ---------------------------------------------------------------------------------

H2 = wsi(Role.H2_SERVER, peer="192.0.2.1:443", local="192.0.2.2:8443")
ROLE_WSIS = {
    Role.LISTEN: wsi(Role.LISTEN, local=("0.0.0.0", 8080)),
    Role.H1_SERVER: wsi(Role.H1_SERVER, peer=("127.0.0.1", 40000), local=("127.0.0.1", 8080)),
    Role.WS_SERVER: wsi(Role.WS_SERVER, peer="[::1]:5000", local="[::1]:80"),
    Role.H2_SERVER: H2,
    Role.H2_STREAM: wsi(Role.H2_STREAM, parent=H2),
    Role.H1_CLIENT: wsi(Role.H1_CLIENT, peer=("93.184.216.34", 443), local=("198.51.100.1", 51000)),
    Role.H2_CLIENT: wsi(Role.H2_CLIENT, peer="example.org:443"),
    Role.WS_CLIENT: wsi(Role.WS_CLIENT, peer="example.org", local="198.51.100.1:51001"),
    Role.RAW: wsi(Role.RAW, peer="unix:/run/app.sock"),
    Role.INTERNAL: wsi(Role.INTERNAL),
}


def test_every_role_is_in_the_table() -> None:
    assert set(ROLE_WSIS) == set(Role)


@pytest.mark.parametrize("role", list(Role))
def test_every_role_encodes_as_the_reference_from_fragments(role: Role) -> None:
    f = fact(ROLE_WSIS[role])
    body = check([f])
    assert from_fragments(f) and connection_span.usual(f)
    attrs = decoded(body)
    assert attrs["lws.role"] == role.value and attrs["lws.end.reason"] == "destroyed"
    local = "network.local" if role in CLIENT_ROLES else "server"
    if ROLE_WSIS[role].local is not None:
        assert f"{local}.address" in attrs


def test_an_h2_stream_is_a_child_in_its_network_connection_trace() -> None:
    stream = wsi(Role.H2_STREAM, parent=wsi(Role.H2_STREAM, parent=H2))  # nested twice
    body = check([fact(stream), fact(H2)])
    spans = decode_request(ExportTraceServiceRequest.FromString(body))
    ids = Ids(7)
    assert spans[0].trace_id == spans[1].trace_id == f"{ids.wsi_trace_id(H2):032x}"
    parent = stream.parent
    assert parent is not None
    assert spans[0].parent_span_id == f"{ids.wsi_span_id(parent):016x}"
    assert spans[1].parent_span_id is None


def test_a_chain_of_parents_deeper_than_c_follows_is_left_to_python() -> None:
    w = H2
    for _ in range(100):
        w = wsi(Role.H2_STREAM, parent=w)
    check([fact(w)])


# -- addresses ----------------------------------------------------------------------------------

ADDRESSES: list[Any] = [
    None,
    "",
    ("127.0.0.1", 40000),
    ("::1", 8080, 0, 0),  # an AF_INET6 getpeername() tuple
    ("127.0.0.1", 0),
    ("127.0.0.1", 2**63 - 1),
    ("127.0.0.1", -1),
    ("ünï.example", 1),
    ("h" * 200, 65535),
    "127.0.0.1:40000",
    "[::1]:8080",
    "[fe80::1%eth0]:443",
    "[[::1]]:1",
    "::1",  # an IPv6 address alone: "::" before the last colon, so no port
    "fe80::1",
    "[::1]",
    "example.org",  # no port
    "example.org:",
    "example.org:http",
    ":80",
    "host:0080",
    "host:18446744073709551615",  # beyond int64: left to Python
    "ünïcødé.example:443",
    "x" * 300 + ":1",
    "unix:/run/app.sock",
]
# what the reference handles its own way (str() or int() of other types, Unicode digits)
ODD_ADDRESSES: list[Any] = [
    ("h",),
    ("h", "80"),
    (b"host", 80),
    (None, 80),
    ("h", True),
    ("h", 2**70),
    ["127.0.0.1", 80],
    "host:²",  # str.isdigit() but not int(): the reference raises ValueError
    "host:١٢",  # Arabic-Indic digits: int() takes them
    "host:\ud800",
    "\udc80:1",
    42,
]


class Str(str):
    pass


class Tup(tuple):  # type: ignore[type-arg]
    pass


@pytest.mark.parametrize("address", ADDRESSES)
@pytest.mark.parametrize("role", [Role.H1_SERVER, Role.H1_CLIENT])
def test_every_form_of_address_encodes_as_the_reference(role: Role, address: Any) -> None:
    for f in (fact(wsi(role, peer=address)), fact(wsi(role, local=address))):
        check([f])
        if address != "host:18446744073709551615":
            assert from_fragments(f)


@pytest.mark.parametrize(
    "address", [*ODD_ADDRESSES, Str("1.2.3.4:5"), Tup(("1.2.3.4", 5)), Tup(("h",))]
)
def test_odd_addresses_take_the_general_path_and_give_what_it_gives(address: Any) -> None:
    pair = encoders()
    made = [record(lambda: wsi(peer=address)), record(lambda: wsi(Role.WS_CLIENT, local=address))]
    for f in (fact(w) for w in made if w is not None):
        expected = outcome(lambda: reference(pair[0].builder, [f]))  # noqa: B023
        assert outcome(lambda: pair[0].encode([f])) == expected  # noqa: B023
        assert outcome(lambda: pair[1].encode([f])) == expected  # noqa: B023


def test_the_address_attributes_are_the_ones_expected() -> None:
    attrs = decoded(check([fact(wsi(peer="[fe80::1]:443", local="192.0.2.1"))]))
    assert attrs["network.peer.address"] == "fe80::1" and attrs["network.peer.port"] == 443
    assert attrs["server.address"] == "192.0.2.1" and "server.port" not in attrs


# -- leaks, end reasons, events -----------------------------------------------------------------


@pytest.mark.parametrize("leak", [None, *(rule.value for rule in LeakRule), "ünï"])
@pytest.mark.parametrize("end_reason", [None, "", *(reason.value for reason in EndReason)])
def test_leaks_and_end_reasons_encode_as_the_reference(
    leak: str | None, end_reason: str | None
) -> None:
    f = fact(wsi(peer=("127.0.0.1", 1)), leak=leak, end_reason=end_reason)
    body = check([f])
    assert from_fragments(f)
    (span,) = decode_request(ExportTraceServiceRequest.FromString(body))
    assert span.attributes["lws.leaked"] is (leak is not None)
    assert span.attributes["lws.end.reason"] == (end_reason or "leaked")
    if leak is not None:
        assert span.attributes["lws.leak.rule"] == leak
        assert span.attributes["error.type"] == f"leak.{leak}"
        assert (span.status_code, span.status_message) == ("ERROR", f"wsi leaked ({leak})")
    else:
        assert span.status_code == "UNSET" and "lws.leak.rule" not in span.attributes


def test_a_leak_as_an_enum_member_encodes_as_its_value() -> None:
    w = wsi()
    check([fact(w, leak=LeakRule.IDLE, end_reason=EndReason.LEAKED)])


@pytest.mark.parametrize(
    "events",
    [
        (("upgraded", T0 + 10, {"lws.role.previous": "h1-server"}),),
        (("leak_suspected", T0 + 20, None), ("x", T0 + 30, {"n": 1, "b": True})),
    ],
)
def test_a_span_with_events_takes_the_general_path(events: tuple[Any, ...]) -> None:
    f = fact(wsi(peer="1.2.3.4:5"), events=events, leak="idle", end_reason=None)
    body = check([f])
    assert not from_fragments(f) and not connection_span.usual(f)
    (span,) = decode_request(ExportTraceServiceRequest.FromString(body))
    assert [e.name for e in span.events] == [e[0] for e in events]


# -- the wsi's own attributes -------------------------------------------------------------------

LONG = "v" * 124
WSI_ATTRS: list[dict[str, Any]] = [
    {},
    {"lws.wsi.ptr": "0x55d1c2a0", "lws.src": "app@host:1", "lws.vhost": "default"},
    {"lws.protocol": "http", "lws.ssl": True, "lws.tag": "wsisrv|0"},
    {"lws.leak.uncertain": True, "lws.ssl": False},
    {"n": 0, "big": 2**63 - 1, "neg": -1, "min": -(2**63), "v127": 127, "v128": 128},
    {"f": 0.5, "nan": float("nan"), "inf": float("-inf"), "zero": -0.0},
    {"long": LONG, "longer": "w" * 123, "huge": "z" * 20_000, "": ""},
    {"ünï": "cødé ✓", "emoji": "🙂" * 50, "k" * 130: "long key"},
]
# what the reference writes its own way, or where it raises
ODD_WSI_ATTRS: list[dict[Any, Any]] = [
    {"lws.role": "spoofed"},  # replaces a value SpanBuilder wrote, in its place
    {"server.port": 1},
    {"network.protocol.name": "h3", "x": 1},
    {"error.type": "custom"},
    {"big": 2**64},
    {"bytes": b"raw"},
    {"none": None},
    {"list": [1, 2]},
    {"str subclass": Str("s")},
    {"surrogate": "\udfff"},
    {"\udfff": "surrogate key"},
    {7: "int key"},
    {Str("lws.src"): "str subclass key"},
]


@pytest.mark.parametrize("attrs", WSI_ATTRS)
def test_wsi_attributes_encode_as_the_reference(attrs: dict[str, Any]) -> None:
    f = fact(wsi(peer="127.0.0.1:40000", attrs=dict(attrs)))
    body = check([f])
    assert from_fragments(f)
    got = decoded(body)
    for key, value in attrs.items():
        if value == value:  # not NaN
            assert got[key] == value


@pytest.mark.parametrize("attrs", ODD_WSI_ATTRS)
def test_odd_wsi_attributes_encode_as_the_reference_does(attrs: dict[Any, Any]) -> None:
    f = fact(wsi(peer="127.0.0.1:40000", attrs=dict(attrs)))
    pair = encoders()
    expected = outcome(lambda: reference(pair[0].builder, [f]))
    assert outcome(lambda: pair[0].encode([f])) == expected
    assert outcome(lambda: pair[1].encode([f])) == expected
    assert from_fragments(f) == connection_span.usual(f)  # only spoofed built keys fall back


class Dict(dict):  # type: ignore[type-arg]
    pass


def test_attributes_not_a_plain_dict_take_the_general_path() -> None:
    w = wsi()
    w.extra.attrs = Dict({"a": "b"})
    f = fact(w)
    check([f])
    assert from_fragments(f)  # a mapping of another type is read like a dict


# -- other values -------------------------------------------------------------------------------

EDGE_INTS = [0, 1, 127, 128, 16383, 16384, 2**31, 2**35, 2**56, 2**63 - 1, 2**64 - 1]


@pytest.mark.parametrize("serial", [0, 1, 2**63, 2**64 - 1, 2**64 + 5, -1, -(2**70)])
def test_any_serial_gives_the_reference_ids(serial: int) -> None:
    for salt in (0, 7, 2**64 - 1, -5):
        parent = wsi(Role.H2_SERVER, serial=serial + 1)
        check(
            [fact(wsi(serial=serial)), fact(wsi(Role.H2_STREAM, parent=parent))],
            encoders(Ids(salt)),
        )


@pytest.mark.parametrize("value", [*EDGE_INTS, 2**64, -1, 1.5, None, True])
def test_times_and_counts_at_the_edges_encode_or_fail_as_the_reference(value: Any) -> None:
    pair = encoders()
    created = record(lambda: created_at(value))
    facts = [fact(wsi(), end=value), fact(wsi(), transactions=value)]
    for f in facts + ([fact(created)] if created is not None else []):
        expected = outcome(lambda: reference(pair[0].builder, [f]))  # noqa: B023
        assert outcome(lambda: pair[0].encode([f])) == expected  # noqa: B023
        assert outcome(lambda: pair[1].encode([f])) == expected  # noqa: B023


def created_at(value: Any) -> Wsi:
    w = wsi(context=Context("s", "c", epoch_ns=0))
    w._created = value
    return w


@pytest.mark.parametrize(
    "source, name",
    [("", ""), ("lws-ünï", "ctx ✓"), ("s" * 130, "n" * 200), ("other", "\udcff"), (1, "c")],
)
def test_context_names_encode_as_the_reference(source: Any, name: Any) -> None:
    pair = encoders()
    context = record(lambda: Context(source, name))
    if context is None:
        return
    f = fact(wsi(context=context))
    expected = outcome(lambda: reference(pair[0].builder, [f]))
    assert outcome(lambda: pair[0].encode([f])) == expected
    assert outcome(lambda: pair[1].encode([f])) == expected


def test_a_broken_wsi_raises_what_the_reference_raises() -> None:
    broken = wsi()

    def break_it() -> Wsi:
        broken.context = None  # type: ignore[assignment]
        return broken

    broken_facts = [fact(broken)] if record(break_it) is not None else []
    not_a_wsi = fact(wsi())._replace(wsi=NOT_A_WSI)
    pair = encoders()
    for f in (*broken_facts, not_a_wsi, fact(wsi(), role="h1-server")):  # type: ignore[arg-type]
        expected = outcome(lambda: reference(pair[0].builder, [f]))  # noqa: B023
        assert isinstance(expected, type)  # an exception
        assert outcome(lambda: pair[0].encode([f])) == expected  # noqa: B023
        assert outcome(lambda: pair[1].encode([f])) == expected  # noqa: B023
    good = fact(wsi())
    assert pair[0].encode([good]) == reference(pair[0].builder, [good])  # and it carries on


# -- anything at all: a property test -----------------------------------------------------------

values = st.one_of(
    st.text(max_size=140),
    st.sampled_from([LONG, "é" * 70, "\ud800"]),
    st.booleans(),
    st.integers(-(2**63), 2**63 - 1),
    st.floats(allow_nan=False),
)


@st.composite
def connection_facts(draw: st.DrawFn) -> list[Any]:
    role = draw(st.sampled_from(list(Role)))
    parent = draw(st.sampled_from([None, H2]))
    attrs = draw(
        st.one_of(
            st.none(),
            st.dictionaries(
                st.one_of(
                    st.text(max_size=20), st.sampled_from(sorted(connection_span.BUILT_KEYS))
                ),
                values,
                max_size=6,
            ),
        )
    )
    peer = draw(st.sampled_from(ADDRESSES + ODD_ADDRESSES))
    if COMPILED and not isinstance(peer, tuple | str | None):
        peer = None  # the compiled core refuses it (test_odd_addresses_... checks that)
    w = wsi(
        role,
        peer=peer,
        local=draw(st.sampled_from(ADDRESSES)),
        parent=parent,
        attrs=attrs,
        context=Context(draw(st.text(max_size=10)), draw(st.text(max_size=10)), T0 - 10**9),
        serial=draw(st.integers(0, 2**64 - 1)),
    )
    f = fact(
        w,
        end=draw(st.integers(0, 2**64 - 1)),
        transactions=draw(st.one_of(st.integers(0, 2**40), st.sampled_from(EDGE_INTS))),
        end_reason=draw(st.sampled_from([None, "destroyed", "shutdown", "leaked"])),
        leak=draw(st.sampled_from([None, "idle", "context_destroyed", "evicted"])),
        events=draw(st.sampled_from([(), (("upgraded", T0, None),)])),
    )
    return [f, fact(parent)] if parent is not None else [f]


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(connection_facts(), min_size=1, max_size=5), st.integers(0, 2**64 - 1))
def test_any_connection_fact_encodes_as_the_reference_or_raises_the_same(
    groups: list[list[Any]], salt: int
) -> None:
    pair = encoders(Ids(salt))
    facts = [f for group in groups for f in group]
    expected = outcome(lambda: reference(pair[0].builder, facts))
    assert outcome(lambda: pair[0].encode(facts)) == expected
    assert outcome(lambda: pair[1].encode(facts)) == expected
    if isinstance(expected, bytes) and all(f.wsi.peer != ("h", 2**70) for f in facts):
        # (a port beyond 64 bits is an int varint no decoder takes, in the reference too)
        assert len(decode_request(ExportTraceServiceRequest.FromString(expected))) == len(facts)


def test_a_connection_fact_without_a_wsi_is_counted_as_a_build_error() -> None:
    builder = SpanBuilder(Ids(1), ALWAYS_ON)
    sink = SpanSink(builder, [], batch_size=10)
    sink._push(fact(wsi())._replace(wsi=NOT_A_WSI))
    sink._push(fact(wsi()))
    sink.flush()
    assert (sink.exported, dict(sink.dropped)) == (1, {"build_error": 1})


# -- the benchmark's connections: no Python at all ----------------------------------------------


def test_a_plain_lws_connection_is_written_from_fragments() -> None:
    """A usual connection span and its transactions build no SpanData, and one shape serves
    every connection of the benchmark's kind."""
    builder = Counting(Ids(1))
    encoder = FactEncoder(builder, RESOURCE, SCOPE)
    ctx = Context("benchapp@host:1", "55aa00")
    attrs = {"lws.wsi.ptr": "55d1c20001", "lws.src": "benchapp@host:1", "lws.vhost": "default"}
    facts: list[Any] = []
    for i in range(20):
        w = wsi(peer="127.0.0.1:40000", context=ctx, attrs={**attrs, "lws.protocol": "http"})
        for n in range(4):
            txn = Transaction(w, 10 * i + n, n, T0 + n, T0 + n + 1, "GET", f"/item/{n}", None)
            txn.end_ns, txn.status, txn.route = T0 + n + 2, 200, None
            facts.append(txn)
        facts.append(fact(w))
    encoded = encoder.encode(facts)
    assert builder.slow == 0
    assert len(encoder._connection_shapes.cache) == 1
    pure = encoder.encode(facts)
    assert encoded == pure
    spans = decode_request(ExportTraceServiceRequest.FromString(pure))
    assert spans[:5] == decode_request(
        ExportTraceServiceRequest.FromString(
            enc.encode_spans(
                RESOURCE,
                SCOPE,
                [builder.transaction(f) for f in facts[:4]] + [builder.connection(facts[4])],
            )
        )
    )
