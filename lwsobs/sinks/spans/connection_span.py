"""The connection span as byte fragments, byte for byte what SpanBuilder.connection and
otlp_encode.encode_span write for it.

A connection span carries ~15 attributes; building them as a dict and encoding it attribute by
attribute was most of the export worker's time. Most of that span depends only on (role,
source, context name, leak rule, end reason), a small set: its `Shape` is encoded once and
cached, in the order encode_span writes it, with the per-connection values (ids, times,
transaction count, addresses, the wsi's own attributes) written between its parts. `encode` does
that in Python.

Anything unusual (span events, a wsi attribute that would replace one SpanBuilder writes, values
of other types) is left to the general path: `usual` tells which facts `encode` may take.
"""

from __future__ import annotations

from typing import Any

from lwsobs.sinks.spans import otlp_encode as enc
from lwsobs.sinks.spans.builder import (
    ConnectionFact,
    address_attrs,
    ending_attrs,
    leak_status,
    local_prefix,
    protocol_attrs,
    span_kind,
)

CACHE_LIMIT = 4096

# Every attribute SpanBuilder.connection may write before the wsi's own: a wsi attribute of one
# of these names replaces that value in place (dict.update), which the fragments cannot express.
BUILT_KEYS = frozenset(
    {
        "lws.wsi.id",
        "lws.role",
        "lws.source",
        "lws.context",
        "lws.transactions",
        "lws.leaked",
        "lws.end.reason",
        "lws.leak.rule",
        "error.type",
        "network.peer.address",
        "network.peer.port",
        "server.address",
        "server.port",
        "network.local.address",
        "network.local.port",
        "network.protocol.name",
        "network.protocol.version",
    }
)

_PEER_KEYS = (enc._key("network.peer.address"), enc._key("network.peer.port"))
_SERVER_KEYS = (enc._key("server.address"), enc._key("server.port"))
_LOCAL_KEYS = (enc._key("network.local.address"), enc._key("network.local.port"))
_TRANSACTIONS_KEY = enc._key("lws.transactions")
_SPAN_ID = b"\x12\x08"

Shape = tuple[bytes, bytes, bytes, bytes, bytes, bytes, bytes, bytes, bytes, bytes]
"""(name and kind; lws.role, lws.source, lws.context; the lws.transactions key; lws.leaked,
lws.end.reason and the leak's attributes; the peer address and port keys; the local address and
port keys; the protocol attributes; the status field): the attributes in the order
SpanBuilder.connection writes them, keys alone where a per-connection value follows."""


def shape_key(fact: ConnectionFact) -> tuple[Any, ...]:
    """What a connection span's shape depends on ."""
    ctx = fact.wsi.context
    return (fact.role, ctx.source, ctx.name, fact.leak, fact.end_reason)


def make_shape(key: tuple[Any, ...]) -> Shape:
    """The fragments for a `shape_key`, encoded as SpanBuilder.connection + encode_span do."""
    role, source, name, leak, end_reason = key
    head = enc._ld(enc._SPAN_NAME, f"wsi {role.value}".encode("utf-8", "replace"))
    head += enc._SPAN_KIND + enc.varint(span_kind(role))
    ident = {"lws.role": role.value, "lws.source": source, "lws.context": name}
    status = enc.status_field(*leak_status(leak))
    local = _LOCAL_KEYS if local_prefix(role) == "network.local" else _SERVER_KEYS
    return (
        head,
        enc.key_values(ident, enc._SPAN_ATTR),
        _TRANSACTIONS_KEY,
        enc.key_values(ending_attrs(leak, end_reason), enc._SPAN_ATTR),
        *_PEER_KEYS,
        *local,
        enc.key_values(protocol_attrs(role), enc._SPAN_ATTR),
        status,
    )


class Shapes:
    """A bounded cache of shapes; its keys come from closed or bounded sets."""

    def __init__(self) -> None:
        self.cache: dict[tuple[Any, ...], Shape] = {}

    def __call__(self, fact: ConnectionFact) -> Shape:
        key = shape_key(fact)
        shape = self.cache.get(key)
        if shape is None:
            shape = make_shape(key)
            if len(self.cache) < CACHE_LIMIT:
                self.cache[key] = shape
        return shape


def usual(fact: ConnectionFact) -> bool:
    """Whether the fragments can express this span (else SpanBuilder and encode_span do).

    A role that is a plain str would find the shape of its Role in the cache, where SpanBuilder
    fails on it (`role.value`).
    """
    if fact.events or type(fact.transactions) is not int or type(fact.role) is str:
        return False
    attrs = fact.wsi.attrs
    return not attrs or BUILT_KEYS.isdisjoint(attrs)


def encode(
    fact: ConnectionFact, shape: Shape, conn: tuple[bytes, bytes, bytes], parent_field: bytes
) -> bytes:
    """One connection span of a `usual` fact.

    `conn` is FactEncoder._connection's triple for the wsi (its trace id field, its span id as a
    parent field, its lws.wsi.id attribute); `parent_field` the parent field of its parent wsi,
    or b"" for a root.
    """
    wsi = fact.wsi
    head, ident, _, ending, *_, protocol, status = shape
    addresses: dict[str, Any] = {}
    address_attrs("network.peer", wsi.peer, addresses)
    address_attrs(local_prefix(fact.role), wsi.local, addresses)
    attrs = wsi.attrs
    return b"".join(
        (
            conn[0],
            _SPAN_ID,
            conn[1][2:],
            parent_field,
            head,
            enc._SPAN_START,
            enc._pack_fixed64(wsi.created_ns),
            enc._SPAN_END,
            enc._pack_fixed64(fact.span_end_ns),
            conn[2],
            ident,
            enc.key_values({"lws.transactions": fact.transactions}, enc._SPAN_ATTR),
            ending,
            enc.key_values(addresses, enc._SPAN_ATTR),
            protocol,
            enc.key_values(attrs, enc._SPAN_ATTR) if attrs else b"",
            status,
            enc._SPAN_FLAGS_LOCAL,
        )
    )
