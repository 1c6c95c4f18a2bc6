"""A real OTLP/HTTP trace receiver on loopback, for tests of what the exporter actually sends.

It is a small aiohttp application on 127.0.0.1 that accepts `POST /v1/traces` with
`Content-Type: application/x-protobuf` (optionally gzip or deflate encoded), decodes the body
with the official `ExportTraceServiceRequest` protobuf and answers with an empty
`ExportTraceServiceResponse`, the way an OpenTelemetry Collector does. Decoded spans are kept as
plain dataclasses so tests can assert on them without touching protobuf objects.

For reliability tests the receiver can be told to answer 503 (`mode = "unavailable"`) or to hold
requests without answering (`mode = "hang"`) until it is switched back or closed.

Use it as `async with serve_otlp_receiver() as receiver:` or through the `otlp_receiver` fixture
(import it into a test module or conftest).
"""

from __future__ import annotations

import asyncio
import gzip
import socket
import zlib
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any, Literal

import pytest
from aiohttp import web
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue
from opentelemetry.proto.trace.v1.trace_pb2 import Span, Status

PROTOBUF = "application/x-protobuf"

Mode = Literal["ok", "unavailable", "hang", "slow"]


def decode_any_value(value: AnyValue) -> Any:
    """An OTLP AnyValue as the Python value it carries (lists and dicts for the nested kinds)."""
    kind = value.WhichOneof("value")
    if kind is None:
        return None
    if kind == "array_value":
        return [decode_any_value(v) for v in value.array_value.values]
    if kind == "kvlist_value":
        return decode_attributes(value.kvlist_value.values)
    return getattr(value, kind)


def decode_attributes(pairs: Any) -> dict[str, Any]:
    """A repeated KeyValue field as a dict."""
    out: dict[str, Any] = {}
    kv: KeyValue
    for kv in pairs:
        out[kv.key] = decode_any_value(kv.value)
    return out


@dataclass(frozen=True)
class ReceivedEvent:
    name: str
    time_ns: int
    attributes: dict[str, Any]


@dataclass(frozen=True)
class ReceivedLink:
    trace_id: str
    span_id: str
    attributes: dict[str, Any]


@dataclass(frozen=True)
class ReceivedSpan:
    """One span as it arrived on the wire; ids are lowercase hex, enums are short names."""

    trace_id: str
    span_id: str
    parent_span_id: str | None
    name: str
    kind: str  # "SERVER", "CLIENT", "INTERNAL", "PRODUCER", "CONSUMER" or "UNSPECIFIED"
    start_ns: int
    end_ns: int
    attributes: dict[str, Any]
    events: list[ReceivedEvent]
    links: list[ReceivedLink]
    status_code: str  # "UNSET", "OK" or "ERROR"
    status_message: str
    resource: dict[str, Any]
    scope_name: str
    scope_version: str


@dataclass(frozen=True)
class ReceivedRequest:
    """What one export request looked like on the wire (for transport-level assertions)."""

    content_type: str
    content_encoding: str
    body_size: int
    span_count: int


def _short_enum(full: str, prefix: str) -> str:
    return full[len(prefix) :] if full.startswith(prefix) else full


def decode_request(message: ExportTraceServiceRequest) -> list[ReceivedSpan]:
    spans: list[ReceivedSpan] = []
    for resource_spans in message.resource_spans:
        resource = decode_attributes(resource_spans.resource.attributes)
        for scope_spans in resource_spans.scope_spans:
            scope = scope_spans.scope
            for span in scope_spans.spans:
                spans.append(
                    ReceivedSpan(
                        trace_id=span.trace_id.hex(),
                        span_id=span.span_id.hex(),
                        parent_span_id=span.parent_span_id.hex() or None,
                        name=span.name,
                        kind=_short_enum(Span.SpanKind.Name(span.kind), "SPAN_KIND_"),
                        start_ns=span.start_time_unix_nano,
                        end_ns=span.end_time_unix_nano,
                        attributes=decode_attributes(span.attributes),
                        events=[
                            ReceivedEvent(
                                ev.name, ev.time_unix_nano, decode_attributes(ev.attributes)
                            )
                            for ev in span.events
                        ],
                        links=[
                            ReceivedLink(
                                link.trace_id.hex(),
                                link.span_id.hex(),
                                decode_attributes(link.attributes),
                            )
                            for link in span.links
                        ],
                        status_code=_short_enum(
                            Status.StatusCode.Name(span.status.code), "STATUS_CODE_"
                        ),
                        status_message=span.status.message,
                        resource=resource,
                        scope_name=scope.name,
                        scope_version=scope.version,
                    )
                )
    return spans


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class OtlpReceiver:
    """The receiver's state; `spans` grows as export requests arrive."""

    host: str = "127.0.0.1"
    port: int = 0
    mode: Mode = "ok"
    spans: list[ReceivedSpan] = field(default_factory=list)
    requests: list[ReceivedRequest] = field(default_factory=list)
    rejected: int = 0  # requests answered with an error (bad body, 503 mode)
    hanging: int = 0  # requests currently held in hang mode
    delay_s: float = 0.0  # how long `slow` mode waits before answering correctly
    _release: asyncio.Event = field(default_factory=asyncio.Event)

    @property
    def endpoint(self) -> str:
        """The value for OTEL_EXPORTER_OTLP_TRACES_ENDPOINT."""
        return f"http://{self.host}:{self.port}/v1/traces"

    def set_mode(self, mode: Mode) -> None:
        """Switch behaviour; leaving `hang` releases the held requests (they then get 503)."""
        self.mode = mode
        if mode == "hang":
            self._release.clear()
        else:
            self._release.set()

    async def _handle(self, request: web.Request) -> web.Response:
        if self.mode == "hang":
            self.hanging += 1
            try:
                await self._release.wait()
            finally:
                self.hanging -= 1
            self.rejected += 1
            return web.Response(status=503, text="released after hanging\n")
        if self.mode == "unavailable":
            self.rejected += 1
            return web.Response(status=503, text="unavailable on purpose\n")
        if self.mode == "slow":
            await asyncio.sleep(self.delay_s)
        content_type = request.headers.get("Content-Type", "")
        if content_type.partition(";")[0].strip().lower() != PROTOBUF:
            self.rejected += 1
            return web.Response(status=415, text=f"expected {PROTOBUF}, got {content_type!r}\n")
        encoding = request.headers.get("Content-Encoding", "").strip().lower()
        raw = await request.read()
        try:
            if encoding == "gzip":
                body = gzip.decompress(raw)
            elif encoding == "deflate":
                body = zlib.decompress(raw)
            elif encoding in ("", "identity"):
                body = raw
            else:
                self.rejected += 1
                return web.Response(status=415, text=f"unsupported encoding {encoding!r}\n")
            message = ExportTraceServiceRequest()
            message.ParseFromString(body)
        except Exception as exc:  # a malformed body is the exporter's bug: answer 400
            self.rejected += 1
            return web.Response(status=400, text=f"cannot decode: {exc}\n")
        spans = decode_request(message)
        self.spans.extend(spans)
        self.requests.append(ReceivedRequest(content_type, encoding, len(raw), len(spans)))
        return web.Response(
            body=ExportTraceServiceResponse().SerializeToString(), content_type=PROTOBUF
        )

    async def wait_for_spans(
        self,
        predicate: Callable[[list[ReceivedSpan]], bool],
        timeout: float = 10.0,
    ) -> list[ReceivedSpan]:
        """Poll until `predicate(all spans so far)` holds; return the spans, or fail."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while not predicate(list(self.spans)):
            if loop.time() > deadline:
                summary = [(s.name, s.attributes.get("lws.wsi.id")) for s in self.spans]
                raise AssertionError(
                    f"spans did not satisfy the condition within {timeout} s; got {summary}"
                )
            await asyncio.sleep(0.01)
        return list(self.spans)

    def find(self, predicate: Callable[[ReceivedSpan], bool]) -> list[ReceivedSpan]:
        return [s for s in self.spans if predicate(s)]


@asynccontextmanager
async def serve_otlp_receiver(host: str = "127.0.0.1") -> AsyncIterator[OtlpReceiver]:
    """Run an OtlpReceiver on a free loopback port in the current event loop."""
    receiver = OtlpReceiver(host=host)
    receiver._release.set()
    app = web.Application(client_max_size=64 * 1024 * 1024)
    app.router.add_post("/v1/traces", receiver._handle)
    # auto_decompress=False: the body is decoded here, as sent, not by aiohttp's parser
    runner = web.AppRunner(app, access_log=None, shutdown_timeout=1.0, auto_decompress=False)
    await runner.setup()
    for attempt in range(5):
        receiver.port = _free_port()
        site = web.TCPSite(runner, host, receiver.port)
        try:
            await site.start()
            break
        except OSError:
            if attempt == 4:
                raise
    try:
        yield receiver
    finally:
        receiver._release.set()  # let held requests finish so the server can stop
        await runner.cleanup()


@pytest.fixture
async def otlp_receiver() -> AsyncIterator[OtlpReceiver]:
    async with serve_otlp_receiver() as receiver:
        yield receiver
