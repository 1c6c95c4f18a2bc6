"""Demo lws traffic: replay a recorded libwebsockets event stream at the service's own ingest.

`lwsobs serve --demo` has no lws app to observe, so it plays one back: lwsobs/data/
lws-demo.ndjson, recorded by scripts/record-lws-demo from the real test app with the shim
preloaded. Each pass is sent to the service's UDP address (config.udp) as the shim would send
it, so it takes the whole live path (receiver, pipeline, decoder, tracker). Every pass is a
fresh instance of each recorded producer: `src` renamed to `lws-demo@<instance>` (the service
labels it source="lws-demo"), `seq` renumbered from 0 at its HELLO, and `t`/`mono` rebased to
the pass's start with the recorded gaps kept, each gap cut to at most half a second so a pass
lasts seconds. A new HELLO (new `t`) is how the pipeline knows a producer restarted; each
recorded producer also ends with BYE, so nothing is left live between passes. The recording has
exactly one deliberate leak (lwsobs/data/README.md), so each pass adds exactly one certain leak.

With `--udp off` (or a UDP port of 0, whose bound port is not known here) the same datagrams
are fed to the ingest pipeline in-process, counted under transport="file", and a log line says
so.
"""

from __future__ import annotations

import asyncio
import ipaddress
import json
import logging
import socket
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from importlib import resources
from typing import Any, Final

from aiohttp import web

from lwsobs.app.demo import cancel_all
from lwsobs.clock import now_ns
from lwsobs.config import Config
from lwsobs.sources.lws.pipeline import IngestPipeline
from lwsobs.sources.lws.wire import BYE, CONTEXT_DESTROY_BEGIN, CONTEXT_DESTROYED, HELLO

log = logging.getLogger("lwsobs.demo")

RECORDING: Final = "lws-demo.ndjson"
DEMO_NAME: Final = "lws-demo"
MAX_GAP_NS: Final = 500_000_000  # a recorded pause longer than this is cut to it
BATCH_NS: Final = 20_000_000  # the shim sends a batch when it is 20 ms old...
BATCH_BYTES: Final = 8 * 1024  # ...or when the next line would take it past 8 KiB
DEFAULT_PERIOD_S: Final = 15.0  # from the start of one pass to the start of the next
MIN_PAUSE_S: Final = 1.0  # between passes, whatever the period
MAX_SRC: Final = 64  # wire-v1: `src` is at most 64 characters
PROTOCOL_DESTROY: Final = 28
# after these the shim sends its batch at once (shim/README.md, "Batching")
_FLUSH_AFTER: Final = frozenset({PROTOCOL_DESTROY, CONTEXT_DESTROY_BEGIN, CONTEXT_DESTROYED, BYE})

Line = dict[str, Any]


def load_recording(name: str = RECORDING) -> list[Line]:
    """The shipped recording (package data, so it works from an installed package)."""
    data = resources.files("lwsobs").joinpath("data", name).read_bytes()
    return [json.loads(raw) for raw in data.splitlines() if raw.strip()]


# -- one pass: pure functions ---------------------------------------------------------------------


def offsets(lines: Sequence[Line], max_gap_ns: int = MAX_GAP_NS) -> list[int]:
    """Each line's time from the first line: the recorded gaps of `t` in file order, each cut
    to [0, max_gap_ns] (a backwards step between two producers' clocks counts as no gap)."""
    out: list[int] = []
    at = 0
    previous: int | None = None
    for line in lines:
        t = int(line["t"])
        if previous is not None:
            at += min(max(t - previous, 0), max_gap_ns)
        previous = t
        out.append(at)
    return out


def source_names(srcs: Iterable[str], name: str = DEMO_NAME) -> dict[str, str]:
    """Recorded `src` -> `name@<instance>` (the part after its "@", else all of it).

    The service labels every one of them source=`name`; two recorded producers never share
    a new name (a clash gets a numeric suffix), and every name stays within 64 characters.
    """
    out: dict[str, str] = {}
    taken: set[str] = set()
    for src in srcs:
        if src in out:
            continue
        instance = src.partition("@")[2] or src
        candidate = f"{name}@{instance}"[:MAX_SRC]
        n = 1
        while candidate in taken:
            n += 1
            suffix = f".{n}"
            candidate = f"{name}@{instance}"[: MAX_SRC - len(suffix)] + suffix
        out[src] = candidate
        taken.add(candidate)
    return out


def rebase(
    lines: Sequence[Line],
    t0_ns: int,
    mono0_ns: int,
    *,
    name: str = DEMO_NAME,
    max_gap_ns: int = MAX_GAP_NS,
) -> list[tuple[int, Line]]:
    """One pass: (offset from the pass start in ns, the line as sent) for every line.

    `t` becomes t0_ns + offset and `mono` mono0_ns + offset, so the recorded order and gaps
    (cut to max_gap_ns) are kept; `src` is renamed (source_names) and `seq` counts from 0 per
    new src, again from 0 at each HELLO, with no gap. The input is not modified.
    """
    names = source_names((str(line["src"]) for line in lines), name)
    seqs: dict[str, int] = {}
    out: list[tuple[int, Line]] = []
    for at, line in zip(offsets(lines, max_gap_ns), lines, strict=True):
        src = names[str(line["src"])]
        seq = 0 if line["r"] == HELLO else seqs.get(src, 0)
        seqs[src] = seq + 1
        sent = dict(line, src=src, seq=seq, t=t0_ns + at)
        if "mono" in line:
            sent["mono"] = mono0_ns + at
        out.append((at, sent))
    return out


@dataclass
class _Batch:
    start: int
    lines: list[bytes]
    size: int = 0


def datagrams(
    schedule: Sequence[tuple[int, Line]],
    *,
    batch_ns: int = BATCH_NS,
    max_bytes: int = BATCH_BYTES,
) -> list[tuple[int, bytes]]:
    """Group the lines of a pass into datagrams the way the shim batches: per src, a datagram
    leaves when its first line is `batch_ns` old, before a line that would take it past
    `max_bytes` (a longer line goes alone), and right after PROTOCOL_DESTROY, -3, -4 and BYE.

    Returns (send offset, datagram) in send order; each src's lines keep their order.
    """
    out: list[tuple[int, int, bytes]] = []  # (send offset, emission order, datagram)
    open_batches: dict[str, _Batch] = {}

    def send(at: int, batch: _Batch) -> None:
        out.append((at, len(out), b"".join(batch.lines)))

    for at, line in schedule:
        src = str(line["src"])
        raw = json.dumps(line, separators=(",", ":")).encode() + b"\n"
        batch = open_batches.get(src)
        if batch is not None and at - batch.start >= batch_ns:
            send(batch.start + batch_ns, open_batches.pop(src))
            batch = None
        if batch is not None and batch.size + len(raw) > max_bytes:
            send(at, open_batches.pop(src))
            batch = None
        if batch is None:
            batch = open_batches[src] = _Batch(at, [])
        batch.lines.append(raw)
        batch.size += len(raw)
        if line["r"] in _FLUSH_AFTER:
            send(at, open_batches.pop(src))
    for batch in open_batches.values():
        send(batch.start + batch_ns, batch)
    out.sort()
    return [(at, data) for at, _, data in out]


# -- the replay loop ------------------------------------------------------------------------------

Send = Callable[[bytes], None]


class LwsDemoReplay:
    """Sends the recording pass after pass until cancelled; `passes` counts finished ones."""

    def __init__(
        self,
        lines: Sequence[Line],
        send: Send,
        *,
        period_s: float = DEFAULT_PERIOD_S,
        name: str = DEMO_NAME,
    ) -> None:
        self.lines = lines
        self.send = send
        self.period_s = period_s
        self.name = name
        self.passes = 0
        self.send_errors = 0

    async def run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            started = loop.time()
            await self.one_pass()
            self.passes += 1
            await asyncio.sleep(max(MIN_PAUSE_S, self.period_s - (loop.time() - started)))

    async def one_pass(self) -> None:
        """Send each datagram at its offset from now, sleeping in between (never blocking)."""
        loop = asyncio.get_running_loop()
        start = loop.time()
        schedule = rebase(self.lines, now_ns(), time.monotonic_ns(), name=self.name)
        for at, data in datagrams(schedule):
            delay = start + at / 1e9 - loop.time()
            if delay > 0:
                await asyncio.sleep(delay)
            try:
                self.send(data)
            except OSError as exc:  # a full socket buffer: the lines show up as a gap
                self.send_errors += 1
                if self.send_errors == 1:
                    log.warning("lws demo: sending a datagram failed: %s", exc)


def loopback_target(host: str, port: int) -> tuple[int, tuple[str, int]]:
    """Where to send to reach a receiver bound to host:port (a wildcard is reached on loopback)."""
    try:
        address = ipaddress.ip_address(host.partition("%")[0])
    except ValueError:
        address = None
    if address is not None and address.is_unspecified:
        host = "::1" if address.version == 6 else "127.0.0.1"
    elif host == "localhost":
        host = "127.0.0.1"
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    return family, (host, port)


def udp_sender(host: str, port: int) -> tuple[Send, Callable[[], None]]:
    """A non-blocking datagram socket aimed at the service's UDP ingest, and its closer."""
    family, target = loopback_target(host, port)
    sock = socket.socket(family, socket.SOCK_DGRAM)
    sock.setblocking(False)

    def send(data: bytes) -> None:
        sock.sendto(data, target)

    return send, sock.close


def pipeline_sender(pipeline: IngestPipeline) -> Send:
    """Feeds the datagrams straight to the pipeline, counted as transport="file"."""

    def send(data: bytes) -> None:
        pipeline.feed_datagram(data, "file", now_ns())

    return send


def attach_lws_demo(
    app: web.Application,
    config: Config,
    pipeline: IngestPipeline | None,
    *,
    period_s: float = DEFAULT_PERIOD_S,
) -> None:
    """Replay the recording from start-up (after the ingest transports are bound) to shutdown."""
    tasks: list[asyncio.Task[None]] = []
    closers: list[Callable[[], None]] = []

    async def start(_: web.Application) -> None:
        try:
            lines = load_recording()
        except OSError as exc:  # installed without its package data
            log.warning("lws demo: off, the recording is missing: %s", exc)
            return
        udp = config.udp
        if pipeline is None:
            log.info("lws demo: off (this service has no ingest)")
            return
        if udp is not None and udp.port != 0:
            send, close = udp_sender(udp.host, udp.port)
            closers.append(close)
            log.info("lws demo: replaying %s to udp %s every %gs", RECORDING, udp, period_s)
        else:
            send = pipeline_sender(pipeline)
            why = "--udp off" if udp is None else "the udp port is chosen at bind time"
            log.info(
                "lws demo: %s, replaying %s in-process (transport=file) every %gs",
                why,
                RECORDING,
                period_s,
            )
        replay = LwsDemoReplay(lines, send, period_s=period_s)
        tasks.append(asyncio.create_task(replay.run()))

    async def stop(_: web.Application) -> None:
        await cancel_all(tasks)
        for close in closers:
            close()
        closers.clear()

    app.on_startup.append(start)
    app.on_shutdown.append(stop)
