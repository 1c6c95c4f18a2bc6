"""UDP ingest, and the datagram receiver it shares with the unix socket transport.

A producer never waits for us: datagrams that find the kernel's receive buffer full are dropped
silently (they come back only as sequence gaps). So the receiver drains the socket on every
readiness, up to a bound per wakeup so other work on the loop still runs, and asks for a large
receive buffer. Each wakeup has a small time budget for parsing and applying (5 ms: under a
flood every loop iteration costs at most that much, so /metrics and /healthz still answer in
a few iterations). A wakeup that overruns it hands the loop back and leaves the rest in the
kernel's buffer: a burst the buffer can hold is parsed in slices, nothing lost. The pipeline is
behind when wakeups keep overrunning and the kernel's receive queue is over half full (the
kernel would soon drop on its own), or when they have overrun for PATIENCE budgets in a row:
then the receiver keeps reading, but throws the rest of each overrunning wakeup's datagrams
away, counted as overload. The loop stays responsive, the data stays fresh, and the loss is
visible in lwsobs_ingest_dropped_total instead of hidden in the kernel.
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import socket
import struct
import time
from typing import Any, Final

from lwsobs.clock import ANCHOR_NS
from lwsobs.config import HostPort
from lwsobs.sources.lws.pipeline import DropReason, IngestPipeline

log = logging.getLogger("lwsobs.ingest")

DEFAULT_HOST: Final = "127.0.0.1"
DEFAULT_PORT: Final = 7682
MAX_DATAGRAM: Final = 65_507  # wire-v1: the largest UDP payload over IPv4
RCVBUF_BYTES: Final = 4 * 1024 * 1024
BATCH: Final = 256  # datagrams read per wakeup at most
BUDGET_S: Final = 0.005  # time per wakeup for parsing and applying; beyond it, yield
PATIENCE: Final = 200  # budgets (1 s) of overrunning wakeups in a row: shed whatever the queue
SHED_FILL: Final = 0.5  # receive queue share (of the buffer) above which an overrun sheds
SO_MEMINFO: Final = int(getattr(socket, "SO_MEMINFO", 55))  # Linux: the socket's memory use


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
        self.patience_ns = PATIENCE * self.budget_ns
        self.address: Any = sock.getsockname()  # (host, port) for UDP, the path for unix
        self.datagrams = 0  # read from the socket, fed or dropped
        self.wakeups = 0
        self._behind_since: int | None = None  # first of the overrunning wakeups in a row
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

    def _queue_filling(self) -> bool:
        fill = receive_queue_fill(self.sock)
        return fill is not None and fill >= SHED_FILL

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
                    now = clock()
                    if now >= deadline:
                        over = True
                        since = self._behind_since
                        if since is None:  # a first overrun only yields
                            self._behind_since = now
                            break  # give the loop back; the rest waits in the kernel
                        if now - since < self.patience_ns and not self._queue_filling():
                            break
                        shedding = True  # behind: read on, but throw away
        finally:
            if not over:
                self._behind_since = None
            self.datagrams += read
            if oversize:
                self.pipeline.note_dropped(DropReason.OVERSIZE, oversize)
            if overload:
                self.pipeline.note_dropped(DropReason.OVERLOAD, overload)


def receive_queue_fill(sock: socket.socket) -> float | None:
    """How full the kernel's receive queue is (0..1), or None where the kernel cannot say.

    Linux's SO_MEMINFO gives the bytes queued (with their overhead) and the buffer size. A unix
    datagram socket charges its queue to the senders, so it always reads as empty here.
    """
    try:
        queued, size = struct.unpack_from("=2I", sock.getsockopt(socket.SOL_SOCKET, SO_MEMINFO, 36))
    except (OSError, struct.error):
        return None
    return queued / size if size else None


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
    loopback = is_loopback(bound_host)
    if not loopback:
        log.warning(
            "udp ingest on %s is not loopback: anyone who reaches it can send events", where
        )
    log.info(
        "lwsobs ingest: udp on %s (receive buffer %d bytes), %s",
        where,
        granted,
        "loopback only" if loopback else "reachable from the network",
    )
    return receiver
