"""Ingest over real sockets on loopback: UDP, unix datagrams and POST /v1/events."""

from __future__ import annotations

import asyncio
import errno
import json
import logging
import os
import shutil
import socket
import stat
import tempfile
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.openmetrics.exposition import generate_latest as openmetrics_latest
from prometheus_client.parser import text_string_to_metric_families

from lwsobs.config import Config, HostPort
from lwsobs.sources.lws.http import add_ingest_route
from lwsobs.sources.lws.pipeline import DropReason, IngestPipeline
from lwsobs.sources.lws.receivers import attach_ingest, run_ingest
from lwsobs.sources.lws.udp import DatagramReceiver, start_udp
from lwsobs.sources.lws.unix import start_unix
from lwsobs.sources.lws.wire import BYE, HELLO, Event, RejectReason
from tests.conftest import eventually, run_app

T0 = 1_700_000_000_000_000_000


class RecordingConsumer:
    """Records what the pipeline applies: (src, seq) per event, lost counts, silent sources."""

    def __init__(self) -> None:
        self.events: list[tuple[str, int]] = []
        self.lost: list[tuple[str, int]] = []
        self.silent: list[str] = []

    def feed(self, event: Event) -> None:
        self.events.append((event.src, event.seq))

    def lines_lost(self, src: str, count: int) -> None:
        self.lost.append((src, count))

    def source_silent(self, src: str, now_ns: int) -> None:
        self.silent.append(src)

    @property
    def lost_total(self) -> int:
        return sum(n for _, n in self.lost)


def line(src: str, seq: int, r: int = 5, **fields: Any) -> bytes:
    return json.dumps({"v": 1, "src": src, "seq": seq, "t": T0 + seq, "r": r, **fields}).encode()


def body(*items: bytes) -> bytes:
    return b"".join(item + b"\n" for item in items)


@pytest.fixture
def consumer() -> RecordingConsumer:
    return RecordingConsumer()


@pytest.fixture
def pipeline(consumer: RecordingConsumer) -> IngestPipeline:
    return IngestPipeline(consumer, silence_limit_s=30.0)


@pytest.fixture
def sender() -> Iterator[socket.socket]:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        yield sock


@pytest.fixture
def short_dir() -> Iterator[Path]:
    """A directory with a short path: unix socket paths must stay under 108 bytes."""
    path = Path(tempfile.mkdtemp(prefix="lwsobs-"))
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture
async def udp(pipeline: IngestPipeline) -> AsyncIterator[DatagramReceiver]:
    receiver = await start_udp(pipeline, "127.0.0.1", 0)
    yield receiver
    receiver.close()


def samples(pipeline: IngestPipeline) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in pipeline.families()
        for s in family.samples
    }


def kernel_drops(sock: socket.socket) -> int | None:
    """The kernel's count of datagrams this UDP socket dropped (Linux), None if unknown."""
    inode = os.fstat(sock.fileno()).st_ino
    try:
        rows = Path("/proc/net/udp").read_text().splitlines()[1:]
    except OSError:
        return None
    for row in rows:
        fields = row.split()
        if int(fields[9]) == inode:
            return int(fields[-1])
    return None


# -- UDP -------------------------------------------------------------------------------------------


async def test_udp_lines_good_and_bad_reach_the_consumer_in_order(
    udp: DatagramReceiver,
    sender: socket.socket,
    pipeline: IngestPipeline,
    consumer: RecordingConsumer,
) -> None:
    host, port = udp.address
    assert host == "127.0.0.1" and port > 0
    sender.sendto(body(line("a", 0, HELLO), b"{broken", line("a", 1), line("b", 0)), (host, port))
    sender.sendto(body(b"[]", line("a", 2), b'{"v": 2}', line("a", 3)), (host, port))
    sender.sendto(body(line("a", 4), line("a", 4), line("b", 1)), (host, port))
    await eventually(lambda: len(consumer.events) == 7)
    assert consumer.events == [
        ("a", 0),
        ("a", 1),
        ("b", 0),
        ("a", 2),
        ("a", 3),
        ("a", 4),
        ("b", 1),
    ]
    assert pipeline.rejected == {
        ("udp", RejectReason.NOT_JSON): 1,
        ("udp", RejectReason.NOT_OBJECT): 1,
        ("udp", RejectReason.BAD_VERSION): 1,
    }
    assert pipeline.lines["udp"] == 11
    assert pipeline.duplicates == {"a": 1}
    assert udp.datagrams == 3


@pytest.mark.parametrize("rcvbuf", [4 * 1024 * 1024, 4096], ids=["large-buffer", "tiny-buffer"])
async def test_a_burst_of_udp_datagrams_is_drained_and_every_loss_is_accounted(
    pipeline: IngestPipeline, consumer: RecordingConsumer, rcvbuf: int
) -> None:
    """5,000 datagrams as fast as a thread can send them. With the large buffer they all
    arrive; with a tiny one the kernel drops many, and the gaps account for each of them."""
    sent = 5000
    udp = await start_udp(pipeline, "127.0.0.1", 0, rcvbuf=rcvbuf)
    address = udp.address

    def blast() -> None:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
            for seq in range(sent):
                sock.sendto(line("burst", seq) + b"\n", address)

    try:
        await asyncio.get_running_loop().run_in_executor(None, blast)
        # once the burst is drained, one more line: every loss before it is now a visible gap
        await eventually(lambda: udp.datagrams + (kernel_drops(udp.sock) or 0) >= sent)
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
            sock.sendto(line("burst", sent) + b"\n", address)
        await eventually(lambda: consumer.events[-1:] == [("burst", sent)])
        dropped = kernel_drops(udp.sock)
        granted = udp.sock.getsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF)
    finally:
        udp.close()
    received = len(consumer.events)
    assert received + consumer.lost_total == sent + 1
    assert pipeline.lost_total == consumer.lost_total
    assert [seq for _, seq in consumer.events] == sorted(seq for _, seq in consumer.events)
    shed = pipeline.dropped[DropReason.OVERLOAD]
    if dropped is not None:  # every missing line is one the kernel or the shedding dropped
        assert consumer.lost_total == dropped + shed
    if granted >= 4 * 1024 * 1024:  # the kernel granted the large buffer (rmem_max allows it)
        assert received > sent * 0.9, f"only {received} of {sent} received"


async def test_overload_is_shed_and_counted_never_blocking(
    pipeline: IngestPipeline, consumer: RecordingConsumer, sender: socket.socket
) -> None:
    """With no time budget: the first overrun only yields the loop, the second one sheds."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(("127.0.0.1", 0))
    address = sock.getsockname()
    for seq in range(10):
        sender.sendto(line("a", seq), address)
    await asyncio.sleep(0.05)  # all ten queued in the kernel before the first wakeup
    receiver = DatagramReceiver(sock, pipeline, "udp", budget_s=0)
    receiver.start()
    try:
        await eventually(lambda: receiver.datagrams == 10)
        assert receiver.wakeups == 2
        assert consumer.events == [("a", 0), ("a", 1)]
        assert pipeline.dropped[DropReason.OVERLOAD] == 8
        sender.sendto(line("a", 10), address)
        await eventually(lambda: len(consumer.events) == 3)
        assert consumer.lost == [("a", 8)]
        got = samples(pipeline)
        assert got[("lwsobs_ingest_dropped_total", (("reason", "overload"),))] == 8
    finally:
        receiver.close()


async def test_one_overrun_loses_nothing(
    pipeline: IngestPipeline, consumer: RecordingConsumer, sender: socket.socket
) -> None:
    """A single slow wakeup leaves the rest in the kernel; the next wakeup carries on."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(("127.0.0.1", 0))
    for seq in range(10):
        sender.sendto(line("a", seq), sock.getsockname())
    await asyncio.sleep(0.05)
    receiver = DatagramReceiver(sock, pipeline, "udp", budget_s=0)
    try:
        receiver._drain()  # driven by hand: the budget changes between the two wakeups
        assert consumer.events == [("a", 0)]
        receiver.budget_ns = 3600 * 10**9
        receiver._drain()
        assert consumer.events == [("a", seq) for seq in range(10)]
        assert pipeline.dropped[DropReason.OVERLOAD] == 0
        assert receiver.datagrams == 10
    finally:
        receiver.close()


async def test_udp_logs_where_it_listens_and_warns_off_loopback(
    pipeline: IngestPipeline, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="lwsobs.ingest")
    receiver = await start_udp(pipeline, "127.0.0.1", 0)
    receiver.close()
    port = receiver.address[1]
    infos = [r.getMessage() for r in caplog.records if r.levelno == logging.INFO]
    assert len(infos) == 1
    assert infos[0].startswith(f"lwsobs ingest: udp on 127.0.0.1:{port} (receive buffer ")
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]
    caplog.clear()
    receiver = await start_udp(pipeline, "0.0.0.0", 0)
    receiver.close()
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and "is not loopback" in warnings[0]


async def test_udp_asks_for_a_large_receive_buffer(udp: DatagramReceiver) -> None:
    granted = udp.sock.getsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF)
    try:
        rmem_max = int(Path("/proc/sys/net/core/rmem_max").read_text())
    except OSError:
        rmem_max = 0
    assert granted >= min(rmem_max, 4 * 1024 * 1024)  # Linux doubles what it grants


async def test_udp_bind_conflict_is_an_os_error(
    udp: DatagramReceiver, pipeline: IngestPipeline
) -> None:
    with pytest.raises(OSError) as info:
        await start_udp(pipeline, "127.0.0.1", udp.address[1])
    assert info.value.errno == errno.EADDRINUSE


# -- unix datagram socket --------------------------------------------------------------------------


async def test_unix_socket_is_private_carries_lines_and_is_removed_on_close(
    pipeline: IngestPipeline, consumer: RecordingConsumer, short_dir: Path
) -> None:
    path = str(short_dir / "ingest.sock")
    receiver = await start_unix(pipeline, path)
    try:
        mode = os.stat(path).st_mode
        assert stat.S_ISSOCK(mode)
        assert stat.S_IMODE(mode) == 0o600
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
            sock.sendto(body(line("u", 0, HELLO), b"nope", line("u", 1)), path)
            sock.sendto(body(line("u", 2, BYE)), path)
        await eventually(lambda: len(consumer.events) == 3)
        assert consumer.events == [("u", 0), ("u", 1), ("u", 2)]
        assert pipeline.rejected == {("unix", RejectReason.NOT_JSON): 1}
        assert pipeline.lines["unix"] == 4
    finally:
        receiver.close()
    assert not os.path.exists(path)
    receiver.close()  # idempotent


async def test_unix_oversize_datagrams_are_dropped_and_counted(
    pipeline: IngestPipeline, consumer: RecordingConsumer, short_dir: Path
) -> None:
    path = str(short_dir / "big.sock")
    receiver = await start_unix(pipeline, path, max_datagram=200)
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
            sock.sendto(body(line("u", 0), line("u", 1), line("u", 2), line("u", 3)), path)
            sock.sendto(body(line("u", 4)), path)
        await eventually(lambda: receiver.datagrams == 2)
        assert consumer.events == [("u", 4)]
        assert pipeline.dropped[DropReason.OVERSIZE] == 1
    finally:
        receiver.close()


async def test_a_stale_unix_socket_file_is_replaced(
    pipeline: IngestPipeline, consumer: RecordingConsumer, short_dir: Path
) -> None:
    path = str(short_dir / "stale.sock")
    dead = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    dead.bind(path)
    dead.close()  # the file stays behind, nobody receives on it
    receiver = await start_unix(pipeline, path)
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
            sock.sendto(body(line("u", 0)), path)
        await eventually(lambda: consumer.events == [("u", 0)])
    finally:
        receiver.close()


async def test_a_live_unix_socket_or_a_plain_file_is_never_taken_over(
    pipeline: IngestPipeline, short_dir: Path
) -> None:
    path = str(short_dir / "busy.sock")
    first = await start_unix(pipeline, path)
    try:
        with pytest.raises(OSError) as info:
            await start_unix(pipeline, path)
        assert info.value.errno == errno.EADDRINUSE
        assert os.path.exists(path)
    finally:
        first.close()
    plain = short_dir / "plain"
    plain.write_text("keep me")
    with pytest.raises(FileExistsError):
        await start_unix(pipeline, str(plain))
    assert plain.read_text() == "keep me"


async def test_closing_does_not_remove_a_socket_file_another_run_took_over(
    pipeline: IngestPipeline, short_dir: Path
) -> None:
    path = str(short_dir / "taken.sock")
    receiver = await start_unix(pipeline, path)
    os.unlink(path)
    other = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    other.bind(path)
    try:
        receiver.close()
        assert os.path.exists(path)
    finally:
        other.close()


# -- POST /v1/events -------------------------------------------------------------------------------


def ingest_app(pipeline: IngestPipeline, token: str | None = None) -> web.Application:
    app = web.Application()
    add_ingest_route(app, pipeline, token=token, max_body=64 * 1024)
    return app


NDJSON = {"Content-Type": "application/x-ndjson"}


async def test_post_events_answers_the_counts_of_its_body(
    aiohttp_client: Any, pipeline: IngestPipeline, consumer: RecordingConsumer
) -> None:
    client: TestClient[Any, Any] = await aiohttp_client(ingest_app(pipeline))
    data = body(line("h", 0, HELLO), b"{bad", line("h", 1), b"[]", line("h", 2))
    resp = await client.post("/v1/events", data=data, headers=NDJSON)
    assert resp.status == 200
    assert await resp.json() == {"accepted": 3, "rejected": 2}
    assert consumer.events == [("h", 0), ("h", 1), ("h", 2)]
    assert pipeline.rejected == {
        ("http", RejectReason.NOT_JSON): 1,
        ("http", RejectReason.NOT_OBJECT): 1,
    }
    # parameters on the media type are fine; an empty body is zero lines
    resp = await client.post(
        "/v1/events", data=b"", headers={"Content-Type": "Application/X-NDJSON; charset=utf-8"}
    )
    assert resp.status == 200
    assert await resp.json() == {"accepted": 0, "rejected": 0}


async def test_post_events_applies_a_large_body_in_order(
    aiohttp_client: Any, consumer: RecordingConsumer
) -> None:
    pipeline = IngestPipeline(consumer)
    app = web.Application()
    add_ingest_route(app, pipeline, token=None, max_body=4 * 1024 * 1024)
    client: TestClient[Any, Any] = await aiohttp_client(app)
    data = body(*(line("big", seq, uri="/x" * 100) for seq in range(5000)))
    assert len(data) > 1024 * 1024  # several slices, and over aiohttp's client_max_size
    resp = await client.post("/v1/events", data=data, headers=NDJSON)
    assert await resp.json() == {"accepted": 5000, "rejected": 0}
    assert consumer.events == [("big", seq) for seq in range(5000)]
    assert pipeline.lost_total == pipeline.duplicates_total == 0


@pytest.mark.parametrize("content_type", ["text/plain", "application/json", None])
async def test_post_events_wants_ndjson(
    aiohttp_client: Any, pipeline: IngestPipeline, content_type: str | None
) -> None:
    client: TestClient[Any, Any] = await aiohttp_client(ingest_app(pipeline))
    headers = {} if content_type is None else {"Content-Type": content_type}
    resp = await client.post("/v1/events", data=body(line("h", 0)), headers=headers)
    assert resp.status == 415
    assert "application/x-ndjson" in (await resp.json())["error"]
    assert pipeline.lines["http"] == 0


async def test_post_events_refuses_a_body_over_the_limit(
    aiohttp_client: Any, pipeline: IngestPipeline, consumer: RecordingConsumer
) -> None:
    client: TestClient[Any, Any] = await aiohttp_client(ingest_app(pipeline))
    big = body(*(line("h", seq, uri="/" + "y" * 200) for seq in range(400)))
    assert len(big) > 64 * 1024
    resp = await client.post("/v1/events", data=big, headers=NDJSON)  # with Content-Length
    assert resp.status == 413

    async def chunks() -> AsyncIterator[bytes]:  # chunked: no Content-Length to judge by
        for start in range(0, len(big), 8192):
            yield big[start : start + 8192]

    resp = await client.post("/v1/events", data=chunks(), headers=NDJSON)
    assert resp.status == 413
    assert consumer.events == []
    assert pipeline.lines["http"] == 0
    # exactly the limit is fine
    exact = b"".join(line("h", seq).ljust(4095) + b"\n" for seq in range(16))
    assert len(exact) == 64 * 1024
    resp = await client.post("/v1/events", data=exact, headers=NDJSON)
    assert resp.status == 200
    assert await resp.json() == {"accepted": 16, "rejected": 0}


async def test_post_events_with_a_token(
    aiohttp_client: Any, pipeline: IngestPipeline, consumer: RecordingConsumer
) -> None:
    client: TestClient[Any, Any] = await aiohttp_client(ingest_app(pipeline, token="s3cret"))
    data = body(line("h", 0))
    for auth in (None, "Bearer wrong", "Bearer s3cre", "Basic s3cret", "s3cret", "Bearer"):
        headers = dict(NDJSON) if auth is None else {**NDJSON, "Authorization": auth}
        resp = await client.post("/v1/events", data=data, headers=headers)
        assert resp.status == 401, auth
        assert resp.headers["WWW-Authenticate"] == "Bearer"
    # the token is checked before anything else is said about the request
    resp = await client.post("/v1/events", data=data, headers={"Content-Type": "text/plain"})
    assert resp.status == 401
    assert consumer.events == []
    resp = await client.post(
        "/v1/events", data=data, headers={**NDJSON, "Authorization": "bearer s3cret"}
    )
    assert resp.status == 200
    assert await resp.json() == {"accepted": 1, "rejected": 0}
    assert consumer.events == [("h", 0)]


# -- running the transports ------------------------------------------------------------------------


async def test_run_ingest_starts_stops_and_reports_silence(
    consumer: RecordingConsumer, short_dir: Path
) -> None:
    pipeline = IngestPipeline(consumer, silence_limit_s=0.05)
    path = str(short_dir / "run.sock")
    config = Config(udp=HostPort("127.0.0.1", 0), unix=path, tick_s=0.01)
    async with run_ingest(pipeline, config) as running:
        assert running.udp is not None and running.unix is not None
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
            sock.sendto(body(line("quiet", 0)), running.udp.address)
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
            sock.sendto(body(line("bye", 0, HELLO), line("bye", 1, BYE)), path)
        await eventually(lambda: consumer.silent == ["quiet"])
        await asyncio.sleep(0.1)
        assert consumer.silent == ["quiet"]  # once, and never the source that said BYE
        udp_sock = running.udp.sock
    assert udp_sock.fileno() == -1
    assert not os.path.exists(path)


async def test_run_ingest_with_udp_off(pipeline: IngestPipeline) -> None:
    async with run_ingest(pipeline, Config(udp=None)) as running:
        assert running.udp is None and running.unix is None


def free_udp_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def test_run_ingest_closes_what_it_started_when_a_later_transport_fails(
    pipeline: IngestPipeline, short_dir: Path
) -> None:
    (short_dir / "file").write_text("not a socket")
    port = free_udp_port()
    config = Config(udp=HostPort("127.0.0.1", port), unix=str(short_dir / "file"))
    with pytest.raises(FileExistsError):
        async with run_ingest(pipeline, config):
            pass
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", port))  # the UDP receiver was closed


async def test_attach_ingest_runs_with_the_app(consumer: RecordingConsumer) -> None:
    pipeline = IngestPipeline(consumer)
    port = free_udp_port()
    config = Config(udp=HostPort("127.0.0.1", port), ingest_token="t0k")
    app = web.Application()
    attach_ingest(app, pipeline, config)
    async with run_app(app) as running:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
            sock.sendto(body(line("app", 0)), ("127.0.0.1", port))
        await eventually(lambda: consumer.events == [("app", 0)])
        async with aiohttp.ClientSession() as session:
            headers = {**NDJSON, "Authorization": "Bearer t0k"}
            async with session.post(
                running.url + "/v1/events", data=body(line("app", 1)), headers=headers
            ) as resp:
                assert resp.status == 200
        assert consumer.events == [("app", 0), ("app", 1)]
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", port))  # released with the app


# -- self-metrics ----------------------------------------------------------------------------------


class _Collector:
    def __init__(self, pipeline: IngestPipeline) -> None:
        self.pipeline = pipeline

    def collect(self) -> Any:
        return self.pipeline.families()


async def test_families_render_through_prometheus_client(
    udp: DatagramReceiver, sender: socket.socket, pipeline: IngestPipeline
) -> None:
    sender.sendto(body(line("m", 0), b"{", line("m", 3), line("m", 3)), udp.address)
    await eventually(lambda: pipeline.lines["udp"] == 4)
    registry = CollectorRegistry(auto_describe=False)
    registry.register(_Collector(pipeline))
    assert "lwsobs_ingest_rejected_total" in openmetrics_latest(registry).decode()
    families = {
        f.name: f for f in text_string_to_metric_families(generate_latest(registry).decode())
    }
    rejected = {
        (s.labels["transport"], s.labels["reason"]): s.value
        for s in families["lwsobs_ingest_rejected"].samples
    }
    assert {reason for _, reason in rejected} == {r.value for r in RejectReason}
    assert rejected[("udp", "not_json")] == 1
    assert rejected[("udp", "too_long")] == 0
    assert families["lwsobs_ingest_lines"].samples[0].labels == {"transport": "udp"}
    lost = families["lwsobs_ingest_lost"].samples
    assert [(s.labels, s.value) for s in lost] == [({"source": "m"}, 2)]
    duplicates = families["lwsobs_ingest_duplicates"].samples
    assert [(s.labels, s.value) for s in duplicates] == [({"source": "m"}, 1)]
    assert families["lwsobs_ingest_sources"].samples[0].value == 1
    dropped = {s.labels["reason"] for s in families["lwsobs_ingest_dropped"].samples}
    assert dropped == {"overload", "oversize"}
