"""A counting OTLP/HTTP trace receiver for the benchmark: `python bench/otlp_sink.py PORT`.

It runs as its own process (pinned next to the load generator) so that decoding exported spans
costs the measured server nothing. Every `POST /v1/traces` body is decoded for real with the
official ExportTraceServiceRequest (upb protobuf), so the span count is what actually arrived on
the wire, not what the exporter claims it sent. `GET /count` answers {"spans", "requests",
"rejected", "bytes"}; `POST /reset` zeroes the counters between server runs.
"""

from __future__ import annotations

import argparse
import gzip
import zlib
from dataclasses import asdict, dataclass

from aiohttp import web
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)

PROTOBUF = "application/x-protobuf"
_EMPTY_RESPONSE = ExportTraceServiceResponse().SerializeToString()


@dataclass
class Counts:
    """What arrived since the last reset; `rejected` counts bodies that could not be decoded."""

    spans: int = 0
    requests: int = 0
    rejected: int = 0
    bytes: int = 0

    def reset(self) -> None:
        self.spans = self.requests = self.rejected = self.bytes = 0


COUNTS = web.AppKey("counts", Counts)


def count_spans(body: bytes) -> int:
    """Decode one export body and count its spans: cheap with upb, and proves it is valid."""
    message = ExportTraceServiceRequest()
    message.ParseFromString(body)
    return sum(
        len(scope_spans.spans)
        for resource_spans in message.resource_spans
        for scope_spans in resource_spans.scope_spans
    )


async def export(request: web.Request) -> web.Response:
    counts = request.app[COUNTS]
    content_type = request.headers.get("Content-Type", "").partition(";")[0].strip().lower()
    if content_type != PROTOBUF:
        counts.rejected += 1
        return web.Response(status=415, text=f"expected {PROTOBUF}\n")
    raw = await request.read()
    encoding = request.headers.get("Content-Encoding", "").strip().lower()
    try:
        if encoding == "gzip":
            body = gzip.decompress(raw)
        elif encoding == "deflate":
            body = zlib.decompress(raw)
        elif encoding in ("", "identity"):
            body = raw
        else:
            raise ValueError(f"unsupported encoding {encoding!r}")
        spans = count_spans(body)
    except Exception as exc:  # a bad body is the exporter's fault: answer 400 and count it
        counts.rejected += 1
        return web.Response(status=400, text=f"cannot decode: {exc}\n")
    counts.spans += spans
    counts.requests += 1
    counts.bytes += len(raw)
    return web.Response(body=_EMPTY_RESPONSE, content_type=PROTOBUF)


async def get_count(request: web.Request) -> web.Response:
    return web.json_response(asdict(request.app[COUNTS]))


async def reset(request: web.Request) -> web.Response:
    counts = request.app[COUNTS]
    counts.reset()
    return web.json_response(asdict(counts))


def make_app() -> web.Application:
    app = web.Application(client_max_size=256 * 1024 * 1024)
    app[COUNTS] = Counts()
    app.router.add_post("/v1/traces", export)
    app.router.add_get("/count", get_count)
    app.router.add_post("/reset", reset)
    return app


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("port", type=int)
    parser.add_argument("--host", default="127.0.0.1")
    args = parser.parse_args()
    # auto_decompress=False: the body is decoded here exactly as the exporter sent it.
    web.run_app(
        make_app(),
        host=args.host,
        port=args.port,
        access_log=None,
        print=None,
        shutdown_timeout=2.0,
        auto_decompress=False,
    )


if __name__ == "__main__":
    main()
