"""Turn finished connection and transaction facts into OTel SDK ReadableSpans.

This runs off the request path, in the export worker, in batches. Timestamps are the ones the
core recorded; ids come from core.ids so exemplars and spans always agree.
"""

from __future__ import annotations

from typing import Any, NamedTuple

from opentelemetry import trace as trace_api
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import Event, ReadableSpan
from opentelemetry.sdk.trace.sampling import Decision, Sampler
from opentelemetry.sdk.util.instrumentation import InstrumentationScope
from opentelemetry.trace import Link, SpanContext, SpanKind, Status, StatusCode, TraceFlags

from lwsobs.core.ids import Ids
from lwsobs.core.model import Peer, Transaction, Wsi
from lwsobs.core.roles import CLIENT_ROLES, SERVER_ROLES, EndReason, Role

SCOPE = InstrumentationScope("lwsobs", "0.1.0")
_SAMPLED = TraceFlags(TraceFlags.SAMPLED)


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


def span_kind(role: Role) -> SpanKind:
    if role in SERVER_ROLES:
        return SpanKind.SERVER
    if role in CLIENT_ROLES:
        return SpanKind.CLIENT
    return SpanKind.INTERNAL


def _address_attrs(prefix: str, addr: Peer, attrs: dict[str, Any]) -> None:
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


class SpanBuilder:
    """Stateless apart from its configuration; the sampler decides per trace."""

    def __init__(self, ids: Ids, sampler: Sampler, resource: Resource) -> None:
        self.ids = ids
        self.sampler = sampler
        self.resource = resource

    # -- sampling ----------------------------------------------------------------------------

    def wsi_sampled(self, wsi: Wsi) -> bool:
        """Decide once per connection trace, the same way for every span in it."""
        if wsi.sampled is None:
            root = wsi
            while root.parent is not None:
                root = root.parent
            if root.sampled is None:
                result = self.sampler.should_sample(
                    None, self.ids.wsi_trace_id(root), f"wsi {root.role}", span_kind(root.role)
                )
                root.sampled = _is_sampled(result.decision)
            wsi.sampled = root.sampled
        return wsi.sampled

    def _wsi_context(self, wsi: Wsi) -> SpanContext:
        return SpanContext(
            self.ids.wsi_trace_id(wsi),
            self.ids.wsi_span_id(wsi),
            is_remote=False,
            trace_flags=_SAMPLED,
        )

    # -- building ----------------------------------------------------------------------------

    def connection(self, fact: ConnectionFact) -> ReadableSpan | None:
        wsi = fact.wsi
        if not self.wsi_sampled(wsi):
            return None
        ctx = wsi.context
        attrs: dict[str, Any] = {
            "lws.wsi.id": wsi.id,
            "lws.role": fact.role.value,
            "lws.source": ctx.source,
            "lws.context": ctx.name,
            "lws.transactions": fact.transactions,
            "lws.leaked": fact.leak is not None,
            "lws.end.reason": fact.end_reason or EndReason.LEAKED.value,
        }
        if fact.leak is not None:
            attrs["lws.leak.rule"] = fact.leak
            attrs["error.type"] = f"leak.{fact.leak}"
        _address_attrs("network.peer", wsi.peer, attrs)
        _address_attrs(
            "server" if fact.role not in CLIENT_ROLES else "network.local", wsi.local, attrs
        )
        if fact.role in (Role.WS_SERVER, Role.WS_CLIENT):
            attrs["network.protocol.name"] = "websocket"
        elif fact.role in (Role.H2_SERVER, Role.H2_STREAM, Role.H2_CLIENT):
            attrs["network.protocol.name"] = "http"
            attrs["network.protocol.version"] = "2"
        elif fact.role in (Role.H1_SERVER, Role.H1_CLIENT):
            attrs["network.protocol.name"] = "http"
            attrs["network.protocol.version"] = "1.1"
        if wsi.attrs:
            attrs.update(wsi.attrs)
        status = (
            Status(StatusCode.ERROR, f"wsi leaked ({fact.leak})")
            if fact.leak is not None
            else Status(StatusCode.UNSET)
        )
        parent = self._wsi_context(wsi.parent) if wsi.parent is not None else None
        events = [
            Event(name, attributes=ev_attrs, timestamp=ts) for name, ts, ev_attrs in fact.events
        ]
        return ReadableSpan(
            name=f"wsi {fact.role.value}",
            context=self._wsi_context(wsi),
            parent=parent,
            resource=self.resource,
            attributes=attrs,
            events=events,
            kind=span_kind(fact.role),
            status=status,
            start_time=wsi.created_ns,
            end_time=fact.span_end_ns,
            instrumentation_scope=SCOPE,
        )

    def transaction(self, txn: Transaction) -> ReadableSpan | None:
        trace = self.ids.txn_trace(txn)
        conn_sampled = self.wsi_sampled(txn.wsi)
        if trace.remote is not None:
            parent = SpanContext(
                trace.trace_id,
                trace.parent_span_id,
                is_remote=True,
                trace_flags=TraceFlags(TraceFlags.SAMPLED if trace.remote.sampled else 0),
            )
            decision = _is_sampled(
                self.sampler.should_sample(
                    trace_api.set_span_in_context(trace_api.NonRecordingSpan(parent)),
                    trace.trace_id,
                    txn.method or "HTTP",
                    span_kind(txn.role),
                ).decision
            )
        else:
            parent = self._wsi_context(txn.wsi)
            decision = conn_sampled
        txn.sampled = decision
        if not decision:
            return None
        attrs: dict[str, Any] = {
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
        status = Status(StatusCode.UNSET)
        if txn.error is not None:
            attrs["error.type"] = txn.error
            status = Status(StatusCode.ERROR, txn.error)
        elif txn.status is not None and txn.status >= 500:
            attrs["error.type"] = str(txn.status)
            status = Status(StatusCode.ERROR)
        links: list[Link] = []
        if trace.remote is not None and conn_sampled:
            links.append(Link(self._wsi_context(txn.wsi), {"lws.link": "connection"}))
        name = txn.method or "HTTP"
        if txn.route:
            name = f"{name} {txn.route}"
        return ReadableSpan(
            name=name,
            context=SpanContext(
                trace.trace_id, trace.span_id, is_remote=False, trace_flags=_SAMPLED
            ),
            parent=parent,
            resource=self.resource,
            attributes=attrs,
            links=links,
            kind=span_kind(txn.role),
            status=status,
            start_time=txn.arrived_ns,
            end_time=txn.end_ns,
            instrumentation_scope=SCOPE,
        )
