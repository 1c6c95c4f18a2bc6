"""A direct OTLP protobuf encoder for SpanData: ExportTraceServiceRequest bytes.

Writing the wire format by hand skips building SDK spans and protobuf message objects, which
cost several times more per span than the spans' own bookkeeping. The message layout is that of
opentelemetry/proto/collector/trace/v1/trace_service.proto (OTLP 1.x); the tests decode the
output with the official opentelemetry-proto classes.
"""

from __future__ import annotations

import struct
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

from lwsobs.sinks.spans.builder import SpanData

_pack_fixed64: Callable[[int], bytes] = struct.Struct("<Q").pack
_pack_double: Callable[[float], bytes] = struct.Struct("<d").pack

_VARINTS = [bytes([n]) for n in range(128)]


def varint(n: int) -> bytes:
    """Unsigned LEB128; negative int64 values take their 64-bit two's complement (10 bytes)."""
    if 0 <= n < 128:
        return _VARINTS[n]
    if n < 0:
        n &= (1 << 64) - 1
    # the encoded bytes gathered in one integer, little-endian: small ints stay unboxed when
    # compiled, and one to_bytes call replaces a bytearray append per byte
    encoded = 0
    shift = 0
    while n > 0x7F:
        encoded |= ((n & 0x7F) | 0x80) << shift
        shift += 8
        n >>= 7
    encoded |= n << shift
    return encoded.to_bytes(shift // 8 + 1, "little")


def _ld(tag: bytes, payload: bytes) -> bytes:
    """A length-delimited field."""
    return tag + varint(len(payload)) + payload


# Field tags: (field number << 3) | wire type (0 varint, 1 fixed64, 2 length-delimited).
_T_STRING = b"\x0a"  # AnyValue.string_value = 1
_T_BOOL = b"\x10"  # AnyValue.bool_value = 2
_T_INT = b"\x18"  # AnyValue.int_value = 3
_T_DOUBLE = b"\x21"  # AnyValue.double_value = 4
_KV_KEY, _KV_VALUE = b"\x0a", b"\x12"  # KeyValue.key = 1, value = 2
_SPAN_TRACE_ID = b"\x0a\x10"  # Span.trace_id = 1, always 16 bytes
_SPAN_SPAN_ID = b"\x12\x08"  # Span.span_id = 2, always 8 bytes
_SPAN_PARENT = b"\x22\x08"  # Span.parent_span_id = 4
_SPAN_NAME = b"\x2a"  # Span.name = 5
_SPAN_KIND = b"\x30"  # Span.kind = 6
_SPAN_START = b"\x39"  # Span.start_time_unix_nano = 7 (fixed64)
_SPAN_END = b"\x41"  # Span.end_time_unix_nano = 8 (fixed64)
_SPAN_ATTR: bytes = b"\x4a"  # Span.attributes = 9
_SPAN_EVENT = b"\x5a"  # Span.events = 11
_SPAN_LINK = b"\x6a"  # Span.links = 13
_SPAN_STATUS = b"\x7a"  # Span.status = 15
_SPAN_FLAGS = b"\x85\x01"  # Span.flags = 16 (fixed32)
_EVENT_TIME, _EVENT_NAME, _EVENT_ATTR = b"\x09", b"\x12", b"\x1a"
_LINK_TRACE_ID, _LINK_SPAN_ID, _LINK_ATTR = b"\x0a\x10", b"\x12\x08", b"\x22"
_STATUS_MESSAGE, _STATUS_CODE = b"\x12", b"\x18"

# W3C flags byte 0x01 (sampled) plus OTLP's "has is_remote" bit 0x100 (not remote).
_SPAN_FLAGS_LOCAL = _SPAN_FLAGS + struct.pack("<I", 0x101)

_key_cache: dict[str, bytes] = {}


def _key(key: str) -> bytes:
    """The encoded `KeyValue.key` field; keys come from a bounded set, so they are cached."""
    encoded = _key_cache.get(key)
    if encoded is None:
        encoded = _ld(_KV_KEY, key.encode())
        if len(_key_cache) < 4096:
            _key_cache[key] = encoded
    return encoded


def any_value(value: Any) -> bytes:
    if isinstance(value, str):
        return _ld(_T_STRING, value.encode("utf-8", "replace"))
    if isinstance(value, bool):
        return _T_BOOL + (b"\x01" if value else b"\x00")
    if isinstance(value, int):
        return _T_INT + varint(value)
    if isinstance(value, float):
        return _T_DOUBLE + _pack_double(value)
    return _ld(_T_STRING, str(value).encode("utf-8", "replace"))


def key_values(attrs: Mapping[str, Any], tag: bytes) -> bytes:
    """Repeated KeyValue fields, each under `tag`. Short strings take the inlined fast path."""
    parts = []
    small = _VARINTS
    for key, value in attrs.items():
        if type(value) is str:
            raw = value.encode("utf-8", "replace")
            if len(raw) < 124:
                # KeyValue{key, value=AnyValue{string_value=raw}}: all lengths fit one byte
                kv = _key(key) + b"\x12" + small[len(raw) + 2] + b"\x0a" + small[len(raw)] + raw
            else:
                kv = _key(key) + _ld(_KV_VALUE, _ld(_T_STRING, raw))
        else:
            kv = _key(key) + _ld(_KV_VALUE, any_value(value))
        parts.append(tag + varint(len(kv)) + kv)
    return b"".join(parts)


def status_field(code: int, message: str) -> bytes:
    """The Span.status field; b"" for an unset status (the message is written only with a code)."""
    if not code:
        return b""
    status = _STATUS_CODE + varint(code)
    if message:
        status = _ld(_STATUS_MESSAGE, message.encode("utf-8", "replace")) + status
    return _ld(_SPAN_STATUS, status)


def encode_span(span: SpanData) -> bytes:
    parts = [
        _SPAN_TRACE_ID,
        span.trace_id.to_bytes(16, "big"),
        _SPAN_SPAN_ID,
        span.span_id.to_bytes(8, "big"),
    ]
    if span.parent_span_id:
        parts += (_SPAN_PARENT, span.parent_span_id.to_bytes(8, "big"))
    parts += (
        _ld(_SPAN_NAME, span.name.encode("utf-8", "replace")),
        _SPAN_KIND,
        varint(span.kind),
        _SPAN_START,
        _pack_fixed64(span.start_ns),
        _SPAN_END,
        _pack_fixed64(span.end_ns),
        key_values(span.attributes, _SPAN_ATTR),
    )
    for name, time_ns, attrs in span.events:
        event = _EVENT_TIME + _pack_fixed64(time_ns) + _ld(_EVENT_NAME, name.encode())
        if attrs:
            event += key_values(attrs, _EVENT_ATTR)
        parts.append(_ld(_SPAN_EVENT, event))
    for trace_id, span_id, attrs in span.links:
        link = (
            _LINK_TRACE_ID
            + trace_id.to_bytes(16, "big")
            + _LINK_SPAN_ID
            + span_id.to_bytes(8, "big")
        )
        if attrs:
            link += key_values(attrs, _LINK_ATTR)
        parts.append(_ld(_SPAN_LINK, link))
    if span.status_code:
        parts.append(status_field(span.status_code, span.status_message))
    parts.append(_SPAN_FLAGS_LOCAL)
    return b"".join(parts)


def encode_scope(name: str, version: str) -> bytes:
    """InstrumentationScope {name = 1, version = 2}."""
    return _ld(b"\x0a", name.encode()) + _ld(b"\x12", version.encode())


def encode_resource(attrs: Mapping[str, Any]) -> bytes:
    """Resource {attributes = 1}."""
    return key_values(attrs, b"\x0a")


def encode_request(resource: bytes, scope: bytes, spans: Iterable[bytes]) -> bytes:
    """ExportTraceServiceRequest {resource_spans = 1} with one resource and one scope.

    `resource` and `scope` are the encoded messages (encode once, reuse for every request).
    """
    scope_spans = _ld(b"\x0a", scope) + b"".join(_ld(b"\x12", s) for s in spans)
    resource_spans = _ld(b"\x0a", resource) + _ld(b"\x12", scope_spans)
    return _ld(b"\x0a", resource_spans)


def encode_spans(resource: bytes, scope: bytes, spans: Sequence[SpanData]) -> bytes:
    return encode_request(resource, scope, (encode_span(s) for s in spans))
