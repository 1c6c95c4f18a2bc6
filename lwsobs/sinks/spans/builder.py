"""Turn finished connection and transaction facts into SpanData, ready to encode.

This runs off the request path, in the export worker, in batches. Timestamps are the ones the
core recorded; ids come from core.ids so exemplars and spans always agree. SpanData is a plain
tuple: building an SDK ReadableSpan and encoding it through the SDK costs several times more
(see docs/performance.md), and the OTLP encoder in otlp_encode.py needs nothing else.
"""

from __future__ import annotations

from collections import OrderedDict
from typing import Any, Final, NamedTuple

from mypy_extensions import mypyc_attr
from opentelemetry import trace as trace_api
from opentelemetry.sdk.trace.sampling import Decision, Sampler
from opentelemetry.trace import SpanContext, SpanKind, TraceFlags

from lwsobs.core.ids import Ids, TxnTrace
from lwsobs.core.model import Peer, Transaction, Wsi
from lwsobs.core.roles import CLIENT_ROLES, SERVER_ROLES, EndReason, Role

AttrValue = str | bool | int | float
Attributes = dict[str, AttrValue]

# OTLP SpanKind and StatusCode numbers (opentelemetry/proto/trace/v1/trace.proto)
KIND_INTERNAL, KIND_SERVER, KIND_CLIENT = 1, 2, 3
KIND_NAMES = {1: "INTERNAL", 2: "SERVER", 3: "CLIENT"}
STATUS_UNSET, STATUS_ERROR = 0, 2
STATUS_NAMES = {0: "UNSET", 1: "OK", 2: "ERROR"}


class SpanData(NamedTuple):
    """One finished span; parent_span_id 0 means a root span."""

    trace_id: int
    span_id: int
    parent_span_id: int
    name: str
    kind: int
    start_ns: int
    end_ns: int
    attributes: Attributes
    events: tuple[tuple[str, int, dict[str, Any] | None], ...] = ()
    links: tuple[tuple[int, int, Attributes | None], ...] = ()
    status_code: int = STATUS_UNSET
    status_message: str = ""


class ConnectionFact(NamedTuple):
    """A snapshot of a wsi taken when its span ended; the wsi itself may still change."""

    wsi: Wsi
    role: Role
    span_end_ns: int
    transactions: int
    end_reason: str | None
    leak: str | None
    events: tuple[tuple[str, int, dict[str, Any] | None], ...]


def snapshot(wsi: Wsi) -> ConnectionFact:
    end = wsi.span_end_ns if wsi.span_end_ns is not None else wsi.created_ns
    events = tuple(wsi.events) if wsi.events else ()
    return ConnectionFact(wsi, wsi.role, end, wsi.transactions, wsi.end_reason, wsi.leak, events)


def _is_sampled(decision: Decision) -> bool:
    """Only sampled spans are exported; RECORD_ONLY would be recorded but never leave."""
    return decision is Decision.RECORD_AND_SAMPLE


def span_kind(role: Role) -> int:
    if role in SERVER_ROLES:
        return KIND_SERVER
    if role in CLIENT_ROLES:
        return KIND_CLIENT
    return KIND_INTERNAL


_SDK_KINDS = {
    KIND_INTERNAL: SpanKind.INTERNAL,
    KIND_SERVER: SpanKind.SERVER,
    KIND_CLIENT: SpanKind.CLIENT,
}


def address_attrs(prefix: str, addr: Peer, attrs: dict[str, Any]) -> None:
    """`prefix`.address and `prefix`.port of a socket address, as far as it is known."""
    if isinstance(addr, tuple) and len(addr) >= 2:
        attrs[f"{prefix}.address"] = str(addr[0])
        attrs[f"{prefix}.port"] = int(addr[1])
    elif isinstance(addr, str) and addr:
        host, sep, port = addr.rpartition(":")
        if sep and port.isdigit() and not host.endswith(":"):
            attrs[f"{prefix}.address"] = host.strip("[]")
            attrs[f"{prefix}.port"] = int(port)
        else:
            attrs[f"{prefix}.address"] = addr


def local_prefix(role: Role) -> str:
    """Where a connection's own address goes: the server's, or a client's local one."""
    return "server" if role not in CLIENT_ROLES else "network.local"


def ending_attrs(leak: str | None, end_reason: str | None) -> Attributes:
    """How a connection span ended: lws.leaked, lws.end.reason and a leak's attributes."""
    attrs: Attributes = {
        "lws.leaked": leak is not None,
        "lws.end.reason": end_reason or EndReason.LEAKED.value,
    }
    if leak is not None:
        attrs["lws.leak.rule"] = leak
        attrs["error.type"] = f"leak.{leak}"
    return attrs


def protocol_attrs(role: Role) -> Attributes:
    """network.protocol.* of a connection span: none for listen, raw and internal wsis."""
    if role in (Role.WS_SERVER, Role.WS_CLIENT):
        return {"network.protocol.name": "websocket"}
    if role in (Role.H2_SERVER, Role.H2_STREAM, Role.H2_CLIENT):
        return {"network.protocol.name": "http", "network.protocol.version": "2"}
    if role in (Role.H1_SERVER, Role.H1_CLIENT):
        return {"network.protocol.name": "http", "network.protocol.version": "1.1"}
    return {}


def _root(wsi: Wsi) -> Wsi:
    """The wsi whose trace `wsi` belongs to: itself, or the connection of an h2 stream."""
    while wsi.parent is not None:
        wsi = wsi.parent
    return wsi


def leak_status(leak: str | None) -> tuple[int, str]:
    """The status code and message of a connection span."""
    return (STATUS_ERROR, f"wsi leaked ({leak})") if leak is not None else (STATUS_UNSET, "")


DECISIONS_KEPT: Final = 1 << 17
"""Sampling answers remembered per kind (connection traces, joined transactions)."""


@mypyc_attr(allow_interpreted_subclasses=True)  # tests count what it builds
class SpanBuilder:
    """Its configuration, and the sampler's answers, which it keeps in its own tables.

    The core's records are the Tracker's to write, so a decision is remembered here by serial:
    a connection trace by its root wsi's, a transaction that joined a caller's trace by its own.
    Both tables are bounded (oldest answers go first); a later fact of a forgotten trace asks
    the sampler again, which the standard samplers answer the same way for the same trace id,
    and exemplars are shown only for traces whose answer is still known to be "kept".
    """

    def __init__(self, ids: Ids, sampler: Sampler, *, remember: int = DECISIONS_KEPT) -> None:
        self.ids = ids
        self.sampler = sampler
        self._remember = remember
        # oldest first, so forgetting one is O(1) (a dict's first key is found by a scan)
        self._wsi_kept: OrderedDict[int, bool] = OrderedDict()  # root wsi serial -> kept
        self._txn_kept: OrderedDict[int, bool] = OrderedDict()  # joined transaction serial -> kept

    # -- sampling ----------------------------------------------------------------------------

    def wsi_sampled(self, wsi: Wsi) -> bool:
        """Decide once per connection trace, the same way for every span in it."""
        root = _root(wsi)
        kept = self._wsi_kept.get(root.serial)
        if kept is None:
            result = self.sampler.should_sample(
                None,
                self.ids.wsi_trace_id(root),
                f"wsi {root.role}",
                _SDK_KINDS[span_kind(root.role)],
            )
            kept = _is_sampled(result.decision)
            self._keep(self._wsi_kept, root.serial, kept)
        return kept

    def decide(self, fact: ConnectionFact | Transaction) -> bool:
        """Ask the sampler (once per trace) and remember the answer."""
        if isinstance(fact, ConnectionFact):
            return self.wsi_sampled(fact.wsi)
        return self.transaction_sampled(fact)

    def transaction_sampled(self, txn: Transaction) -> bool:
        trace = self._joined_trace(txn)
        if trace is None:
            return self.wsi_sampled(txn.wsi)  # nested in its connection: its trace decides
        kept = self._txn_kept.get(txn.serial)
        if kept is None:
            remote = trace.remote
            assert remote is not None  # _joined_trace returns only traces that join one
            parent = SpanContext(
                trace.trace_id,
                trace.parent_span_id,
                is_remote=True,
                trace_flags=TraceFlags(TraceFlags.SAMPLED if remote.sampled else 0),
            )
            kept = _is_sampled(
                self.sampler.should_sample(
                    trace_api.set_span_in_context(trace_api.NonRecordingSpan(parent)),
                    trace.trace_id,
                    txn.method or "HTTP",
                    _SDK_KINDS[span_kind(txn.role)],
                ).decision
            )
            self._keep(self._txn_kept, txn.serial, kept)
        return kept

    def known_kept(self, record: Wsi | Transaction) -> bool:
        """True only if the sampler already kept `record`'s trace (exemplars); never asks it."""
        if isinstance(record, Wsi):
            return self._wsi_kept.get(_root(record).serial) is True
        if self._joined_trace(record) is not None:
            return self._txn_kept.get(record.serial) is True
        return self._wsi_kept.get(_root(record.wsi).serial) is True

    def record_decision(self, record: Wsi | Transaction, kept: bool) -> None:
        """Remember an answer as if the sampler had given it (replays and tests)."""
        if isinstance(record, Transaction) and self._joined_trace(record) is not None:
            self._keep(self._txn_kept, record.serial, kept)
        else:
            wsi = record if isinstance(record, Wsi) else record.wsi
            self._keep(self._wsi_kept, _root(wsi).serial, kept)

    def _joined_trace(self, txn: Transaction) -> TxnTrace | None:
        """`txn`'s trace if it is a span of its caller's trace, None if of its connection's."""
        if txn.traceparent is None or not self.ids.join_traceparent:
            return None
        trace = self.ids.txn_trace(txn)
        return trace if trace.remote is not None else None

    def _keep(self, table: OrderedDict[int, bool], serial: int, kept: bool) -> None:
        table[serial] = kept
        if len(table) > self._remember:
            table.popitem(last=False)  # the oldest answer

    # -- building ----------------------------------------------------------------------------

    def connection(self, fact: ConnectionFact) -> SpanData:
        # connection_span.py encodes the same span from fragments: keep the two in step
        wsi = fact.wsi
        ctx = wsi.context
        attrs: Attributes = {
            "lws.wsi.id": wsi.id,
            "lws.role": fact.role.value,
            "lws.source": ctx.source,
            "lws.context": ctx.name,
            "lws.transactions": fact.transactions,
        }
        attrs.update(ending_attrs(fact.leak, fact.end_reason))
        address_attrs("network.peer", wsi.peer, attrs)
        address_attrs(local_prefix(fact.role), wsi.local, attrs)
        attrs.update(protocol_attrs(fact.role))
        if wsi.attrs:
            attrs.update(wsi.attrs)
        ids = self.ids
        status, message = leak_status(fact.leak)
        return SpanData(
            ids.wsi_trace_id(wsi),
            ids.wsi_span_id(wsi),
            0 if wsi.parent is None else ids.wsi_span_id(wsi.parent),
            f"wsi {fact.role.value}",
            span_kind(fact.role),
            wsi.created_ns,
            fact.span_end_ns,
            attrs,
            fact.events,
            (),
            status,
            message,
        )

    def transaction(self, txn: Transaction) -> SpanData:
        trace = self.ids.txn_trace(txn)
        attrs: Attributes = {
            "lws.wsi.id": txn.wsi.id,
            "lws.role": txn.role.value,
            "lws.pipeline.index": txn.index,
            "lws.pipeline.queue_wait_ns": txn.queue_ns,
        }
        if txn.method is not None:
            attrs["http.request.method"] = txn.method
        if txn.path is not None:
            # the query may carry secrets and is unbounded: only the path is exported
            attrs["url.path"] = txn.path.partition("?")[0]
        if txn.route is not None:
            attrs["http.route"] = txn.route
        if txn.status is not None:
            attrs["http.response.status_code"] = txn.status
        status, message = STATUS_UNSET, ""
        if txn.error is not None:
            attrs["error.type"] = txn.error
            status, message = STATUS_ERROR, txn.error
        elif txn.status is not None and txn.status >= 500:
            attrs["error.type"] = str(txn.status)
            status = STATUS_ERROR
        links: tuple[tuple[int, int, Attributes | None], ...] = ()
        if trace.remote is not None and self.wsi_sampled(txn.wsi):
            links = (
                (
                    self.ids.wsi_trace_id(txn.wsi),
                    self.ids.wsi_span_id(txn.wsi),
                    {"lws.link": "connection"},
                ),
            )
        name = txn.method or "HTTP"
        if txn.route:
            name = f"{name} {txn.route}"
        end = txn.end_ns if txn.end_ns is not None else txn.start_ns
        return SpanData(
            trace.trace_id,
            trace.span_id,
            trace.parent_span_id,
            name,
            span_kind(txn.role),
            txn.arrived_ns,
            end,
            attrs,
            (),
            links,
            status,
            message,
        )
