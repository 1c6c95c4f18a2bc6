"""Raw HTTP over loopback sockets: requests no well-behaved client library would send."""

from __future__ import annotations

import asyncio
import contextlib
import time


def complete_responses(data: bytes) -> int:
    """How many whole responses (headers and Content-Length body) `data` holds."""
    count = pos = 0
    while (end := data.find(b"\r\n\r\n", pos)) >= 0:
        length = 0
        for line in data[pos:end].split(b"\r\n")[1:]:
            name, _, value = line.partition(b":")
            if name.strip().lower() == b"content-length" and value.strip().isdigit():
                length = int(value)
        if len(data) < end + 4 + length:
            break
        count += 1
        pos = end + 4 + length
    return count


async def exchange(
    port: int,
    payload: bytes,
    *,
    half_close: bool = False,
    timeout: float = 10.0,
    responses: int | None = None,
) -> bytes:
    """Send `payload`, optionally shut the write side, and read until EOF, until `responses`
    whole responses arrived, or until `timeout` passes (a guard against a hang)."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        with contextlib.suppress(ConnectionError):
            writer.write(payload)
            await writer.drain()
            if half_close and writer.can_write_eof():
                writer.write_eof()
        data = b""
        deadline = time.monotonic() + timeout
        while (left := deadline - time.monotonic()) > 0:
            try:
                chunk = await asyncio.wait_for(reader.read(65536), left)
            except (TimeoutError, ConnectionError):
                break
            if not chunk:
                break
            data += chunk
            if responses is not None and complete_responses(data) >= responses:
                break
        return data
    finally:
        writer.close()
        with contextlib.suppress(ConnectionError):
            await writer.wait_closed()


def statuses(data: bytes) -> list[int]:
    """The status codes of every response in `data` (pipelined responses included)."""
    out = []
    for line in data.split(b"\r\n"):
        if line.startswith(b"HTTP/1.") and len(line) >= 12 and line[9:12].isdigit():
            out.append(int(line[9:12]))
    return out


def request(
    method: str = "GET",
    path: str = "/",
    headers: dict[str, str] | None = None,
    body: bytes = b"",
    *,
    length: bool = True,
) -> bytes:
    head = f"{method} {path} HTTP/1.1\r\nHost: t\r\n"
    for name, value in (headers or {}).items():
        head += f"{name}: {value}\r\n"
    if length and body and "Transfer-Encoding" not in (headers or {}):
        head += f"Content-Length: {len(body)}\r\n"
    return head.encode("utf-8", "surrogateescape") + b"\r\n" + body
