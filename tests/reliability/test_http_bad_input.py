"""Bad HTTP: hostile POST /v1/events and malformed requests to the instrumented server.

Raw sockets send what no client library would. Every request is answered with a 4xx (or, when
it never completes, not at all), never a 5xx; the service keeps answering; and every connection
and every refused request is recorded by lwsobs itself (created = destroyed, one 4xx
transaction per 4xx response).
"""

from __future__ import annotations

import asyncio
import gzip
import json
import time
from typing import Any

import aiohttp

from lwsobs.app.service import PIPELINE, build_app
from lwsobs.config import Config
from lwsobs.core.roles import Role
from lwsobs.observer import Observer
from tests.conftest import eventually, run_app
from tests.reliability.figures import latency_summary, record
from tests.reliability.mutate import corpus
from tests.reliability.oracle import judge
from tests.reliability.rawhttp import exchange, request, statuses
from tests.reliability.seeds import recorded_lines

TOKEN = "s3cret-token"
MAX_BODY = 256 * 1024
AUTH = {"Authorization": f"Bearer {TOKEN}"}
NDJSON = {"Content-Type": "application/x-ndjson"}


def h1_counts(observer: Observer) -> tuple[int, int, int, int]:
    """(created, destroyed, 4xx transactions, 5xx transactions) of the service's own wsis."""
    m = observer.metrics
    key = ("lwsobs", Role.H1_SERVER)
    txns = m.transactions
    return (
        m.created.get(key, 0),
        m.destroyed.get(key, 0),
        txns.get(("lwsobs", Role.H1_SERVER, "4xx"), 0),
        txns.get(("lwsobs", Role.H1_SERVER, "5xx"), 0),
    )


def events_post(body: bytes, headers: dict[str, str] | None = None, **kw: Any) -> bytes:
    return request("POST", "/v1/events", {**NDJSON, **AUTH, **(headers or {})}, body, **kw)


def chunked(body: bytes, size: int = 8192) -> bytes:
    parts = [
        b"%x\r\n%s\r\n" % (len(body[i : i + size]), body[i : i + size])
        for i in range(0, len(body), size)
    ]
    return b"".join(parts) + b"0\r\n\r\n"


LINE = recorded_lines()[0]


def hostile_posts() -> list[tuple[str, bytes, set[int]]]:
    """(what, the raw request, the statuses it may get)."""
    return [
        ("no token", request("POST", "/v1/events", NDJSON, LINE), {401}),
        ("wrong token", events_post(LINE, {"Authorization": "Bearer nope"}), {401}),
        ("token as basic", events_post(LINE, {"Authorization": f"Basic {TOKEN}"}), {401}),
        ("token prefix", events_post(LINE, {"Authorization": f"Bearer {TOKEN[:-1]}"}), {401}),
        ("token longer", events_post(LINE, {"Authorization": f"Bearer {TOKEN}x"}), {401}),
        ("latin-1 token", events_post(LINE, {"Authorization": "Bearer \udce9\udcff"}), {401}),
        ("8 KB token", events_post(LINE, {"Authorization": "Bearer " + "t" * 9000}), {400}),
        ("no content type", request("POST", "/v1/events", AUTH, LINE), {415}),
        ("json content type", events_post(LINE, {"Content-Type": "application/json"}), {415}),
        (
            "declared 10 GB",
            events_post(b"", {"Content-Length": str(10 << 30)}, length=False),
            {413},
        ),
        (
            "chunked over the limit",
            events_post(chunked(b"x" * (MAX_BODY + 1)), {"Transfer-Encoding": "chunked"}),
            {413},
        ),
        (
            "gzip bomb (64 MB of zeros)",
            events_post(gzip.compress(b"0" * (64 << 20), 9), {"Content-Encoding": "gzip"}),
            {413},
        ),
        ("broken gzip", events_post(b"not gzip at all", {"Content-Encoding": "gzip"}), {400}),
        ("unknown encoding", events_post(b"x", {"Content-Encoding": "br"}), {400}),
        (
            "bad chunk size",
            events_post(b"zz\r\nx\r\n0\r\n\r\n", {"Transfer-Encoding": "chunked"}),
            {400},
        ),
        (
            "length and chunked",
            events_post(b"0\r\n\r\n", {"Transfer-Encoding": "chunked", "Content-Length": "5"}),
            {400},
        ),
    ]


async def test_hostile_posts_are_refused_with_the_right_status_and_never_fail() -> None:
    config = Config(spans=False, udp=None, ingest_token=TOKEN, ingest_max_body=MAX_BODY)
    observer = Observer(config)
    app = build_app(observer)
    pipeline = app[PIPELINE]
    async with run_app(app) as srv:
        before = h1_counts(observer)
        seen: dict[str, list[int]] = {}
        kinds = hostile_posts()
        for name, raw, expected in kinds:
            seen[name] = statuses(await exchange(srv.port, raw, responses=1))
            assert seen[name] and set(seen[name]) <= expected, (name, seen[name])
        # bodies of mutated lines: each answered 200 with exactly the spec's counts
        bodies = 0
        pool = [line for _, line in corpus(recorded_lines(), 3000, seed=3)]
        for start in range(0, len(pool), 100):
            lines = [line for line in pool[start : start + 100] if len(line) < 16384 * 4]
            data = await exchange(srv.port, events_post(b"\n".join(lines)), responses=1)
            assert statuses(data) == [200]
            counts = json.loads(data.partition(b"\r\n\r\n")[2])
            rejected = sum(judge(line) is not None for line in lines)
            assert counts == {"accepted": len(lines) - rejected, "rejected": rejected}
            bodies += len(lines)
        assert pipeline.lines["http"] == bodies  # no refused request got a line in
        async with aiohttp.ClientSession() as session, session.get(srv.url + "/healthz") as resp:
            assert resp.status == 200
        await eventually(lambda: h1_counts(observer)[1] - before[1] == len(seen) + 30 + 1)
        created, destroyed, fours, fives = (
            a - b for a, b in zip(h1_counts(observer), before, strict=True)
        )
    observer.close()
    refused = sum(len(s) for s in seen.values())
    assert created == destroyed == len(seen) + 30 + 1
    assert fours == refused and fives == 0
    record(
        "http: hostile POST /v1/events",
        f"{len(kinds)} kinds refused (401/413/415/400), {bodies:,} mutated lines "
        "in 30 bodies counted exactly, no 5xx",
    )


MALFORMED: dict[str, bytes] = {
    "binary garbage": bytes(range(256)) * 4,
    "TLS ClientHello": bytes.fromhex("160301012c010001280303") + b"\x00" * 300,
    "HTTP/2 preface": b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n",
    "HTTP/9.9": b"GET / HTTP/9.9\r\nHost: t\r\n\r\n",
    "NUL in method": b"G\x00T / HTTP/1.1\r\nHost: t\r\n\r\n",
    "header without colon": b"GET / HTTP/1.1\r\nHost t\r\n\r\n",
    "100 KB request line": b"GET /" + b"a" * 100_000 + b" HTTP/1.1\r\nHost: t\r\n\r\n",
    "100 KB header": b"GET / HTTP/1.1\r\nHost: t\r\nX: " + b"a" * 100_000 + b"\r\n\r\n",
    "3000 headers": b"GET / HTTP/1.1\r\nHost: t\r\n"
    + b"".join(b"X-%d: 1\r\n" % i for i in range(3000))
    + b"\r\n",
    "bad chunk size": b"POST /demo/hello HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n"
    b"\r\nzz\r\nabc\r\n0\r\n\r\n",
    "negative length": b"POST /demo/hello HTTP/1.1\r\nHost: t\r\nContent-Length: -5\r\n\r\n",
    "two lengths": b"POST /demo/hello HTTP/1.1\r\nHost: t\r\nContent-Length: 1\r\n"
    b"Content-Length: 2\r\n\r\nab",
    "NUL in path": b"GET /a\x00b HTTP/1.1\r\nHost: t\r\n\r\n",
    "bidi in path": "GET /é\u202e HTTP/1.1\r\nHost: t\r\n\r\n".encode(),
    "websocket without key": b"GET /demo/ws HTTP/1.1\r\nHost: t\r\nUpgrade: websocket\r\n"
    b"Connection: Upgrade\r\nSec-WebSocket-Version: 13\r\n\r\n",
    "valid then garbage": b"GET /demo/hello HTTP/1.1\r\nHost: t\r\n\r\n\x16\x03\x01zz\r\n\r\n",
}
INCOMPLETE = {
    "only CRLFs": b"\r\n\r\n\r\n",
    "headers never end": b"GET / HTTP/1.1\r\nHost: t\r\n",
}


async def test_malformed_requests_get_a_400_are_recorded_and_change_nothing_else() -> None:
    observer = Observer(Config(spans=False, udp=None))
    async with run_app(build_app(observer)) as srv:
        before = h1_counts(observer)
        seen = {}
        for name, raw in MALFORMED.items():
            seen[name] = statuses(await exchange(srv.port, raw, responses=1))
            assert seen[name] and set(seen[name]) <= {200, 400}, (name, seen[name])
            assert seen[name][-1] == 400, name
        for name, raw in INCOMPLETE.items():  # no answer while the request is incomplete
            seen[name] = statuses(await exchange(srv.port, raw, timeout=0.5))
            assert seen[name] == [], name
        async with aiohttp.ClientSession() as session, session.get(srv.url + "/demo/hello") as resp:
            assert resp.status == 200
        total = len(MALFORMED) + len(INCOMPLETE) + 1
        await eventually(lambda: h1_counts(observer)[1] - before[1] == total)
        created, destroyed, fours, fives = (
            a - b for a, b in zip(h1_counts(observer), before, strict=True)
        )
    observer.close()
    assert created == destroyed == total
    assert fours == sum(s.count(400) for s in seen.values()) and fives == 0
    record(
        "http: malformed requests to the instrumented server",
        f"{len(MALFORMED)} kinds answered 400 and recorded as 4xx transactions, "
        f"{len(INCOMPLETE)} incomplete left unanswered; {total} connections created = destroyed",
    )


SLOW_CONNECTIONS = 30
DRIBBLE_S = 2.5


async def test_slowloris_connections_are_flagged_idle_while_the_service_keeps_answering() -> None:
    """aiohttp has no deadline for request headers: a client that sends one byte at a time
    holds its connection. lwsobs sees no request on it, so after the idle limit each such
    wsi is a suspect (visible), resolved when the client finally goes away."""
    config = Config(spans=False, udp=None, idle_limits={Role.H1_SERVER: 1.0}, tick_s=0.1)
    observer = Observer(config)
    async with run_app(build_app(observer)) as srv:

        async def dribble() -> None:
            _, writer = await asyncio.open_connection("127.0.0.1", srv.port)
            writer.write(b"GET /demo/hello HTTP/1.1\r\nHost: t\r\nX-Slow: ")
            deadline = time.monotonic() + DRIBBLE_S
            while time.monotonic() < deadline:
                writer.write(b"a")
                await writer.drain()
                await asyncio.sleep(0.1)
            writer.close()
            await writer.wait_closed()

        latencies: list[float] = []

        async def probe(session: aiohttp.ClientSession) -> None:
            deadline = time.monotonic() + DRIBBLE_S
            while time.monotonic() < deadline:
                started = time.perf_counter()
                async with session.get(srv.url + "/healthz") as resp:
                    assert resp.status == 200
                    await resp.read()
                latencies.append(time.perf_counter() - started)
                await asyncio.sleep(0.05)

        async with aiohttp.ClientSession() as session:
            await asyncio.gather(probe(session), *(dribble() for _ in range(SLOW_CONNECTIONS)))
        key = ("lwsobs", Role.H1_SERVER, "idle")
        await eventually(lambda: observer.metrics.resolved.get(key, 0) >= SLOW_CONNECTIONS)
    observer.close()
    assert observer.metrics.leaked.get(key, 0) >= SLOW_CONNECTIONS
    assert len(latencies) > 5
    record(
        "http: slowloris",
        f"{SLOW_CONNECTIONS} connections dribbling {DRIBBLE_S} s flagged idle and resolved; "
        f"/healthz meanwhile {latency_summary(latencies)}",
    )
