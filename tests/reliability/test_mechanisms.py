"""The mechanisms the reliability suite relies on, each on its own, on real loopback sockets.

- the UDP receiver parses a burst its buffer holds in slices (nothing lost) and sheds only
  when wakeups keep overrunning while the kernel's queue is over half full;
- a send blocked on a hanging OTLP endpoint is cut short by `abort()`;
- `SpanSink.shutdown` gives up on a hanging backend after its timeout, and counts the loss.
"""

from __future__ import annotations

import asyncio
import socket
import threading
import time

from opentelemetry.sdk.trace.sampling import ALWAYS_ON

from lwsobs.core.ids import Ids
from lwsobs.core.roles import Role
from lwsobs.core.tracker import Tracker
from lwsobs.sinks.spans.builder import SpanBuilder
from lwsobs.sinks.spans.otlp_exporter import OtlpExporter
from lwsobs.sinks.spans.otlp_http import OtlpHttpConfig, OtlpHttpSender
from lwsobs.sinks.spans.sink import SpanSink
from lwsobs.sources.lws.pipeline import DropReason, IngestPipeline
from lwsobs.sources.lws.udp import DatagramReceiver, receive_queue_fill
from tests.reliability.consumers import CountingDecoder
from tests.reliability.faulty_otlp import faulty_otlp
from tests.reliability.figures import record

T0 = 1_800_000_000 * 10**9


def queued_socket(datagrams: int, rcvbuf: int) -> socket.socket:
    """A bound UDP socket with `datagrams` heartbeat lines of one source waiting in it."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
    sock.bind(("127.0.0.1", 0))
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sender:
        for seq in range(datagrams):
            line = b'{"v":1,"src":"b@h:1","seq":%d,"t":%d,"r":-2,"pad":"%s"}' % (
                seq,
                T0 + seq,
                b"x" * 900,
            )
            sender.sendto(line, sock.getsockname())
    return sock


def test_a_burst_the_buffer_holds_is_parsed_in_slices_and_nothing_is_shed() -> None:
    sock = queued_socket(300, 4 << 20)
    assert (receive_queue_fill(sock) or 0) < 0.5
    consumer = CountingDecoder()
    pipeline = IngestPipeline(consumer)
    receiver = DatagramReceiver(sock, pipeline, "udp", budget_s=0.0005)
    try:
        while receiver.datagrams < 300:
            receiver._drain()
    finally:
        receiver.close()
    assert consumer.fed == 300 and pipeline.dropped[DropReason.OVERLOAD] == 0
    assert receiver.wakeups > 1  # it did hand the loop back in between


def test_overrunning_wakeups_with_a_filling_queue_shed_and_count() -> None:
    sock = queued_socket(400, 256 * 1024)
    fill = receive_queue_fill(sock)
    assert fill is not None and fill > 0.8, fill
    consumer = CountingDecoder()
    pipeline = IngestPipeline(consumer)
    # no budget at all: every wakeup overruns, however fast this build parses
    receiver = DatagramReceiver(sock, pipeline, "udp", budget_s=0.0)
    try:
        receiver._drain()  # the first overrun only yields
        assert pipeline.dropped[DropReason.OVERLOAD] == 0 and consumer.fed > 0
        receiver._drain()  # still behind, queue still over half full: shed the rest
        shed = pipeline.dropped[DropReason.OVERLOAD]
        assert shed > 0
        while (receive_queue_fill(sock) or 0) > 0:
            receiver._drain()
    finally:
        receiver.close()
    # every datagram read was applied or shed; the next line shows the shed ones as a gap
    assert consumer.fed + pipeline.dropped[DropReason.OVERLOAD] == receiver.datagrams
    record("mechanisms: shedding", f"queue {fill:.0%} full: {shed} datagrams shed at wakeup 2")


async def test_abort_cuts_a_send_blocked_on_a_hanging_endpoint() -> None:
    async with faulty_otlp() as otlp:
        await otlp.set_mode("hang")
        sender = OtlpHttpSender(OtlpHttpConfig(endpoint=otlp.endpoint, timeout_s=60))
        result: list[bool] = []
        thread = threading.Thread(target=lambda: result.append(sender.send(b"x")), daemon=True)
        thread.start()
        while otlp.hanging == 0 and thread.is_alive():
            await asyncio.sleep(0.01)
        assert thread.is_alive() and otlp.hanging == 1  # held by the endpoint
        started = time.monotonic()
        sender.abort()
        await asyncio.get_running_loop().run_in_executor(None, thread.join, 10)
        took = time.monotonic() - started
        assert result == [False] and "aborted" in (sender.last_error or "")
        assert sender.send(b"x") is False  # and it stays aborted
    record("mechanisms: abort of a send held by a hanging endpoint", f"returned after {took:.2f} s")


async def test_shutdown_gives_up_on_a_hanging_backend_and_counts_what_it_dropped() -> None:
    async with faulty_otlp() as otlp:
        await otlp.set_mode("hang")
        builder = SpanBuilder(Ids(1), ALWAYS_ON)
        exporter = OtlpExporter(
            builder, {"service.name": "t"}, OtlpHttpConfig(otlp.endpoint, timeout_s=60)
        )
        spans = SpanSink(builder, [exporter], batch_size=100, delay_s=0.01)
        tracker = Tracker([spans])
        spans.start()
        ctx = tracker.context("app", "c")
        for i in range(1000):
            tracker.destroy(tracker.open(ctx, Role.H1_SERVER, T0 + i), T0 + i + 1)
        await asyncio.sleep(0.2)  # the worker is now held by the endpoint
        started = time.monotonic()
        await asyncio.get_running_loop().run_in_executor(None, spans.shutdown, 0.5)
        took = time.monotonic() - started
    dropped = sum(spans.dropped.values())
    assert spans.exported == 0 and dropped == 1000, spans.dropped
    assert spans.dropped["export_failed"] == 100 and spans.dropped["shutdown"] == 900
    record("mechanisms: span shutdown with a hanging backend", f"gave up after {took:.2f} s")
