"""Trace and span ids derived from serials, and W3C traceparent parsing."""

from __future__ import annotations

import pytest

from lwsobs.core.ids import M64, Ids, RemoteParent, TxnTrace, mix64, parse_traceparent
from lwsobs.core.model import Transaction
from lwsobs.core.roles import Role
from tests.unit.recording import T0, make

TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"
SPAN = "00f067aa0ba902b7"
VALID = f"00-{TRACE}-{SPAN}-01"


# -- mix64 -----------------------------------------------------------------------------------------


def test_mix64_known_values() -> None:
    assert mix64(0) == 0
    # splitmix64's finalizer; the state of the reference generator after one step from 0
    assert mix64(0x9E3779B97F4A7C15) == 0xE220A8397B1DCDAF


def test_mix64_stays_within_64_bits_and_masks_its_input() -> None:
    for x in (1, M64, 1 << 63, 12345678901234567890):
        assert 0 <= mix64(x) <= M64
    assert mix64(1 << 64) == mix64(0)
    assert mix64((1 << 64) + 5) == mix64(5)
    assert mix64(-1) == mix64(M64)


@pytest.mark.parametrize("start", [0, 1 << 32, M64 - 100_000])
def test_mix64_has_no_collisions_over_a_run_of_inputs(start: int) -> None:
    n = 100_000
    assert len({mix64(start + i) for i in range(n)}) == n


def test_mix64_has_no_collisions_over_sparse_inputs() -> None:
    inputs = [(i * 0x9E3779B97F4A7C15) & M64 for i in range(50_000)]
    inputs += [1 << b for b in range(64)]
    inputs = list(set(inputs))
    assert len({mix64(x) for x in inputs}) == len(inputs)


# -- ids of wsis and transactions ------------------------------------------------------------------


def txns(n: int) -> tuple[list[Transaction], Ids]:
    tracker, _ = make()
    ctx = tracker.context("aiohttp", "app")
    out = []
    for _i in range(n):
        wsi = tracker.open(ctx, Role.H1_SERVER, T0)
        txn = tracker.bind(wsi, T0)
        assert txn is not None
        out.append(txn)
    return out, Ids(0x1234_5678_9ABC_DEF0)


@pytest.mark.parametrize("salt", [0, 1, 0x1234_5678_9ABC_DEF0, M64, 1 << 70])
def test_wsi_and_txn_span_ids_are_distinct_and_nonzero(salt: int) -> None:
    tracker, _ = make()
    ctx = tracker.context("aiohttp", "app")
    ids = Ids(salt)
    wsi_spans, txn_spans, traces = set(), set(), set()
    n = 2000
    for _i in range(n):
        wsi = tracker.open(ctx, Role.H1_SERVER, T0)
        for _j in range(2):
            txn = tracker.bind(wsi, T0)
            assert txn is not None
            txn_spans.add(ids.txn_span_id(txn))
        wsi_spans.add(ids.wsi_span_id(wsi))
        traces.add(ids.wsi_trace_id(wsi))
    assert len(wsi_spans) == n
    assert len(txn_spans) == 2 * n
    assert len(traces) == n
    assert wsi_spans.isdisjoint(txn_spans)
    assert 0 not in wsi_spans | txn_spans
    assert all(0 < s <= M64 for s in wsi_spans | txn_spans)
    assert all(0 < t < 1 << 128 for t in traces)


def test_ids_are_deterministic_and_depend_on_the_salt() -> None:
    (txn,), ids = txns(1)
    again = Ids(0x1234_5678_9ABC_DEF0)
    other = Ids(0x1234_5678_9ABC_DEF1)
    wsi = txn.wsi
    assert ids.wsi_span_id(wsi) == again.wsi_span_id(wsi)
    assert ids.wsi_trace_id(wsi) == again.wsi_trace_id(wsi)
    assert ids.txn_span_id(txn) == again.txn_span_id(txn)
    assert ids.wsi_span_id(wsi) != other.wsi_span_id(wsi)
    assert ids.wsi_trace_id(wsi) != other.wsi_trace_id(wsi)
    assert ids.txn_span_id(txn) != other.txn_span_id(txn)


def test_salt_is_masked_to_64_bits() -> None:
    assert Ids((1 << 64) + 7).salt == 7
    assert Ids(-1).salt == M64


def test_trace_id_high_half_is_per_process_and_low_half_per_connection() -> None:
    (a, b), ids = txns(2)
    ta, tb = ids.wsi_trace_id(a.wsi), ids.wsi_trace_id(b.wsi)
    assert ta >> 64 == tb >> 64 == ids.trace_hi != 0
    assert ta & M64 != tb & M64
    assert len(f"{ta:032x}") == 32


def test_h2_streams_share_the_trace_of_their_network_wsi() -> None:
    tracker, _ = make()
    ctx = tracker.context("lws", "ctx")
    ids = Ids(99)
    net = tracker.open(ctx, Role.H2_SERVER, T0)
    stream = tracker.open(ctx, Role.H2_STREAM, T0, parent=net)
    nested = tracker.open(ctx, Role.INTERNAL, T0, parent=stream)
    other = tracker.open(ctx, Role.H2_SERVER, T0)
    root_trace = ids.wsi_trace_id(net)
    assert ids.wsi_trace_id(stream) == root_trace
    assert ids.wsi_trace_id(nested) == root_trace
    assert ids.wsi_trace_id(other) != root_trace
    assert len({ids.wsi_span_id(w) for w in (net, stream, nested, other)}) == 4
    txn = tracker.bind(stream, T0)
    assert txn is not None
    trace = ids.txn_trace(txn)
    assert trace == TxnTrace(root_trace, ids.txn_span_id(txn), ids.wsi_span_id(stream), None)


# -- txn_trace -------------------------------------------------------------------------------------


def bound(traceparent: str | None) -> Transaction:
    tracker, _ = make()
    wsi = tracker.open(tracker.context("aiohttp", "app"), Role.H1_SERVER, T0)
    txn = tracker.bind(wsi, T0, traceparent=traceparent)
    assert txn is not None
    return txn


def test_txn_trace_joins_a_valid_remote_parent() -> None:
    txn = bound(VALID)
    ids = Ids(5, join_traceparent=True)
    trace = ids.txn_trace(txn)
    remote = RemoteParent(int(TRACE, 16), int(SPAN, 16), True)
    assert trace == TxnTrace(int(TRACE, 16), ids.txn_span_id(txn), int(SPAN, 16), remote)


def test_txn_trace_nests_under_the_connection_when_not_joining() -> None:
    txn = bound(VALID)
    ids = Ids(5, join_traceparent=False)
    trace = ids.txn_trace(txn)
    wsi = txn.wsi
    assert trace == TxnTrace(
        ids.wsi_trace_id(wsi), ids.txn_span_id(txn), ids.wsi_span_id(wsi), None
    )


@pytest.mark.parametrize("traceparent", [None, "", "garbage", f"00-{'0' * 32}-{SPAN}-01"])
def test_txn_trace_nests_under_the_connection_without_a_valid_parent(
    traceparent: str | None,
) -> None:
    txn = bound(traceparent)
    ids = Ids(5)
    trace = ids.txn_trace(txn)
    wsi = txn.wsi
    assert trace == TxnTrace(
        ids.wsi_trace_id(wsi), ids.txn_span_id(txn), ids.wsi_span_id(wsi), None
    )


# -- parse_traceparent -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (VALID, RemoteParent(int(TRACE, 16), int(SPAN, 16), True)),
        (f"00-{TRACE}-{SPAN}-00", RemoteParent(int(TRACE, 16), int(SPAN, 16), False)),
        (f"00-{TRACE}-{SPAN}-03", RemoteParent(int(TRACE, 16), int(SPAN, 16), True)),
        (f"00-{TRACE}-{SPAN}-02", RemoteParent(int(TRACE, 16), int(SPAN, 16), False)),
        (f"  {VALID}\t", RemoteParent(int(TRACE, 16), int(SPAN, 16), True)),
        # a later version: parse the fields we know, ignore the rest
        (f"01-{TRACE}-{SPAN}-01", RemoteParent(int(TRACE, 16), int(SPAN, 16), True)),
        (
            f"cc-{TRACE}-{SPAN}-01-what-the-future-holds",
            RemoteParent(int(TRACE, 16), int(SPAN, 16), True),
        ),
        (f"00-{'0' * 31}1-{'0' * 15}1-01", RemoteParent(1, 1, True)),
        (f"00-{'f' * 32}-{'f' * 16}-ff", RemoteParent((1 << 128) - 1, M64, True)),
    ],
)
def test_parse_traceparent_valid(value: str, expected: RemoteParent) -> None:
    assert parse_traceparent(value) == expected


MALFORMED = {
    "none": None,
    "empty": "",
    "blank": "   ",
    "one field": "00",
    "three fields": f"00-{TRACE}-{SPAN}",
    "version ff": f"ff-{TRACE}-{SPAN}-01",
    "version FF": f"FF-{TRACE}-{SPAN}-01",
    "version 00 with an extra field": f"00-{TRACE}-{SPAN}-01-extra",
    "version 00 with a trailing dash": f"{VALID}-",
    "version too short": f"0-{TRACE}-{SPAN}-01",
    "version too long": f"000-{TRACE}-{SPAN}-01",
    "version not hex": f"0g-{TRACE}-{SPAN}-01",
    "trace id too short": f"00-{TRACE[:-1]}-{SPAN}-01",
    "trace id too long": f"00-{TRACE}0-{SPAN}-01",
    "span id too short": f"00-{TRACE}-{SPAN[:-1]}-01",
    "span id too long": f"00-{TRACE}-{SPAN}0-01",
    "flags too short": f"00-{TRACE}-{SPAN}-1",
    "flags too long": f"00-{TRACE}-{SPAN}-001",
    "trace id not hex": f"00-{TRACE[:-1]}g-{SPAN}-01",
    "span id not hex": f"00-{TRACE}-{SPAN[:-1]}z-01",
    "flags not hex": f"00-{TRACE}-{SPAN}-0x",
    "all-zero trace id": f"00-{'0' * 32}-{SPAN}-01",
    "all-zero span id": f"00-{TRACE}-{'0' * 16}-01",
    "empty fields": "00---01",
    "wrong separator": f"00_{TRACE}_{SPAN}_01",
    # int(x, 16) accepts more than hex digits; none of these are valid traceparents
    "underscore in trace id": f"00-{TRACE[:10]}_{TRACE[11:]}-{SPAN}-01",
    "underscore in span id": f"00-{TRACE}-{SPAN[:8]}_{SPAN[9:]}-01",
    "0x prefix in trace id": f"00-0x{TRACE[2:]}-{SPAN}-01",
    "0x prefix in span id": f"00-{TRACE}-0x{SPAN[2:]}-01",
    "sign in trace id": f"00-+{TRACE[1:]}-{SPAN}-01",
    "sign in flags": f"00-{TRACE}-{SPAN}-+1",
    "sign in version": f"+0-{TRACE}-{SPAN}-01",
    "space in trace id": f"00- {TRACE[1:]}-{SPAN}-01",
    "space in span id": f"00-{TRACE}-{SPAN[:-1]} -01",
    "non-ascii digit in trace id": f"00-{TRACE[:-1]}\u0663-{SPAN}-01",
    "uppercase trace id": f"00-{TRACE.upper()}-{SPAN}-01",
    "uppercase span id": f"00-{TRACE}-{SPAN.upper()}-01",
}


@pytest.mark.parametrize("value", list(MALFORMED.values()), ids=list(MALFORMED))
def test_parse_traceparent_rejects_malformed(value: str | None) -> None:
    assert parse_traceparent(value) is None
