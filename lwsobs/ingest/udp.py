"""UDP ingest, and the datagram receiver it shares with the unix socket transport.

A producer never waits for us: datagrams that find the kernel's receive buffer full are dropped
silently (they come back only as sequence gaps). So the receiver drains the socket on every
readiness, up to a bound per wakeup so other work on the loop still runs, and asks for a large
receive buffer. Each wakeup has a time budget for parsing and applying. The first wakeup that
overruns it hands the loop back and leaves the rest in the kernel's buffer (one slow event or a
GC pause is no reason to lose lines). If the next wakeup overruns too, the pipeline is behind:
the receiver keeps reading, but throws the rest of that wakeup's datagrams away, counted as
overload. The loop stays responsive, and the loss is visible in lwsobs_ingest_dropped_total
instead of hidden in the kernel.
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import socket
import time
from typing import Any, Final

from lwsobs.clock import ANCHOR_NS
from lwsobs.config import HostPort
from lwsobs.ingest.pipeline import DropReason, IngestPipeline

log = logging.getLogger("lwsobs.ingest")

DEFAULT_HOST: Final = "127.0.0.1"
DEFAULT_PORT: Final = 7682
MAX_DATAGRAM: Final = 65_507  # wire-v1: the largest UDP payload over IPv4
RCVBUF_BYTES: Final = 4 * 1024 * 1024
BATCH: Final = 256  # datagrams read per wakeup at most
BUDGET_S: Final = 0.02  # time per wakeup for parsing and applying; beyond it, shed


class DatagramReceiver:
    """Drains one bound datagram socket into `pipeline.feed_datagram` from the event loop."""

    def __init__(
        self,
        sock: socket.socket,
        pipeline: IngestPipeline,
        transport: str,
        *,
        max_datagram: int = MAX_DATAGRAM,
        batch: int = BATCH,
        budget_s: float = BUDGET_S,
    ) -> None:
        sock.setblocking(False)
        self.sock = sock
        self.pipeline = pipeline
        self.transport = transport
        self.max_datagram = max_datagram
        self.batch = batch
        self.budget_ns = round(budget_s * 1e9)
        self.address: Any = sock.getsockname()  # (host, port) for UDP, the path for unix
        self.datagrams = 0  # read from the socket, fed or dropped
        self.wakeups = 0
        self._behind = False  # the last wakeup overran its budget
        # one buffer for every read, one byte larger than allowed: a full read is oversize
        self._view = memoryview(bytearray(max_datagram + 1))
        self._loop: asyncio.AbstractEventLoop | None = None
        self._fd = sock.fileno()

    def start(self, loop: asyncio.AbstractEventLoop | None = None) -> None:
        self._loop = loop or asyncio.get_running_loop()
        self._loop.add_reader(self._fd, self._drain)

    def close(self) -> None:
        """Stop reading and close the socket; idempotent."""
        if self._loop is not None:
            self._loop.remove_reader(self._fd)
            self._loop = None
        self.sock.close()

    def _drain(self) -> None:
        self.wakeups += 1
        recv_into = self.sock.recv_into
        view = self._view
        feed = self.pipeline.feed_datagram
        transport = self.transport
        limit = self.max_datagram
        clock = time.monotonic_ns
        deadline = clock() + self.budget_ns
        shedding = over = False
        read = oversize = overload = 0
        try:
            for _ in range(self.batch):
                try:
                    size = recv_into(view)
                except (BlockingIOError, InterruptedError):
                    break
                except OSError as exc:  # a pending socket error; the next read goes on
                    log.warning("%s ingest: receive failed: %s", transport, exc)
                    break
                read += 1
                if size > limit:
                    oversize += 1
                elif shedding:
                    overload += 1
                else:
                    feed(bytes(view[:size]), transport, ANCHOR_NS + clock())
                    if clock() >= deadline:
                        over = True
                        if not self._behind:
                            break  # give the loop back; the rest waits in the kernel
                        shedding = True
        finally:
            self._behind = over
            self.datagrams += read
            if oversize:
                self.pipeline.note_dropped(DropReason.OVERSIZE, oversize)
            if overload:
                self.pipeline.note_dropped(DropReason.OVERLOAD, overload)


def set_receive_buffer(sock: socket.socket, size: int) -> int:
    """Ask for `size` bytes of receive buffer (best effort: the kernel caps it); return what
    was granted."""
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, size)
    except OSError as exc:
        log.debug("SO_RCVBUF %d refused: %s", size, exc)
    return int(sock.getsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF))


def is_loopback(host: str) -> bool:
    try:
        return ipaddress.ip_address(host.partition("%")[0]).is_loopback
    except ValueError:
        return host == "localhost"


async def start_udp(
    pipeline: IngestPipeline,
    host: str = DEFAULT_HOST,
    port: int = DEFAULT_PORT,
    *,
    rcvbuf: int = RCVBUF_BYTES,
    batch: int = BATCH,
    budget_s: float = BUDGET_S,
) -> DatagramReceiver:
    """Bind HOST:PORT (port 0: any free port, see `.address`) and start draining it.

    Loopback is the default because anyone who can reach the port can send events; an explicit
    other address is allowed, with a warning.
    """
    loop = asyncio.get_running_loop()
    infos = await loop.getaddrinfo(
        host, port, type=socket.SOCK_DGRAM, proto=socket.IPPROTO_UDP, flags=socket.AI_PASSIVE
    )
    family, kind, proto, _, sockaddr = infos[0]
    sock = socket.socket(family, kind, proto)
    try:
        granted = set_receive_buffer(sock, rcvbuf)
        sock.bind(sockaddr)
        receiver = DatagramReceiver(sock, pipeline, "udp", batch=batch, budget_s=budget_s)
        receiver.start(loop)
    except BaseException:
        sock.close()
        raise
    bound_host, bound_port = sock.getsockname()[:2]
    where = str(HostPort(bound_host, bound_port))
    if not is_loopback(bound_host):
        log.warning(
            "udp ingest on %s is not loopback: anyone who reaches it can send events", where
        )
    log.info("lwsobs ingest: udp on %s (receive buffer %d bytes)", where, granted)
    return receiver
