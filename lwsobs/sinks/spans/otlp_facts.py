"""Encode a batch of span facts straight to OTLP protobuf, with per-batch caches.

The common transaction span (nested in its connection, no links, no events) is written from
byte fragments: everything that depends only on the connection (trace id, parent id, wsi id)
is encoded once per connection per batch, and low-cardinality attributes (role, method, route,
status) come from a small cache. The common connection span is written from fragments too
(connection_span.py). Other spans go through SpanBuilder and the generic encoder. All paths
produce the same spans; tests decode them with opentelemetry-proto to check it.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from lwsobs.core.ids import Ids
from lwsobs.core.model import Transaction, Wsi
from lwsobs.sinks.spans import connection_span
from lwsobs.sinks.spans import otlp_encode as enc
from lwsobs.sinks.spans.builder import (
    STATUS_ERROR,
    ConnectionFact,
    SpanBuilder,
    span_kind,
)

Fact = Transaction | ConnectionFact

_small: list[bytes] = [bytes([n]) for n in range(128)]
_ATTR: bytes = enc._SPAN_ATTR
_fixed64: Callable[[int], bytes] = enc._pack_fixed64
_varint: Callable[[int], bytes] = enc.varint
_CACHE_LIMIT = 4096


def _attr(key: str, value: Any) -> bytes:
    """One encoded Span.attributes entry."""
    return enc.key_values({key: value}, _ATTR)


_INDEX_KEY = enc._key("lws.pipeline.index")
_QUEUE_KEY = enc._key("lws.pipeline.queue_wait_ns")
_PATH_KEY = enc._key("url.path")
_WSI_ID_KEY = enc._key("lws.wsi.id")


def _int_attr(key_field: bytes, value: int) -> bytes:
    """Span.attributes entry {key, AnyValue{int_value}} for a non-negative int."""
    number = _small[value] if 0 <= value < 128 else _varint(value)
    size = len(number)
    return b"".join(
        (
            _ATTR,
            _small[len(key_field) + size + 3],
            key_field,
            b"\x12",
            _small[size + 1],
            b"\x18",
            number,
        )
    )


class FactEncoder:
    def __init__(self, builder: SpanBuilder, resource: bytes, scope: bytes) -> None:
        self.builder = builder
        self.ids: Ids = builder.ids
        self.resource = resource
        self.scope = scope
        # Bounded caches of encoded fragments; their keys come from closed or bounded sets.
        self._shapes: dict[tuple[Any, ...], tuple[bytes, bytes, bytes]] = {}
        self._paths: dict[str, bytes] = {}
        self._connection_shapes = connection_span.Shapes()
        # The previous batch's connection fragments: a kept-alive connection recurs batch after
        # batch. Only that batch's, so no wsi stays referenced for more than one more batch.
        self._previous: dict[Wsi, tuple[bytes, bytes, bytes]] = {}

    def encode(self, facts: Sequence[Fact]) -> bytes:
        """ExportTraceServiceRequest bytes for `facts`, which the sampler already kept."""
        conns: dict[Wsi, tuple[bytes, bytes, bytes]] = {}
        spans = [self._span(f, conns) for f in facts]
        encoded = enc.encode_request(self.resource, self.scope, spans)
        self._previous = conns
        return encoded

    def _span(self, fact: Fact, conns: dict[Wsi, tuple[bytes, bytes, bytes]]) -> bytes:
        """One encoded span; `conns` caches connection fragments for the batch."""
        if isinstance(fact, ConnectionFact):
            return self._connection_span(fact, conns)
        if fact.traceparent is None or not self.ids.join_traceparent:
            return self._nested_transaction(fact, conns)
        return enc.encode_span(self.builder.transaction(fact))

    def _connection_span(
        self, fact: ConnectionFact, conns: dict[Wsi, tuple[bytes, bytes, bytes]]
    ) -> bytes:
        """A connection span, from fragments unless it is unusual."""
        if not connection_span.usual(fact):
            return enc.encode_span(self.builder.connection(fact))
        wsi = fact.wsi
        parent = wsi.parent
        parent_field = b""
        if parent is not None:  # a live wsi with more streams to come: kept for the batch
            conn = conns.get(parent)
            if conn is None:
                conn = conns[parent] = self._connection(parent)
            parent_field = conn[1]
        # the wsi itself has ended: its fragments are not kept for later facts
        conn = conns.get(wsi) or self._connection(wsi)
        return connection_span.encode(fact, self._connection_shapes(fact), conn, parent_field)

    def _shape(self, txn: Transaction) -> tuple[bytes, bytes, bytes]:
        """Name and kind, the low-cardinality attributes, and the status of a transaction.

        They depend only on (method, route, role, status, error), so they are encoded once.
        """
        key = (txn.method, txn.route, txn.role, txn.status, txn.error)
        shape = self._shapes.get(key)
        if shape is not None:
            return shape
        method, route, role, status, error = key
        name = method or "HTTP"
        if route:
            name = f"{name} {route}"
        head = enc._ld(enc._SPAN_NAME, name.encode("utf-8", "replace"))
        head += enc._SPAN_KIND + _varint(span_kind(role))
        attrs: dict[str, Any] = {"lws.role": role.value}
        if method is not None:
            attrs["http.request.method"] = method
        if route is not None:
            attrs["http.route"] = route
        if status is not None:
            attrs["http.response.status_code"] = status
        status_field = b""
        if error is not None:
            attrs["error.type"] = error
            message = enc._ld(enc._STATUS_MESSAGE, error.encode("utf-8", "replace"))
            status_field = enc._ld(enc._SPAN_STATUS, message + enc._STATUS_CODE + _small[2])
        elif status is not None and status >= 500:
            attrs["error.type"] = str(status)
            status_field = enc._ld(enc._SPAN_STATUS, enc._STATUS_CODE + _small[STATUS_ERROR])
        shape = (head, enc.key_values(attrs, _ATTR), status_field)
        if len(self._shapes) < _CACHE_LIMIT:
            self._shapes[key] = shape
        return shape

    def _path(self, path: str) -> bytes:
        out = self._paths.get(path)
        if out is None:
            out = _attr("url.path", path.partition("?")[0])
            if len(self._paths) < _CACHE_LIMIT:
                self._paths[path] = out
        return out

    def _connection(self, wsi: Wsi) -> tuple[bytes, bytes, bytes]:
        """The trace id and parent id fields and the wsi id attribute of `wsi`'s transactions.

        They never change for a wsi (its serial, parent and context are fixed at creation).
        """
        conn = self._previous.get(wsi)
        if conn is None:
            ids = self.ids
            conn = (
                enc._SPAN_TRACE_ID + ids.wsi_trace_id(wsi).to_bytes(16, "big"),
                enc._SPAN_PARENT + ids.wsi_span_id(wsi).to_bytes(8, "big"),
                _attr("lws.wsi.id", wsi.id),
            )
        return conn

    def _nested_transaction(
        self, txn: Transaction, conns: dict[Wsi, tuple[bytes, bytes, bytes]]
    ) -> bytes:
        wsi = txn.wsi
        conn = conns.get(wsi)
        if conn is None:
            conn = conns[wsi] = self._connection(wsi)
        trace_field, parent_field, wsi_attr = conn
        head, attrs, status_field = self._shape(txn)
        arrived = txn.arrived_ns
        end = txn.end_ns if txn.end_ns is not None else txn.start_ns
        waited = txn.start_ns - arrived
        path = txn.path
        return b"".join(
            (
                trace_field,
                enc._SPAN_SPAN_ID,
                self.ids.txn_span_id(txn).to_bytes(8, "big"),
                parent_field,
                head,
                enc._SPAN_START,
                _fixed64(arrived),
                enc._SPAN_END,
                _fixed64(end),
                wsi_attr,
                attrs,
                _int_attr(_INDEX_KEY, txn.index),
                _int_attr(_QUEUE_KEY, waited if waited > 0 else 0),
                b"" if path is None else self._path(path),
                status_field,
                enc._SPAN_FLAGS_LOCAL,
            )
        )
