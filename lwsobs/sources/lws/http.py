"""HTTP ingest: `POST /v1/events` with a body of wire-v1 lines, for producers that cannot send UDP.

Checks run cheapest and safest first: the token (nothing about the body is looked at before a
caller is known), the Content-Type, the declared length, then the length actually read (a chunked
or compressed body has no honest Content-Length; a compressed one is measured decompressed, so a
gzip bomb stops at the limit). A body that cannot be read (a broken gzip stream, a torn chunked
encoding) is a 400. Bad lines do not fail the request: wire-v1 rejects lines one by one, so the
reply is 200 with this body's counts.
"""

from __future__ import annotations

import asyncio
import hmac
from typing import Final

from aiohttp import hdrs, web
from aiohttp.http_exceptions import HttpProcessingError
from aiohttp.web_protocol import RequestPayloadError

from lwsobs.clock import now_ns
from lwsobs.sources.lws.pipeline import Counts, IngestPipeline

INGEST_PATH: Final = "/v1/events"
NDJSON: Final = "application/x-ndjson"
DEFAULT_MAX_BODY: Final = 4 * 1024 * 1024
READ_CHUNK: Final = 64 * 1024
FEED_SLICE: Final = 256 * 1024  # bytes of whole lines applied between yields to the loop


def add_ingest_route(
    app: web.Application,
    pipeline: IngestPipeline,
    *,
    token: str | None,
    max_body: int = DEFAULT_MAX_BODY,
    path: str = INGEST_PATH,
) -> None:
    """Add `POST path`; with a token, callers must send `Authorization: Bearer <token>`."""
    expected = token.encode() if token else None

    async def ingest(request: web.Request) -> web.Response:
        if expected is not None and not _authorized(request, expected):
            return _error(401, "missing or wrong bearer token", {hdrs.WWW_AUTHENTICATE: "Bearer"})
        if request.content_type.lower() != NDJSON:
            return _error(415, f"Content-Type must be {NDJSON}, got {request.content_type}")
        declared = request.content_length
        if declared is not None and declared > max_body:
            return _error(413, f"body of {declared} bytes is over the limit of {max_body}")
        try:
            body = await _read(request, max_body)
        except (RequestPayloadError, HttpProcessingError) as exc:
            reason = " ".join(str(exc).split())[:160] or type(exc).__name__
            return _error(400, f"body could not be read: {reason}")
        if body is None:
            return _error(413, f"body is over the limit of {max_body} bytes")
        counts = await _feed(pipeline, body)
        return web.json_response({"accepted": counts.accepted, "rejected": counts.rejected})

    app.router.add_post(path, ingest)


def _authorized(request: web.Request, expected: bytes) -> bool:
    scheme, _, credentials = request.headers.get(hdrs.AUTHORIZATION, "").partition(" ")
    given = credentials.strip().encode("utf-8", "surrogateescape")
    # compare even for a wrong scheme, so the answer takes the same time
    return hmac.compare_digest(given, expected) and scheme.lower() == "bearer"


def _error(status: int, message: str, headers: dict[str, str] | None = None) -> web.Response:
    return web.json_response({"error": message}, status=status, headers=headers)


async def _read(request: web.Request, limit: int) -> bytes | None:
    """The body, or None as soon as it grows past `limit` (the rest is never read)."""
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.content.iter_chunked(READ_CHUNK):
        size += len(chunk)
        if size > limit:
            return None
        chunks.append(chunk)
    return b"".join(chunks)


async def _feed(pipeline: IngestPipeline, body: bytes) -> Counts:
    """Apply the body in slices of whole lines, letting the loop breathe between them.

    The producer posts its bodies one after another, so its lines stay in order.
    """
    accepted = rejected = start = 0
    while start < len(body):
        cut = body.find(b"\n", start + FEED_SLICE)
        end = len(body) if cut < 0 else cut + 1
        counts = pipeline.feed_lines(body[start:end], "http", now_ns())
        accepted += counts.accepted
        rejected += counts.rejected
        start = end
        if start < len(body):
            await asyncio.sleep(0)
    return Counts(accepted, rejected)
